import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { EventType } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { count, createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type PackageApiClient, packageApiClient } from "./helpers/grpc-client.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { allDelivered, checkDelivery, committedEvents, installEventLog, readTopic } from "./helpers/topic-checker.js";

const topic = "e2e-package-events";
let db: TestDatabase;
let kafka: KafkaMock;
let server: TestServer;
let relay: TestRetranslator;
let client: PackageApiClient;

before(async () => {
  db = await createTestDatabase();
  await installEventLog(db.db);
  kafka = await startKafkaMock();
  await kafka.createTopic(topic, 4);
  server = await startTestServer(db.url);
  relay = await startTestRetranslator(fastRetranslatorEnv(db.url, kafka.brokers, topic));
  client = packageApiClient(server.grpcAddress);
});

after(async () => {
  client?.close();
  await relay?.stop();
  await server?.stop();
  await kafka?.stop();
  await db?.drop();
});

async function poll<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last value ${String(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("API changes reach the topic as PackageEvent messages with key, headers and payload, then leave the outbox", async () => {
  const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) {
    const res = await client.createPackageV1(
      { Title: `Box ${i}`, Material: "cardboard", MaximumVolume: 10 + i, Reusable: i % 2 === 0 },
      { traceparent },
    );
    ids.push(res.ID);
  }
  for (const id of ids.slice(0, 6)) await client.updatePackageV1({ PackageID: id, Title: `Box ${id} v2` });
  for (const id of ids.slice(0, 3)) await client.removePackageV1({ PackageID: id });

  const committed = await committedEvents(db.db);
  assert.equal([...committed.values()].flat().length, 12 + 6 + 3);
  const messages = await readTopic(kafka.brokers, topic, allDelivered(committed));
  const report = checkDelivery(committed, messages);
  assert.deepEqual(report, { lost: [], duplicated: [], reordered: [], malformed: [], unexpected: [] });

  const first = messages.find((m) => m.event.PackageID.toString() === ids[0])!;
  const ofFirst = messages.filter((m) => m.event.PackageID.toString() === ids[0]).map((m) => m.event.Type);
  assert.deepEqual(ofFirst, [EventType.Created, EventType.Updated, EventType.Removed]);
  assert.equal(first.key, ids[0]);
  assert.equal(first.headers["event-type"], "Created");
  assert.equal(first.headers["content-type"], "application/x-protobuf");
  assert.equal(first.headers.traceparent, traceparent);
  assert.ok(first.event.Created !== undefined, "event Created timestamp set");

  const removed = messages.find((m) => m.event.PackageID.toString() === ids[0] && m.event.Type === EventType.Removed)!;
  const payload = JSON.parse(Buffer.from(removed.event.Payload).toString("utf8")) as Record<string, unknown>;
  assert.deepEqual(Object.keys(payload).sort(), [
    "Created",
    "ID",
    "Material",
    "MaximumVolume",
    "Removed",
    "Reusable",
    "Title",
    "Updated",
  ]);
  assert.equal(payload.ID, ids[0]);
  assert.equal(payload.Title, `Box ${ids[0]} v2`);
  assert.equal(payload.Removed, true);

  await poll(
    "the outbox to empty",
    () => count(db.db, "package_event"),
    (n) => n === 0,
  );
  const metrics = await (await fetch(`http://127.0.0.1:${relay.ports.metrics}/metrics`)).text();
  assert.match(metrics, /^logistic_package_api_retranslator_events_published_total 21$/m);
  assert.match(metrics, /^logistic_package_api_retranslator_events_processing 0$/m);
  const ready = await fetch(`http://127.0.0.1:${relay.ports.metrics}/ready`);
  assert.equal(ready.status, 200);
});
