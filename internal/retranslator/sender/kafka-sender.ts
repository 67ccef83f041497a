import { type Kafka, Partitioners, type PartitionMetadata } from "kafkajs";
import { kafkaClient } from "../../kafka/client.js";
import type { KafkaClientSecurity } from "../../kafka/security.js";
import { ensureTopics } from "../../kafka/topics.js";
import type { Logger } from "../../logger/logger.js";
import type { OutboxEvent } from "../../outbox/types.js";
import { type EventMessage, toEventMessage } from "./event-message.js";
import { kafkajsProduceClient, type ProduceClient, type ProduceClientFactory } from "./produce-client.js";
import { isRetriable, isTooLarge } from "./produce-errors.js";
import { MAX_RETRY_TIME_MS } from "./send-budget.js";
import {
  failAll as failAllWith,
  type Sender,
  type SendOutcome,
  type SentOutcome,
  type SharedOutcome,
} from "./sender.js";

export interface KafkaSenderOptions {
  brokers: readonly string[];
  clientId: string;
  topic: string;
  partitions: number;
  replicationFactor: number;
  requestTimeoutMs: number;
  sendRetries: number;
  /** Largest request to one partition (bytes): a claim's events above it go out as several requests, in order. */
  maxRequestBytes: number;
  idempotent: boolean;
  /**
   * Partitions led by the same broker may share a request (sendTogether);
   * the caller turns this off with the idempotent producer.
   */
  sharedRequests: boolean;
  /** TLS and SASL, from kafkaClientSecurity(config.kafka). */
  security: KafkaClientSecurity;
  /**
   * The client that produces (kafka.producerClient, see produce-client.ts):
   * kafkajs when absent. Topic creation and metadata use kafkajs either way.
   */
  produceClients?: ProduceClientFactory;
}

/**
 * A producer (kafkajs by default; see produce-client.ts) with acks=all and one
 * in-flight request per connection, so that the client's own retries cannot
 * reorder a partition. A batch is split by
 * partition and each partition goes out as one request: a failure is then
 * known per partition, and only that partition's events are retried.
 */
export class KafkaSender implements Sender {
  private readonly kafka: Kafka;
  private readonly producer: ProduceClient;
  /**
   * Shared requests go through a producer of their own that never retries:
   * kafkajs retries a failed request whole, so a retry of a request whose one
   * partition failed would append the other partitions' events again (and
   * again), while they waited out that partition's retries. Failing at once
   * hands the request to the in-flight pool, which sends each partition alone
   * (with this producer's retries) and pauses sharing. Not idempotent: the
   * retranslator does not share requests when kafka.idempotent is on.
   */
  private readonly sharedProducer: ProduceClient | undefined;
  /** Present only with options.sharedRequests: the in-flight pool shares requests when it is. */
  readonly sendTogether?: (groups: ReadonlyMap<number, readonly OutboxEvent[]>) => Promise<SharedOutcome>;
  private readonly partitioner: ReturnType<typeof Partitioners.DefaultPartitioner>;
  private connected: Promise<void> | undefined;
  private partitionMetadata: PartitionMetadata[] | undefined;

  constructor(
    private readonly options: KafkaSenderOptions,
    private readonly logger: Logger,
  ) {
    this.kafka = kafkaClient(
      { ...options, retry: { retries: options.sendRetries, initialRetryTime: 100, maxRetryTime: MAX_RETRY_TIME_MS } },
      this.logger,
    );
    this.partitioner = Partitioners.DefaultPartitioner();
    const makeClient = options.produceClients ?? kafkajsProduceClient;
    this.producer = makeClient(this.kafka, options);
    if (options.sharedRequests) {
      const shared = makeClient(this.kafka, { ...options, retries: 0, idempotent: false });
      this.sharedProducer = shared;
      this.sendTogether = (groups) => this.sendShared(shared, groups);
    }
  }

  /** Creates the relay's topic where the cluster allows it (kafka/topics.ts). */
  async ensureTopic(): Promise<void> {
    await ensureTopics(
      this.kafka,
      [this.options.topic],
      {
        partitions: this.options.partitions,
        replicationFactor: this.options.replicationFactor,
        timeoutMs: this.options.requestTimeoutMs,
      },
      this.logger,
    );
  }

