// Republish end to end: `npm run admin -- republish --all` writes each live
// package's current state into the outbox, the real retranslator sends it as
// an Updated event with the header event-reason: republish, and a facade whose
// read model was lost rebuilds it from those events alone (it resumes after its
// committed offsets, so the original events are not read again).
import assert from "node:assert/strict";
import { test } from "node:test";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import { EventType } from "../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import {
  apiPackages,
  facadeEnv,
  facadePackages,
  shortSession,
  startTestFacade,
  type TestFacade,
} from "./helpers/facade.js";
import { useFixture } from "./helpers/fixture.js";
import { poll } from "./helpers/poll.js";
import { runAdmin } from "./helpers/retranslator.js";
import { readTopic } from "./helpers/topic-checker.js";

const topic = "republish-package-events";
const fx = useFixture({ facadeDb: true, server: false, kafka: { topic, partitions: 4 }, relay: {} });
let facade: TestFacade | undefined;
fx.onTearDown(() => facade?.stop());

const startFacade = () =>
  startTestFacade(facadeEnv(fx.facadeDb.url, fx.kafka.brokers, topic), { facade: shortSession });

test("a facade that lost its read model rebuilds it from republished events; Kafka carries them as Updated with event-reason: republish", async () => {
  const repo = new PgPackageRepository(fx.db.db);
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
  const live = async () => (await apiPackages(fx.db.db)).filter((p) => !p.removed);

  facade = await startFacade();
  const all = JSON.stringify(await apiPackages(fx.db.db));
  await poll(
    "the read model to follow the API",
    async () => JSON.stringify(await facadePackages(fx.facadeDb.db)),
    (f) => f === all,
    60_000,
  );

  // The read model is lost; the facade comes back at its committed offsets.
  await facade.stop();
  facade = undefined;
  await fx.facadeDb.db.raw(`TRUNCATE facade_package, facade_inbox`);
  facade = await startFacade();

  const res = await runAdmin(fx.db.url, ["republish", "--all"]);
  assert.equal(res.code, 0, res.stderr);
  assert.match(res.stdout, /republished 35 packages/);

  const expected = await live();
  await poll(
    "the read model rebuilt from the republished events",
    async () => JSON.stringify(await facadePackages(fx.facadeDb.db)),
    (f) => f === JSON.stringify(expected),
    60_000,
  );
  assert.deepEqual(await facadePackages(fx.facadeDb.db), expected, "every live package, current state; no removed one");

  // On the topic: the 40 + 15 + 5 changes, then one republished Updated per live package.
  const messages = await readTopic(fx.kafka.brokers, topic, (m) => m.length >= 95);
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
