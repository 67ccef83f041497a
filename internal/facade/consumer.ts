import type { EachBatchPayload } from "kafkajs";
import { describeDatabaseError } from "../database/pg-errors.js";
import { kafkaClient } from "../kafka/client.js";
import { type ConsumerGroupHooks, RestartingConsumer } from "../kafka/restarting-consumer.js";
import type { KafkaClientSecurity } from "../kafka/security.js";
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

export type FacadeConsumerHooks = Required<ConsumerGroupHooks>;

/**
 * The facade's member of the consumer group. Each fetched batch goes to the
 * applier (one transaction); only after it committed is the batch's offset
 * resolved and committed to Kafka. A crash in between redelivers the batch,
 * and the inbox turns it into a no-op. A failed transaction resolves nothing:
 * the error goes back to kafkajs, which fetches the batch again after a backoff.
 *
 * When kafkajs gives up on a retriable error, RestartingConsumer starts a new
 * consumer after a jittered backoff (facade.restartBackoffMinMs … MaxMs). A
 * non-retriable error ends the loop: `failure` is set and /live fails.
 * `stop()` waits for the batch in hand.
 */
export class FacadeConsumer {
  private readonly group: RestartingConsumer;
  private readonly controller = new AbortController();
  private loop: Promise<void> | undefined;

  constructor(
    options: FacadeConsumerOptions,
    private readonly applier: BatchApplier,
    hooks: FacadeConsumerHooks,
    private readonly logger: Logger,
  ) {
    const kafka = kafkaClient(options, logger);
    this.group = new RestartingConsumer(
      kafka,
      {
        name: "consumer",
        consumer: {
          groupId: options.groupId,
          sessionTimeout: options.sessionTimeoutMs,
          rebalanceTimeout: options.rebalanceTimeoutMs,
          heartbeatInterval: options.heartbeatIntervalMs,
          maxBytesPerPartition: options.maxBytesPerPartition,
          // An idle fetch waits this long for data; stop() waits for the fetch in
          // flight, so this bounds shutdown (kafkajs' 5 s default made it 5 s) for
          // one empty fetch per broker per second when idle. Data returns at once.
          maxWaitTimeInMs: 1000,
          // The retranslator creates the topic with its partition count; a consumer
          // must not create it with the broker's default one.
          allowAutoTopicCreation: false,
        },
        // A read model needs the whole history: a group without committed offsets starts at the beginning.
        subscription: { topics: [options.topic], fromBeginning: true },
        run: {
          autoCommit: false,
          eachBatchAutoResolve: false,
          partitionsConsumedConcurrently: options.partitionsConsumedConcurrently,
          eachBatch: (payload) => this.handle(payload),
        },
        restartBackoffMinMs: options.restartBackoffMinMs,
        restartBackoffMaxMs: options.restartBackoffMaxMs,
        disconnectTimeoutMs: options.shutdownTimeoutMs,
        disconnectTimeoutKey: "facade.shutdownTimeoutMs",
        stopOnNonRetriable: true,
      },
      hooks,
      logger,
    );
  }

  /** Set when the consumer failed for good (a non-retriable error): the facade no longer consumes. */
  get failure(): Error | undefined {
    return this.group.failure;
  }

  /**
   * Starts the loop that runs the consumer and restarts it after failures;
   * returns at once. Joining the group can take a session timeout or more (a
   * killed predecessor's session must end first): /ready tells when it did.
   */
  start(): void {
    if (this.loop !== undefined) throw new Error("FacadeConsumer already started");
    this.loop = this.group.run(this.controller.signal);
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
