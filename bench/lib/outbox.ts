import { Kafka, logLevel } from "kafkajs";
import type { Database } from "../../internal/database/database.js";
import { query } from "../../internal/database/query.js";
import type { OutboxEvent } from "../../internal/outbox/types.js";
import { sleep } from "./procs.js";

export interface Seeded {
  firstId: bigint;
  lastId: bigint;
  count: number;
  seconds: number;
}

/**
 * `events` outbox rows over `packages` packages in one statement: the packages
 * first, then their events round robin (event i belongs to package i mod
 * packages), as interleaved traffic from many clients leaves them. Payloads
 * are the real ones (package_event_payload of each package row), ~160 bytes
 * of JSON, and each event has a traceparent, as the API always stores one
 * (the caller's or a fresh one). The first event of each package is its
 * Created, the rest Updated.
 *
 * `analyze: false` leaves the statistics as they were: a burst that arrives
 * while they still describe an emptied outbox (the relay-v2 stale rows).
 */
export async function seedEvents(
  db: Database,
  events: number,
  packages: number,
  { analyze = true }: { analyze?: boolean } = {},
): Promise<Seeded> {
  const started = performance.now();
  // One transaction: the rows and their statistics become visible together,
  // at the commit (which also delivers the NOTIFY).
  const row = await db.transaction(async (trx) => {
    // Seeding is not measured, and 1,000,000 rows on a busy machine take longer than the
    // pool's statement timeout (30 s): none for this transaction.
    await trx.raw(`SET LOCAL statement_timeout = 0`);
    const result = await trx.raw(
      `WITH p AS (
         INSERT INTO package (title, material, maximum_volume, reusable)
         SELECT 'bench package ' || g, (ARRAY['cardboard', 'wood', 'plastic', 'metal'])[1 + g % 4], 250 + g, g % 2 = 0
         FROM generate_series(1, ?::int) g
         RETURNING id, package_event_payload(package) AS payload
       ), numbered AS (
         SELECT id, payload, row_number() OVER (ORDER BY id) - 1 AS k FROM p
       ), e AS (
         INSERT INTO package_event (package_id, type, payload, traceparent)
         SELECT n.id, CASE WHEN g < ?::int THEN 'Created' ELSE 'Updated' END, n.payload,
                '00-' || md5(g::text) || '-' || left(md5((-g)::text), 16) || '-01'
         FROM generate_series(0, ?::int - 1) g JOIN numbered n ON n.k = g % ?::int
         ORDER BY g
         RETURNING id
       )
       SELECT min(id) AS first, max(id) AS last, count(*)::int AS n FROM e`,
      [packages, packages, events, packages],
    );
    // Statistics as autovacuum keeps them on a live database. A fresh clone
    // has none, and then the claim's planner guesses that few rows have
    // locked_by NULL and sorts the whole outbox for every claim (measured at
    // 100,000 events: 45-65 ms per claim, an external merge sort on disk,
    // instead of an index scan); autovacuum's own ANALYZE would flip the plan
    // at a random moment of the drain. (ANALYZE counts this transaction's rows.)
    if (analyze) await trx.raw(`ANALYZE package, package_event, package_event_dead_letter`);
    return (result as { rows: { first: bigint; last: bigint; n: number }[] }).rows[0]!;
  });
  return { firstId: row.first, lastId: row.last, count: row.n, seconds: (performance.now() - started) / 1000 };
}

/** Every outbox row, as claimEvents would return it (for the broker-only bound). */
export function readOutbox(db: Database): Promise<OutboxEvent[]> {
  return query<OutboxEvent>(
    db,
    `SELECT id, package_id AS "packageId", type, payload::text AS payload, created, traceparent, tracestate, reason,
            attempts, coalesce(locked_until::text, '') AS lease
     FROM package_event ORDER BY id`,
  );
}

/**
 * The lowest id still in the outbox, or undefined when it is empty. Cheap on
 * a large outbox (one primary-key probe), so it can be polled often without
 * loading the database that is being measured; count(*) cannot.
 */
export async function oldestEventId(db: Database): Promise<bigint | undefined> {
  const result = await db.raw(`SELECT id FROM package_event ORDER BY id LIMIT 1`);
  return (result as { rows: { id: bigint }[] }).rows[0]?.id;
}

/**
 * Waits until the outbox is empty, polling every `pollMs`; reports progress
 * (events left, estimated from the lowest id still present: the relay works
 * in id order) every `reportMs`. Returns the time it became empty
 * (performance.now()), or throws after `timeoutMs` or when `alive()` turns false.
 */
export async function waitForEmptyOutbox(
  db: Database,
  options: {
    lastId: bigint;
    timeoutMs: number;
    pollMs?: number;
    reportMs?: number;
    onProgress?: (left: number) => void;
    alive?: () => string | undefined;
  },
): Promise<number> {
  const started = performance.now();
  let reported = started;
  while (performance.now() - started < options.timeoutMs) {
    const oldest = await oldestEventId(db);
    const now = performance.now();
    if (oldest === undefined) return now;
    const dead = options.alive?.();
    if (dead !== undefined) throw new Error(dead);
    if (options.onProgress && now - reported >= (options.reportMs ?? 2000)) {
      reported = now;
      options.onProgress(Number(options.lastId - oldest + 1n));
    }
    await sleep(options.pollMs ?? 25);
  }
  throw new Error(`outbox not empty after ${options.timeoutMs} ms`);
}

/**
 * After a drain, what an empty outbox does not say by itself: every event is on the topic
 * and none was dead-lettered (a dead letter also empties the outbox, and a drain that
 * counted it would flatter the relay). Throws on a lost or dead-lettered event; returns
 * the records beyond `expected`, copies that a clean drain should not make.
 */
export async function checkDelivered(
  db: Database,
  brokers: string[],
  topic: string,
  expected: number,
): Promise<{ records: number; extra: number }> {
  const [dead] = await query<{ n: number }>(db, `SELECT count(*)::int AS n FROM package_event_dead_letter`);
  if (dead!.n > 0) throw new Error(`${dead!.n} events were dead-lettered during the drain of ${topic}`);
  const admin = new Kafka({ clientId: "bench-check", brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    // High watermarks: every record appended (the mock may drop old segments, raising the low ones).
    const records = offsets.reduce((sum, p) => sum + Number(p.high), 0);
    if (records < expected)
      throw new Error(
        `${topic} holds ${records} records, ${expected - records} fewer than the ${expected} events committed`,
      );
    return { records, extra: records - expected };
  } finally {
    await admin.disconnect();
  }
}
