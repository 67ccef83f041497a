// kafka.idempotent: true against a broker that checks an idempotent producer's
// sequence numbers as Kafka does (the mock's "next" build: a batch with the first
// and last sequence of one of the last five written is a duplicate, any other
// must follow the last one written). The case that matters is the ambiguous
// failure: acks slower than the request timeout, so the broker wrote batches the
// client reports as failed.
import assert from "node:assert/strict";
import { test } from "node:test";
import type { Database } from "../internal/database/database.js";
import { packageApiClient } from "./helpers/grpc-client.js";
import { relayWorld } from "./helpers/relay-world.js";
import { readMetric } from "./helpers/retranslator.js";
import { startTestServer } from "./helpers/server.js";

const deadLetters = async (db: Database) =>
  ((await db.raw("SELECT id::text AS id FROM package_event_dead_letter ORDER BY id")) as { rows: { id: string }[] })
    .rows;
const outboxIds = async (db: Database) =>
  ((await db.raw("SELECT id::text AS id FROM package_event ORDER BY id")) as { rows: { id: string }[] }).rows.map(
    (r) => r.id,
  );
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

test("kafka.idempotent: acks slower than the request timeout (the broker wrote what the client gave up on) lose, reorder and dead-letter nothing, and the relay keeps publishing afterwards", async (t) => {
  const world = await relayWorld(t, "idempotent-slow-acks", 2, { build: "next" });
  const relay = await world.startRelay({
    retranslator: { pollIntervalMs: 200, retryBackoffMinMs: 100, retryBackoffMaxMs: 500, maxAttempts: 3 },
    kafka: { idempotent: true, requestTimeoutMs: 1000, sendRetries: 1 },
  });
  const server = await startTestServer(world.db.url);
  world.defer(() => server.stop());
  const client = packageApiClient(server.grpcAddress);
  world.defer(() => client.close());
  const metric = (name: string) => readMetric(relay.ports.metrics, `logistic_package_api_retranslator_${name}`);

  const ids: string[] = [];
  for (let i = 0; i < 6; i++)
    ids.push(
      (await client.createPackageV1({ Title: `Pallet ${i}`, Material: "wood", MaximumVolume: 8 })).ID.toString(),
    );
  const updateAll = async (round: string) => {
    for (const id of ids) await client.updatePackageV1({ PackageID: id, Title: `Pallet ${id} ${round}` });
  };
  await world.untilOutboxEmpty("the first events to go out", 20_000);

  // Acks 1.5 s late against a 1 s request timeout: the broker appends each request, the
  // client reports it failed, kafkajs retries it once, then the relay gives it back.
  await world.kafka.setRtt(1, 1500);
  await updateAll("during");
  await sleep(2500);
  await updateAll("late");
  await sleep(2500);
  const inOutboxWhileSlow = new Set(await outboxIds(world.db.db));
  await world.kafka.setRtt(1, 0);
  await updateAll("after");

  assert.ok((await metric("events_failed_total")) > 0, "sends did fail while acks were late");
  await world.untilOutboxEmpty("the outbox to drain once acks are quick again", 30_000);
  assert.deepEqual(await deadLetters(world.db.db), [], "nothing is dead-lettered");
  const { report, committed } = await world.readBack();
  assert.deepEqual(
    { lost: report.lost, reordered: report.reordered, malformed: report.malformed },
    { lost: [], reordered: [], malformed: [] },
  );
  assert.equal([...committed.values()].flat().length, 6 * 4, "six creates and three rounds of updates");
  // A copy can only be of an event that was sent while acks were late.
  assert.deepEqual(
    report.duplicated.filter((id) => !inOutboxWhileSlow.has(id)),
    [],
    "no copy of an event written after the slow spell",
  );
  t.diagnostic(
    `copies: ${report.duplicated.length}; failed ${await metric("events_failed_total")}, dead-lettered ${await metric("events_dead_lettered_total")}`,
  );
});
