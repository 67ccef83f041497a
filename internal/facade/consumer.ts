import { Kafka, logLevel, type Consumer, type EachBatchPayload, type LogEntry } from "kafkajs";
import type { KafkaClientSecurity } from "../kafka/security.js";
import type { Logger } from "../logger/logger.js";
import { describeDatabaseError, type BatchApplier, type BatchOutcome } from "./applier.js";

export interface FacadeConsumerOptions {
  brokers: readonly string[];
  clientId: string;
  topic: string;
  groupId: string;
  requestTimeoutMs: number;
  maxBytesPerPartition: number;
  partitionsConsumedConcurrently: number;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  /** TLS and SASL, from kafkaClientSecurity(config.kafka). */
  security: KafkaClientSecurity;
}

export interface FacadeConsumerHooks {
  /** The group assigned this instance its partitions (after every rebalance). */
  onAssignment(assigned: Readonly<Record<string, readonly number[]>>): void;
}

/**
 * The facade's member of the consumer group. Each fetched batch goes to the
 * applier (one transaction); only after it committed is the batch's offset
 * resolved and committed to Kafka. A crash in between redelivers the batch,
 * and the inbox turns it into a no-op. A failed transaction resolves nothing:
 * the error goes back to kafkajs, which fetches the batch again after a backoff.
 * kafkajs owns the fetch loop; `stop()` waits for the batch in hand.
 */
export class FacadeConsumer {
  private readonly consumer: Consumer;
  private crash: Error | undefined;

  constructor(
    private readonly options: FacadeConsumerOptions,
    private readonly applier: BatchApplier,
    private readonly hooks: FacadeConsumerHooks,
    private readonly logger: Logger,
  ) {
    const kafka = new Kafka({
      ...options.security,
      clientId: options.clientId,
      brokers: [...options.brokers],
      requestTimeout: options.requestTimeoutMs,
      connectionTimeout: Math.min(options.requestTimeoutMs, 3000),
      logLevel: logLevel.WARN,
      logCreator: () => (entry: LogEntry) => {
        const { message, ...extra } = entry.log;
        const level = entry.level === logLevel.ERROR ? "error" : entry.level === logLevel.WARN ? "warn" : "info";
        this.logger[level]({ kafka: extra, namespace: entry.namespace }, `kafkajs: ${message}`);
      },
    });
    this.consumer = kafka.consumer({
      groupId: options.groupId,
      sessionTimeout: options.sessionTimeoutMs,
      heartbeatInterval: options.heartbeatIntervalMs,
      maxBytesPerPartition: options.maxBytesPerPartition,
      // An idle fetch waits this long for data; stop() waits for the fetch in
      // flight, so this bounds shutdown (kafkajs' 5 s default made it 5 s) for
      // one empty fetch per broker per second when idle. Data returns at once.
      maxWaitTimeInMs: 1000,
      // The retranslator creates the topic with its partition count; a consumer
      // must not create it with the broker's default one.
      allowAutoTopicCreation: false,
    });
    this.consumer.on(this.consumer.events.GROUP_JOIN, ({ payload }) => {
      this.logger.info({ groupId: payload.groupId, assigned: payload.memberAssignment }, "joined the consumer group");
      this.hooks.onAssignment(payload.memberAssignment);
    });
    this.consumer.on(this.consumer.events.CRASH, ({ payload }) => {
      if (payload.restart) {
        this.logger.warn({ err: payload.error }, "consumer stopped after repeated failures; kafkajs restarts it");
        return;
      }
      this.crash = payload.error;
      this.logger.fatal({ err: payload.error }, "consumer crashed and will not restart");
    });
  }

  /** Set when kafkajs gave up (a non-retriable error): the facade no longer consumes. */
  get failure(): Error | undefined {
    return this.crash;
  }

  /** Joins the group and starts consuming; resolves after the first join. */
  async start(): Promise<void> {
    await this.consumer.connect();
    // A read model needs the whole history: a group without committed offsets starts at the beginning.
    await this.consumer.subscribe({ topic: this.options.topic, fromBeginning: true });
    await this.consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      partitionsConsumedConcurrently: this.options.partitionsConsumedConcurrently,
      eachBatch: (payload) => this.handle(payload),
    });
  }

  /** Leaves the group; kafkajs waits for the batch being applied, then commits nothing more. */
  async stop(): Promise<void> {
    await this.consumer.disconnect();
  }

  private async handle({ batch, resolveOffset, commitOffsetsIfNecessary, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
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
      this.logger.error({ ...where, err: cause }, "batch not applied (rolled back, offsets kept); kafkajs fetches it again");
      // A short error of our own: kafkajs logs what it is given, and knex's
      // message carries the whole batch.
      throw new Error(`batch of partition ${batch.partition} at offset ${where.firstOffset} not applied: ${cause.message}`);
    }
    this.logOutcomes(result);

    resolveOffset(last.offset);
    // Explicit offsets: with autoCommit off and no autoCommitInterval or
    // autoCommitThreshold, kafkajs' argument-less commitOffsetsIfNecessary()
    // commits nothing. The committed offset is the next one to read.
    const next = (BigInt(last.offset) + 1n).toString();
    try {
      await commitOffsetsIfNecessary({ topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }] });
    } catch (err) {
      this.logger.warn({ ...where, err }, "offset commit failed after the batch was applied; its redelivery will be skipped as duplicates");
      throw err;
    }
    this.logger.debug({ ...where, next }, "batch committed (transaction, then offset)");
    await heartbeat();
  }

  private logOutcomes({ batch, outcomes }: BatchOutcome): void {
    for (const o of outcomes) {
      const at = { partition: batch.partition, offset: o.offset };
      if (o.kind === "rejected") {
        this.logger.error({ ...at, topic: batch.topic, error: o.error }, "message rejected (recorded in facade_rejected)");
        continue;
      }
      const event =
        o.change === null
          ? {}
          : { eventId: o.change.eventId.toString(), packageId: o.change.packageId.toString(), type: o.change.type };
      if (o.kind === "applied") this.logger.info({ ...event, ...at }, "event applied");
      else if (o.kind === "stale") this.logger.info({ ...event, ...at }, "stale event ignored (older than the state held)");
      else this.logger.debug({ ...event, ...at }, "duplicate skipped");
    }
  }
}
