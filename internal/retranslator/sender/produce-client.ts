import { type Kafka, Partitioners } from "kafkajs";
import { ConfigError } from "../../config/config.js";
import { connectionTimeoutMs } from "../../kafka/client.js";
import type { EventMessage } from "./event-message.js";
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
  const producer = kafka.producer({
    maxInFlightRequests: 1,
    idempotent: options.idempotent,
    allowAutoTopicCreation: true,
    createPartitioner: Partitioners.DefaultPartitioner,
    ...(options.retries !== undefined && { retry: { retries: options.retries } }),
  });
  return {
    connect: () => producer.connect(),
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
/**
 * The leader check refreshes that cache from this age on and sends only on a cache younger
 * than it: a second below what send() accepts, so that send() reads the checked cache.
 */
const CHECKED_MAX_AGE_MS = PLATFORMATIC_METADATA_MAX_AGE_MS - 1000;

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
  /**
   * Brings the client's cached metadata of `topic` to at most CHECKED_MAX_AGE_MS of age
   * (anew when a send or check asked for it), so that the send that follows reads it.
   */
  const freshMetadata = async (topic: string): Promise<void> => {
    const forceUpdate = refreshBeforeNextSend;
    refreshBeforeNextSend = false;
    try {
      await producer.metadata({ topics: [topic], metadataMaxAge: CHECKED_MAX_AGE_MS, forceUpdate });
    } catch (err) {
      refreshBeforeNextSend ||= forceUpdate;
      throw err;
    }
  };
  // Set by a failed send or check: the next check fetches the client's metadata anew,
  // rather than trust a cached leader for up to its age. The cache is never cleared: a
  // send between another's clear and its refetch would fetch metadata of its own (below).
  let refreshBeforeNextSend = false;
  return {
    // The client connects on its first request.
    connect: async () => undefined,
    // Its request timeout is the producer's own (kafka.requestTimeoutMs, as the sender passes).
    produce: async (topic, messages) => {
      await freshMetadata(topic);
      // 1.35.0 looks each partition's leader up in its cached metadata and, where there is
      // none (leader -1, a broker restarting), reads the host of an undefined broker: a
      // TypeError, thrown out of send() when the cache served it (the relay would charge the
      // events an attempt) and out of a socket callback when send() had to fetch metadata
      // itself (the process dies; upstream platformatic/kafka#69). A partition beyond its
      // count it takes modulo that count, to another partition. So the leaders are checked
      // here, in the live cache, in the same tick as send()'s own look-up (no await between
      // them, and no hooks configured that would add one), and only while that cache is
      // fresh enough that send() will read it rather than fetch.
      const cache = producer.currentMetadata;
      const cached = cache?.topics.get(topic);
      if (cache === undefined || cached === undefined || cached.lastUpdate < Date.now() - CHECKED_MAX_AGE_MS) {
        refreshBeforeNextSend = true;
        throw new PartitionNotReadyError(
          topic,
          messages[0]?.partition ?? -1,
          "the client's metadata of the topic is missing or too old (being refreshed)",
        );
      }
      for (const m of messages) {
        if (m.partition === undefined) continue;
        if (m.partition >= cached.partitionsCount) {
          refreshBeforeNextSend = true;
          throw new PartitionNotReadyError(
            topic,
            m.partition,
            `the client knows ${cached.partitionsCount} partitions of the topic`,
          );
        }
        const leader = cached.partitions[m.partition]?.leader;
        if (leader === undefined || !cache.brokers.has(leader)) {
          refreshBeforeNextSend = true;
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
            ...(m.partition !== undefined && { partition: m.partition }),
          })),
        });
      } catch (err) {
        // With repeatOnStaleMetadata off, a moved leader stays cached until the cache's
        // age runs out: read it again before the next send, as KafkaSender does with its own.
        refreshBeforeNextSend = true;
        throw err;
      }
    },
    close: () => producer.close(),
  };
}
