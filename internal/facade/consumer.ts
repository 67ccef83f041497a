import {
  AssignerProtocol,
  type Consumer,
  type EachBatchPayload,
  Kafka,
  logLevel,
  type PartitionAssigner,
  PartitionAssigners,
} from "kafkajs";
import { describeDatabaseError } from "../database/pg-errors.js";
import { kafkaLogCreator } from "../kafka/log.js";
import type { KafkaClientSecurity } from "../kafka/security.js";
import { sleep } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";
import type { BatchApplier, BatchOutcome } from "./applier.js";

export interface FacadeConsumerOptions {
  brokers: readonly string[];
  clientId: string;
  topic: string;
  groupId: string;
  /** Every broker request but JoinGroup (which kafkajs gives rebalanceTimeoutMs + 5 s). */
  requestTimeoutMs: number;
  maxBytesPerPartition: number;
  partitionsConsumedConcurrently: number;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  rebalanceTimeoutMs: number;
  restartBackoffMinMs: number;
  restartBackoffMaxMs: number;
  /** How long stop() waits for the batch in hand and for leaving the group. */
  shutdownTimeoutMs: number;
  /** TLS and SASL, from kafkaClientSecurity(config.kafka). */
  security: KafkaClientSecurity;
}

export interface FacadeConsumerHooks {
  /** The group assigned this instance its partitions (after every rebalance). */
  onAssignment(assigned: Readonly<Record<string, readonly number[]>>): void;
  /** The instance stopped consuming its partitions (a rebalance, a failure, a stop). */
  onUnassigned(reason: string): void;
  /** The consumer failed and will be started again after `delayMs`. */
  onRestart(error: Error, delayMs: number): void;
}

/**
 * Jittered exponential backoff after `failures` failures in a row: the n-th
 * waits between half and all of min × 2^(n-1), capped at max. The jitter keeps
 * the instances of a group that failed together (a broker restart) from
 * rejoining in lockstep, which would make each join a rebalance of its own.
 */
export function restartBackoffMs(
  failures: number,
  minMs: number,
  maxMs: number,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, minMs * 2 ** Math.min(Math.max(failures - 1, 0), 30));
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/**
 * kafkajs' round robin, plus an explicit empty assignment for each member that
 * gets no partition (a group with more members than partitions). kafkajs
 * leaves those members out of the leader's SyncGroup; Kafka fills them in, but
 * a coordinator that waits for every member's assignment (librdkafka's mock
 * broker, the local one) would hold every SyncGroup until the session ends,
 * then rebalance, forever. Same protocol name: members running plain round
 * robin interoperate.
 */
export const roundRobinAssigningEveryMember: PartitionAssigner = (config) => {
  const roundRobin = PartitionAssigners.roundRobin(config);
  return {
    name: roundRobin.name,
    version: roundRobin.version,
    protocol: (subscription) => roundRobin.protocol(subscription),
    async assign(group) {
      const assigned = await roundRobin.assign(group);
      const listed = new Set(assigned.map((a) => a.memberId));
      const nothing = AssignerProtocol.MemberAssignment.encode({
        version: roundRobin.version,
        assignment: {},
        userData: Buffer.alloc(0),
      });
      const idle = group.members
        .filter((m) => !listed.has(m.memberId))
        .map((m) => ({ memberId: m.memberId, memberAssignment: nothing }));
      return [...assigned, ...idle];
    },
  };
};

/** One kafkajs consumer from start to its end: stopped, or crashed with `error`. */
interface Run {
  consumer: Consumer;
  ended: Promise<{ error: Error; retriable: boolean }>;
  /** Ends the run (the first call counts): kafkajs' crash, or a failed connect or subscribe. */
  end(outcome: { error: Error; retriable: boolean }): void;
  joined: boolean;
}

/**
 * The facade's member of the consumer group. Each fetched batch goes to the
 * applier (one transaction); only after it committed is the batch's offset
 * resolved and committed to Kafka. A crash in between redelivers the batch,
 * and the inbox turns it into a no-op. A failed transaction resolves nothing:
 * the error goes back to kafkajs, which fetches the batch again after a backoff.
 *
 * kafkajs owns the fetch loop and its quick retries; this class owns the
 * restarts. When kafkajs gives up on a retriable error (its own restart would
 * come 300 ms later, as a new member, again and again while the group waits
 * for the previous one's session to end), the consumer is disconnected and a
 * new one started after restartBackoffMs. A non-retriable error ends the loop:
 * `failure` is set and /live fails. `stop()` waits for the batch in hand.
 */
export class FacadeConsumer {
  private readonly kafka: Kafka;
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;
  private current: Run | undefined;
  private crash: Error | undefined;