  async send(events: readonly OutboxEvent[], partition?: number): Promise<SentOutcome> {
    const outcome: SentOutcome = { published: [], failed: [], unsent: [], requests: { made: 0, failed: 0 } };
    let groups: Map<number, OutboxEvent[]>;
    try {
      groups = partition === undefined ? await this.route(events) : new Map([[partition, [...events]]]);
    } catch (err) {
      // No partition metadata: no request was made.
      return { ...failAll(events, err), requests: { made: 0, failed: 0 } };
    }
    await Promise.all([...groups].map(([partition, group]) => this.sendPartition(partition, group, outcome)));
    return outcome;
  }

  /**
   * One partition's events as requests that fit kafka.maxRequestBytes, sent
   * one after another in claim order, each after the previous one's ack. A
   * retriable failure stops the partition (the rest goes back unsent); a
   * request the broker refuses as too large is split in halves instead of
   * charging an event; an event that alone exceeds the limit is dead-lettered
   * at once (it can never be sent). After any failure of a package, its later
   * events are not sent ahead of it.
   */
  private async sendPartition(partition: number, events: readonly OutboxEvent[], outcome: SentOutcome): Promise<void> {
    const run: PartitionRun = { partition, outcome, blocked: new Set() };
    const sized: Sized[] = [];
    for (const event of events) {
      if (run.blocked.has(event.packageId)) {
        outcome.unsent.push(event);
        continue;
      }
      const message = toEventMessage(event, partition);
      const bytes = messageBytes(message);
      if (bytes > this.options.maxRequestBytes) {
        run.blocked.add(event.packageId);
        outcome.failed.push({
          event,
          error: `event of ${bytes} bytes is larger than kafka.maxRequestBytes (${this.options.maxRequestBytes}): it can never be sent`,
          retriable: false,
          deadLetter: true,
        });
        continue;
      }
      sized.push({ event, message, bytes });
    }
    const requests = splitBySize(sized, this.options.maxRequestBytes);
    for (let i = 0; i < requests.length; i++) {
      if (!(await this.sendRequest(run, requests[i]!))) {
        for (const rest of requests.slice(i + 1)) outcome.unsent.push(...rest.map((s) => s.event));
        return;
      }
    }
  }

  /** Sends one request; false when the partition failed (retriable) and nothing more should go to it now. */
  private async sendRequest(run: PartitionRun, request: readonly Sized[]): Promise<boolean> {
    const { outcome } = run;
    const sendable = request.filter((s) => !run.blocked.has(s.event.packageId));
    for (const s of request) if (run.blocked.has(s.event.packageId)) outcome.unsent.push(s.event);
    if (sendable.length === 0) return true;
    try {
      await this.producer.ready();
    } catch (err) {
      // No producer to send with (the idempotent client's new one cannot connect):
      // nothing was handed to the broker, so retriable whatever the error.
      this.partitionMetadata = undefined;
      this.fail(run, sendable, err, true);
      return false;
    }
    // Fencing, again before each request of a send that takes several: none
    // starts once an event in it is past its sendBy (its lease could run out
    // mid-request). It and the rest of the partition go back unsent.
    const now = Date.now();
    if (sendable.some((s) => s.event.sendBy !== undefined && s.event.sendBy < now)) {
      outcome.unsent.push(...sendable.map((s) => s.event));
      return false;
    }
    try {
      await this.produce(run, sendable);
      outcome.published.push(...sendable.map((s) => s.event));
      return true;
    } catch (err) {
      // Metadata may be stale (partitions added, leader moved): refresh next time.
      this.partitionMetadata = undefined;
      if (isRetriable(err)) {
        this.fail(run, sendable, err);
        return false;
      }
      if (isTooLarge(err) && sendable.length > 1) {
        // The broker's limit is below ours (or our estimate was short): halve
        // the request rather than blame an event. A refused request appended nothing.
        const half = Math.ceil(sendable.length / 2);
        if (!(await this.sendRequest(run, sendable.slice(0, half)))) {
          outcome.unsent.push(...sendable.slice(half).map((s) => s.event));
          return false;
        }
        return this.sendRequest(run, sendable.slice(half));
      }
      const packages = byPackage(sendable);
      if (packages.length === 1) {
        this.fail(run, sendable, err);
        return true;
      }
      // The broker refused the request's records (e.g. one invalid): the
      // whole request failed, but usually through one event's fault. Send
      // each package alone so that only the culprit is charged an attempt,
      // and the packages that shared its request are not dead-lettered with
      // it. (A rejected request appended nothing: no duplicates.)
      for (const alone of packages) {
        if (alone.some((s) => s.event.sendBy !== undefined && s.event.sendBy < Date.now())) {
          for (const rest of packages.slice(packages.indexOf(alone))) outcome.unsent.push(...rest.map((s) => s.event));
          return false;
        }
        try {
          await this.produce(run, alone);
          outcome.published.push(...alone.map((s) => s.event));
        } catch (aloneErr) {
          if (isRetriable(aloneErr)) {
            this.fail(run, alone, aloneErr);
            for (const rest of packages.slice(packages.indexOf(alone) + 1))
              outcome.unsent.push(...rest.map((s) => s.event));
            return false;
          }
          this.fail(run, alone, aloneErr);
        }
      }
      return true;
    }
  }

