import { setTimeout as pause } from "node:timers/promises";
import { failureBackoffMs } from "../lifecycle/abortable.js";
import { Wakeup } from "../lifecycle/wakeup.js";
import type { Logger } from "../logger/logger.js";
import type { BackoffPolicy } from "../outbox/release-events.js";
import type { EventFailure, OutboxEvent } from "../outbox/types.js";
import { deadLetters } from "./dead-letter-policy.js";
import type { Outbox } from "./outbox.js";
import type { SendFailure, SendOutcome } from "./sender/sender.js";

export interface AcknowledgerOptions {
  owner: string;
  /** Most published ids deleted by one statement (retranslator.cleanerBatchSize). */
  batchSize: number;
  /** An idle acknowledger's linger after the first outcome (retranslator.cleanerFlushIntervalMs). */
  flushIntervalMs: number;
  maxAttempts: number;
  backoff: BackoffPolicy;
}

export interface AcknowledgerHooks {
  /**
   * Rows left the outbox (`deleted`, their ids) or were given back
   * (`released`): later events of their packages may now be claimable.
   */
  onProgress(deleted: readonly bigint[], released: boolean): void;
  onDeadLettered(count: number): void;
  onRetryScheduled(count: number): void;
}

/**
 * Writes send outcomes to the outbox, in sets: published ids are deleted with
 * one statement per flush, failures are released with backoff or moved to the
 * dead-letter table (dead-letter-policy.ts), unsent events are given back.
 * Flushes follow one another without a pause while work is queued, so sets
 * grow with the load while each flush runs (group commit); an idle
 * acknowledger waits flushIntervalMs after the first outcome. Deleting early
 * matters: a package's next event is claimable only once its predecessor has
 * left the outbox. A database error keeps the work queued and retries it;
 * nothing is dropped. The only loop is `run`, owned by the retranslator,
 * which awaits it on stop.
 */
export class Acknowledger {
  private published: bigint[] = [];
  private failures: SendFailure[] = [];
  private unsent: OutboxEvent[] = [];
  /**
   * Every claim of this relay whose outcome is not written yet (id → lease):
   * what `releaseHeld` gives back at shutdown. Bounded by the in-flight pool
   * plus the outcomes queued here.
   */
  private readonly held = new Map<bigint, string>();
  private readonly wakeup = new Wakeup();
  /** While the loop sleeps: whether an add() ends the sleep (never while it does not sleep). */
  private wakeWhen: () => boolean = () => false;
  private flushing = false;

  constructor(
    private readonly outbox: Outbox,
    private readonly options: AcknowledgerOptions,
    private readonly hooks: AcknowledgerHooks,
    private readonly logger: Logger,
  ) {}

  /** Claimed events, from the claim until their outcome is written. */
  hold(events: readonly OutboxEvent[]): void {
    for (const event of events) this.held.set(event.id, event.lease);
  }

  /**
   * Shutdown's last word, after the last flush: gives back every claim
   * whose outcome was not written (sends cut off, a flush that failed), by
   * primary key, so that they are claimable at once rather than when their
   * leases run out. A published event among them is published again (same
   * event id): its delete was lost. Returns how many rows were given back.
   */
  async releaseHeld(): Promise<number> {
    const claims = [...this.held].map(([id, lease]) => ({ id, lease }));
    const released = await this.outbox.releaseUnsentEvents(this.options.owner, claims);
    this.held.clear();
    return released;
  }

  /** Queues an outcome for the next flush. */
  add(outcome: SendOutcome): void {
    for (const event of outcome.published) this.published.push(event.id);
    this.failures.push(...outcome.failed);
    this.unsent.push(...outcome.unsent);
    this.poke();
  }

  get pending(): number {
    return this.published.length + this.failures.length + this.unsent.length;
  }

