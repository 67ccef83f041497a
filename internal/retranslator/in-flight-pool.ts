import { jitteredBackoffMs } from "../lifecycle/abortable.js";
import { settleWithin } from "../lifecycle/deadline.js";
import { Wakeup } from "../lifecycle/wakeup.js";
import type { Logger } from "../logger/logger.js";
import type { OutboxEvent } from "../outbox/types.js";
import type { Acknowledger } from "./acknowledger.js";
import { exhaustedAtClaim } from "./dead-letter-policy.js";
import { failAll, type Sender, type SendFailure, type SendOutcome, type SharedOutcome } from "./sender/sender.js";

export interface InFlightPoolOptions {
  /** Events held at once (claimed, not yet acknowledged or given back): the claim loop waits above this. */
  maxEvents: number;
  /**
   * Events one partition may hold (queued and in flight). A partition at this
   * bound takes no more: its further events are given back unsent and its
   * packages skipped by the claim until it has room, so one slow partition
   * cannot take the whole pool.
   */
  maxPartitionEvents: number;
  /** Claims without an outcome beyond this (crash loops) dead-letter without another send. */
  maxAttempts: number;
  /** Backoff of a partition after a retriable failure (doubling per failure in a row, jittered). */
  backoffMinMs: number;
  backoffMaxMs: number;
  /**
   * After a request shared by several partitions failed, this long of
   * requests one partition at a time: such a failure (usually one partition
   * losing its leader) may have appended the other partitions' events, which
   * are then sent again; while a cluster is unsettled, per-partition requests
   * keep that to one request's worth per incident.
   */
  sharedRequestPauseMs: number;
}

export interface InFlightPoolHooks {
  /** Change in the number of events held. */
  onProcessing(delta: number): void;
  /** Events given back unsent because their lease had less than a send's time left. */
  onFenced(count: number): void;
  /** Events failed without reaching the sender (no partition metadata). */
  onFailed(count: number): void;
  /** A partition started (ms > 0) or ended (ms = 0) a backoff. */
  onPartitionBackoff(partition: number, ms: number): void;
}

/** One Kafka partition's queue: at most one request in flight, the next waits for its outcome. */
class Lane {
  queued: OutboxEvent[] = [];
  sending = 0;
  failuresInARow = 0;
  backoffUntil = 0;
  /** Its next request goes alone (a request it shared with other partitions failed). */
  alone = false;
  /** Set when the lane turned events away for want of room; cleared once it has drained to half. */
  refusing = false;
  /** Packages seen on this partition while it was blocked: the claim skips them. */
  readonly blockedPackages = new Set<bigint>();

  get held(): number {
    return this.queued.length + this.sending;
  }
}

/**
 * The in-flight pool: claimed events, routed to their Kafka partition, each
 * partition a lane that sends its queue as one request and sends the next
 * only after the previous one's outcome (so a partition's events leave in
 * claim order, and kafkajs never queues requests on a partition that does
 * not answer). Partitions are independent: a partition without a leader, or
 * one that times out, backs off alone; while it does, its queued events go
 * back unsent (their attempt not charged) and the claim passes over its
 * packages (`blockedPackages`), so the rest of the topic keeps flowing.
 *
 * Every outcome goes to the acknowledger, which writes it to the outbox:
 * sends' outcomes as the sender returned them, events given back without a
 * send as `unsent`.
 */
export class InFlightPool {
  private held = 0;
  private readonly lanes = new Map<number, Lane>();
  private readonly tasks = new Set<Promise<void>>();
  /** Woken when events leave the pool: the claim loop waits on it while the pool is full. */
  private readonly capacityFreed = new Wakeup();
  private stopped = false;
  /** Idle lanes with queued events that may share a request (see dispatch). */
  private readonly ready = new Set<number>();
  private dispatchScheduled = false;
  private sharedPausedUntil = 0;

