import { type Kafka, Partitioners } from "kafkajs";
import { ConfigError } from "../../config/config.js";
import { connectionTimeoutMs } from "../../kafka/client.js";
import type { EventMessage } from "./event-message.js";
import { renewingIdempotentClient } from "./idempotent-producer.js";
import { MAX_RETRY_TIME_MS } from "./send-budget.js";

/**
 * The Kafka client under KafkaSender: the one thing that differs between
 * kafkajs and @platformatic/kafka. Everything around it (routing, metadata,
 * request sizes, fencing, which failure charges which event) stays in
 * KafkaSender, so that both clients are measured behind the same Sender.
 */
export interface ProduceClient {
  connect(): Promise<void>;
  /**
   * Resolves once a send can start without connecting a producer first: only
   * the idempotent client, which replaces its producer after a failure
   * (idempotent-producer.ts), may have one connecting. The sender awaits it
   * before its lease check, so that a send's time stays its requests'.
   */
  ready(): Promise<void>;
  /**
   * One topic's messages, each naming its partition (routed by the caller),
   * acks=all: one Produce request per leader broker. Rejects when any request
   * failed, after the client's own retries.
   */
  produce(topic: string, messages: readonly EventMessage[], timeoutMs: number): Promise<void>;
  close(): Promise<void>;
}

export type ProducerClientName = "kafkajs" | "platformatic";

export interface ProduceClientOptions {
  brokers: readonly string[];
  clientId: string;
  requestTimeoutMs: number;
  /** kafka.sendRetries: the client's own retries of a retriable failure inside one produce. */
  sendRetries: number;
  /** Instead of sendRetries (the client of shared requests never retries: 0). */
  retries?: number;
  idempotent: boolean;
}

/**
 * kafkajs (the default): one request in flight per connection, so that its
 * own retries cannot reorder a partition; `kafka` carries the brokers, TLS,
 * SASL and the retry policy built from sendRetries (kafka/client.ts).
 */
export function kafkajsProduceClient(kafka: Kafka, options: ProduceClientOptions): ProduceClient {
  const makeProducer = () =>
    kafka.producer({
      maxInFlightRequests: 1,
      idempotent: options.idempotent,
      allowAutoTopicCreation: true,
      createPartitioner: Partitioners.DefaultPartitioner,
      ...(options.retries !== undefined && { retry: { retries: options.retries } }),
    });
  if (options.idempotent)
    return renewingIdempotentClient(makeProducer, (message, err) =>
      kafka.logger().warn(message, { error: String(err) }),
    );
  const producer = makeProducer();
  return {
    connect: () => producer.connect(),
    ready: async () => {},
    produce: async (topic, messages, timeoutMs) => {
      await producer.send({ topic, acks: -1, timeout: timeoutMs, messages: [...messages] });
    },
    close: () => producer.disconnect(),
  };
}

/** Makes the ProduceClient of a KafkaSender: kafkajs' from the sender's kafkajs client, or another. */
export type ProduceClientFactory = (kafka: Kafka, options: ProduceClientOptions) => ProduceClient;

/**
 * The factory for kafka.producerClient, loaded at start-up: @platformatic/kafka
 * is a development dependency (the bench's), absent from the production image,
 * so choosing it there stops the start with this error rather than failing
 * every send.
 */
export async function produceClientFactory(name: ProducerClientName): Promise<ProduceClientFactory> {
  if (name === "kafkajs") return kafkajsProduceClient;
  let platformatic: typeof import("@platformatic/kafka");
  try {
    platformatic = await import("@platformatic/kafka");
  } catch (err) {
    throw new ConfigError(
      `config key "kafka.producerClient": platformatic needs @platformatic/kafka, a development dependency (npm ci in a checkout); the production image has only kafkajs (${err instanceof Error ? err.message : String(err)})`,
    );
  }
  return (_kafka, options) => platformaticProduceClient(platformatic, options);
}

/**
 * A partition @platformatic/kafka cannot send to now: its cached metadata
 * names no leader for it (a broker restarting) or does not know it yet.
 * Retriable, as kafkajs' errors for the same states are.
 */
export class PartitionNotReadyError extends Error {
  override readonly name = "PartitionNotReadyError";
  readonly retriable = true;
  constructor(topic: string, partition: number, why: string) {
    super(`partition ${topic}/${partition} cannot be sent to now: ${why}`);
  }
}

/** How long @platformatic/kafka's send() trusts its cached metadata (the client's default). */
const PLATFORMATIC_METADATA_MAX_AGE_MS = 5000;
/** The leader check sends only on a cache younger than this: send() then reads that cache. */
const CHECKED_MAX_AGE_MS = PLATFORMATIC_METADATA_MAX_AGE_MS - 1000;
/**
 * The check refreshes the cache from this age on: a second earlier still, so that a cache
 * served just below the refresh age has not passed CHECKED_MAX_AGE_MS by the time it is
 * checked, after the other sends started in the same turn ran.
 */
const REFRESH_AGE_MS = CHECKED_MAX_AGE_MS - 1000;

