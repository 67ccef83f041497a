// Exercises the librdkafka mock cluster (tools/kafka-mock) with kafkajs 2.2.4.
// Run: node --import tsx --test test/kafka-mock.test.ts

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import type { Consumer, IHeaders, KafkaMessage, Producer } from "kafkajs";
import { Kafka, logLevel, Partitioners } from "kafkajs";
import { PackageEventSchema } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import type { KafkaMock } from "./helpers/kafka-mock.js";
import { startKafkaMock } from "./helpers/kafka-mock.js";
import { readTopic } from "./helpers/topic-checker.js";

interface Received {
  partition: number;
  offset: bigint;
  key: string | null;
  value: string | null;
  headers: Record<string, string>;
}

function newKafka(mock: KafkaMock, retries = 5): Kafka {
  return new Kafka({
    clientId: `kafka-mock-test-${randomUUID().slice(0, 8)}`,
    brokers: mock.brokers,
    logLevel: logLevel.NOTHING,
    connectionTimeout: 1_000,
    requestTimeout: 5_000,
    // Client-level retry governs (re)connecting to brokers; the producer's own retry wraps it.
    retry: { retries, initialRetryTime: 100, maxRetryTime: 1_000 },
  });
}

function newProducer(kafka: Kafka, retries = 5): Producer {
  return kafka.producer({
    createPartitioner: Partitioners.DefaultPartitioner,
    allowAutoTopicCreation: false,
    idempotent: false, // the 2.0.2 mock's controller id 0 breaks kafkajs' idempotent producer
    retry: { retries, initialRetryTime: 100, maxRetryTime: 1_000 },
  });
}

function decodeHeaders(headers: IHeaders | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (v === undefined) continue;
    out[k] = Array.isArray(v) ? v.map(String).join(",") : String(v);
  }
  return out;
}