  /** Flushes until `signal` aborts, then once more until everything is written or `drainDeadline()` passes. */
  async run(signal: AbortSignal, drainDeadline: () => number): Promise<void> {
    let failuresInARow = 0;
    while (!signal.aborted) {
      if (failuresInARow > 0) await this.sleep(failureBackoffMs(failuresInARow), signal, () => false);
      else if (this.pending === 0) {
        await this.sleep(undefined, signal, () => this.pending > 0);
        // A short linger turns a trickle of single-event sends into fewer deletes.
        if (this.options.flushIntervalMs > 0) {
          await this.sleep(this.options.flushIntervalMs, signal, () => !this.onlyFewPublished());
        }
      }
      failuresInARow = (await this.flush()) ? 0 : failuresInARow + 1;
    }
    failuresInARow = 0;
    while (this.pending > 0 && Date.now() < drainDeadline()) {
      if (await this.flush()) continue;
      failuresInARow += 1;
      await pause(Math.min(failureBackoffMs(failuresInARow), Math.max(0, drainDeadline() - Date.now())));
    }
  }

  /** Writes everything queued; false when the database failed (the work stays queued). */
  async flush(): Promise<boolean> {
    if (this.flushing) return true;
    this.flushing = true;
    try {
      let progressed = false;
      let released = false;
      let deleted: bigint[] = [];
      if (this.published.length > 0) {
        const ids = this.published.slice(0, this.options.batchSize);
        await this.outbox.deleteEvents(ids);
        this.published.splice(0, ids.length);
        for (const id of ids) this.held.delete(id);
        deleted = ids;
        progressed = true;
      }
      if (this.failures.length > 0) {
        const batch = this.failures.slice();
        const dead = batch.filter((f) => deadLetters(f, this.options.maxAttempts));
        const retry = batch.filter((f) => !deadLetters(f, this.options.maxAttempts));
        const deadCount = await this.outbox.deadLetterEvents(this.options.owner, dead.map(eventFailure));
        const retryCount = await this.outbox.releaseFailedEvents(
          this.options.owner,
          retry.map(eventFailure),
          this.options.backoff,
        );
        this.failures.splice(0, batch.length);
        for (const f of batch) this.settled(f.event);
        if (deadCount > 0) {
          this.logger.warn(
            { events: dead.map((f) => ({ id: f.event.id.toString(), error: f.error })) },
            "events moved to the dead-letter table",
          );
          this.hooks.onDeadLettered(deadCount);
        }
        this.hooks.onRetryScheduled(retryCount);
        progressed = true;
        released = true;
      }
      if (this.unsent.length > 0) {
        const events = this.unsent.slice();
        await this.outbox.releaseUnsentEvents(
          this.options.owner,
          events.map((e) => ({ id: e.id, lease: e.lease })),
        );
        this.unsent.splice(0, events.length);
        for (const e of events) this.settled(e);
        progressed = true;
        released = true;
      }
      if (progressed) this.hooks.onProgress(deleted, released);
      return true;
    } catch (err) {
      this.logger.warn({ err, pending: this.pending }, "outbox acknowledgement failed; retrying");
      return false;
    } finally {
      this.flushing = false;
    }
  }

  /**
   * The claim's outcome is written. Only that claim's: once given back, the
   * event may already be claimed again with another lease (a row that was
   * deleted, in contrast, can have no other claim, so published ids need no lease).
   */
  private settled(event: OutboxEvent): void {
    if (this.held.get(event.id) === event.lease) this.held.delete(event.id);
  }

  private onlyFewPublished(): boolean {
    return this.failures.length === 0 && this.unsent.length === 0 && this.published.length < this.options.batchSize;
  }

  private poke(): void {
    if (!this.wakeWhen()) return;
    // Once per sleep: the sleeper resumes asynchronously, and a second add()
    // before it does (a shared request's outcome arrives as one add per
    // acknowledged partition) would leave a wake behind that ends the next
    // sleep, the linger, at once.
    this.wakeWhen = () => false;
    this.wakeup.wake();
  }

  /** Until `ms` passes (forever when undefined), `signal` aborts, or an add() makes `wakeWhen` true. */
  private async sleep(ms: number | undefined, signal: AbortSignal, wakeWhen: () => boolean): Promise<void> {
    if (signal.aborted || wakeWhen()) return;
    this.wakeWhen = wakeWhen;
    try {
      await this.wakeup.sleep(ms, signal);
    } finally {
      this.wakeWhen = () => false;
    }
  }
}

/** A failure as the outbox statements take it: the event named by its claim, with the error. */
const eventFailure = (f: SendFailure): EventFailure => ({
  id: f.event.id,
  lease: f.event.lease,
  error: f.error,
  retriable: f.retriable,
  deadLetter: f.deadLetter,
});
