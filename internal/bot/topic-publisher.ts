import type { Kafka, Producer } from "kafkajs";
import { kafkaClient } from "../kafka/client.js";
import type { KafkaClientSecurity } from "../kafka/security.js";
import { ensureTopics } from "../kafka/topics.js";
import { failureBackoffMs, sleep } from "../lifecycle/abortable.js";
import { Wakeup } from "../lifecycle/wakeup.js";
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
  private readonly queued = new Wakeup();
  private connected = false;
  // One warning per outage (the metrics count every attempt), not one per message.
  private failing = false;

  constructor(
    private readonly options: TopicPublisherOptions,
    private readonly metrics: BotMetrics,
    private readonly logger: Logger,
  ) {
    // Our loop retries with backoff and counts each attempt: kafkajs' own retries would
    // hide the attempts and hold the loop longer. Every failure reaches send() as an
    // error and is logged there, once per outage: kafkajs logs nothing (null).
    this.kafka = kafkaClient({ ...options, retry: { retries: 0 } }, null);
    this.producer = this.kafka.producer({ allowAutoTopicCreation: true });
    for (const topic of options.topics) this.metrics.queued.set({ topic }, 0);
  }

  /** Creates the bot's topics where the cluster allows it, as the retranslator does with its own. */
  async ensureTopics(): Promise<void> {
    await ensureTopics(
      this.kafka,
      this.options.topics,
      {
        partitions: this.options.partitions,
        replicationFactor: this.options.replicationFactor,
        timeoutMs: this.options.requestTimeoutMs,
      },
      this.logger,
    );
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
    this.queued.wake();
  }

  /**
   * Sends until `signal` aborts, then makes one last attempt at what is queued
   * (bounded by the request timeout) and disconnects. One owner awaits it.
   */
  async run(signal: AbortSignal): Promise<void> {
    while (!signal.aborted) {
      if (this.queue.length === 0) {
        await this.queued.sleep(undefined, signal);
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
    await this.producer
      .disconnect()
      .catch((err: unknown) => this.logger.warn({ err }, "bot producer disconnect failed"));
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
        // The connection is broken already: its disconnect error would say nothing the warning above did not.
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
