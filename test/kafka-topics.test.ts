import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Kafka, logLevel } from "kafkajs";
import { ensureTopics } from "../internal/kafka/topics.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { captureLogs } from "./helpers/logs.js";

// How a binary that publishes (the retranslator, the bot) meets its topics at start, against a
// real Kafka-protocol broker: existing topics need no create rights and log no refusal; a
// missing one that the cluster will not create is a warning naming it, never a failed start.

let mock: KafkaMock;
before(async () => {
  mock = await startKafkaMock();
});
after(async () => {
  await mock.stop();
});

const settings = { partitions: 3, replicationFactor: 1, timeoutMs: 5000 };
const kafka = () =>
  new Kafka({ clientId: "topics-test", brokers: mock.brokers, logLevel: logLevel.NOTHING, retry: { retries: 1 } });

test("topics the cluster has are looked up, not created: no create request, no warning", async () => {
  await mock.createTopic("orders-existing", 4);
  const { logger, lines } = captureLogs();
  await ensureTopics(kafka(), ["orders-existing"], settings, logger);
  assert.deepEqual(
    lines.map((l) => [l.level, l.msg]),
    [["info", "topics exist"]],
  );
});

test("a missing topic the cluster refuses to create is a warning that names it alone, and ensureTopics returns", async () => {
  // The 2.0.2 mock answers metadata with controller id 0, a broker it does not have, so
  // kafkajs cannot send CreateTopics: a cluster that refuses, as one without create rights does.
  await mock.createTopic("orders-there", 4);
  const { logger, lines } = captureLogs();
  await ensureTopics(kafka(), ["orders-there", "orders-missing"], settings, logger);
  const warnings = lines.filter((l) => l.level === "warn");
  assert.equal(warnings.length, 1, JSON.stringify(lines));
  assert.equal(warnings[0]!.msg, "could not create the topics; relying on existing or auto-created ones");
  assert.deepEqual(warnings[0]!.topics, ["orders-missing"]);
});