/** Subscribes from the beginning with a fresh group and resolves once `count` messages arrived. */
async function consume(kafka: Kafka, topic: string, count: number, timeoutMs = 20_000): Promise<Received[]> {
  const consumer: Consumer = kafka.consumer({
    groupId: `g-${randomUUID()}`,
    sessionTimeout: 10_000,
    heartbeatInterval: 500,
    maxWaitTimeInMs: 100,
    retry: { retries: 3 },
  });
  const received: Received[] = [];
  try {
    await consumer.connect();
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`consumed ${received.length}/${count} messages from ${topic} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      consumer
        .run({
          eachMessage: async ({ partition, message }: { partition: number; message: KafkaMessage }) => {
            received.push({
              partition,
              offset: BigInt(message.offset),
              key: message.key?.toString("utf8") ?? null,
              value: message.value?.toString("utf8") ?? null,
              headers: decodeHeaders(message.headers),
            });
            if (received.length >= count) {
              clearTimeout(timer);
              resolve();
            }
          },
        })
        .catch((err: unknown) => {
          clearTimeout(timer);
          reject(err instanceof Error ? err : new Error(String(err)));
        });
    });
    return received;
  } finally {
    await consumer.disconnect();
  }
}

test("produce with keys and headers, consume back in per-partition order", { timeout: 40_000 }, async () => {
  const mock = await startKafkaMock({ brokers: 3 });
  const kafka = newKafka(mock);
  const producer = newProducer(kafka);
  try {
    assert.equal(mock.brokers.length, 3);
    const topic = `orders-${randomUUID().slice(0, 8)}`;
    await mock.createTopic(topic, 3);
    await assert.rejects(mock.createTopic(topic, 3), /already exists/i);

    await producer.connect();
    const sent: Array<{ key: string; value: string; partition: number; offset: bigint }> = [];
    // One message per send so the send order is the log order within each partition.
    for (let i = 0; i < 10; i++) {
      const key = `pkg-${i % 4}`;
      const value = JSON.stringify({ seq: i, body: `event ${i}` });
      const [meta] = await producer.send({
        topic,
        acks: -1,
        messages: [{ key, value, headers: { "event-id": `e-${i}`, "event-type": i % 2 ? "updated" : "created" } }],
      });
      assert.ok(meta, "send returned record metadata");
      assert.equal(meta.errorCode, 0);
      sent.push({ key, value, partition: meta.partition, offset: BigInt(meta.baseOffset ?? "-1") });
    }
    // Four distinct keys over three partitions: more than one partition is used.
    assert.ok(new Set(sent.map((s) => s.partition)).size > 1, "messages spread over several partitions");

    const received = await consume(kafka, topic, sent.length);
    assert.equal(received.length, sent.length);

    const byValue = new Map(received.map((r) => [r.value, r]));
    sent.forEach((s, i) => {
      const r = byValue.get(s.value);
      assert.ok(r, `message ${i} was consumed`);
      assert.equal(r.key, s.key);
      assert.equal(r.partition, s.partition);
      assert.equal(r.offset, s.offset);
      assert.deepEqual(r.headers, { "event-id": `e-${i}`, "event-type": i % 2 ? "updated" : "created" });
    });

    // Per partition, offsets increase strictly and the values come in send order.
    for (const partition of new Set(sent.map((s) => s.partition))) {
      const got = received.filter((r) => r.partition === partition);
      const want = sent.filter((s) => s.partition === partition);
      assert.deepEqual(
        got.map((r) => r.value),
        want.map((s) => s.value),
      );
      for (let j = 1; j < got.length; j++) assert.ok(got[j]!.offset > got[j - 1]!.offset);
    }
    // Same key → same partition.
    for (const s of sent) {
      assert.equal(s.partition, sent.find((t) => t.key === s.key)!.partition);
    }
  } finally {
    await producer.disconnect().catch(() => {});
    await mock.stop();
  }
});

test("broker down makes a send fail; after broker up a send succeeds and is consumed", {
  timeout: 40_000,
}, async () => {
  const mock = await startKafkaMock({ brokers: 1 });
  // Few retries so the send fails quickly while the broker is down (the 2.0.2 mock closes
  // the listener: connections are refused). Defaults (5 + 5 retries) take about 14 s to give up.
  const producer = newProducer(newKafka(mock, 1), 1);
  const kafka = newKafka(mock);
  try {
    const topic = `outage-${randomUUID().slice(0, 8)}`;
    await mock.createTopic(topic, 1);
    await producer.connect();
    await producer.send({ topic, acks: -1, messages: [{ key: "k", value: "before" }] });

    await mock.brokerDown(1);
    const started = Date.now();
    await assert.rejects(
      producer.send({ topic, acks: -1, timeout: 1_000, messages: [{ key: "k", value: "during" }] }),
      (err: unknown) => err instanceof Error,
    );
    // Bounds far from a hang, loose for a loaded machine.
    assert.ok(Date.now() - started < 15_000, "the failing send gave up quickly");

    await mock.brokerUp(1);
    const upAt = Date.now();
    const [meta] = await producer.send({ topic, acks: -1, messages: [{ key: "k", value: "after" }] });
    assert.equal(meta?.errorCode, 0);
    assert.ok(Date.now() - upAt < 15_000, "the producer recovered after broker-up");

    const received = await consume(kafka, topic, 2);
    assert.deepEqual(
      received.map((r) => r.value),
      ["before", "after"],
    );
    assert.deepEqual(
      received.map((r) => r.key),
      ["k", "k"],
    );
  } finally {
    await producer.disconnect().catch(() => {});
    await mock.stop();
  }
});

test("the topic checker's read ends with its condition's error at once, not at its timeout", {
  timeout: 40_000,
}, async () => {
  const mock = await startKafkaMock({ brokers: 1 });
  const kafka = newKafka(mock);
  const producer = newProducer(kafka);
  try {
    const topic = `checker-${randomUUID().slice(0, 8)}`;
    await mock.createTopic(topic, 1);
    await producer.connect();
    const event = toBinary(PackageEventSchema, create(PackageEventSchema, { ID: 1n, PackageID: 7n }));
    await producer.send({ topic, acks: -1, messages: [{ key: "7", value: Buffer.from(event) }] });
    const started = Date.now();
    await assert.rejects(
      readTopic(
        mock.brokers,
        topic,
        (messages) => {
          if (messages.length > 0) throw new Error("the check failed on what it read");
          return false;
        },
        30_000,
      ),
      /the check failed on what it read/,
    );
    // Far below the 30 s the read would otherwise wait.
    assert.ok(Date.now() - started < 25_000, `ended after ${Date.now() - started} ms`);
  } finally {
    await producer.disconnect().catch(() => {});
    await mock.stop();
  }
});
