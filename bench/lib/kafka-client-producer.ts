// One Kafka client producing the relay's messages, alone in its process so that its CPU is its own
// (bench/kafka-clients-suite.ts): `node --import tsx bench/lib/kafka-client-producer.ts
// kafkajs|platformatic BOOTSTRAP TOPIC WARMUP MEASURED`. Prints one JSON line.
import { Producer, stringSerializer } from "@platformatic/kafka";
import { Kafka, logLevel } from "kafkajs";
import type { OutboxEvent } from "../../internal/outbox/types.js";
import { type EventMessage, toEventMessage } from "../../internal/retranslator/sender/event-message.js";

export const PARTITIONS = 32;
export const BATCH = 500;
const PACKAGES = 1000;

/** The i-th message (0-based): an Updated event of package i % 1000 + 1, as the relay makes it, on partition package % 32. */
export function benchMessage(i: number): EventMessage & { partition: number } {
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

type SendBatch = (messages: (EventMessage & { partition: number })[]) => Promise<void>;

async function kafkajsProducer(
  bootstrap: string,
  topic: string,
): Promise<{ send: SendBatch; close: () => Promise<void> }> {
  // As the relay's main producer (KafkaSender): one request in flight, not idempotent, acks=all.
  const kafka = new Kafka({ clientId: "bench-kafkajs", brokers: [bootstrap], logLevel: logLevel.NOTHING });
  const producer = kafka.producer({ maxInFlightRequests: 1, idempotent: false, allowAutoTopicCreation: false });
  await producer.connect();
  return {
    send: async (messages) => {
      await producer.send({ topic, acks: -1, messages });
    },
    close: () => producer.disconnect(),
  };
}

async function platformaticProducer(
  bootstrap: string,
  topic: string,
): Promise<{ send: SendBatch; close: () => Promise<void> }> {
  const producer = new Producer({
    clientId: "bench-platformatic",
    bootstrapBrokers: [bootstrap],
    acks: -1,
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
    send: async (messages) => {
      await producer.send({
        messages: messages.map((m) => ({
          topic,
          key: m.key,
          value: m.value,
          partition: m.partition,
          headers: m.headers,
        })),
      });
    },
    close: () => producer.close(),
  };
}

async function main(): Promise<void> {
  const [client, bootstrap, topic, warmupText, measuredText] = process.argv.slice(2);
  if (bootstrap === undefined || topic === undefined) throw new Error("usage: CLIENT BOOTSTRAP TOPIC WARMUP MEASURED");
  const warmup = Number(warmupText);
  const measured = Number(measuredText);
  const producer =
    client === "kafkajs"
      ? await kafkajsProducer(bootstrap, topic)
      : client === "platformatic"
        ? await platformaticProducer(bootstrap, topic)
        : undefined;
  if (producer === undefined) throw new Error(`unknown client ${client}`);
  const batch = (from: number, end: number) =>
    Array.from({ length: Math.min(BATCH, end - from) }, (_, k) => benchMessage(from + k));
  let i = 0;
  for (; i < warmup; i += BATCH) await producer.send(batch(i, warmup));
  // The messages are made outside the clock and the CPU window: only the client's work is measured.
  const batches: (EventMessage & { partition: number })[][] = [];
  for (let j = warmup; j < warmup + measured; j += BATCH) batches.push(batch(j, warmup + measured));
  const cpu = process.cpuUsage();
  const started = performance.now();
  for (const messages of batches) await producer.send(messages);
  const seconds = (performance.now() - started) / 1000;
  const used = process.cpuUsage(cpu);
  await producer.close();
  process.stdout.write(
    `${JSON.stringify({ client, records: measured, recordsPerSecond: Math.round(measured / seconds), cpuMicrosPerRecord: Math.round(((used.user + used.system) / measured) * 10) / 10 })}\n`,
  );
}

if (process.argv[1]?.endsWith("kafka-client-producer.ts")) await main();
