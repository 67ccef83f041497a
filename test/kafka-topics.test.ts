import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Kafka, logLevel } from "kafkajs";
import { ensureTopics } from "../internal/kafka/topics.js";
import { toEventMessage } from "../internal/retranslator/sender/event-message.js";
import { count, createTestDatabase } from "./helpers/database.js";
import {
  facadeEnv,
  facadePackages,
  migrateFacadeDatabase,
  readFacadeMetric,
  startTestFacade,
} from "./helpers/facade.js";
import { packageApiClient } from "./helpers/grpc-client.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { captureLogs } from "./helpers/logs.js";
import { poll } from "./helpers/poll.js";
import { type RelayWorld, relayWorld } from "./helpers/relay-world.js";
import { readMetric } from "./helpers/retranslator.js";
import { startTestServer } from "./helpers/server.js";

// How a binary that publishes (the retranslator, the bot) meets its topics at start, against a
// real Kafka-protocol broker: existing topics need no create rights and log no refusal; a
// missing one that the cluster will not create is a warning naming it, never a failed start;
// one it will create is created with the configured partitions, even by two instances at once.
// And how the relay and the facade wait for a topic nobody may create until an operator does.
// The stock mock build cannot create topics; the "next" build (three brokers) can.

let mock: KafkaMock;
let creating: KafkaMock;
before(async () => {
  [mock, creating] = await Promise.all([startKafkaMock(), startKafkaMock({ brokers: 3, build: "next" })]);
});
after(async () => {
  await Promise.all([mock.stop(), creating.stop()]);
});

const settings = { partitions: 3, replicationFactor: 1, timeoutMs: 5000 };
const kafka = (cluster: KafkaMock = mock) =>
  new Kafka({ clientId: "topics-test", brokers: cluster.brokers, logLevel: logLevel.NOTHING, retry: { retries: 1 } });

/** Each partition of `topic` with its leader, as a client's metadata request sees them. */
async function partitionLeaders(cluster: KafkaMock, topic: string): Promise<number[]> {
  const admin = kafka(cluster).admin();
  await admin.connect();
  try {
    const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
    return topics[0]!.partitions.sort((a, b) => a.partitionId - b.partitionId).map((p) => p.leader);
  } finally {
    await admin.disconnect();
  }
}

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

test("a missing topic the cluster will create is created with the configured partitions, each with a leader", async () => {
  await creating.createTopic("shipments-there", 2);
  const { logger, lines } = captureLogs();
  await ensureTopics(kafka(creating), ["shipments-there", "shipments-new"], { ...settings, partitions: 5 }, logger);
  assert.deepEqual(
    lines.map((l) => [l.level, l.msg, l.topics]),
    [["info", "topics created", ["shipments-new"]]],
  );
  const leaders = await partitionLeaders(creating, "shipments-new");
  assert.equal(leaders.length, 5, `partitions of the created topic: ${JSON.stringify(leaders)}`);
  assert.ok(
    leaders.every((id) => id >= 1 && id <= 3),
    `every partition has a leader: ${JSON.stringify(leaders)}`,
  );
  assert.equal((await partitionLeaders(creating, "shipments-there")).length, 2, "the existing topic is left as it was");
});

test("two instances starting at once both find the topic missing: one creates it, the other is told it exists, neither warns", async (t) => {
  // Every answer a second late, so both lookups are answered before either create arrives
  // (unless one client stalls for a second): the race of two replicas rolled out together.
  for (const id of [1, 2, 3]) await creating.setRtt(id, 1000);
  t.after(async () => {
    for (const id of [1, 2, 3]) await creating.setRtt(id, 0);
  });
  const instances = [captureLogs(), captureLogs()];
  await Promise.all(
    instances.map(({ logger }) => ensureTopics(kafka(creating), ["shipments-raced"], settings, logger)),
  );
  const said = instances.map(({ lines }) => lines.map((l) => [l.level, l.msg, l.topics]));
  assert.deepEqual(
    said.sort((a, b) => String(a[0]?.[1]).localeCompare(String(b[0]?.[1]))),
    [
      [["info", "topics created", ["shipments-raced"]]],
      [["info", "topics exist: another client created them meanwhile", ["shipments-raced"]]],
    ],
  );
  assert.equal((await partitionLeaders(creating, "shipments-raced")).length, 3);
});

test("a create the cluster refuses (no rights) is a warning naming the topic, and ensureTopics returns", async () => {
  // CreateTopics (API key 19) answered TOPIC_AUTHORIZATION_FAILED (29), as for a principal without create rights.
  await creating.pushErrors(19, 1, [29]);
  const { logger, lines } = captureLogs();
  await ensureTopics(kafka(creating), ["shipments-forbidden"], settings, logger);
  const warnings = lines.filter((l) => l.level === "warn");
  assert.deepEqual(
    warnings.map((l) => [l.msg, l.topics]),
    [["could not create the topics; relying on existing or auto-created ones", ["shipments-forbidden"]]],
    JSON.stringify(lines),
  );
  assert.match(JSON.stringify(warnings[0]!.err), /authoriz/i, "the warning carries the broker's reason");
});

/** Twelve packages created and updated once each through the API: 24 events. */
async function writeCrates(world: RelayWorld): Promise<void> {
  const server = await startTestServer(world.db.url);
  world.defer(() => server.stop());
  const client = packageApiClient(server.grpcAddress);
  world.defer(() => client.close());
  for (let i = 0; i < 12; i++) {
    const { ID } = await client.createPackageV1({ Title: `Crate ${i}`, Material: "wood", MaximumVolume: 5 + i });
    await client.updatePackageV1({ PackageID: ID.toString(), Title: `Crate ${i} v2` });
  }
}