  constructor(
    private readonly sender: Sender,
    private readonly acknowledger: Acknowledger,
    private readonly options: InFlightPoolOptions,
    private readonly logger: Logger,
    private readonly hooks: InFlightPoolHooks,
  ) {}

  /** Resolves when more events may be claimed (or `signal` aborts). */
  async waitForSlot(signal: AbortSignal): Promise<void> {
    while (this.held >= this.options.maxEvents && !signal.aborted) await this.capacityFreed.sleep(undefined, signal);
  }

  submit(batch: readonly OutboxEvent[]): void {
    this.hold(batch.length);
    this.track(this.route(batch));
  }

  /** Waits for every send to finish, at most until `deadline` (epoch ms). True when all finished. */
  async drain(deadline: number): Promise<boolean> {
    while (this.tasks.size > 0) {
      const left = deadline - Date.now();
      if (left <= 0) return false;
      await settleWithin(Promise.allSettled([...this.tasks]), left);
    }
    return true;
  }

  /**
   * No request starts after this (shutdown, once the drain is over or cut
   * off): what is still queued stays leased until the retranslator releases
   * every lease it holds, and must not be sent after that release, when
   * another instance may already have claimed it.
   */
  stopSending(): void {
    this.stopped = true;
  }

  /** Events held (claimed and not yet acknowledged or given back). */
  get size(): number {
    return this.held;
  }

  /** Packages the claim should pass over now: those of partitions backing off or full. */
  blockedPackages(): bigint[] {
    const now = Date.now();
    const blocked: bigint[] = [];
    for (const [partition, lane] of this.lanes) {
      if (lane.blockedPackages.size === 0) continue;
      if (lane.backoffUntil > now || lane.refusing) blocked.push(...lane.blockedPackages);
      else {
        lane.blockedPackages.clear();
        if (lane.backoffUntil > 0) {
          lane.backoffUntil = 0;
          this.hooks.onPartitionBackoff(partition, 0);
        }
      }
    }
    return blocked;
  }

  private async route(claimed: readonly OutboxEvent[]): Promise<void> {
    const batch = this.withoutExhausted(claimed);
    if (batch.length === 0) return;
    let partitions: Map<number, OutboxEvent[]>;
    try {
      partitions = await this.sender.route(batch);
    } catch (err) {
      // No metadata (cluster unreachable): the cluster's state, not the
      // events' fault. Retriable, so no attempt is spent, and given back with
      // backoff, so that an unreachable cluster is not polled in a hot loop.
      const error = (err instanceof Error ? `${err.name}: ${err.message}` : String(err)).slice(0, 2000);
      this.logger.warn({ err, events: batch.length }, "could not route events to partitions; retrying with backoff");
      const outcome = failAll(batch, error, true);
      this.hooks.onFailed(outcome.failed.length);
      this.acknowledger.add(outcome);
      this.release(batch.length);
      return;
    }
    const now = Date.now();
    for (const [partition, events] of partitions) {
      const lane = this.lane(partition);
      const full = lane.held > 0 && lane.held + events.length > this.options.maxPartitionEvents;
      if (lane.backoffUntil > now || full) {
        if (full) lane.refusing = true;
        for (const event of events) lane.blockedPackages.add(event.packageId);
        this.giveBack(events);
        continue;
      }
      lane.queued.push(...events);
      this.pump(partition, lane);
    }
  }

  private lane(partition: number): Lane {
    let lane = this.lanes.get(partition);
    if (lane === undefined) {
      lane = new Lane();
      this.lanes.set(partition, lane);
    }
    return lane;
  }

