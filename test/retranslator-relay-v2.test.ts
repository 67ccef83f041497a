// The relay under the conditions its claim design used to fail in: a burst
// into an outbox whose statistics say "empty", and (below) partitions that
// cannot take events while others can. Each test has its own database,
// Kafka mock cluster and topic; the delivery checker compares what was
// committed with what a consumer reads back.
import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";
import { Kafka, Partitioners, logLevel } from "kafkajs";
import type { Database } from "../internal/database/database.js";
import { count, createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { startKafkaMock, type KafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, writeTestConfig, type TestRetranslator } from "./helpers/retranslator.js";
import { allDelivered, checkDelivery, committedEvents, installEventLog, readTopic } from "./helpers/topic-checker.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Cleanups run in reverse order whatever happened; a failing one does not stop the rest. */
class Resources {
  private readonly stack: (() => Promise<unknown> | unknown)[] = [];
  defer(fn: () => Promise<unknown> | unknown): void {
    this.stack.push(fn);
  }
  async release(t: TestContext): Promise<void> {
    for (const fn of this.stack.reverse()) {
      try {
        await fn();
      } catch (err) {
        t.diagnostic(`cleanup failed: ${String(err)}`);
      }
    }
  }
}

interface Env {
  db: TestDatabase;
  kafka: KafkaMock;
  topic: string;
}

async function environment(res: Resources, topic: string, partitions: number, brokers = 1): Promise<Env> {
  const db = await createTestDatabase();
  res.defer(() => db.drop());
  await installEventLog(db.db);
  const kafka = await startKafkaMock({ brokers });
  res.defer(() => kafka.stop());
  await kafka.createTopic(topic, partitions);
  return { db, kafka, topic };
}

async function relay(res: Resources, env: Env, overrides: Record<string, unknown> = {}): Promise<TestRetranslator> {
  const config = await writeTestConfig(overrides);
  res.defer(() => config.cleanup());
  const r = await startTestRetranslator(fastRetranslatorEnv(env.db.url, env.kafka.brokers, env.topic), config.path);
  res.defer(() => r.stop());
  return r;
}

async function poll<T>(what: string, fn: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${JSON.stringify(v)}`);
    await sleep(100);
  }
}

/** Messages appended to the topic (sum of its partitions' high watermarks). */
async function topicSize(env: Env): Promise<number> {
  const admin = new Kafka({ clientId: "topic-size", brokers: env.kafka.brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(env.topic);
    return offsets.reduce((sum, o) => sum + Number(o.high), 0);
  } finally {
    await admin.disconnect();
  }
}

const q = (db: Database, sql: string, bindings: unknown[] = []) => db.raw(sql, bindings as never);

/** `packages` packages (ids 1..n) and `events` Updated events spread over them, in one statement. */
async function burst(db: Database, packages: number, events: number): Promise<void> {
  await q(
    db,
    `INSERT INTO package_event (package_id, type, payload)
     SELECT 1 + (g % ?::int), 'Updated', jsonb_build_object('ID', (1 + (g % ?::int))::text, 'Title', 'v' || g)
     FROM generate_series(1, ?::int) g`,
    [packages, packages, events],
  );
}

async function createPackages(db: Database, packages: number): Promise<void> {
  await q(
    db,
    `INSERT INTO package (id, title, material, maximum_volume) OVERRIDING SYSTEM VALUE
     SELECT g, 'Box ' || g, 'cardboard', 10 FROM generate_series(1, ?::int) g`,
    [packages],
  );
}

test("a 20,000-event burst into an outbox whose statistics say it is empty drains, in order", async (t) => {
  const res = new Resources();
  try {
    const env = await environment(res, "relay-v2-stale", 4);
    const db = env.db.db;
    // The outbox after a quiet period: used, emptied, analyzed ("no rows"
    // over pages that still exist). Autovacuum is kept from refreshing it.
    await q(db, `ALTER TABLE package_event SET (autovacuum_enabled = false)`);
    await createPackages(db, 1000);
    await q(db, `ALTER TABLE package_event DISABLE TRIGGER test_event_log`);
    await burst(db, 1000, 20_000);
    await q(db, `DELETE FROM package_event`);
    await q(db, `ALTER TABLE package_event ENABLE TRIGGER test_event_log`);
    await q(db, `ANALYZE package_event`);
    const stats = (await q(db, `SELECT reltuples FROM pg_class WHERE relname = 'package_event'`)) as { rows: { reltuples: number }[] };
    assert.equal(stats.rows[0]!.reltuples, 0);

    const r = await relay(res, env);
    await burst(db, 1000, 20_000);
    const started = Date.now();
    // Bounded wait, not a timing assertion: the old claim drained none of these in 60 s.
    await poll("the burst to drain", () => count(db, "package_event"), (n) => n === 0, 120_000);
    t.diagnostic(`20,000 events drained in ${Date.now() - started} ms`);
    const stillStale = (await q(db, `SELECT reltuples FROM pg_class WHERE relname = 'package_event'`)) as { rows: { reltuples: number }[] };
    assert.equal(stillStale.rows[0]!.reltuples, 0, "nobody refreshed the statistics meanwhile");

    const committed = await committedEvents(db);
    t.diagnostic(`messages on the topic: ${await topicSize(env)}`);
    const messages = await readTopic(env.kafka.brokers, env.topic, allDelivered(committed), 120_000);
    const report = checkDelivery(committed, messages);
    if (report.lost.length > 0) {
      const lostSet = new Set(report.lost);
      const packages = [...committed].filter(([, ids]) => ids.some((id) => lostSet.has(id))).map(([p]) => Number(p));
      t.diagnostic(`read ${messages.length}; lost ${report.lost.length} of ${packages.length} packages, partitions ${[...new Set(packages.map((p) => partitionOf(p, 4)))].join(",")}`);
    }
    assert.deepEqual(
      { lost: report.lost.length, reordered: report.reordered, duplicated: report.duplicated.length },
      { lost: 0, reordered: [], duplicated: 0 },
    );
    void r;
  } finally {
    await res.release(t);
  }
});

/** The partition kafkajs' default partitioner (murmur2 of the key, as the relay uses) gives a package. */
function partitionOf(packageId: number, partitions: number): number {
  const partitioner = Partitioners.DefaultPartitioner();
  return partitioner({
    topic: "any",
    partitionMetadata: Array.from({ length: partitions }, (_, i) => ({ partitionId: i, leader: 1, replicas: [1], isr: [1] })) as never,
    message: { key: String(packageId), value: null },
  });
}

const outboxIds = async (db: Database, packages: readonly number[]): Promise<number> => {
  const result = (await q(db, `SELECT count(*)::int AS n FROM package_event WHERE package_id = ANY(?::bigint[])`, [
    `{${packages.join(",")}}`,
  ])) as { rows: { n: number }[] };
  return result.rows[0]!.n;
};

test("a partition without a leader and a backlog larger than a claim: other partitions keep flowing, all delivered in order after it returns", async (t) => {
  const res = new Resources();
  try {
    const env = await environment(res, "relay-v2-leaderless", 3, 3);
    const db = env.db.db;
    await createPackages(db, 600);
    const all = Array.from({ length: 600 }, (_, i) => i + 1);
    const onZero = all.filter((p) => partitionOf(p, 3) === 0);
    const healthy = all.filter((p) => partitionOf(p, 3) !== 0);
    assert.ok(onZero.length > 100 && healthy.length > 300);
    // Short backoffs, so that the return of the leader is noticed within the test.
    const r = await relay(res, env, { retranslator: { batchSize: 50, retryBackoffMinMs: 100, retryBackoffMaxMs: 1000 } });

    // Warm: every package once, so the relay knows the topic.
    await burst(db, 600, 600);
    await poll("the warm-up to drain", () => count(db, "package_event"), (n) => n === 0, 30_000);

    await env.kafka.setPartitionLeader(env.topic, 0, -1);
    // Partition 0's packages queue 10 events each: far more than one claim (50).
    await q(
      db,
      `INSERT INTO package_event (package_id, type, payload)
       SELECT p, 'Updated', jsonb_build_object('ID', p::text, 'n', n) FROM unnest(?::bigint[]) p, generate_series(1, 10) n ORDER BY n, p`,
      [`{${onZero.join(",")}}`],
    );
    // Let the relay run into the leader-less partition first.
    await sleep(1500);
    const target = healthy.slice(0, 100);
    await q(
      db,
      `INSERT INTO package_event (package_id, type, payload) SELECT p, 'Updated', jsonb_build_object('ID', p::text) FROM unnest(?::bigint[]) p`,
      [`{${target.join(",")}}`],
    );
    // Bounded wait: before, none of these 100 was published within 10 s.
    await poll("the 100 updates on healthy partitions to be acknowledged", () => outboxIds(db, target), (n) => n === 0, 15_000);
    assert.equal(await outboxIds(db, onZero), onZero.length * 10, "partition 0's backlog waits (no leader to take it)");
    const dead = (await q(db, `SELECT count(*)::int AS n FROM package_event_dead_letter`)) as { rows: { n: number }[] };
    assert.equal(dead.rows[0]!.n, 0, "nothing dead-lettered while the partition had no leader");
    assert.ok(
      r.logs.lines.some((l) => l["msg"] === "partition failed; backing it off, other partitions go on" && l["partition"] === 0),
      "the relay did run into the leader-less partition",
    );

    await env.kafka.setPartitionLeader(env.topic, 0, 1);
    await poll("partition 0's backlog to drain after its leader returned", () => count(db, "package_event"), (n) => n === 0, 60_000);
    const deadAfter = (await q(db, `SELECT count(*)::int AS n FROM package_event_dead_letter`)) as { rows: { n: number }[] };
    assert.equal(deadAfter.rows[0]!.n, 0, "none dead-lettered");

    const committed = await committedEvents(db);
    const messages = await readTopic(env.kafka.brokers, env.topic, allDelivered(committed), 60_000);
    const report = checkDelivery(committed, messages);
    assert.deepEqual({ lost: report.lost, reordered: report.reordered }, { lost: [], reordered: [] });
  } finally {
    await res.release(t);
  }
});
