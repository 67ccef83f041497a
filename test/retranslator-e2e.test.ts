import assert from "node:assert/strict";
import { test } from "node:test";
import { EventType } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { count } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { poll } from "./helpers/poll.js";
import { allDelivered, checkDelivery, committedEvents, payloadKeys, readTopic } from "./helpers/topic-checker.js";

const topic = "e2e-package-events";
const fx = useFixture({ eventLog: true, kafka: { topic, partitions: 4 }, relay: {} });

test("API changes reach the topic as PackageEvent messages with key, headers and payload, then leave the outbox", async () => {
  const traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  const ids: string[] = [];
  for (let i = 0; i < 12; i++) {
    const res = await fx.client.createPackageV1(
      { Title: `Box ${i}`, Material: "cardboard", MaximumVolume: 10 + i, Reusable: i % 2 === 0 },
      { traceparent },
    );
    ids.push(res.ID);
  }
  for (const id of ids.slice(0, 6)) await fx.client.updatePackageV1({ PackageID: id, Title: `Box ${id} v2` });
  for (const id of ids.slice(0, 3)) await fx.client.removePackageV1({ PackageID: id });

  const committed = await committedEvents(fx.db.db);
  assert.equal([...committed.values()].flat().length, 12 + 6 + 3);
  const messages = await readTopic(fx.kafka.brokers, topic, allDelivered(committed));
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
  assert.deepEqual(Object.keys(payload).sort(), payloadKeys);
  assert.equal(payload.ID, ids[0]);
  assert.equal(payload.Title, `Box ${ids[0]} v2`);
  assert.equal(payload.Removed, true);

  await poll(
    "the outbox to empty",
    () => count(fx.db.db, "package_event"),
    (n) => n === 0,
  );
  const metrics = await (await fetch(`http://127.0.0.1:${fx.relay.ports.metrics}/metrics`)).text();
  assert.match(metrics, /^logistic_package_api_retranslator_events_published_total 21$/m);
  assert.match(metrics, /^logistic_package_api_retranslator_events_processing 0$/m);
  const ready = await fetch(`http://127.0.0.1:${fx.relay.ports.metrics}/ready`);
  assert.equal(ready.status, 200);
});
