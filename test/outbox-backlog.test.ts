import assert from "node:assert/strict";
import { test } from "node:test";
import { BACKLOG_EXACT_UP_TO, readBacklog } from "../internal/outbox/backlog.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";

// The backlog gauges against the real Postgres: exact up to a cap, an estimate
// above it that never reads the whole table, whatever its size or statistics.

const CAP = 1_000;
const PACKAGES = 100;

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Rows Removed by Filter"?: number;
  Plans?: PlanNode[];
}

/** Rows the executed plan took from `table`, over every scan of it. */
function rowsRead(node: PlanNode, table: string): number {
  const own =
    node["Relation Name"] === table
      ? (node["Actual Rows"] ?? 0) * (node["Actual Loops"] ?? 1) + (node["Rows Removed by Filter"] ?? 0)
      : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + rowsRead(child, table), 0);
}

/**
 * The database handle, but each statement is first run under EXPLAIN
 * (ANALYZE, FORMAT JSON), whose plan is kept, then run for its result.
 */
function analyzingDatabase(real: TestDatabase["db"]): { db: TestDatabase["db"]; plans: PlanNode[] } {
  const plans: PlanNode[] = [];
  const db = {
    raw: async (sql: string, bindings?: readonly unknown[]) => {
      const explained = await real.raw(`EXPLAIN (ANALYZE, FORMAT JSON) ${sql}`, (bindings ?? []) as never);
      plans.push((explained as { rows: { "QUERY PLAN": { Plan: PlanNode }[] }[] }).rows[0]!["QUERY PLAN"][0]!.Plan);
      return real.raw(sql, (bindings ?? []) as never);
    },
  } as unknown as TestDatabase["db"];
  return { db, plans };
}

let fresh: TestDatabase;
const q = (sql: string, bindings: unknown[] = []) => fresh.db.raw(sql, bindings as never);

async function writeEvents(count: number): Promise<void> {
  await q(
    `INSERT INTO package_event (package_id, type, payload)
     SELECT 1 + (g % ${PACKAGES}), 'Updated', '{"ID":"1","Title":"t"}' FROM generate_series(1, ?::int) g`,
    [count],
  );
}

async function writeDeadLetters(count: number): Promise<void> {
  await q(
    `INSERT INTO package_event_dead_letter (id, package_id, type, payload, created, attempts, last_error)
     SELECT 1000000 + g, 1 + (g % ${PACKAGES}), 'Updated', '{}', now(), 10, 'too large' FROM generate_series(1, ?::int) g`,
    [count],
  );
}

/**
 * A database of its own for one test, with 100 packages: each test sets the
 * tables' statistics as its case needs, with autovacuum kept away so that it
 * cannot refresh them meanwhile.
 */
async function withDatabase(fn: () => Promise<void>): Promise<void> {
  fresh = await createTestDatabase();
  try {
    await q(`ALTER TABLE package_event SET (autovacuum_enabled = false)`);
    await q(`ALTER TABLE package_event_dead_letter SET (autovacuum_enabled = false)`);
    await q(
      `INSERT INTO package (id, title, material, maximum_volume) OVERRIDING SYSTEM VALUE
       SELECT g, 't', 'm', 1 FROM generate_series(1, ${PACKAGES}) g`,
    );
    await fn();
  } finally {
    await fresh.drop();
  }
}

test("below the cap the backlog and the dead letters are counted exactly", () =>
  withDatabase(async () => {
    assert.ok(2_500 < BACKLOG_EXACT_UP_TO);
    await writeEvents(2_500);
    await writeDeadLetters(3);
    assert.deepEqual(
      { ...(await readBacklog(fresh.db)), oldestAgeSeconds: 0 },
      { events: 2_500, eventsEstimated: false, oldestAgeSeconds: 0, deadLetters: 3, deadLettersEstimated: false },
    );

    // Exactly at the cap is still a count; one more row is not.
    await q(`DELETE FROM package_event WHERE id > ?`, [CAP]);
    const atCap = await readBacklog(fresh.db, { exactUpTo: CAP });
    assert.deepEqual([atCap.events, atCap.eventsEstimated], [CAP, false]);
    await writeEvents(1);
    assert.equal((await readBacklog(fresh.db, { exactUpTo: CAP })).eventsEstimated, true);
  }));

test("above the cap the backlog is Postgres' estimate, read from at most cap + 1 rows", () =>
  withDatabase(async () => {
    await writeEvents(5_000);
    await q(`ANALYZE package_event`);
    const { db, plans } = analyzingDatabase(fresh.db);
    const backlog = await readBacklog(db, { exactUpTo: CAP });
    assert.equal(backlog.eventsEstimated, true);
    // Fresh statistics of a small table are exact.
    assert.equal(backlog.events, 5_000);
    assert.equal(plans.length, 1);
    // cap + 1 for the count, one row for each of the newest id, the oldest id and the oldest event's age.
    const read = rowsRead(plans[0]!, "package_event");
    assert.ok(read <= CAP + 1 + 3, `read ${read} rows of package_event: ${JSON.stringify(plans[0])}`);
  }));

test("statistics taken while the outbox was empty never bring the reading below the cap", () =>
  withDatabase(async () => {
    // The state after a quiet period: used, emptied and analyzed, then a burst.
    await writeEvents(5_000);
    await q(`DELETE FROM package_event`);
    await q(`ANALYZE package_event`);
    await writeEvents(5_000);
    const stats = (await q(`SELECT reltuples FROM pg_class WHERE relname = 'package_event'`)) as {
      rows: { reltuples: number }[];
    };
    assert.equal(stats.rows[0]!.reltuples, 0, "the statistics still say the outbox is empty");

    const { db, plans } = analyzingDatabase(fresh.db);
    const backlog = await readBacklog(db, { exactUpTo: CAP });
    assert.equal(backlog.eventsEstimated, true);
    assert.ok(backlog.events > CAP && backlog.events <= 5_000, `${backlog.events}`);
    // Believing the outbox empty, the planner would rather aggregate max(id) - min(id) over the
    // whole primary key than probe its two ends: the cost must stay bounded all the same.
    const read = rowsRead(plans[0]!, "package_event");
    assert.ok(read <= CAP + 1 + 3, `read ${read} rows of package_event: ${JSON.stringify(plans[0])}`);
  }));

test("a drain that outruns ANALYZE is followed by the reading: never more than the ids still present allow", () =>
  withDatabase(async () => {
    await writeEvents(5_000);
    await q(`ANALYZE package_event`);
    // The relay publishes the oldest 3,000 events; the statistics still say 5,000.
    await q(`DELETE FROM package_event WHERE id <= 3000`);
    const backlog = await readBacklog(fresh.db, { exactUpTo: CAP });
    assert.deepEqual([backlog.events, backlog.eventsEstimated], [2_000, true]);
  }));

test("dead letters above the cap are estimated the same way, read from at most cap + 1 rows", () =>
  withDatabase(async () => {
    await writeDeadLetters(1_500);
    await q(`ANALYZE package_event_dead_letter`);
    const { db, plans } = analyzingDatabase(fresh.db);
    const backlog = await readBacklog(db, { exactUpTo: CAP });
    assert.deepEqual([backlog.deadLetters, backlog.deadLettersEstimated], [1_500, true]);
    assert.deepEqual([backlog.events, backlog.eventsEstimated], [0, false]);
    // cap + 1 for the count, one row for each of the newest and the oldest id.
    const read = rowsRead(plans[0]!, "package_event_dead_letter");
    assert.ok(read <= CAP + 1 + 2, `read ${read} rows of package_event_dead_letter: ${JSON.stringify(plans[0])}`);
  }));