  constructor(
    private readonly options: FacadeConsumerOptions,
    private readonly applier: BatchApplier,
    private readonly hooks: FacadeConsumerHooks,
    private readonly logger: Logger,
  ) {
    this.kafka = new Kafka({
      ...options.security,
      clientId: options.clientId,
      brokers: [...options.brokers],
      requestTimeout: options.requestTimeoutMs,
      connectionTimeout: Math.min(options.requestTimeoutMs, 3000),
      logLevel: logLevel.WARN,
      logCreator: kafkaLogCreator(this.logger),
    });
  }

  /** Set when the consumer failed for good (a non-retriable error): the facade no longer consumes. */
  get failure(): Error | undefined {
    return this.crash;
  }

  /**
   * Starts the loop that runs the consumer and restarts it after failures;
   * returns at once. Joining the group can take a session timeout or more (a
   * killed predecessor's session must end first): /ready tells when it did.
   */
  start(): void {
    if (this.loop !== undefined) throw new Error("FacadeConsumer already started");
    this.loop = this.supervise(this.controller.signal);
  }

  /**
   * Leaves the group; kafkajs waits for the batch being applied, then commits
   * nothing more. Bounded by shutdownTimeoutMs: kafkajs also waits for its
   * requests in flight, and a join the coordinator holds could take up to
   * rebalanceTimeoutMs + 5 s. Past the bound the caller closes anyway.
   */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.loop;
    const current = this.current;
    if (current === undefined) return;
    const deadline = new AbortController();
    const left = await Promise.race([
      current.consumer.disconnect().then(
        () => true,
        (err: unknown) => {
          this.logger.warn({ err }, "consumer disconnect failed");
          return true;
        },
      ),
      sleep(this.options.shutdownTimeoutMs, deadline.signal).then(() => false),
    ]);
    deadline.abort();
    if (!left) {
      this.logger.warn(
        { shutdownTimeoutMs: this.options.shutdownTimeoutMs },
        "consumer still busy (a batch, or a join the coordinator holds) after facade.shutdownTimeoutMs; closing anyway",
      );
    }
  }

  private async supervise(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted) {
      const run = this.newRun(signal);
      this.current = run;
      // Not awaited as such: a join can be held by the coordinator for a
      // rebalance timeout, and a stop must not wait for it (stop() disconnects).
      void this.begin(run, signal).catch((err: unknown) =>
        run.end({ error: err as Error, retriable: isRetriable(err) }),
      );
      const outcome = await untilEndedOrAborted(run.ended, signal);
      if (signal.aborted || outcome === undefined) {
        // stop() disconnects this run, within its bound.
        this.hooks.onUnassigned("stopping");
        return;
      }
      this.hooks.onUnassigned(`consumer failed: ${outcome.error.message}`);
      // After a crash kafkajs has disconnected already; again is harmless, and needed after a throw.
      await run.consumer.disconnect().catch((err: unknown) => this.logger.warn({ err }, "consumer disconnect failed"));
      if (!outcome.retriable) {
        this.crash = outcome.error;
        this.logger.fatal({ err: outcome.error }, "consumer failed with a non-retriable error and will not restart");
        return;
      }
      // A run that had joined the group worked: count failures in a row from there.
      failures = run.joined ? 1 : failures + 1;
      const delayMs = restartBackoffMs(failures, this.options.restartBackoffMinMs, this.options.restartBackoffMaxMs);
      this.hooks.onRestart(outcome.error, delayMs);
      this.logger.warn(
        { err: outcome.error, failuresInARow: failures, restartInMs: delayMs },
        "consumer failed; restarting it after a backoff",
      );
      await sleep(delayMs, signal);
    }
  }

  /**
   * Connects, subscribes and runs; a failure of the first join ends `run.ended`
   * through kafkajs' crash. A step that completes after a stop (a connect that
   * was retrying) goes no further: nobody would own the consumer it started.
   */
  private async begin(run: Run, signal: AbortSignal): Promise<void> {
    const stopped = async () => {
      if (signal.aborted) await run.consumer.disconnect();
      return signal.aborted;
    };
    await run.consumer.connect();
    if (await stopped()) return;
    // A read model needs the whole history: a group without committed offsets starts at the beginning.
    await run.consumer.subscribe({ topic: this.options.topic, fromBeginning: true });
    if (await stopped()) return;
    await run.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: this.options.partitionsConsumedConcurrently,
      eachBatch: (payload) => this.handle(payload),
    });
  }

  private newRun(signal: AbortSignal): Run {
    let retriable = false;
    let end!: (value: { error: Error; retriable: boolean }) => void;
    const ended = new Promise<{ error: Error; retriable: boolean }>((resolve) => (end = resolve));
    const consumer = this.kafka.consumer({
      groupId: this.options.groupId,
      sessionTimeout: this.options.sessionTimeoutMs,
      rebalanceTimeout: this.options.rebalanceTimeoutMs,
      heartbeatInterval: this.options.heartbeatIntervalMs,
      maxBytesPerPartition: this.options.maxBytesPerPartition,
      partitionAssigners: [roundRobinAssigningEveryMember],
      // An idle fetch waits this long for data; stop() waits for the fetch in
      // flight, so this bounds shutdown (kafkajs' 5 s default made it 5 s) for
      // one empty fetch per broker per second when idle. Data returns at once.
      maxWaitTimeInMs: 1000,
      // The retranslator creates the topic with its partition count; a consumer
      // must not create it with the broker's default one.
      allowAutoTopicCreation: false,
      retry: {
        // kafkajs asks this only for retriable errors; the restart is ours (supervise).
        restartOnFailure: async () => {
          retriable = !signal.aborted;
          return false;
        },
      },
    });
    const run: Run = { consumer, ended, end, joined: false };
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      run.joined = true;
      this.logger.info(
        { groupId: payload.groupId, assigned: payload.memberAssignment, durationMs: payload.duration },
        "joined the consumer group",
      );
      this.hooks.onAssignment(payload.memberAssignment);
    });
    consumer.on(consumer.events.REBALANCING, () => this.hooks.onUnassigned("the group is rebalancing"));
    // Emitted after kafkajs disconnected and asked restartOnFailure.
    consumer.on(consumer.events.CRASH, ({ payload }) => end({ error: payload.error, retriable }));
    return run;
  }

  private async handle({
    batch,
    resolveOffset,
    commitOffsetsIfNecessary,
    heartbeat,
    isRunning,
    isStale,
  }: EachBatchPayload): Promise<void> {
    const last = batch.messages[batch.messages.length - 1];
    // Stopping, or the partition was sought/reassigned: whoever owns it next gets these messages.
    if (last === undefined || !isRunning() || isStale()) return;
    const where = { partition: batch.partition, firstOffset: batch.firstOffset(), lastOffset: last.offset };

    let result: BatchOutcome;
    try {
      result = await this.applier.apply({
        topic: batch.topic,
        partition: batch.partition,
        highWatermark: batch.highWatermark,
        messages: batch.messages.map((m) => ({ offset: m.offset, key: m.key ?? null, value: m.value ?? null })),
      });
    } catch (err) {
      const cause = describeDatabaseError(err);
      this.logger.error(
        { ...where, err: cause },
        "batch not applied (rolled back, offsets kept); kafkajs fetches it again",
      );
      // A short error of our own: kafkajs logs what it is given, and knex's
      // message starts with the whole statement.
      throw new Error(
        `batch of partition ${batch.partition} at offset ${where.firstOffset} not applied: ${cause.message}`,
      );
    }
    this.logOutcomes(result);

    resolveOffset(last.offset);
    // Explicit offsets: with autoCommit off and no autoCommitInterval or
    // autoCommitThreshold, kafkajs' argument-less commitOffsetsIfNecessary()
    // commits nothing. The committed offset is the next one to read.
    const next = (BigInt(last.offset) + 1n).toString();
    try {
      await commitOffsetsIfNecessary({
        topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }],
      });
    } catch (err) {
      this.logger.warn(
        { ...where, err },
        "offset commit failed after the batch was applied; its redelivery will be skipped as duplicates",
      );
      throw err;
    }
    this.logger.debug({ ...where, next }, "batch committed (transaction, then offset)");
    await heartbeat();
  }

  private logOutcomes({ batch, outcomes }: BatchOutcome): void {
    for (const o of outcomes) {
      const at = { partition: batch.partition, offset: o.offset };
      if (o.kind === "rejected") {
        this.logger.error(
          { ...at, topic: batch.topic, error: o.error },
          "message rejected (recorded in facade_rejected)",
        );
        continue;
      }
      const event =
        o.change === null
          ? {}
          : { eventId: o.change.eventId.toString(), packageId: o.change.packageId.toString(), type: o.change.type };
      if (o.kind === "applied") this.logger.info({ ...event, ...at }, "event applied");
      else if (o.kind === "stale")
        this.logger.info({ ...event, ...at }, "stale event ignored (older than the state held)");
      else this.logger.debug({ ...event, ...at }, "duplicate skipped");
    }
  }
}

/** As kafkajs decides whether to restart: its retries ran out, or the root cause says retriable. */
function isRetriable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (err.name === "KafkaJSNumberOfRetriesExceeded") return true;
  let cause: unknown = err;
  while ((cause as { cause?: unknown }).cause instanceof Error) cause = (cause as { cause: unknown }).cause;
  return (cause as { retriable?: unknown }).retriable === true;
}

/** `ended`'s value, or undefined as soon as `signal` aborts (the listener goes once either happens). */
function untilEndedOrAborted<T>(ended: Promise<T>, signal: AbortSignal): Promise<T | undefined> {
  if (signal.aborted) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    const onAbort = () => resolve(undefined);
    signal.addEventListener("abort", onAbort, { once: true });
    void ended.then((value) => {
      signal.removeEventListener("abort", onAbort);
      resolve(value);
    });
  });
}
