// A stock Kafka consumer in another language reads what the API's changes
// became on the topic: Python's confluent-kafka (Debian's package, on
// librdkafka), the PackageEvent decoded with stubs compiled from api/ in this
// run. It knows the wire contract only: key, headers, message and field numbers.
// scripts/ensure-python-grpc.sh installs it.

import assert from "node:assert/strict";
import { test } from "node:test";
import { count } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { partitionOf } from "./helpers/partitions.js";
import { poll } from "./helpers/poll.js";
import { clientScript, compilePythonStubs, jsonLines, python, run } from "./helpers/python.js";
import { committedEvents, payloadKeys } from "./helpers/topic-checker.js";

const topic = "python-consumer-events";
const partitions = 4;
const fx = useFixture({ eventLog: true, kafka: { topic, partitions }, relay: {} });
let stubs: Awaited<ReturnType<typeof compilePythonStubs>> | undefined;
fx.onSetUp(async () => {
  stubs = await compilePythonStubs(["hablof/logistic_package_api/v1/kafka_proto.proto"], { grpc: false });
});
fx.onTearDown(() => stubs?.remove());

interface Consumed {
  partition: number;
  offset: number;
  key: string;
  headers: Record<string, string>;
  event: {
    ID: string;
    PackageID: string;
    Type: "Created" | "Updated" | "Removed";
    CreatedSeconds: number;
    Payload: Record<string, unknown>;
  };
}

test("a Python confluent-kafka consumer reads every change once, in order per package, with the contract's key, headers and PackageEvent", async () => {
  // Each event carries the W3C trace context of the request that caused it.
  const traceparent = {
    Created: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    Updated: "00-5cf92f3577b34da6a3ce929d0e0e4737-00f067aa0ba902b8-01",
    Removed: "00-6df92f3577b34da6a3ce929d0e0e4738-00f067aa0ba902b9-01",
  };
  const startedSeconds = Math.floor(Date.now() / 1000);
  const ids: string[] = [];
  for (let i = 0; i < 6; i++) {
    const created = await fx.client.createPackageV1(
      { Title: `Kiste ${i}`, Material: "Holz", MaximumVolume: 2.5 + i, Reusable: i % 2 === 0 },
      { traceparent: traceparent.Created },
    );
    ids.push(created.ID);
  }
  for (const id of ids.slice(0, 4))
    await fx.client.updatePackageV1(
      { PackageID: id, Title: `Große Kiste ${id}` },
      { traceparent: traceparent.Updated },
    );
  for (const id of ids.slice(0, 2))
    await fx.client.removePackageV1({ PackageID: id }, { traceparent: traceparent.Removed });
  await poll(
    "the outbox to be relayed",
    () => count(fx.db.db, "package_event"),
    (n) => n === 0,
  );
  const committed = await committedEvents(fx.db.db);
  const total = [...committed.values()].flat().length;
  assert.equal(total, 6 + 4 + 2);

  const { stdout } = await run(python, [
    clientScript("python_consumer.py"),
    stubs!.dir,
    fx.kafka.brokers.join(","),
    topic,
    String(total),
  ]);
  const records = jsonLines<Consumed>(stdout);
  assert.equal(records.length, total, stdout);

  for (const [packageId, eventIds] of committed) {
    const mine = records.filter((r) => r.event.PackageID === packageId);
    // Once each, in commit order, all on the partition a default partitioner gives the key.
    assert.deepEqual(
      mine.map((r) => r.event.ID),
      eventIds,
      `package ${packageId}: its events once each, in order`,
    );
    assert.deepEqual(
      [...new Set(mine.map((r) => r.partition))],
      [partitionOf(BigInt(packageId), partitions)],
      `package ${packageId}: one partition, the key's`,
    );
    const index = ids.indexOf(packageId);
    const expectedTypes = ["Created", ...(index < 4 ? ["Updated"] : []), ...(index < 2 ? ["Removed"] : [])];
    assert.deepEqual(
      mine.map((r) => r.event.Type),
      expectedTypes,
    );
    for (const r of mine) {
      assert.equal(r.key, packageId);
      assert.deepEqual(
        { ...r.headers },
        {
          "event-id": r.event.ID,
          "event-type": r.event.Type,
          "package-id": packageId,
          "content-type": "application/x-protobuf",
          traceparent: traceparent[r.event.Type],
        },
      );
      assert.ok(r.event.CreatedSeconds >= startedSeconds - 1, `event ${r.event.ID}: its Created timestamp is set`);
      // One payload shape for every type (docs/design.md §2.2): the package after the change,
      // `Updated` from its first update on, `Removed` true only on the Removed event.
      const updated = r.event.Type !== "Created";
      assert.deepEqual(
        Object.keys(r.event.Payload).sort(),
        payloadKeys.filter((k) => updated || k !== "Updated"),
      );
      assert.match(String(r.event.Payload.Created), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
      if (updated) assert.match(String((r.event.Payload.Updated as { Time?: unknown }).Time), /^\d{4}-.*Z$/);
      assert.equal(r.event.Payload.ID, packageId);
      assert.equal(r.event.Payload.Removed, r.event.Type === "Removed");
      assert.equal(r.event.Payload.Title, r.event.Type === "Created" ? `Kiste ${index}` : `Große Kiste ${packageId}`);
      assert.equal(r.event.Payload.Material, "Holz");
      assert.equal(r.event.Payload.Reusable, index % 2 === 0);
      assert.equal(r.event.Payload.MaximumVolume, 2.5 + index);
    }
  }
});
