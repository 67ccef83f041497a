import { Kafka, Partitioners, logLevel, type Admin, type Producer, type PartitionMetadata } from "kafkajs";
import type { KafkaClientSecurity } from "../../kafka/security.js";
import type { Logger } from "../../logger/logger.js";
import type { OutboxEvent } from "../../repo/outbox/types.js";
import { toEventMessage } from "./event-message.js";
import { failAll as failAllWith, type SendOutcome, type Sender } from "./sender.js";

export interface KafkaSenderOptions {
  brokers: readonly string[];
  clientId: string;
  topic: string;
  partitions: number;
  replicationFactor: number;
  requestTimeoutMs: number;
  sendRetries: number;
  idempotent: boolean;
  /** TLS and SASL, from kafkaClientSecurity(config.kafka). */
  security: KafkaClientSecurity;
}

/**
 * kafkajs producer with acks=all and one in-flight request per connection, so
 * kafkajs' own retries cannot reorder a partition. A batch is split by
 * partition and each partition goes out as one request: a failure is then
 * known per partition, and only that partition's events are retried.
 */
export class KafkaSender implements Sender {
  private readonly kafka: Kafka;
  private readonly producer: Producer;
  private readonly partitioner: ReturnType<typeof Partitioners.DefaultPartitioner>;
  private connected: Promise<void> | undefined;
  private partitionMetadata: PartitionMetadata[] | undefined;

  constructor(
    private readonly options: KafkaSenderOptions,
    private readonly logger: Logger,
  ) {
    this.kafka = new Kafka({
      ...options.security,
      clientId: options.clientId,
      brokers: [...options.brokers],
      requestTimeout: options.requestTimeoutMs,
      connectionTimeout: Math.min(options.requestTimeoutMs, 3000),
      retry: { retries: options.sendRetries, initialRetryTime: 100, maxRetryTime: 2000 },
      logLevel: logLevel.WARN,
      logCreator: () => (entry) => {
        const { message, ...extra } = entry.log;
        this.logger.warn({ kafka: extra, namespace: entry.namespace }, `kafkajs: ${message}`);
      },
    });
    this.partitioner = Partitioners.DefaultPartitioner();
    this.producer = this.kafka.producer({
      maxInFlightRequests: 1,
      idempotent: options.idempotent,
      allowAutoTopicCreation: true,
      createPartitioner: Partitioners.DefaultPartitioner,
    });
  }