/** The world's topic holds each of the 24 events once, in order, spread over its partitions. */
async function assertCratesDelivered(world: RelayWorld): Promise<void> {
  await world.untilOutboxEmpty("the outbox to drain into the topic", 30_000);
  const { report, messages } = await world.readBack();
  assert.deepEqual(
    { lost: report.lost, reordered: report.reordered, malformed: report.malformed, duplicated: report.duplicated },
    { lost: [], reordered: [], malformed: [], duplicated: [] },
  );
  assert.equal(messages.length, 24);
  assert.ok(new Set(messages.map((m) => m.partition)).size > 1, "the events spread over the topic's partitions");
}

test("a retranslator started on a cluster without its topic creates it with kafka.partitions and delivers into it", async (t) => {
  const world = await relayWorld(t, "shipments-by-relay", 6, { makeTopic: false });
  const relay = await world.startRelay();
  assert.deepEqual(
    relay.logs.lines.filter((l) => String(l.msg).startsWith("topics")).map((l) => [l.msg, l.topics]),
    [["topics created", ["shipments-by-relay"]]],
  );
  assert.equal((await partitionLeaders(world.kafka, "shipments-by-relay")).length, 6);
  await writeCrates(world);
  await assertCratesDelivered(world);
});

for (const producerClient of ["kafkajs", "platformatic"] as const)
  test(`a topic nobody may create (no Create right, auto-creation off): the retranslator starts, its events wait without spending attempts, and go out in order once an operator creates it${producerClient === "kafkajs" ? "" : " (@platformatic/kafka)"}`, async (t) => {
    const topic = `shipments-awaited-${producerClient}`;
    const world = await relayWorld(t, topic, 4, { makeTopic: false, producerClient });
    await world.kafka.setAutoCreateTopics(false);
    // CreateTopics (API key 19) answered TOPIC_AUTHORIZATION_FAILED (29).
    await world.kafka.pushErrors(19, 1, [29]);
    // Two attempts before a dead letter, and short backoff: a missing topic that cost
    // attempts would dead-letter every event within the wait below.
    const relay = await world.startRelay({
      retranslator: { maxAttempts: 2, pollIntervalMs: 200, retryBackoffMinMs: 50, retryBackoffMaxMs: 200 },
      kafka: { requestTimeoutMs: 1000, sendRetries: 1 },
    });
    assert.deepEqual(
      relay.logs.lines.filter((l) => l.level === "warn").map((l) => [l.msg, l.topics]),
      [["could not create the topics; relying on existing or auto-created ones", [topic]]],
    );
    await writeCrates(world);
    const metric = (name: string) => readMetric(relay.ports.metrics, `logistic_package_api_retranslator_${name}`);
    // Long enough for many claims and sends to fail (backoff at most 200 ms).
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.equal(await count(world.db.db, "package_event"), 24, "every event still waits in the outbox");
    assert.equal(await metric("events_published_total"), 0);
    assert.equal(await metric("events_dead_lettered_total"), 0, "a missing topic dead-letters nothing");
    assert.ok((await metric("events_failed_total")) > 0, "the sends were tried and failed");
    assert.deepEqual(await partitionLeaders(world.kafka, topic).catch(() => []), []);

    await world.kafka.createTopic(topic, 4);
    await assertCratesDelivered(world);
    assert.equal(await metric("events_dead_lettered_total"), 0);
  });

test("a facade started before its topic exists (auto-creation off) stays live, retries with backoff, and applies events once the topic is created", async (t) => {
  const cluster = await startKafkaMock({ build: "next" });
  t.after(() => cluster.stop());
  await cluster.setAutoCreateTopics(false);
  const db = await createTestDatabase();
  t.after(() => db.drop());
  await migrateFacadeDatabase(db.url);
  const facade = await startTestFacade(facadeEnv(db.url, cluster.brokers, "parcels-later"));
  t.after(() => facade.stop());
  const metric = (name: string) => readFacadeMetric(facade.metricsUrl, `logistic_package_api_facade_${name}`);

  await poll(
    "the consumer to fail on the missing topic and be restarted",
    () => metric("consumer_restarts_total"),
    (n) => n >= 2,
    20_000,
  );
  assert.equal((await fetch(`${facade.metricsUrl}/live`)).status, 200, "a missing topic is not a reason to be killed");
  assert.equal(await metric("assigned_partitions"), 0);

  await cluster.createTopic("parcels-later", 4);
  const producer = kafka(cluster).producer();
  await producer.connect();
  t.after(() => producer.disconnect());
  const created = new Date("2026-12-01T10:00:00.000Z");
  const payload = {
    ID: "41",
    Title: "Late parcel",
    Material: "paper",
    MaximumVolume: 2,
    Reusable: false,
    Created: created.toISOString(),
    Removed: false,
  };
  const event = { id: 7n, packageId: 41n, type: "Created" as const, payload: JSON.stringify(payload), created };
  await producer.send({
    topic: "parcels-later",
    messages: [toEventMessage({ ...event, traceparent: null, tracestate: null })],
  });
  await poll(
    "the event to reach the read model",
    () => facadePackages(db.db),
    (rows) => rows.length === 1,
    60_000,
  );
  assert.deepEqual(
    (await facadePackages(db.db)).map((r) => [r.id, r.title, r.removed]),
    [["41", "Late parcel", false]],
  );
  assert.ok((await metric("assigned_partitions")) > 0);
});
