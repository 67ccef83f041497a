// The relay under the conditions its claim design used to fail in: a burst
// into an outbox whose statistics say "empty", and (below) partitions that
// cannot take events while others can. Each test has its own database,
// Kafka mock cluster and topic; the delivery checker compares what was
// committed with what a consumer reads back.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Kafka, logLevel } from "kafkajs";
import { loadConfig } from "../internal/config/config.js";
import type { Database } from "../internal/database/database.js";
import { writeConfigFile } from "./helpers/config.js";
import { partitionOf } from "./helpers/partitions.js";
import { poll } from "./helpers/poll.js";
import { type RelayWorld, relayWorld } from "./helpers/relay-world.js";
import { produceRequests, readMetric, type TestRetranslator } from "./helpers/retranslator.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Messages appended to the topic (sum of its partitions' high watermarks). */
async function topicSize(world: RelayWorld): Promise<number> {
  const admin = new Kafka({ clientId: "topic-size", brokers: world.kafka.brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(world.topic);
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

/**
 * A warm-up burst (one event per package) drained at full speed, then `events`
 * more drained while every ack takes `rttMs`.
 */
async function burstWithSlowAcks(
  world: RelayWorld,
  packages: number,
  events: number,
  rttMs: number,
  timeoutMs: number,
) {
  await burst(world.db.db, packages, packages);
  await world.untilOutboxEmpty("the warm-up to drain", 30_000);
  await world.kafka.setRtt(1, rttMs);
  await burst(world.db.db, packages, events);
  await world.untilOutboxEmpty("the events to be published", timeoutMs);
  await world.kafka.setRtt(1, 0);
}

/** Events the relays gave back for want of lease (fencing). */
async function fencedTotal(relays: readonly TestRetranslator[]): Promise<number> {
  let fenced = 0;
  for (const r of relays)
    fenced += await readMetric(r.ports.metrics, "logistic_package_api_retranslator_events_fenced_total");
  return fenced;
}

test("a 20,000-event burst into an outbox whose statistics say it is empty drains, in order", async (t) => {
  const world = await relayWorld(t, "relay-v2-stale", 4);
  const db = world.db.db;
  // The outbox after a quiet period: used, emptied, analyzed ("no rows"
  // over pages that still exist). Autovacuum is kept from refreshing it.
  await q(db, `ALTER TABLE package_event SET (autovacuum_enabled = false)`);
  await createPackages(db, 1000);
  await q(db, `ALTER TABLE package_event DISABLE TRIGGER test_event_log`);
  await burst(db, 1000, 20_000);
  await q(db, `DELETE FROM package_event`);
  await q(db, `ALTER TABLE package_event ENABLE TRIGGER test_event_log`);
  await q(db, `ANALYZE package_event`);
  const stats = (await q(db, `SELECT reltuples FROM pg_class WHERE relname = 'package_event'`)) as {
    rows: { reltuples: number }[];
  };
  assert.equal(stats.rows[0]!.reltuples, 0);

  const r = await world.startRelay();
  await burst(db, 1000, 20_000);
  const started = Date.now();
  // Bounded wait, not a timing assertion: the old claim drained none of these in 60 s.
  await world.untilOutboxEmpty("the burst to drain", 120_000);
  t.diagnostic(`20,000 events drained in ${Date.now() - started} ms`);
  const stillStale = (await q(db, `SELECT reltuples FROM pg_class WHERE relname = 'package_event'`)) as {
    rows: { reltuples: number }[];
  };
  assert.equal(stillStale.rows[0]!.reltuples, 0, "nobody refreshed the statistics meanwhile");

  t.diagnostic(`messages on the topic: ${await topicSize(world)}`);
  const { committed, messages, report } = await world.readBack(undefined, 120_000);
  if (report.lost.length > 0) {
    const lostSet = new Set(report.lost);
    const packages = [...committed].filter(([, ids]) => ids.some((id) => lostSet.has(id))).map(([p]) => Number(p));
    t.diagnostic(
      `read ${messages.length}; lost ${report.lost.length} of ${packages.length} packages, partitions ${[...new Set(packages.map((p) => partitionOf(p, 4)))].join(",")}`,
    );
  }
  assert.deepEqual(
    { lost: report.lost.length, reordered: report.reordered, duplicated: report.duplicated.length },
    { lost: 0, reordered: [], duplicated: 0 },
  );
  // Four partitions on one broker: the claims' partitions went out together, none of those requests failed.
  const requests = (partitions: "one" | "shared", result: "published" | "failed") =>
    produceRequests(r, partitions, result);
  const shared = await requests("shared", "published");
  t.diagnostic(`shared requests ${shared}, single-partition requests ${await requests("one", "published")}`);
  assert.ok(shared > 0, "the relay's requests carried several partitions");
  assert.equal(await requests("shared", "failed"), 0);
});

const outboxIds = async (db: Database, packages: readonly number[]): Promise<number> => {
  const result = (await q(db, `SELECT count(*)::int AS n FROM package_event WHERE package_id = ANY(?::bigint[])`, [
    `{${packages.join(",")}}`,
  ])) as { rows: { n: number }[] };
  return result.rows[0]!.n;
};

// With both producing clients: kafkajs (the default) and @platformatic/kafka
// (kafka.producerClient platformatic, measured by the bench behind the same Sender).
for (const producerClient of ["kafkajs", "platformatic"] as const)
  test(`a partition without a leader and a backlog larger than a claim: other partitions keep flowing, all delivered in order after it returns${producerClient === "kafkajs" ? "" : " (@platformatic/kafka)"}`, async (t) => {
    const world = await relayWorld(t, `relay-v2-leaderless-${producerClient}`, 3, { brokers: 3, producerClient });
    const db = world.db.db;
    await createPackages(db, 600);
    const all = Array.from({ length: 600 }, (_, i) => i + 1);
    const onZero = all.filter((p) => partitionOf(p, 3) === 0);
    const healthy = all.filter((p) => partitionOf(p, 3) !== 0);
    assert.ok(onZero.length > 100 && healthy.length > 300);
    // Short backoffs, so that the return of the leader is noticed within the test.
    const r = await world.startRelay({
      retranslator: { batchSize: 50, retryBackoffMinMs: 100, retryBackoffMaxMs: 1000 },
    });

    // Warm: every package once, so the relay knows the topic.
    await burst(db, 600, 600);
    await world.untilOutboxEmpty("the warm-up to drain", 30_000);

    await world.kafka.setPartitionLeader(world.topic, 0, -1);
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
    await poll(
      "the 100 updates on healthy partitions to be acknowledged",
      () => outboxIds(db, target),
      (n) => n === 0,
      15_000,
    );
    assert.equal(await outboxIds(db, onZero), onZero.length * 10, "partition 0's backlog waits (no leader to take it)");
    const dead = (await q(db, `SELECT count(*)::int AS n FROM package_event_dead_letter`)) as { rows: { n: number }[] };
    assert.equal(dead.rows[0]!.n, 0, "nothing dead-lettered while the partition had no leader");
    assert.ok(
      r.logs.lines.some(
        (l) => l.msg === "partition failed; backing it off, other partitions go on" && l.partition === 0,
      ),
      "the relay did run into the leader-less partition",
    );

    await world.kafka.setPartitionLeader(world.topic, 0, 1);
    await world.untilOutboxEmpty("partition 0's backlog to drain after its leader returned", 60_000);
    const deadAfter = (await q(db, `SELECT count(*)::int AS n FROM package_event_dead_letter`)) as {
      rows: { n: number }[];
    };
    assert.equal(deadAfter.rows[0]!.n, 0, "none dead-lettered");

    const { report } = await world.readBack(undefined, 60_000);
    assert.deepEqual({ lost: report.lost, reordered: report.reordered }, { lost: [], reordered: [] });
  });

test("start-up rejects a lease shorter than one send (connect + request timeout, times retries + 1, plus backoff)", async () => {
  const short = await writeConfigFile({
    retranslator: { leaseSeconds: 10 },
    kafka: { requestTimeoutMs: 10_000, sendRetries: 2 },
  });
  const fits = await writeConfigFile({
    retranslator: { leaseSeconds: 10 },
    kafka: { requestTimeoutMs: 2000, sendRetries: 1 },
  });
  try {
    assert.throws(
      () => loadConfig({ path: short.path, env: {} }),
      (err: Error) => /retranslator\.leaseSeconds/.test(err.message) && /43000 ms/.test(err.message),
    );
    // (2 s connect, capped at the request timeout, + 2 s request) × 2 attempts + 2 s backoff = 10 s: no second of slack.
    assert.throws(() => loadConfig({ path: fits.path, env: {} }), /retranslator\.leaseSeconds/);
    const ok = await writeConfigFile({
      retranslator: { leaseSeconds: 11 },
      kafka: { requestTimeoutMs: 2000, sendRetries: 1 },
    });
    try {
      assert.equal(loadConfig({ path: ok.path, env: {} }).retranslator.leaseSeconds, 11);
    } finally {
      await ok.cleanup();
    }
  } finally {
    await short.cleanup();
    await fits.cleanup();
  }
});

test("fencing: events whose lease has less than a whole send left are given back, not sent; all arrive once, in order", async (t) => {
  const world = await relayWorld(t, "relay-v2-fencing", 1);
  const db = world.db.db;
  await createPackages(db, 10);
  // A send may take (3 s + 3 s) × 1 = 6 s; the lease is 7 s: one second of slack.
  const r = await world.startRelay({
    retranslator: { leaseSeconds: 7, batchSize: 20, maxInFlightBatches: 4, pollIntervalMs: 200 },
    kafka: { requestTimeoutMs: 3000, sendRetries: 0 },
  });
  // After the warm-up, acks take 2 s: a claim queued behind a send in flight
  // waits longer than its slack, and must not be sent with the lease it has left.
  await burstWithSlowAcks(world, 10, 100, 2000, 90_000);
  const fenced = await fencedTotal([r]);
  t.diagnostic(`events given back for want of lease: ${fenced}`);
  assert.ok(fenced > 0, "some claims waited past their slack and were given back");

  const { report } = await world.readBack(undefined, 60_000);
  assert.deepEqual(
    { lost: report.lost, reordered: report.reordered, duplicated: report.duplicated },
    { lost: [], reordered: [], duplicated: [] },
    "fenced events were never sent: no copies",
  );
});

/** The topic's records with the record batch (one per produce request) each came in. */
async function readRecordBatches(
  world: RelayWorld,
  expected: number,
): Promise<{ eventId: string; packageId: string; batch: string; bytes: number }[]> {
  const kafka = new Kafka({ clientId: "batch-reader", brokers: world.kafka.brokers, logLevel: logLevel.NOTHING });
  const consumer = kafka.consumer({ groupId: `batch-reader-${Date.now()}`, maxWaitTimeInMs: 100 });
  const records: { eventId: string; packageId: string; batch: string; bytes: number }[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic: world.topic, fromBeginning: true });
    await consumer.run({
      eachMessage: async ({ message }) => {
        const headers = message.headers ?? {};
        let bytes = (message.key?.length ?? 0) + (message.value?.length ?? 0);
        for (const [k, v] of Object.entries(headers)) bytes += k.length + String(v).length;
        records.push({
          eventId: String(headers["event-id"]),
          packageId: String(headers["package-id"]),
          batch: String((message as unknown as { batchContext: { firstOffset: string } }).batchContext.firstOffset),
          bytes,
        });
      },
    });
    await poll(
      "the topic to be read",
      async () => records.length,
      (n) => n >= expected,
      30_000,
    );
  } finally {
    await consumer.disconnect();
  }
  return records;
}

test("a package's backlog larger than one request goes out as several requests in order; a request refused as too large is split, not charged; only an event too large alone is dead-lettered", async (t) => {
  const world = await relayWorld(t, "relay-v2-request-size", 1);
  const db = world.db.db;
  await createPackages(db, 3);
  const maxRequestBytes = 4096;
  const r = await world.startRelay({
    retranslator: { batchSize: 500, pollIntervalMs: 200 },
    kafka: { maxRequestBytes },
  });
  await burst(db, 3, 3);
  await world.untilOutboxEmpty("the warm-up to drain", 30_000);
  const requestsBefore = {
    one: await produceRequests(r, "one", "published"),
    failed: (await produceRequests(r, "one", "failed")) + (await produceRequests(r, "shared", "failed")),
  };

  // The broker refuses the next Produce request as too large.
  await world.kafka.pushErrors(0, 1, [10]);
  // Package 1: 60 events of ~400 bytes (about 6 requests' worth); package 2: 10 small
  // ones; package 3: one event larger than any request may be, then one behind it.
  await q(
    db,
    `INSERT INTO package_event (package_id, type, payload)
     SELECT 1, 'Updated', jsonb_build_object('ID', '1', 'n', n, 'Title', repeat('x', 300)) FROM generate_series(1, 60) n
     UNION ALL SELECT 2, 'Updated', jsonb_build_object('ID', '2', 'n', n) FROM generate_series(1, 10) n`,
  );
  await q(
    db,
    `INSERT INTO package_event (package_id, type, payload) VALUES (3, 'Updated', jsonb_build_object('ID', '3', 'Title', repeat('y', 5000)))`,
  );
  await q(
    db,
    `INSERT INTO package_event (package_id, type, payload) VALUES (3, 'Updated', jsonb_build_object('ID', '3', 'n', 2))`,
  );

  const dead = await poll(
    "the oversized event to be dead-lettered and the rest published",
    async () => ({
      left: (
        (await q(db, `SELECT count(*)::int AS n FROM package_event WHERE package_id <> 3`)) as {
          rows: { n: number }[];
        }
      ).rows[0]!.n,
      dead: (
        (await q(db, `SELECT package_id::int AS p, last_error FROM package_event_dead_letter`)) as {
          rows: { p: number; last_error: string }[];
        }
      ).rows,
    }),
    (v) => v.left === 0 && v.dead.length === 1,
    30_000,
  );
  assert.equal(dead.dead[0]!.p, 3);
  assert.match(dead.dead[0]!.last_error, /larger than kafka\.maxRequestBytes/);
  const parked = (
    (await q(db, `SELECT count(*)::int AS n FROM package_event WHERE package_id = 3`)) as { rows: { n: number }[] }
  ).rows[0]!.n;
  assert.equal(parked, 1, "the event behind the dead letter waits, unpublished");

  const text = await (await fetch(`http://127.0.0.1:${r.ports.metrics}/metrics`)).text();
  const failed = Number(/^logistic_package_api_retranslator_events_failed_total (\S+)/m.exec(text)?.[1] ?? "NaN");
  assert.equal(failed, 1, "only the oversized event failed: the request refused as too large was split, not charged");

  // Every request counts, whatever the send it belongs to: the refused one, and each of package
  // 1's (its 24 KB never go in a shared request); the oversized event made none.
  const failedRequests =
    (await produceRequests(r, "one", "failed")) +
    (await produceRequests(r, "shared", "failed")) -
    requestsBefore.failed;
  assert.equal(failedRequests, 1, "the request refused as too large, and only it, counted as failed");
  const oneRequests = (await produceRequests(r, "one", "published")) - requestsBefore.one;
  assert.ok(oneRequests >= 6, `package 1's requests each counted (${oneRequests})`);

  const records = (await readRecordBatches(world, 3 + 70)).slice(3);
  const batches = new Map<string, number>();
  for (const rec of records) batches.set(rec.batch, (batches.get(rec.batch) ?? 0) + rec.bytes);
  t.diagnostic(`70 events in ${batches.size} requests of ${[...batches.values()].join(", ")} bytes`);
  assert.ok(batches.size >= 6, `package 1's 24 KB went out in several requests (${batches.size})`);
  for (const bytes of batches.values())
    assert.ok(bytes <= maxRequestBytes, `a request of ${bytes} bytes fits ${maxRequestBytes}`);
  for (const pkg of ["1", "2"]) {
    const ids = records.filter((rec) => rec.packageId === pkg).map((rec) => BigInt(rec.eventId));
    assert.equal(ids.length, pkg === "1" ? 60 : 10, `package ${pkg} delivered once each`);
    assert.deepEqual(
      ids,
      [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
      `package ${pkg} in order`,
    );
  }
  assert.ok(
    records.every((rec) => rec.packageId !== "3"),
    "nothing of the dead-lettered package was published",
  );
});

test("a slow broker with two instances: acks slower than the lease's slack, yet no package out of order and no copy of any event", async (t) => {
  // The broker answers after 1.5 s; a send may take 8 s and the lease is 9 s,
  // so claims that wait behind a send in flight outlive their slack. The round
  // trip stays well below the request timeout (4 s): a round trip above it
  // makes the broker write records the client reports as failed, and their
  // retry is a copy that only the idempotent producer can prevent (measured:
  // 2.5 s against 3 s on this loaded machine already did; see docs/relay.md).
  const world = await relayWorld(t, "relay-v2-slow-two", 2);
  const db = world.db.db;
  await createPackages(db, 20);
  const overrides = {
    retranslator: {
      leaseSeconds: 9,
      batchSize: 20,
      maxInFlightBatches: 4,
      pollIntervalMs: 200,
      maintenanceIntervalMs: 500,
    },
    kafka: { requestTimeoutMs: 4000, sendRetries: 0 },
  };
  const a = await world.startRelay(overrides);
  const b = await world.startRelay(overrides);
  await burstWithSlowAcks(world, 20, 200, 1500, 120_000);
  const fenced = await fencedTotal([a, b]);
  t.diagnostic(`events given back for want of lease: ${fenced}`);
  const { report } = await world.readBack(undefined, 60_000);
  assert.deepEqual(
    { lost: report.lost, reordered: report.reordered, duplicated: report.duplicated },
    { lost: [], reordered: [], duplicated: [] },
    "in order, and no copy of any event (so none after a later event of its package)",
  );
  // For reading a run: what the relays warned about (fenced claims, slow partitions, freed leases).
  for (const r of [a, b]) {
    const warnings = r.logs.lines
      .filter((l) => ["warn", "error", "fatal"].includes(String(l.level)))
      .map((l) => String(l.msg));
    t.diagnostic(`${r.owner}: ${[...new Set(warnings)].join(" | ")}`);
  }
});

test("an update committed while its package's previous event is being sent goes out after that ack, not at the next poll", async (t) => {
  const world = await relayWorld(t, "relay-v2-behind-in-flight", 1);
  const db = world.db.db;
  await createPackages(db, 1);
  // A poll far beyond the test's wait: only NOTIFY and acknowledgements can wake the claim loop.
  await world.startRelay({ retranslator: { pollIntervalMs: 600_000, claimLingerMs: 0 } });
  await burst(db, 1, 1);
  await world.untilOutboxEmpty("the warm-up to drain", 30_000);

  // Each ack takes a second: the first update is in flight when the second commits.
  await world.kafka.setRtt(1, 1000);
  await q(db, `INSERT INTO package_event (package_id, type, payload) VALUES (1, 'Updated', '{"ID":"1","n":1}')`);
  await poll(
    "the first update to be claimed",
    async () =>
      (
        (await q(db, `SELECT count(*)::int AS n FROM package_event WHERE locked_by IS NOT NULL`)) as {
          rows: { n: number }[];
        }
      ).rows[0]!.n,
    (n) => n === 1,
    10_000,
  );
  await q(db, `INSERT INTO package_event (package_id, type, payload) VALUES (1, 'Updated', '{"ID":"1","n":2}')`);
  // Its NOTIFY found the package's head in flight; before, nothing woke the relay after that ack
  // and the second update waited for pollIntervalMs (here 10 minutes).
  await world.untilOutboxEmpty("the second update to be published", 20_000);
  await world.kafka.setRtt(1, 0);

  const { report } = await world.readBack(undefined, 30_000);
  assert.deepEqual(report, { lost: [], duplicated: [], reordered: [], malformed: [], unexpected: [] });
});

test("a shared request the broker fails is not retried whole: its partitions go again one by one, each once, and sharing pauses", async (t) => {
  const world = await relayWorld(t, "relay-v2-shared-failure", 4);
  const db = world.db.db;
  await createPackages(db, 200);
  const r = await world.startRelay();
  const requests = (partitions: "one" | "shared", result: "published" | "failed") =>
    produceRequests(r, partitions, result);
  // Warm: the relay knows the topic and shares its requests.
  await burst(db, 200, 200);
  await world.untilOutboxEmpty("the warm-up to drain", 30_000);
  assert.ok((await requests("shared", "published")) > 0, "the warm-up's requests were shared");
  const aloneBefore = await requests("one", "published");

  // The next produce request (shared: the burst spans all four partitions) fails as a whole,
  // NOT_LEADER_FOR_PARTITION for every partition in it, and appends nothing.
  await world.kafka.pushErrors(0, 1, [6]);
  await burst(db, 200, 800);
  await world.untilOutboxEmpty("the burst to drain", 60_000);

  assert.equal(await requests("shared", "failed"), 1, "kafkajs did not retry the shared request itself");
  assert.ok(
    (await requests("one", "published")) > aloneBefore,
    "its partitions were sent again one by one, and later requests too (sharing paused)",
  );
  const { report } = await world.readBack(undefined, 60_000);
  assert.deepEqual(
    { lost: report.lost.length, reordered: report.reordered, duplicated: report.duplicated.length },
    { lost: 0, reordered: [], duplicated: 0 },
  );
});

test("retranslator.sharedRequests false: every request carries one partition", async (t) => {
  const world = await relayWorld(t, "relay-v2-unshared", 4);
  const db = world.db.db;
  await createPackages(db, 200);
  const r = await world.startRelay({ retranslator: { sharedRequests: false } });
  await burst(db, 200, 1000);
  await world.untilOutboxEmpty("the burst to drain", 60_000);
  const requests = (partitions: "one" | "shared", result: "published" | "failed") =>
    produceRequests(r, partitions, result);
  assert.equal(await requests("shared", "published"), 0);
  assert.equal(await requests("shared", "failed"), 0);
  assert.ok((await requests("one", "published")) >= 4, "each partition's events went in requests of their own");
  const { report } = await world.readBack(undefined, 60_000);
  assert.deepEqual({ lost: report.lost.length, reordered: report.reordered }, { lost: 0, reordered: [] });
});