  /**
   * Creates the topic where the cluster allows it; an existing topic, or a
   * cluster that refuses (no rights, or a test broker without a controller),
   * is logged and left to auto-creation or the operator.
   */
  async ensureTopic(): Promise<void> {
    const admin: Admin = this.kafka.admin();
    try {
      await admin.connect();
      const created = await admin.createTopics({
        topics: [
          {
            topic: this.options.topic,
            numPartitions: this.options.partitions,
            replicationFactor: this.options.replicationFactor,
          },
        ],
        waitForLeaders: true,
        timeout: this.options.requestTimeoutMs,
      });
      this.logger.info({ topic: this.options.topic, created }, "topic ensured");
    } catch (err) {
      this.logger.warn({ err, topic: this.options.topic }, "could not create the topic; relying on an existing or auto-created one");
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  async send(events: readonly OutboxEvent[]): Promise<SendOutcome> {
    const outcome: SendOutcome = { published: [], failed: [], unsent: [] };
    let groups: Map<number, OutboxEvent[]>;
    try {
      groups = await this.route(events);
    } catch (err) {
      return failAll(events, err);
    }
    await Promise.all(
      [...groups].map(async ([partition, group]) => {
        try {
          await this.produce(partition, group);
          outcome.published.push(...group);
        } catch (err) {
          // Metadata may be stale (partitions added, leader moved): refresh next time.
          this.partitionMetadata = undefined;
          const packages = byPackage(group);
          if (packages.length === 1 || isRetriable(err)) {
            const failed = failAll(group, err);
            outcome.failed.push(...failed.failed);
            outcome.unsent.push(...failed.unsent);
            return;
          }
          // The broker refused the request's records (e.g. one too large): the
          // whole request failed, but usually through one event's fault. Send
          // each package alone so that only the culprit is charged an attempt,
          // and the packages that shared its request are not dead-lettered with
          // it. (A rejected request appended nothing: no duplicates.)
          for (const events of packages) {
            try {
              await this.produce(partition, events);
              outcome.published.push(...events);
            } catch (alone) {
              const failed = failAll(events, alone);
              outcome.failed.push(...failed.failed);
              outcome.unsent.push(...failed.unsent);
            }
          }
        }
      }),
    );
    return outcome;
  }

  /** One partition's events as one request (acks=all). */
  private async produce(partition: number, events: readonly OutboxEvent[]): Promise<void> {
    await this.producer.send({
      topic: this.options.topic,
      acks: -1,
      timeout: this.options.requestTimeoutMs,
      messages: events.map((event) => ({ ...toEventMessage(event), partition })),
    });
  }

  async close(): Promise<void> {
    await this.producer.disconnect();
  }

  private connect(): Promise<void> {
    this.connected ??= this.producer.connect().catch((err: unknown) => {
      this.connected = undefined;
      throw err;
    });
    return this.connected;
  }

  async route(events: readonly OutboxEvent[]): Promise<Map<number, OutboxEvent[]>> {
    await this.connect();
    if (this.partitionMetadata === undefined) {
      const admin = this.kafka.admin();
      try {
        await admin.connect();
        const metadata = await admin.fetchTopicMetadata({ topics: [this.options.topic] });
        this.partitionMetadata = metadata.topics[0]!.partitions;
      } finally {
        await admin.disconnect().catch(() => undefined);
      }
    }
    const groups = new Map<number, OutboxEvent[]>();
    for (const event of events) {
      const partition = this.partitioner({
        topic: this.options.topic,
        partitionMetadata: this.partitionMetadata,
        message: { key: event.packageId.toString(), value: null },
      });
      const group = groups.get(partition) ?? [];
      group.push(event);
      groups.set(partition, group);
    }
    return groups;
  }
}

/** A partition's events split by package, each in event order, packages in order of their first event. */
function byPackage(events: readonly OutboxEvent[]): OutboxEvent[][] {
  const packages = new Map<bigint, OutboxEvent[]>();
  for (const event of events) {
    const list = packages.get(event.packageId) ?? [];
    list.push(event);
    packages.set(event.packageId, list);
  }
  return [...packages.values()];
}

/** A failed request, described by its error (see failAll in sender.ts). */
function failAll(events: readonly OutboxEvent[], err: unknown): SendOutcome {
  return failAllWith(events, describeError(err), isRetriable(err));
}

// Errors of the connection or the cluster's state, not of the event: kafkajs
// marks protocol errors retriable (NOT_LEADER, UNKNOWN_TOPIC_OR_PARTITION,
// REQUEST_TIMED_OUT, …) and wraps the last one when its own retries run out.
const retriableNames = new Set([
  "KafkaJSConnectionError",
  "KafkaJSConnectionClosedError",
  "KafkaJSRequestTimeoutError",
  "KafkaJSBrokerNotFound",
  "KafkaJSMetadataNotLoaded",
  "KafkaJSTopicMetadataNotLoaded",
  "KafkaJSStaleTopicMetadataAssignment",
  "KafkaJSLockTimeout",
  "KafkaJSTimeout",
]);

export function isRetriable(err: unknown): boolean {
  let current: unknown = err;
  for (let depth = 0; depth < 5 && current instanceof Error; depth++) {
    const e = current as Error & { retriable?: boolean; originalError?: unknown; errors?: unknown[] };
    if (retriableNames.has(e.name) || e.retriable === true) return true;
    current = e.originalError ?? e.cause ?? (Array.isArray(e.errors) ? e.errors[0] : undefined);
  }
  return false;
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const nested = (err as { errors?: unknown[] }).errors;
  const inner = Array.isArray(nested) && nested.length > 0 && nested[0] instanceof Error ? `: ${nested[0].message}` : "";
  return `${err.name}: ${err.message}${inner}`.slice(0, 2000);
}
