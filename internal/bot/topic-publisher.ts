import { type Admin, Kafka, logLevel, type Producer } from "kafkajs";
import type { KafkaClientSecurity } from "../kafka/security.js";
import { failureBackoffMs, sleep } from "../lifecycle/abortable.js";
import type { Logger } from "../logger/logger.js";
import type { BotMetrics } from "./metrics.js";

export interface TopicPublisherOptions {
  brokers: readonly string[];
  clientId: string;
  /** Topics this publisher writes; created at start where the cluster allows it. */
  topics: readonly string[];
  partitions: number;
  replicationFactor: number;
  requestTimeoutMs: number;
  /** Messages waiting, all topics together; when full the oldest is dropped. */
  queueSize: number;
  /** Attempts after the first for one batch before its messages are dropped. */
  sendRetries: number;
  security: KafkaClientSecurity;
}

interface Pending {
  topic: string;
  key: string;
  value: string;
}

// One request carries at most this many messages; the rest waits for the next.
const maxBatch = 200;

/**
 * Fire-and-forget publishing for the bot's own topics: publish() only appends to a
 * bounded queue and returns, so a slow or absent broker never holds a command.
 * One loop (run) sends what is queued, retrying a failed batch a few times with
 * backoff; a full queue drops its oldest message, a batch that keeps failing is
 * dropped, and both are counted per topic.
 */
export class TopicPublisher {
  private readonly kafka: Kafka;
  private readonly producer: Producer;
  private readonly queue: Pending[] = [];
  private wake: (() => void) | undefined;
  private connected = false;
  // One warning per outage (the metrics count every attempt), not one per message.
  private failing = false;

  constructor(
    private readonly options: TopicPublisherOptions,
    private readonly metrics: BotMetrics,
    private readonly logger: Logger,
  ) {
    this.kafka = new Kafka({
      ...options.security,
      clientId: options.clientId,
      brokers: [...options.brokers],
      requestTimeout: options.requestTimeoutMs,
      connectionTimeout: Math.min(options.requestTimeoutMs, 3000),
      // Our loop retries with backoff and counts each attempt; kafkajs' own retries
      // would hide the attempts and hold the loop longer.
      retry: { retries: 0 },
      // Every failure reaches send() as an error and is logged there, once per outage.
      logLevel: logLevel.NOTHING,
    });
    this.producer = this.kafka.producer({ allowAutoTopicCreation: true });
    for (const topic of options.topics) this.metrics.queued.set({ topic }, 0);
  }

  /**
   * Creates the topics where the cluster allows it; an existing topic, or a cluster
   * that refuses (no rights, a test broker without a controller), is logged and left
   * to auto-creation or the operator, as the retranslator does with its topic.
   */
  async ensureTopics(): Promise<void> {
    const admin: Admin = this.kafka.admin();
    try {
      await admin.connect();
      const created = await admin.createTopics({
        topics: this.options.topics.map((topic) => ({
          topic,
          numPartitions: this.options.partitions,
          replicationFactor: this.options.replicationFactor,
        })),
        waitForLeaders: true,
        timeout: this.options.requestTimeoutMs,
      });
      this.logger.info({ topics: this.options.topics, created }, "bot topics ensured");
    } catch (err) {
      this.logger.warn(
        { err, topics: this.options.topics },
        "could not create the bot's topics; relying on existing or auto-created ones",
      );
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
  }

  /** Queues one message; never waits, never throws. */
  publish(topic: string, key: string, value: string): void {
    if (this.queue.length >= this.options.queueSize) {
      const dropped = this.queue.shift()!;
      this.metrics.queued.dec({ topic: dropped.topic });
      this.metrics.dropped.inc({ topic: dropped.topic, reason: "queue_full" });
    }
    this.queue.push({ topic, key, value });
    this.metrics.queued.inc({ topic });
    this.wake?.();
  }

  /**
   * Sends until `signal` aborts, then makes one last attempt at what is queued
   * (bounded by the request timeout) and disconnects. One owner awaits it.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (this.queue.length === 0) {
        await new Promise<void>((resolve) => {
          const done = () => {
            signal.removeEventListener("abort", done);
            this.wake = undefined;
            resolve();
          };
          this.wake = done;
          signal.addEventListener("abort", done, { once: true });
        });
        continue;
      }
      const batch = this.take();
      for (let attempt = 0; ; attempt++) {
        if (await this.send(batch)) break;
        if (attempt >= this.options.sendRetries || signal.aborted) {
          this.drop(batch, "retries");
          break;
        }
        await sleep(failureBackoffMs(attempt + 1), signal);
      }
    }
    // Shutdown: one attempt for what is left, so the last commands are not lost to a stop.
    while (this.queue.length > 0) {
      const batch = this.take();
      if (!(await this.send(batch))) {
        this.drop(batch, "retries");
        this.drop(this.take(this.queue.length), "retries");
      }
    }
    await this.producer.disconnect().catch(() => undefined);
  }

  private take(count = maxBatch): Pending[] {
    const batch = this.queue.splice(0, count);
    for (const m of batch) this.metrics.queued.dec({ topic: m.topic });
    return batch;
  }

  private drop(batch: readonly Pending[], reason: "retries"): void {
    for (const m of batch) this.metrics.dropped.inc({ topic: m.topic, reason });
  }

  private async send(batch: readonly Pending[]): Promise<boolean> {
    const byTopic = new Map<string, { key: string; value: string }[]>();
    for (const m of batch) {
      const list = byTopic.get(m.topic) ?? [];
      list.push({ key: m.key, value: m.value });
      byTopic.set(m.topic, list);
    }
    try {
      if (!this.connected) {
        await this.producer.connect();
        this.connected = true;
      }
      await this.producer.sendBatch({
        acks: -1,
        timeout: this.options.requestTimeoutMs,
        topicMessages: [...byTopic].map(([topic, messages]) => ({ topic, messages })),
      });
      for (const [topic, messages] of byTopic) this.metrics.published.inc({ topic }, messages.length);
      if (this.failing) {
        this.failing = false;
        this.logger.info("bot publishing works again");
      }
      return true;
    } catch (err) {
      for (const topic of byTopic.keys()) this.metrics.publishFailures.inc({ topic });
      if (!this.failing) {
        this.failing = true;
        this.logger.warn(
          {
            err: { name: (err as Error).name, message: (err as Error).message },
            topics: [...byTopic.keys()],
            sendRetries: this.options.sendRetries,
          },
          "bot publish failed: messages are retried, then dropped (logistic_package_api_bot_messages_dropped_total); commands are answered meanwhile",
        );
      }
      if (this.connected && isConnectionError(err)) {
        this.connected = false;
        await this.producer.disconnect().catch(() => undefined);
      }
      return false;
    }
  }
}

function isConnectionError(err: unknown): boolean {
  const name = (err as Error | undefined)?.name ?? "";
  return (
    name === "KafkaJSConnectionError" ||
    name === "KafkaJSNonRetriableError" ||
    name === "KafkaJSNumberOfRetriesExceeded"
  );
}