  /**
   * Partitions that share a leader go out as one request (the client makes
   * one Produce request per broker): under a steady trickle the relay's
   * partitions each hold an event or two, and a request per partition would
   * cost a round trip and a request's encoding each. Only partitions whose
   * events fit one request, whose leader is known and whose events are all
   * within their lease take part; the others, and every partition of a
   * failed request, are left to `send` alone (see Sender.sendTogether).
   */
  private async sendShared(
    producer: ProduceClient,
    groups: ReadonlyMap<number, readonly OutboxEvent[]>,
  ): Promise<SharedOutcome> {
    const outcome: SharedOutcome = { published: new Map(), requests: 0, failedRequests: 0 };
    const leaders = new Map((this.partitionMetadata ?? []).map((p) => [p.partitionId, p.leader]));
    const byLeader = new Map<
      number,
      { partition: number; events: readonly OutboxEvent[]; messages: EventMessage[] }[]
    >();
    const now = Date.now();
    for (const [partition, events] of groups) {
      const leader = leaders.get(partition);
      if (leader === undefined || leader < 0) continue;
      if (events.some((e) => e.sendBy !== undefined && e.sendBy < now)) continue;
      const messages = events.map((event) => toEventMessage(event, partition));
      const bytes = messages.reduce((sum, m) => sum + messageBytes(m), REQUEST_OVERHEAD_BYTES);
      if (bytes > this.options.maxRequestBytes) continue;
      const parts = byLeader.get(leader) ?? [];
      parts.push({ partition, events, messages });
      byLeader.set(leader, parts);
    }
    await Promise.all(
      [...byLeader.values()].map(async (parts) => {
        outcome.requests += 1;
        try {
          await producer.produce(
            this.options.topic,
            parts.flatMap(({ messages }) => messages),
            this.options.requestTimeoutMs,
          );
          for (const { partition, events } of parts) outcome.published.set(partition, [...events]);
        } catch (err) {
          // Which partition failed, and whether the broker appended the
          // others, is unknown: the caller sends each alone, which tells.
          outcome.failedRequests += 1;
          this.partitionMetadata = undefined;
          // Worth a warning: the partitions are sent again, which may duplicate what the broker appended.
          this.logger.warn(
            { err, partitions: parts.map((p) => p.partition) },
            "request shared by several partitions failed; sending each partition again alone",
          );
        }
      }),
    );
    return outcome;
  }