  private pump(partition: number, lane: Lane): void {
    if (this.stopped || lane.sending > 0 || lane.queued.length === 0) return;
    if (
      this.sender.sendTogether !== undefined &&
      !lane.alone &&
      lane.failuresInARow === 0 &&
      Date.now() >= this.sharedPausedUntil
    ) {
      this.ready.add(partition);
      if (!this.dispatchScheduled) {
        this.dispatchScheduled = true;
        this.track(new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.dispatch()));
      }
      return;
    }
    const events = this.withinLease(lane.queued.splice(0, lane.queued.length));
    if (events.length === 0) return;
    lane.sending = events.length;
    this.track(this.sendLane(partition, lane, events));
  }

  /**
   * The lanes that became ready in the same turn of the event loop (a claim
   * routed over several partitions, a shared request's acknowledgement) go
   * out together: one request per broker rather than one per partition.
   * Lanes that failed lately go alone, so a partition without a leader cannot
   * hold the others' requests.
   */
  private dispatch(): void {
    this.dispatchScheduled = false;
    const groups = new Map<number, OutboxEvent[]>();
    for (const partition of this.ready) {
      const lane = this.lane(partition);
      if (this.stopped || lane.sending > 0 || lane.queued.length === 0) continue;
      const events = this.withinLease(lane.queued.splice(0, lane.queued.length));
      if (events.length === 0) continue;
      lane.sending = events.length;
      groups.set(partition, events);
    }
    this.ready.clear();
    if (Date.now() < this.sharedPausedUntil) {
      // Lanes that became ready just before a shared request failed.
      for (const [partition, events] of groups) this.track(this.sendLane(partition, this.lane(partition), events));
      return;
    }
    if (groups.size === 1) {
      const [[partition, events]] = groups;
      this.track(this.sendLane(partition, this.lane(partition), events));
    } else if (groups.size > 1) this.track(this.sendTogether(groups));
  }

  private async sendTogether(groups: Map<number, OutboxEvent[]>): Promise<void> {
    let outcome: SharedOutcome;
    try {
      outcome = await this.sender.sendTogether!(groups);
    } catch (err) {
      // Nothing is known: each partition is sent again alone, which tells.
      this.logger.error({ err }, "sender threw on a request of several partitions; sending them one by one");
      outcome = { published: new Map(), requests: 0, failedRequests: 1 };
    }
    if (outcome.failedRequests > 0) this.sharedPausedUntil = Date.now() + this.options.sharedRequestPauseMs;
    for (const [partition, events] of groups) {
      const lane = this.lane(partition);
      lane.sending = 0;
      const acknowledged = outcome.published.get(partition) ?? [];
      if (acknowledged.length > 0) {
        lane.failuresInARow = 0;
        this.acknowledger.add({ published: acknowledged, failed: [], unsent: [] });
        this.release(acknowledged.length);
      }
      // The rest (a sender acknowledges a partition whole or not at all) again,
      // alone and ahead of what queued behind it: its own outcome then says
      // whether this partition failed, and whose fault it was.
      const acked = new Set(acknowledged.map((e) => e.id));
      const rest = events.filter((e) => !acked.has(e.id));
      if (rest.length > 0) {
        lane.queued.unshift(...rest);
        lane.alone = true;
      }
      if (lane.held <= this.options.maxPartitionEvents / 2) lane.refusing = false;
      this.pump(partition, lane);
    }
  }

  /**
   * Fencing: a send starts only while every event in it has at least a whole
   * send's time of lease left, so no send of ours can still be in flight when
   * the lease runs out and another instance claims the events (and publishes
   * them, then their successors). Events that waited too long in their lane
   * go back unsent, with their whole package (not charged: nothing was sent).
   */
  private withinLease(events: OutboxEvent[]): OutboxEvent[] {
    const now = Date.now();
    const late = new Set(events.filter((e) => e.sendBy !== undefined && e.sendBy < now).map((e) => e.packageId));
    if (late.size === 0) return events;
    const stale = events.filter((e) => late.has(e.packageId));
    this.logger.warn(
      { events: stale.length, packages: late.size },
      "lease too short for a whole send; giving the events back instead of sending them",
    );
    this.hooks.onFenced(stale.length);
    this.giveBack(stale);
    return events.filter((e) => !late.has(e.packageId));
  }

  private async sendLane(partition: number, lane: Lane, events: OutboxEvent[]): Promise<void> {
    let outcome: SendOutcome;
    try {
      outcome = await this.sender.send(events, partition);
    } catch (err) {
      // A sender must report failures in its outcome; if one throws anyway,
      // nothing is known to be acknowledged: give the events back unchanged.
      this.logger.error({ err }, "sender threw; giving the events back");
      outcome = { published: [], failed: [], unsent: events };
    }
    lane.sending = 0;
    lane.alone = false;
    this.acknowledger.add(outcome);
    if (outcome.failed.some((f) => f.retriable)) {
      // The partition (its leader, its broker) failed, not the events: back
      // off the partition alone. What waited behind goes back unsent.
      lane.failuresInARow += 1;
      const ms = jitteredBackoffMs(lane.failuresInARow, this.options.backoffMinMs, this.options.backoffMaxMs);
      lane.backoffUntil = Date.now() + ms;
      for (const event of events) lane.blockedPackages.add(event.packageId);
      const queued = lane.queued.splice(0, lane.queued.length);
      for (const event of queued) lane.blockedPackages.add(event.packageId);
      this.giveBack(queued);
      this.hooks.onPartitionBackoff(partition, ms);
      this.logger.warn(
        {
          partition,
          backoffMs: ms,
          failuresInARow: lane.failuresInARow,
          error: outcome.failed.find((f) => f.retriable)!.error,
        },
        "partition failed; backing it off, other partitions go on",
      );
    } else if (outcome.published.length > 0) {
      lane.failuresInARow = 0;
    }
    if (outcome.failed.some((f) => !f.retriable)) {
      this.logger.warn(
        { partition, failed: outcome.failed.length, unsent: outcome.unsent.length, error: outcome.failed[0]!.error },
        "publish failed; events will be retried",
      );
    }
    this.release(events.length);
    if (lane.held <= this.options.maxPartitionEvents / 2) lane.refusing = false;
    this.pump(partition, lane);
  }

  /** Events that leave the pool without a send: given back, their attempt not charged. */
  private giveBack(events: OutboxEvent[]): void {
    this.acknowledger.add({ published: [], failed: [], unsent: events });
    this.release(events.length);
  }

  private hold(n: number): void {
    this.held += n;
    this.hooks.onProcessing(n);
  }

  private release(n: number): void {
    if (n === 0) return;
    this.held -= n;
    this.hooks.onProcessing(-n);
    if (this.held < this.options.maxEvents) this.capacityFreed.wake();
  }

  private track(task: Promise<void>): void {
    const tracked: Promise<void> = task
      .catch((err: unknown) => this.logger.error({ err }, "in-flight pool task failed"))
      .finally(() => this.tasks.delete(tracked));
    this.tasks.add(tracked);
  }

  /**
   * Events exhausted at claim (dead-letter-policy.ts) are not sent again: they
   * fail at once (and dead-letter), and their packages' later events in this
   * batch wait behind them.
   */
  private withoutExhausted(batch: readonly OutboxEvent[]): OutboxEvent[] {
    const blocked = new Set<bigint>();
    const failed: SendFailure[] = [];
    const unsent: OutboxEvent[] = [];
    const rest: OutboxEvent[] = [];
    for (const event of batch) {
      if (blocked.has(event.packageId)) unsent.push(event);
      else if (exhaustedAtClaim(event, this.options.maxAttempts)) {
        blocked.add(event.packageId);
        failed.push({
          event,
          error: `claimed ${event.attempts - 1} times without an outcome: a retranslator crashed or stalled past its lease while publishing it`,
          retriable: false,
        });
      } else rest.push(event);
    }
    if (failed.length === 0) return [...batch];
    this.acknowledger.add({ published: [], failed, unsent });
    this.release(failed.length + unsent.length);
    return rest;
  }
}
