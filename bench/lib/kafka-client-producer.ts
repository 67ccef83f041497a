// One Kafka client producing the relay's messages, alone in its process so that its CPU is its own
// (bench/kafka-clients-suite.ts): `node --import tsx bench/lib/kafka-client-producer.ts
// kafkajs|platformatic BOOTSTRAP TOPIC WARMUP MEASURED`. Prints one JSON line.
import { ProduceAcks, Producer, stringSerializer } from "@platformatic/kafka";
import { Kafka, logLevel } from "kafkajs";
import type { OutboxEvent } from "../../internal/outbox/types.js";
import { type EventMessage, toEventMessage } from "../../internal/retranslator/sender/event-message.js";

export const PARTITIONS = 32;
export const BATCH = 500;
const PACKAGES = 1000;

/** The i-th message (0-based): an Updated event of package i % 1000 + 1, as the relay makes it, on partition package % 32. */
export function benchMessage(i: number): Message {
  const packageId = BigInt((i % PACKAGES) + 1);
  const event: OutboxEvent = {
    id: BigInt(i + 1),
    packageId,
    type: "Updated",
    // The shape package_event_payload gives an updated package (about 190 bytes).
    payload: JSON.stringify({
      ID: packageId.toString(),
      Title: `package ${packageId}`,
      Created: "2026-11-30T09:15:27.123456Z",
      Removed: false,
      Updated: { Time: "2026-12-01T10:00:00.654321Z" },
      Material: "corrugated cardboard",
      Reusable: true,
      MaximumVolume: 12.5,
    }),
    created: new Date(1_764_547_200_000 + i),
    traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    tracestate: null,
    attempts: 1,
    lease: "",
  };
  const partition = Number(packageId) % PARTITIONS;
  return { ...toEventMessage(event, partition), partition };
}

type Message = EventMessage & { partition: number };

/** A client: `prepare` puts messages in its own shape (outside the clock), `send` sends one prepared request. */
interface ClientProducer<T> {
  prepare(messages: Message[]): T;
  send(request: T): Promise<void>;
  close(): Promise<void>;
}

async function kafkajsProducer(bootstrap: string, topic: string): Promise<ClientProducer<Message[]>> {
  // As the relay's main producer (KafkaSender): one request in flight, not idempotent, acks=all.
  const kafka = new Kafka({ clientId: "bench-kafkajs", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ maxInFlightRequests: 1, idempotent: false, allowAutoTopicCreation: false });
  await producer.connect();
  return {
    prepare: (messages) => messages,
    send: async (messages) => {
      await producer.send({ topic, acks: -1, messages });
    },
    close: () => producer.disconnect(),
  };
}

interface PlatformaticMessage {
  topic: string;
  key: string;
  value: Buffer;
  partition: number;
  headers: Record<string, string>;
}

async function platformaticProducer(bootstrap: string, topic: string): Promise<ClientProducer<PlatformaticMessage[]>> {
  const producer = new Producer({
    clientId: "bench-platformatic",
    bootstrapBrokers: [bootstrap],
    idempotent: false,
    autocreateTopics: false,
    serializers: {
      key: stringSerializer,
      value: (v?: Buffer) => v,
      headerKey: stringSerializer,
      headerValue: stringSerializer,
    },
  });
  return {
    prepare: (messages) =>
      messages.map((m) => ({ topic, key: m.key, value: m.value, partition: m.partition, headers: m.headers })),
    send: async (messages) => {
      // acks on each send: without idempotence, send() asks for the leader's ack alone whatever
      // the constructor was given (1.35.0).
      await producer.send({ acks: ProduceAcks.ALL, messages });
    },
    close: () => producer.close(),
  };
}

/** Warm-up, then the measured requests, made before the clock: only the client's work is measured. */
async function measure<T>(producer: ClientProducer<T>, client: string, warmup: number, measured: number) {
  const request = (from: number, end: number) =>
    producer.prepare(Array.from({ length: Math.min(BATCH, end - from) }, (_, k) => benchMessage(from + k)));
  for (let i = 0; i < warmup; i += BATCH) await producer.send(request(i, warmup));
  const requests: T[] = [];
  for (let j = warmup; j < warmup + measured; j += BATCH) requests.push(request(j, warmup + measured));
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (const r of requests) await producer.send(r);
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  await producer.close();
  return {
    client,
    records: measured,
    recordsPerSecond: Math.round(measured / seconds),
    cpuMicrosPerRecord: Math.round(((used.user + used.system) / measured) * 10) / 10,
  };
}

async function main(): Promise<void> {
  const [client, bootstrap, topic, warmupText, measuredText] = process.argv.slice(2);
  if (bootstrap === undefined || topic === undefined) throw new Error("usage: CLIENT BOOTSTRAP TOPIC WARMUP MEASURED");
  const warmup = Number(warmupText);
  const measured = Number(measuredText);
  const result =
    client === "kafkajs"
      ? await measure(await kafkajsProducer(bootstrap, topic), client, warmup, measured)
      : client === "platformatic"
        ? await measure(await platformaticProducer(bootstrap, topic), client, warmup, measured)
        : undefined;
  if (result === undefined) throw new Error(`unknown client ${client}`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

if (process.argv[1]?.endsWith("kafka-client-producer.ts")) await main();