  /** Records a failed request and blocks its packages for the rest of this send. */
  private fail(run: PartitionRun, request: readonly Sized[], err: unknown, retriable = isRetriable(err)): void {
    const events = request.map((s) => s.event);
    const failed = failAllWith(events, describeError(err), retriable);
    // A single event the broker refuses as too large will never be accepted: dead-letter it now.
    if (request.length === 1 && isTooLarge(err)) for (const f of failed.failed) f.deadLetter = true;
    run.outcome.failed.push(...failed.failed);
    run.outcome.unsent.push(...failed.unsent);
    for (const event of events) run.blocked.add(event.packageId);
  }

  /** One request to one partition (acks=all), counted in the send's outcome. */
  private async produce(run: PartitionRun, request: readonly Sized[]): Promise<void> {
    const counted = run.outcome.requests;
    counted.made += 1;
    try {
      // Made for this partition (sendPartition): the messages name run.partition.
      await this.producer.produce(
        this.options.topic,
        request.map((s) => s.message),
        this.options.requestTimeoutMs,
      );
    } catch (err) {
      counted.failed += 1;
      throw err;
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.producer.close(), this.sharedProducer?.close()]);
  }

  private connect(): Promise<void> {
    this.connected ??= Promise.all([this.producer.connect(), this.sharedProducer?.connect()]).then(
      () => undefined,
      (err: unknown) => {
        this.connected = undefined;
        throw err;
      },
    );
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
    // A claim holds runs of a package's events: its partition is hashed once per call.
    const partitionOf = new Map<bigint, number>();
    for (const event of events) {
      let partition = partitionOf.get(event.packageId);
      if (partition === undefined) {
        partition = this.partitioner({
          topic: this.options.topic,
          partitionMetadata: this.partitionMetadata,
          message: { key: event.packageId.toString(), value: null },
        });
        partitionOf.set(event.packageId, partition);
      }
      const group = groups.get(partition);
      if (group === undefined) groups.set(partition, [event]);
      else group.push(event);
    }
    return groups;
  }
}

interface Sized {
  event: OutboxEvent;
  message: EventMessage;
  bytes: number;
}

interface PartitionRun {
  partition: number;
  outcome: SentOutcome;
  /** Packages with a failed event in this send: their later events stay unsent. */
  blocked: Set<bigint>;
}

/**
 * An upper estimate of a message's size in a record batch: key, value,
 * headers, and per-record and per-header framing (varints, attributes,
 * offset and timestamp deltas), generously.
 */
export function messageBytes(message: EventMessage): number {
  let bytes = 32 + Buffer.byteLength(message.key) + message.value.length;
  for (const [k, v] of Object.entries(message.headers)) bytes += 10 + Buffer.byteLength(k) + Buffer.byteLength(v);
  return bytes;
}

/** Record batch header and request framing around the records. */
const REQUEST_OVERHEAD_BYTES = 256;

/** Consecutive runs of messages whose sizes add up to at most `maxBytes` (with the request's overhead). */
function splitBySize(messages: readonly Sized[], maxBytes: number): Sized[][] {
  const requests: Sized[][] = [];
  let current: Sized[] = [];
  let size = REQUEST_OVERHEAD_BYTES;
  for (const m of messages) {
    if (current.length > 0 && size + m.bytes > maxBytes) {
      requests.push(current);
      current = [];
      size = REQUEST_OVERHEAD_BYTES;
    }
    current.push(m);
    size += m.bytes;
  }
  if (current.length > 0) requests.push(current);
  return requests;
}

/** A request's messages split by package, each in event order, packages in order of their first event. */
function byPackage(messages: readonly Sized[]): Sized[][] {
  const packages = new Map<bigint, Sized[]>();
  for (const m of messages) {
    const list = packages.get(m.event.packageId) ?? [];
    list.push(m);
    packages.set(m.event.packageId, list);
  }
  return [...packages.values()];
}

/** A failed request, described by its error (see failAll in sender.ts). */
function failAll(events: readonly OutboxEvent[], err: unknown): SendOutcome {
  return failAllWith(events, describeError(err), isRetriable(err));
}

function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const nested = (err as { errors?: unknown[] }).errors;
  const inner =
    Array.isArray(nested) && nested.length > 0 && nested[0] instanceof Error ? `: ${nested[0].message}` : "";
  return `${err.name}: ${err.message}${inner}`.slice(0, 2000);
}
