import assert from "node:assert/strict";
import { test } from "node:test";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import { count } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { poll } from "./helpers/poll.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { allDelivered, checkDelivery, committedEvents, readTopic } from "./helpers/topic-checker.js";

// What spends the dead-letter budget (retranslator.maxAttempts) and what does not.

const fx = useFixture({ eventLog: true, server: false, kafka: {} });
let repo: PgPackageRepository;
const relays: TestRetranslator[] = [];
fx.onTearDown(async () => {
  for (const relay of relays) await relay.stop().catch(() => undefined);
});

fx.onSetUp(() => {
  repo = new PgPackageRepository(fx.db.db);
});

test("a broker outage never dead-letters, even with maxAttempts 1: events wait and are delivered when it is back", async () => {
  const topic = "attempts-outage";
  await fx.kafka.createTopic(topic, 2);
  await fx.kafka.brokerDown(1);
  const relay = await startTestRetranslator(fastRetranslatorEnv(fx.db.url, fx.kafka.brokers, topic), {
    retranslator: { maxAttempts: 1, retryBackoffMinMs: 50, retryBackoffMaxMs: 300, pollIntervalMs: 100 },
    kafka: { requestTimeoutMs: 1000, sendRetries: 0 },
  });
  relays.push(relay);
  const a = await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);
  await repo.update(a, { title: "a2" }, undefined);
  const b = await repo.create({ title: "b", material: "m", maximumVolume: 1, reusable: false }, undefined);

  // Several failed sends happen while the broker is down…
  await poll(
    "failed sends during the outage",
    async () => {
      const text = await (await fetch(`http://127.0.0.1:${relay.ports.metrics}/metrics`)).text();
      return Number(/^logistic_package_api_retranslator_events_failed_total (\d+)/m.exec(text)?.[1] ?? 0);
    },
    (n) => n >= 3,
  );
  // …and none of them spent the budget.
  const dead = await fx.db.db.raw(`SELECT count(*)::int AS n FROM package_event_dead_letter`);
  assert.equal((dead as { rows: { n: number }[] }).rows[0]!.n, 0);

  await fx.kafka.brokerUp(1);
  const committed = await committedEvents(fx.db.db);
  const messages = await readTopic(fx.kafka.brokers, topic, allDelivered(committed));
  assert.deepEqual(checkDelivery(committed, messages), {
    lost: [],
    duplicated: [],
    reordered: [],
    malformed: [],
    unexpected: [],
  });
  await poll(
    "the outbox to empty",
    () => count(fx.db.db, "package_event"),
    (n) => n === 0,
  );
  assert.ok(b > a);
  await relay.stop();
  relays.pop();
});

test("an event claimed maxAttempts times without an outcome (crash loop) is dead-lettered instead of sent again", async () => {
  const topic = "attempts-crash-loop";
  await fx.kafka.createTopic(topic, 2);
  const poison = await repo.create({ title: "poison", material: "m", maximumVolume: 1, reusable: false }, undefined);
  await repo.update(poison, { title: "parked" }, undefined);
  const other = await repo.create({ title: "other", material: "m", maximumVolume: 1, reusable: false }, undefined);
  // As left behind by three relays that each claimed it and died mid-send.
  await fx.db.db.raw(
    `UPDATE package_event SET attempts = 3, last_error = 'lease expired'
     WHERE id = (SELECT min(id) FROM package_event WHERE package_id = ?)`,
    [poison.toString()],
  );

  const relay = await startTestRetranslator(fastRetranslatorEnv(fx.db.url, fx.kafka.brokers, topic), {
    retranslator: { maxAttempts: 3, pollIntervalMs: 100 },
  });
  relays.push(relay);

  const rows = await poll(
    "the crash-looping event to be dead-lettered",
    async () =>
      (
        (await fx.db.db.raw(`SELECT package_id::text, attempts, last_error FROM package_event_dead_letter`)) as {
          rows: { package_id: string; attempts: number; last_error: string }[];
        }
      ).rows,
    (r) => r.length === 1,
  );
  assert.equal(rows[0]!.package_id, poison.toString());
  assert.equal(rows[0]!.attempts, 4);
  assert.match(rows[0]!.last_error, /without an outcome/);

  // The other package flows; the poison package's later event stays parked, unpublished.
  const messages = await readTopic(fx.kafka.brokers, topic, (m) => m.some((x) => x.event.PackageID === other));
  assert.ok(
    messages.every((m) => m.event.PackageID !== poison),
    "nothing of the dead-lettered package was published",
  );
  const parked = await fx.db.db.raw(`SELECT count(*)::int AS n FROM package_event WHERE package_id = ?`, [
    poison.toString(),
  ]);
  assert.equal((parked as { rows: { n: number }[] }).rows[0]!.n, 1);
});
