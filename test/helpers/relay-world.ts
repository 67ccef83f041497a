import type { TestContext } from "node:test";
import type { ProducerClientName } from "../../internal/retranslator/sender/produce-client.js";
import type { ConfigOverrides } from "./config.js";
import { count, createTestDatabase, type TestDatabase } from "./database.js";
import { type KafkaMock, type KafkaMockBuild, startKafkaMock } from "./kafka-mock.js";
import { poll } from "./poll.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./retranslator.js";
import { TearDown } from "./tear-down.js";
import { installEventLog, type ReadBack, readBack } from "./topic-checker.js";

/** What one relay test runs against, all its own: a database, a Kafka mock cluster and a topic. */
export interface RelayWorld {
  db: TestDatabase;
  kafka: KafkaMock;
  topic: string;
  /** A tear-down step of the test's own, run before the world's (last added first). */
  defer(step: () => Promise<unknown> | unknown): void;
  /** A retranslator in this process on the world's database and topic; `env` overrides its variables. */
  startRelay(overrides?: ConfigOverrides, env?: Record<string, string>): Promise<TestRetranslator>;
  /** Until the outbox is empty (a bounded wait: it fails naming `what`). */
  untilOutboxEmpty(what: string, timeoutMs: number): Promise<void>;
  /**
   * The topic read back until it holds every `committed` event (by default all
   * the event log holds) or `timeoutMs` passed, checked against what was committed.
   */
  readBack(committed?: Map<string, string[]>, timeoutMs?: number): Promise<ReadBack>;
}

export interface RelayWorldOptions {
  /** Brokers of the mock cluster (1). */
  brokers?: number;
  /**
   * kafka.producerClient of every relay the world starts (kafkajs). With
   * platformatic the cluster is the mock's "next" build: the stock one refuses
   * @platformatic/kafka at its first request.
   */
  producerClient?: ProducerClientName;
  /**
   * Whether the world makes the topic (true). With false the relays it starts
   * create it (`kafka.partitions` set to the world's partitions), on the mock's
   * "next" build, the one that takes CreateTopics.
   */
  makeTopic?: boolean;
  /**
   * The mock cluster's build when neither of the above needs "next": "next"
   * also checks an idempotent producer's sequence numbers as Kafka does.
   */
  build?: KafkaMockBuild;
}

/**
 * A fresh world for test `t`, torn down when it ends (failed tear-down steps
 * become diagnostics: they must not hide the test's own result). The event log
 * is installed before any event is written, for the delivery checker.
 */
export async function relayWorld(
  t: TestContext,
  topic: string,
  partitions: number,
  { brokers = 1, producerClient = "kafkajs", makeTopic = true, build = "stock" }: RelayWorldOptions = {},
): Promise<RelayWorld> {
  const tearDown = new TearDown();
  t.after(async () => {
    for (const err of await tearDown.run()) t.diagnostic(`tear-down failed: ${String(err)}`);
  });
  const db = await createTestDatabase();
  tearDown.defer(() => db.drop());
  await installEventLog(db.db);
  const next = producerClient === "platformatic" || !makeTopic || build === "next";
  const kafka = await startKafkaMock({ brokers, build: next ? "next" : "stock" });
  tearDown.defer(() => kafka.stop());
  if (makeTopic) await kafka.createTopic(topic, partitions);
  return {
    db,
    kafka,
    topic,
    defer: (step) => tearDown.defer(step),
    async startRelay(overrides = {}, env = {}) {
      const relay = await startTestRetranslator(
        { ...fastRetranslatorEnv(db.url, kafka.brokers, topic), ...env },
        // Without a topic made by the world, the relay creates it with the world's partitions.
        { ...overrides, kafka: { producerClient, ...(makeTopic ? {} : { partitions }), ...overrides.kafka } },
      );
      tearDown.defer(() => relay.stop());
      return relay;
    },
    async untilOutboxEmpty(what, timeoutMs) {
      await poll(
        what,
        () => count(db.db, "package_event"),
        (n) => n === 0,
        timeoutMs,
      );
    },
    readBack: (committed, timeoutMs) => readBack(db.db, kafka.brokers, topic, committed, timeoutMs),
  };
}
