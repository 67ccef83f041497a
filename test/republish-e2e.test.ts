// Republish end to end: `npm run admin -- republish --all` writes each live
// package's current state into the outbox, the real retranslator sends it as
// an Updated event with the header event-reason: republish, and a facade whose
// read model was lost rebuilds it from those events alone (it resumes after its
// committed offsets, so the original events are not read again).
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { PgPackageRepository } from "../internal/repo/package-repo.js";
import { EventType } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import {
  apiPackages,
  facadeEnv,
  facadePackages,
  migrateFacadeDatabase,
  poll,
  startTestFacade,
  type TestFacade,
  writeFacadeConfig,
} from "./helpers/facade.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, runAdmin, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { readTopic } from "./helpers/topic-checker.js";

const topic = "republish-package-events";
let apiDb: TestDatabase;
let facadeDb: TestDatabase;
let kafka: KafkaMock;
let relay: TestRetranslator;
let facade: TestFacade | undefined;
let env: Record<string, string>;
const cleanups: (() => Promise<void>)[] = [];

before(async () => {
  [apiDb, facadeDb] = await Promise.all([createTestDatabase(), createTestDatabase()]);
  await migrateFacadeDatabase(facadeDb.url);
  kafka = await startKafkaMock();
  await kafka.createTopic(topic, 4);
  // A stopped member holds up the next join until its session expires (the mock ignores LeaveGroup).
  const config = await writeFacadeConfig({ sessionTimeoutMs: 6000, heartbeatIntervalMs: 500 });
  cleanups.push(config.cleanup);
  env = { ...facadeEnv(facadeDb.url, kafka.brokers, topic), CONFIG_PATH: config.path };
  relay = await startTestRetranslator(fastRetranslatorEnv(apiDb.url, kafka.brokers, topic));
});

after(async () => {
  await facade?.stop();
  await relay?.stop();
  await kafka?.stop();
  await Promise.all([apiDb?.drop(), facadeDb?.drop()]);
  for (const cleanup of cleanups) await cleanup();
});

test("a facade that lost its read model rebuilds it from republished events; Kafka carries them as Updated with event-reason: republish", async () => {
  const repo = new PgPackageRepository(apiDb.db);
  const ids: bigint[] = [];
  for (let i = 0; i < 40; i++) {
    ids.push(
      await repo.create(
        { title: `pkg ${i}`, material: "wood", maximumVolume: 10 + i, reusable: i % 3 === 0 },
        undefined,
      ),
    );
  }
  for (const id of ids.slice(0, 15)) await repo.update(id, { title: `pkg ${id} v2`, reusable: true }, undefined);
  const removed = ids.slice(30, 35);
  for (const id of removed) await repo.remove(id, undefined);
  const live = async () => (await apiPackages(apiDb.db)).filter((p) => !p.removed);

  facade = await startTestFacade(env);
  const all = JSON.stringify(await apiPackages(apiDb.db));
  await poll(
    "the read model to follow the API",
    async () => JSON.stringify(await facadePackages(facadeDb.db)),
    (f) => f === all,
    60_000,
  );

  // The read model is lost; the facade comes back at its committed offsets.
  await facade.stop();
  facade = undefined;
  await facadeDb.db.raw(`TRUNCATE facade_package, facade_inbox`);
  facade = await startTestFacade(env);

  const res = await runAdmin(apiDb.url, ["republish", "--all"]);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /republished 35 packages/);

  const expected = await live();
  await poll(
    "the read model rebuilt from the republished events",
    async () => JSON.stringify(await facadePackages(facadeDb.db)),
    (f) => f === JSON.stringify(expected),
    60_000,
  );
  assert.deepEqual(await facadePackages(facadeDb.db), expected, "every live package, current state; no removed one");

  // On the topic: the 40 + 15 + 5 changes, then one republished Updated per live package.
  const messages = await readTopic(kafka.brokers, topic, (m) => m.length >= 95);
  assert.equal(messages.length, 95);
  const republished = messages.filter((m) => m.headers["event-reason"] === "republish");
  assert.deepEqual(republished.map((m) => m.key).sort(), expected.map((p) => p.id).sort());
  for (const m of republished) {
    assert.equal(m.event.Type, EventType.Updated);
    assert.equal(m.headers["event-type"], "Updated");
    const earlier = messages.filter((x) => x.key === m.key && x !== m);
    assert.ok(
      earlier.every((x) => x.partition === m.partition && BigInt(x.offset) < BigInt(m.offset)),
      "after the package's earlier events",
    );
  }
  assert.ok(
    messages.filter((m) => m.headers["event-reason"] === undefined).length === 60,
    "changes carry no event-reason",
  );
});
