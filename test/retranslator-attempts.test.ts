import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { parse, stringify } from "yaml";
import { PgPackageRepository } from "../internal/repo/package-repo.js";
import { count, createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { allDelivered, checkDelivery, committedEvents, installEventLog, readTopic } from "./helpers/topic-checker.js";

// What spends the dead-letter budget (retranslator.maxAttempts) and what does not.

let db: TestDatabase;
let kafka: KafkaMock;
let repo: PgPackageRepository;
const relays: TestRetranslator[] = [];

function configWith(retranslator: Record<string, unknown>, kafkaKeys: Record<string, unknown> = {}): string {
  const config = parse(readFileSync("config.yml", "utf8")) as Record<string, Record<string, unknown>>;
  Object.assign(config.retranslator!, retranslator);
  Object.assign(config.kafka!, kafkaKeys);
  const path = join(mkdtempSync(join(tmpdir(), "lpa-attempts-")), "config.yml");
  writeFileSync(path, stringify(config));
  return path;
}

async function poll<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last ${JSON.stringify(v)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

before(async () => {
  db = await createTestDatabase();
  await installEventLog(db.db);
  repo = new PgPackageRepository(db.db);
  kafka = await startKafkaMock();
});

after(async () => {
  for (const relay of relays) await relay.stop().catch(() => undefined);
  await kafka?.stop();
  await db?.drop();
});

test("a broker outage never dead-letters, even with maxAttempts 1: events wait and are delivered when it is back", async () => {
  const topic = "attempts-outage";
  await kafka.createTopic(topic, 2);
  await kafka.brokerDown(1);
  const relay = await startTestRetranslator(
    fastRetranslatorEnv(db.url, kafka.brokers, topic),
    configWith(
      { maxAttempts: 1, retryBackoffMinMs: 50, retryBackoffMaxMs: 300, pollIntervalMs: 100 },
      { requestTimeoutMs: 1000, sendRetries: 0 },
    ),
  );
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
  const dead = await db.db.raw(`SELECT count(*)::int AS n FROM package_event_dead_letter`);
  assert.equal((dead as { rows: { n: number }[] }).rows[0]!.n, 0);

  await kafka.brokerUp(1);
  const committed = await committedEvents(db.db);
  const messages = await readTopic(kafka.brokers, topic, allDelivered(committed));
  assert.deepEqual(checkDelivery(committed, messages), {
    lost: [],
    duplicated: [],
    reordered: [],
    malformed: [],
    unexpected: [],
  });
  await poll(
    "the outbox to empty",
    () => count(db.db, "package_event"),
    (n) => n === 0,
  );
  assert.ok(b > a);
  await relay.stop();
  relays.pop();
});

test("an event claimed maxAttempts times without an outcome (crash loop) is dead-lettered instead of sent again", async () => {
  const topic = "attempts-crash-loop";
  await kafka.createTopic(topic, 2);
  const poison = await repo.create({ title: "poison", material: "m", maximumVolume: 1, reusable: false }, undefined);
  await repo.update(poison, { title: "parked" }, undefined);
  const other = await repo.create({ title: "other", material: "m", maximumVolume: 1, reusable: false }, undefined);
  // As left behind by three relays that each claimed it and died mid-send.
  await db.db.raw(
    `UPDATE package_event SET attempts = 3, last_error = 'lease expired'
     WHERE id = (SELECT min(id) FROM package_event WHERE package_id = ?)`,
    [poison.toString()],
  );

  const relay = await startTestRetranslator(
    fastRetranslatorEnv(db.url, kafka.brokers, topic),
    configWith({ maxAttempts: 3, pollIntervalMs: 100 }),
  );
  relays.push(relay);

  const rows = await poll(
    "the crash-looping event to be dead-lettered",
    async () =>
      (
        (await db.db.raw(`SELECT package_id::text, attempts, last_error FROM package_event_dead_letter`)) as {
          rows: { package_id: string; attempts: number; last_error: string }[];
        }
      ).rows,
    (r) => r.length === 1,
  );
  assert.equal(rows[0]!.package_id, poison.toString());
  assert.equal(rows[0]!.attempts, 4);
  assert.match(rows[0]!.last_error, /without an outcome/);

  // The other package flows; the poison package's later event stays parked, unpublished.
  const messages = await readTopic(kafka.brokers, topic, (m) => m.some((x) => x.event.PackageID === other));
  assert.ok(
    messages.every((m) => m.event.PackageID !== poison),
    "nothing of the dead-lettered package was published",
  );
  const parked = await db.db.raw(`SELECT count(*)::int AS n FROM package_event WHERE package_id = ?`, [
    poison.toString(),
  ]);
  assert.equal((parked as { rows: { n: number }[] }).rows[0]!.n, 1);
});