/**
 * @platformatic/kafka, measured against kafkajs in the bench (docs/relay.md,
 * "Another Kafka client"). Plaintext only and not idempotent (config validation
 * refuses the rest). The fault tests run it on the mock's "next" build: the
 * stock test broker refuses this client at its first request.
 */
function platformaticProduceClient(
  { Producer, ProduceAcks, stringSerializer }: typeof import("@platformatic/kafka"),
  options: ProduceClientOptions,
): ProduceClient {
  const producer = new Producer({
    metadataMaxAge: PLATFORMATIC_METADATA_MAX_AGE_MS,
    clientId: options.clientId,
    bootstrapBrokers: [...options.brokers],
    idempotent: false,
    autocreateTopics: false,
    // One request in flight per connection, as with kafkajs: a retry cannot overtake.
    maxInflights: 1,
    timeout: options.requestTimeoutMs,
    connectTimeout: connectionTimeoutMs(options.requestTimeoutMs),
    retries: options.retries ?? options.sendRetries,
    retryDelay: MAX_RETRY_TIME_MS,
    // Otherwise a request that meets a moved leader is sent again whole once more, retries 0
    // or not: the shared requests' client must fail at once (see KafkaSender.sharedProducer).
    repeatOnStaleMetadata: false,
    serializers: {
      key: stringSerializer,
      value: (v?: Buffer) => v,
      headerKey: stringSerializer,
      headerValue: stringSerializer,
    },
  });
  // When a send or check last failed: metadata cached before then may name a leader that
  // moved, so every send fetches anew until the cache is younger (the client's own
  // deduplication makes concurrent sends share one fetch). The adapter never clears the
  // cache: a send between a clear and the refetch would fetch metadata of its own (below).
  let staleBefore = 0;
  /**
   * The client's live cache of `topic`, fetched first when it is older than REFRESH_AGE_MS
   * or than the last failure; undefined when it is still not fresh enough to check.
   */
  const checkableMetadata = async (topic: string) => {
    for (let attempt = 0; attempt < 2; attempt++) {
      const before = producer.currentMetadata?.topics.get(topic)?.lastUpdate;
      await producer.metadata({
        topics: [topic],
        metadataMaxAge: REFRESH_AGE_MS,
        forceUpdate: before === undefined || before <= staleBefore,
      });
      const cache = producer.currentMetadata;
      const cached = cache?.topics.get(topic);
      if (cache && cached && cached.lastUpdate > staleBefore && cached.lastUpdate >= Date.now() - CHECKED_MAX_AGE_MS)
        return { brokers: cache.brokers, topic: cached };
    }
    return undefined;
  };
  return {
    // The client connects on its first request.
    connect: async () => undefined,
    ready: async () => {},
    // Its request timeout is the producer's own (kafka.requestTimeoutMs, as the sender passes).
    produce: async (topic, messages) => {
      const metadata = await checkableMetadata(topic);
      // 1.35.0 looks each partition's leader up in its cached metadata and, where there is
      // none (leader -1, a broker restarting), reads the host of an undefined broker: a
      // TypeError, thrown out of send() when the cache served it (the relay would charge the
      // events an attempt) and out of a socket callback when send() had to fetch metadata
      // itself (the process dies; upstream platformatic/kafka#69). A partition beyond its
      // count it takes modulo that count, to another partition. So the leaders are checked
      // here, in the live cache, in the same tick as send()'s own look-up (no await between
      // them, and no hooks configured that would add one), and only while that cache is
      // fresh enough that send() will read it rather than fetch.
      if (metadata === undefined) {
        staleBefore = Date.now();
        throw new PartitionNotReadyError(
          topic,
          messages[0]?.partition ?? -1,
          "the client's metadata of the topic stayed missing or too old to check",
        );
      }
      for (const m of messages) {
        // The relay routes every message; without a partition the client would pick one, unchecked.
        if (m.partition === undefined) throw new Error("@platformatic/kafka adapter: a message without a partition");
        if (m.partition >= metadata.topic.partitionsCount) {
          staleBefore = Date.now();
          throw new PartitionNotReadyError(
            topic,
            m.partition,
            `the client knows ${metadata.topic.partitionsCount} partitions of the topic`,
          );
        }
        const leader = metadata.topic.partitions[m.partition]?.leader;
        if (leader === undefined || !metadata.brokers.has(leader)) {
          staleBefore = Date.now();
          throw new PartitionNotReadyError(topic, m.partition, `no leader the client knows (leader ${leader})`);
        }
      }
      try {
        // acks on each send: without idempotence, send() asks for the leader's ack
        // alone whatever the constructor was given (1.35.0).
        await producer.send({
          acks: ProduceAcks.ALL,
          messages: messages.map((m) => ({
            topic,
            key: m.key,
            value: m.value,
            headers: m.headers,
            partition: m.partition,
          })),
        });
      } catch (err) {
        // With repeatOnStaleMetadata off, a moved leader stays cached until the cache's
        // age runs out: fetch it again before the next sends, as KafkaSender does with its own.
        staleBefore = Date.now();
        throw err;
      }
    },
    close: () => producer.close(),
  };
}
