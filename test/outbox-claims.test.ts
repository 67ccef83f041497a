import assert from "node:assert/strict";
import { test } from "node:test";
import pg from "pg";
import { createDatabase } from "../internal/database/database.js";
import { query } from "../internal/database/query.js";
import { readBacklog } from "../internal/outbox/backlog.js";
import {
  CLAIM_HEADS_SQL,
  type Claim,
  type ClaimRequest,
  type ClaimRow,
  claimBindings,
  claimEvents,
  claimFromRows,
  claimHeads,
} from "../internal/outbox/claim-events.js";
import { deadLetterEvents } from "../internal/outbox/dead-letter-events.js";
import { deleteEvents } from "../internal/outbox/delete-events.js";
import { releaseFailedEvents, releaseUnsentEvents } from "../internal/outbox/release-events.js";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { poll } from "./helpers/poll.js";

// The outbox statements against the real Postgres: a late outcome of an
// expired claim must not touch a newer claim of the same row, even when both
// claims were made by the same retranslator.

const fx = useFixture({ server: false });

async function row(id: bigint) {
  const result = await fx.db.db.raw(
    `SELECT locked_by, locked_until::text AS lease, attempts FROM package_event WHERE id = ?`,
    [id.toString()],
  );
  return (result as { rows: { locked_by: string | null; lease: string | null; attempts: number }[] }).rows[0];
}

/**
 * The claim statement, held right after its snapshot is taken: its first CTE
 * waits for an advisory lock this test holds in a transaction of its own.
 * Resolves once the claim waits, with the claim to come (in an object: a
 * promise returned as is would be awaited too) and `release`, so that a test
 * can change the outbox under the claim's older snapshot and then let it run,
 * however long the change takes (within the test pool's statement timeout).
 */
async function heldClaim(request: ClaimRequest): Promise<{ result: Promise<Claim>; release: () => Promise<void> }> {
  const lo = "FROM (SELECT (SELECT package_id FROM package_event ORDER BY package_id LIMIT 1) AS lo,";
  assert.ok(CLAIM_HEADS_SQL.includes(lo));
  const key = 4343;
  const holder = await fx.db.db.transaction();
  await holder.raw(`SELECT pg_advisory_xact_lock(${key})`);
  const release = async () => {
    if (!holder.isCompleted()) await holder.commit();
  };
  try {
    const held = CLAIM_HEADS_SQL.replace(lo, `FROM pg_advisory_xact_lock_shared(${key}), ${lo.slice("FROM ".length)}`);
    const claiming = query<ClaimRow>(fx.db.db, held, claimBindings(request)).then(claimFromRows);
    // Observed before the poll ends, so that a claim failing early is not an unhandled rejection.
    claiming.catch(() => {});
    await poll(
      "the claim to be waiting inside its statement",
      async () => {
        const r = (await fx.db.db.raw(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = current_database()`,
        )) as { rows: { n: number }[] };
        return r.rows[0]!.n;
      },
      (n) => n === 1,
      10_000,
      10,
    );
    return { result: claiming, release };
  } catch (error) {
    await release();
    throw error;
  }
}

test("outcomes of an expired claim do not apply to the row's newer claim by the same owner", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);

  const [first] = await claimEvents(fx.db.db, "relay-1", 10, 60);
  assert.ok(first);
  // The relay stalls past its lease; its next claim takes the row over (as another instance's would).
  await fx.db.db.raw(`UPDATE package_event SET locked_until = now() - interval '1 second' WHERE id = ?`, [
    first.id.toString(),
  ]);
  const takeover = await claimHeads(fx.db.db, { owner: "relay-1", limit: 10, leaseSeconds: 60, cursor: 0n });
  const [second] = takeover.events;
  assert.ok(second);
  assert.equal(takeover.takenOver, 1);
  assert.equal(second.id, first.id);
  assert.notEqual(second.lease, first.lease);

  // Now the first claim's outcomes arrive, late.
  const stale = { id: first.id, lease: first.lease, error: "late", retriable: false };
  assert.equal(await releaseFailedEvents(fx.db.db, "relay-1", [stale], { minMs: 1, maxMs: 1 }), 0);
  assert.equal(await releaseUnsentEvents(fx.db.db, "relay-1", [{ id: first.id, lease: first.lease }]), 0);
  assert.equal(await deadLetterEvents(fx.db.db, "relay-1", [stale]), 0);
  assert.deepEqual(await row(first.id), { locked_by: "relay-1", lease: second.lease, attempts: 2 });

  // The current claim's outcome does apply.
  const current = { id: second.id, lease: second.lease, error: "too large", retriable: false };
  assert.equal(await deadLetterEvents(fx.db.db, "relay-1", [current]), 1);
  assert.equal(await row(first.id), undefined);
});

test("a lease that has not run out is never taken; one that has is taken over with its package's run, by one of two claims", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  const id = await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);
  for (let i = 0; i < 2; i++) await repo.update(id, { title: `t${i}` }, undefined);
  const held = await claimHeads(fx.db.db, { owner: "relay-1", limit: 10, leaseSeconds: 60, cursor: 0n });
  assert.equal(held.events.length, 3);
  const live = await claimHeads(fx.db.db, { owner: "relay-2", limit: 10, leaseSeconds: 60, cursor: 0n });
  assert.deepEqual([live.events.length, live.takenOver], [0, 0], "a live lease stays relay-1's");

  await fx.db.db.raw(`UPDATE package_event SET locked_until = now() - interval '1 second'`);
  const [a, b] = await Promise.all([
    claimHeads(fx.db.db, { owner: "relay-2", limit: 10, leaseSeconds: 60, cursor: 0n }),
    claimHeads(fx.db.db, { owner: "relay-3", limit: 10, leaseSeconds: 60, cursor: 0n }),
  ]);
  const winner = a.events.length > 0 ? a : b;
  const loser = winner === a ? b : a;
  assert.deepEqual(
    winner.events.map((e) => e.id),
    held.events.map((e) => e.id),
    "the whole run, in order",
  );
  assert.equal(winner.takenOver, 3);
  assert.deepEqual([loser.events.length, loser.takenOver], [0, 0], "taken over by one claim only");
  assert.ok(winner.events.every((e) => e.attempts === 2));
  const rows = (await fx.db.db.raw(`SELECT DISTINCT last_error FROM package_event`)) as {
    rows: { last_error: string | null }[];
  };
  assert.deepEqual(rows.rows, [{ last_error: "lease expired" }]);
});

test("a head given back after the claim's snapshot is followed: the claim takes its whole run, never the run without its head", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  const id = await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);
  for (let i = 0; i < 2; i++) await repo.update(id, { title: `t${i}` }, undefined);
  // relay-1 holds the head alone, on a lease that runs out at once: a claim sees the whole package as free.
  const [head] = (await claimHeads(fx.db.db, { owner: "relay-1", limit: 1, leaseSeconds: 0.001, cursor: 0n })).events;
  assert.ok(head);
  await poll(
    "relay-1's lease to run out",
    async () => {
      const r = (await fx.db.db.raw(`SELECT count(*)::int AS n FROM package_event WHERE locked_until < now()`)) as {
        rows: { n: number }[];
      };
      return r.rows[0]!.n;
    },
    (n) => n === 1,
    5000,
    5,
  );
  // The claim statement itself, held after its snapshot is taken.
  const claiming = await heldClaim({ owner: "relay-2", limit: 10, leaseSeconds: 60, cursor: 0n });
  try {
    // relay-1's late outcome gives the head back while the claim runs on its older snapshot.
    assert.equal(await releaseUnsentEvents(fx.db.db, "relay-1", [head]), 1);
  } finally {
    await claiming.release();
  }
  const claim = await claiming.result;
  const all = (await fx.db.db.raw(`SELECT id FROM package_event WHERE package_id = ? ORDER BY id`, [
    id.toString(),
  ])) as { rows: { id: bigint }[] };
  assert.deepEqual(
    claim.events.map((e) => e.id),
    all.rows.map((r) => r.id),
    "the head and the events after it: the head given back is followed, not skipped",
  );
});

test("two claims at the same moment over the same packages: the second passes over the heads the first holds and takes the next ones", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  const packages: bigint[] = [];
  for (let i = 0; i < 6; i++) {
    packages.push(await repo.create({ title: `p${i}`, material: "m", maximumVolume: 1, reusable: false }, undefined));
  }
  // relay-1's claim has run but not committed: its leases are invisible to relay-2's snapshot,
  // and only its row locks on the heads say that they are taken.
  const trx = await fx.db.db.transaction();
  try {
    const first = await claimHeads(trx, { owner: "relay-1", limit: 3, leaseSeconds: 60, cursor: packages[0]! - 1n });
    assert.deepEqual(
      first.events.map((e) => e.packageId),
      packages.slice(0, 3),
    );
    // A claim that waited on the first one's locks instead of passing over them fails here
    // within 2 s rather than hanging until the statement timeout.
    const second = await fx.db.db.transaction(async (t2) => {
      await t2.raw(`SET LOCAL lock_timeout = '2s'`);
      return claimHeads(t2, { owner: "relay-2", limit: 3, leaseSeconds: 60, cursor: packages[0]! - 1n });
    });
    assert.deepEqual(
      second.events.map((e) => e.packageId),
      packages.slice(3),
      "the next three packages, not an empty claim",
    );
    assert.ok(second.visited >= 6, "it walked over the three held heads");
  } finally {
    await trx.commit();
  }
  const owners = (await fx.db.db.raw(
    `SELECT locked_by FROM package_event WHERE package_id = ANY(?::bigint[]) ORDER BY package_id`,
    [packages.map(String)],
  )) as { rows: { locked_by: string }[] };
  assert.deepEqual(
    owners.rows.map((r) => r.locked_by),
    ["relay-1", "relay-1", "relay-1", "relay-2", "relay-2", "relay-2"],
  );
});

test("a head another claim leased after this claim's snapshot is passed over, and the claim takes the next package", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  const first = await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);
  const next = await repo.create({ title: "b", material: "m", maximumVolume: 1, reusable: false }, undefined);
  // relay-2's claim, held after its snapshot is taken: it sees both heads free.
  const claiming = await heldClaim({ owner: "relay-2", limit: 1, leaseSeconds: 60, cursor: first - 1n });
  let taken: Claim;
  try {
    // Meanwhile relay-1 claims the first package and commits.
    taken = await claimHeads(fx.db.db, { owner: "relay-1", limit: 1, leaseSeconds: 60, cursor: first - 1n });
  } finally {
    await claiming.release();
  }
  assert.deepEqual(
    taken.events.map((e) => e.packageId),
    [first],
  );
  const claim = await claiming.result;
  assert.deepEqual(
    claim.events.map((e) => e.packageId),
    [next],
    "the next package, not the one relay-1 holds, and not an empty claim",
  );
  const [head] = taken.events;
  assert.deepEqual(await row(head!.id), { locked_by: "relay-1", lease: head!.lease, attempts: 1 });
});

test("taking and giving back a lease rewrites no index: every lease write is a HOT update", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  for (let i = 0; i < 5; i++) {
    await repo.create({ title: `p${i}`, material: "m", maximumVolume: 1, reusable: false }, undefined);
  }
  // One connection, so that its statistics can be flushed and read in order.
  const db = createDatabase({
    url: fx.db.url,
    maxConnections: 1,
    statementTimeoutMs: 10_000,
    acquireTimeoutMs: 10_000,
    applicationName: "hot-test",
  });
  try {
    const updates = async () => {
      await db.raw(`SELECT pg_stat_force_next_flush()`);
      const r = (await db.raw(
        `SELECT n_tup_upd::int AS updated, n_tup_hot_upd::int AS hot FROM pg_stat_user_tables WHERE relname = 'package_event'`,
      )) as { rows: { updated: number; hot: number }[] };
      return r.rows[0]!;
    };
    const before = await updates();
    const claim = await claimHeads(db, { owner: "relay-1", limit: 10, leaseSeconds: 60, cursor: 0n });
    assert.equal(claim.events.length, 5);
    const [failed, ...unsent] = claim.events;
    await releaseFailedEvents(db, "relay-1", [{ id: failed!.id, lease: failed!.lease, error: "x", retriable: true }], {
      minMs: 1,
      maxMs: 1,
    });
    await releaseUnsentEvents(db, "relay-1", unsent);
    const after = await updates();
    assert.equal(after.updated - before.updated, 10, "five leases taken, five given back");
    assert.equal(after.hot - before.hot, 10, "all of them heap-only");

    const indexed = (await db.raw(
      `SELECT c.relname AS index FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
       WHERE i.indrelid = 'package_event'::regclass
         AND EXISTS (SELECT 1 FROM pg_attribute a
                     WHERE a.attrelid = i.indrelid
                       AND a.attname IN ('locked_by', 'locked_until', 'attempts', 'available_at', 'last_error', 'retries')
                       AND (a.attnum = ANY(i.indkey)
                            OR pg_get_expr(i.indexprs, i.indrelid) LIKE '%' || a.attname || '%'
                            OR pg_get_expr(i.indpred, i.indrelid) LIKE '%' || a.attname || '%'))`,
    )) as { rows: { index: string }[] };
    assert.deepEqual(indexed.rows, [], "no index covers a column a lease write changes");
  } finally {
    await db.destroy();
  }
});

test("a claim says whether it left part of its last package behind, so the relay waits only on acks that free more", async () => {
  const repo = new PgPackageRepository(fx.db.db);
  const pkg = { title: "a", material: "m", maximumVolume: 1, reusable: false };
  // Two packages of three events each (a create and two updates).
  const ids: bigint[] = [];
  for (let p = 0; p < 2; p++) {
    const id = await repo.create(pkg, undefined);
    ids.push(id);
    for (let u = 0; u < 2; u++) await repo.update(id, { title: `u${u}` }, undefined);
  }
  const [first, second] = ids as [bigint, bigint];
  // Room for four: all of the first package, then one event of the second, whose two others stay.
  const cut = await claimHeads(fx.db.db, { owner: "relay-1", limit: 4, leaseSeconds: 60, cursor: first - 1n });
  assert.deepEqual(
    cut.events.map((e) => e.packageId),
    [first, first, first, second],
  );
  assert.equal(cut.cursor, second);
  assert.equal(cut.cutShort, true);
  await deleteEvents(
    fx.db.db,
    cut.events.map((e) => e.id),
  );
  // Room for exactly what is left: the claim ends on the package's last event.
  const whole = await claimHeads(fx.db.db, { owner: "relay-1", limit: 2, leaseSeconds: 60, cursor: first - 1n });
  assert.deepEqual(
    whole.events.map((e) => e.packageId),
    [second, second],
  );
  assert.equal(whole.cutShort, false);
});

// ------------------------------------------------------------ look-ahead: is anything claimable left?

/**
 * Empties the outbox (earlier tests leave leased rows and a dead letter) and
 * writes packages with these numbers of events, in package order; returns their ids.
 */
async function freshPackages(eventsPerPackage: readonly number[]): Promise<bigint[]> {
  await fx.db.db.raw(`DELETE FROM package_event`);
  await fx.db.db.raw(`DELETE FROM package_event_dead_letter`);
  const repo = new PgPackageRepository(fx.db.db);
  const ids: bigint[] = [];
  for (const events of eventsPerPackage) {
    const id = await repo.create({ title: "a", material: "m", maximumVolume: 1, reusable: false }, undefined);
    for (let u = 1; u < events; u++) await repo.update(id, { title: `u${u}` }, undefined);
    ids.push(id);
  }
  return ids;
}

const packagesOf = (claim: { events: { packageId: bigint }[] }) => claim.events.map((e) => e.packageId);

test("a full claim says whether a claimable head is left beyond it, so the relay claims again at once only then", async () => {
  const [a, b, c] = (await freshPackages([2, 2, 2])) as [bigint, bigint, bigint];
  // Room for two packages of three: it fills, and package c is claimable beyond it.
  const first = await claimHeads(fx.db.db, { owner: "relay-1", limit: 4, leaseSeconds: 60, cursor: a - 1n });
  assert.deepEqual(packagesOf(first), [a, a, b, b]);
  assert.equal(first.more, true);
  assert.equal(first.cursor, b, "the cursor stays on the last package taken, not the one looked ahead at");
  assert.equal(first.cutShort, false);
  // Room for exactly the last claimable events: full, and nothing claimable is left (a and b are leased).
  const last = await claimHeads(fx.db.db, { owner: "relay-1", limit: 2, leaseSeconds: 60, cursor: first.cursor });
  assert.deepEqual(packagesOf(last), [c, c]);
  assert.equal(last.more, false);
  assert.equal(last.visited, 3, "the look-ahead walked the rest of the packages once");
  // A claim with room to spare never looks ahead.
  const [d] = (await freshPackages([1])) as [bigint];
  const short = await claimHeads(fx.db.db, { owner: "relay-1", limit: 4, leaseSeconds: 60, cursor: d - 1n });
  assert.deepEqual(packagesOf(short), [d]);
  assert.equal(short.more, false);
});

test("heads that are leased, in backoff, behind a dead letter or skipped are not 'more'", async () => {
  const [taken, leased, parked, backingOff, skipped] = (await freshPackages([2, 1, 2, 1, 1])) as [
    bigint,
    bigint,
    bigint,
    bigint,
    bigint,
  ];
  const q = (sql: string, bindings: unknown[]) => fx.db.db.raw(sql, bindings as never);
  await q(
    `UPDATE package_event SET locked_by = 'other', locked_until = now() + interval '1 minute' WHERE package_id = ?`,
    [leased.toString()],
  );
  // The package's first event was dead-lettered; its second waits in the outbox behind it.
  await q(
    `INSERT INTO package_event_dead_letter (id, package_id, type, payload, created, attempts, last_error)
     VALUES (0, ?, 'Updated', '{}', now(), 10, 'too large')`,
    [parked.toString()],
  );
  await q(`UPDATE package_event SET available_at = now() + interval '1 minute' WHERE package_id = ?`, [
    backingOff.toString(),
  ]);
  const claim = await claimHeads(fx.db.db, {
    owner: "relay-1",
    limit: 2,
    leaseSeconds: 60,
    cursor: taken - 1n,
    skipPackages: [skipped],
  });
  assert.deepEqual(packagesOf(claim), [taken, taken]);
  assert.equal(claim.more, false);
  assert.equal(claim.cursor, taken);
  // A claim that does not skip that package takes it: it was the one claimable head left.
  const [next] = await claimEvents(fx.db.db, "relay-2", 1, 60);
  assert.equal(next?.packageId, skipped);
});

test("after a full claim the next one starts with the packages the look-ahead passed over: none loses its turn", async () => {
  const [p1, p2, p3, p4] = (await freshPackages([2, 1, 1, 1])) as [bigint, bigint, bigint, bigint];
  await fx.db.db.raw(
    `UPDATE package_event SET locked_by = 'other', locked_until = now() + interval '1 minute' WHERE package_id = ?`,
    [p2.toString()],
  );
  const full = await claimHeads(fx.db.db, { owner: "relay-1", limit: 2, leaseSeconds: 60, cursor: p1 - 1n });
  assert.deepEqual(packagesOf(full), [p1, p1]);
  assert.equal(full.more, true, "the look-ahead passed over p2 (leased) and found p3");
  assert.equal(full.visited, 3);
  assert.equal(full.cursor, p1);
  // p2's lease ends meanwhile: the next claim, from the cursor, gets to it before p3 and p4.
  await fx.db.db.raw(`UPDATE package_event SET locked_by = NULL, locked_until = NULL WHERE package_id = ?`, [
    p2.toString(),
  ]);
  const next = await claimHeads(fx.db.db, { owner: "relay-1", limit: 2, leaseSeconds: 60, cursor: full.cursor });
  assert.deepEqual(packagesOf(next), [p2, p3]);
  assert.equal(next.more, true, "p4 is left");
  const rest = await claimHeads(fx.db.db, { owner: "relay-1", limit: 2, leaseSeconds: 60, cursor: next.cursor });
  assert.deepEqual(packagesOf(rest), [p4]);
  assert.equal(rest.more, false);
});

// ------------------------------------------------------------ plans under stale statistics

/** A plan node of EXPLAIN (FORMAT JSON). */
interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Index Name"?: string;
  "Index Cond"?: string;
  "Subplan Name"?: string;
  Plans?: PlanNode[];
  [key: string]: unknown;
}

const OUTBOX = "package_event";

/** Scans of the outbox in this subtree that no Limit above them (inside the subtree) bounds. */
function unboundedOutboxScans(node: PlanNode, underLimit = false): PlanNode[] {
  const limited = underLimit || node["Node Type"] === "Limit";
  const own =
    node["Relation Name"] === OUTBOX &&
    node["Node Type"] !== "ModifyTable" &&
    !limited &&
    node["Index Cond"] === undefined
      ? [node]
      : [];
  return [...own, ...(node.Plans ?? []).flatMap((child) => unboundedOutboxScans(child, limited))];
}

function describe(node: PlanNode): string {
  return `${node["Node Type"]}${node["Relation Name"] ? ` on ${node["Relation Name"]}` : ""}${node["Index Name"] ? ` using ${node["Index Name"]}` : ""}`;
}

/**
 * What a plan must not do to the outbox, whatever the statistics say: scan it
 * sequentially, read it whole through an index without a condition or a
 * limit, sort it, or loop over it (a nested loop whose outer side reads the
 * outbox unbounded). Returns the offences, empty when the plan is fine.
 */
function planOffences(node: PlanNode, leadingColumns: ReadonlyMap<string, string>, path: string[] = []): string[] {
  const here = [...path, describe(node)];
  const offences: string[] = [];
  // A condition only on a later column of an index (id = ANY(…) through
  // (package_id, id)) still reads the index whole, one probe per entry.
  const leading = leadingColumns.get(node["Index Name"] ?? "");
  if (
    node["Relation Name"] === OUTBOX &&
    leading !== undefined &&
    node["Index Cond"] !== undefined &&
    !new RegExp(`\\(${leading}\\s`).test(node["Index Cond"])
  ) {
    offences.push(`index scan without its leading column (${leading}): ${here.join(" > ")} on ${node["Index Cond"]}`);
  }
  // A package's events looked for through an index not led by package_id (the
  // primary key, in id order, filtered on the package): it reads other
  // packages' events until it meets this one's, all of them in the worst case.
  // (Not when the index condition names the ids: those are point lookups.)
  const filter = typeof node.Filter === "string" ? node.Filter : "";
  if (
    node["Relation Name"] === OUTBOX &&
    leading !== undefined &&
    leading !== "package_id" &&
    /\(package_id [=<>]/.test(filter) &&
    !/^\(+id = /.test(node["Index Cond"] ?? "")
  ) {
    offences.push(`a package looked for by filter through ${node["Index Name"]}: ${here.join(" > ")} filter ${filter}`);
  }
  if (node["Node Type"] === "Seq Scan" && node["Relation Name"] === OUTBOX)
    offences.push(`sequential scan: ${here.join(" > ")}`);
  if (
    node["Node Type"] === "Sort" &&
    node.Plans !== undefined &&
    node.Plans.some((c) => unboundedOutboxScans(c).length > 0)
  ) {
    offences.push(`sort over the outbox: ${here.join(" > ")}`);
  }
  if (
    node["Node Type"] === "Nested Loop" &&
    node.Plans?.[0] !== undefined &&
    unboundedOutboxScans(node.Plans[0]).length > 0
  ) {
    offences.push(`nested loop over the outbox: ${here.join(" > ")}`);
  }
  if (
    (node["Node Type"] === "Index Scan" || node["Node Type"] === "Index Only Scan") &&
    node["Relation Name"] === OUTBOX &&
    unboundedOutboxScans(
      node,
      path.some((p) => p.startsWith("Limit")),
    ).length > 0
  ) {
    offences.push(`whole-outbox index scan: ${here.join(" > ")}`);
  }
  // The rows an update or delete writes are found by their ids: an index
  // condition on the package alone reads every event of each package named,
  // a hot package's whole backlog per claim.
  if (
    path.at(-1)?.startsWith("ModifyTable") === true &&
    node["Relation Name"] === OUTBOX &&
    /Index/.test(node["Node Type"]) &&
    !/\bid (=|>=|<=) /.test(node["Index Cond"] ?? "")
  ) {
    offences.push(`rows to write found without their ids: ${here.join(" > ")} on ${node["Index Cond"]}`);
  }
  for (const child of node.Plans ?? []) offences.push(...planOffences(child, leadingColumns, here));
  return offences;
}

/** Every node of a plan, for "does it use an index on the outbox" checks. */
function nodes(node: PlanNode): PlanNode[] {
  return [node, ...(node.Plans ?? []).flatMap(nodes)];
}

/**
 * A stand-in for the relay's database handle that EXPLAINs (FORMAT JSON,
 * without running) each statement the repository functions send, with the
 * bindings they send, and keeps the plans.
 */
function explainingDatabase(real: TestDatabase["db"]): {
  db: TestDatabase["db"];
  plans: { sql: string; bindings: readonly unknown[]; plan: PlanNode }[];
} {
  const plans: { sql: string; bindings: readonly unknown[]; plan: PlanNode }[] = [];
  const db = {
    raw: async (sql: string, bindings: readonly unknown[] = []) => {
      const result = await real.raw(`EXPLAIN (FORMAT JSON) ${sql}`, bindings as never);
      const json = (result as { rows: { "QUERY PLAN": { Plan: PlanNode }[] }[] }).rows[0]!["QUERY PLAN"];
      plans.push({ sql, bindings, plan: json[0]!.Plan });
      // What a claim that took nothing returns (its summary row); the other statements read no fields.
      const nothingClaimed = { summary: true, cursor: 0n, visits: 0, takenOver: 0, cutShort: false, more: false };
      return { rows: [{ ...nothingClaimed, lease: null }], rowCount: 0 };
    },
  } as unknown as TestDatabase["db"];
  return { db, plans };
}

/**
 * The plan Postgres keeps for a named prepared statement once it stops
 * planning each run (a generic plan, chosen after five runs when it costs
 * about as much as the custom ones): planned without the values, so
 * statistics alone decide it.
 */
async function genericPlan(real: TestDatabase["db"], sql: string, bindings: readonly unknown[]): Promise<PlanNode> {
  const native = real
    .raw(sql, bindings as never)
    .toSQL()
    .toNative();
  return real.transaction(async (trx) => {
    await trx.raw(`SET LOCAL plan_cache_mode = force_generic_plan`);
    await trx.raw(`PREPARE generic_plan_check AS ${native.sql}`);
    // EXECUTE takes its values as literals (a utility statement binds no parameters).
    const literal = (v: unknown) =>
      v === null ? "NULL" : pg.escapeLiteral(Array.isArray(v) ? `{${v.join(",")}}` : String(v));
    const args = native.bindings.map(literal).join(", ");
    const result = await trx.raw(`EXPLAIN (FORMAT JSON) EXECUTE generic_plan_check(${args})`);
    await trx.raw(`DEALLOCATE generic_plan_check`);
    return (result as { rows: { "QUERY PLAN": { Plan: PlanNode }[] }[] }).rows[0]!["QUERY PLAN"][0]!.Plan;
  });
}

// Two outboxes: 100,000 events, 10 per package; and 50,000 events, one per package,
// the size at which the planner, under stale statistics, looked a package's events
// up through the primary key in id order (filtering on the package) until the
// claim read it in ranges of one package: 3.7 ms of Postgres per event against 0.03.
for (const [packages, events] of [
  [10_000, 100_000],
  [50_000, 50_000],
] as const) {
  test(`every relay statement plans index lookups on an outbox of ${events.toLocaleString("en")} rows over ${packages.toLocaleString("en")} packages whose statistics say it is empty`, async () => {
    const stale = await createTestDatabase();
    try {
      const q = (sql: string, bindings: unknown[] = []) => stale.db.raw(sql, bindings as never);
      // The state after a quiet period: the outbox was used, emptied and
      // analyzed (autovacuum does the same), so its statistics say "no rows"
      // over pages that still exist. Autovacuum is kept away so that it cannot
      // refresh them during the test.
      await q(`ALTER TABLE package_event SET (autovacuum_enabled = false)`);
      await q(
        `INSERT INTO package (id, title, material, maximum_volume) OVERRIDING SYSTEM VALUE
             SELECT g, 't', 'm', 1 FROM generate_series(1, ?::int) g`,
        [packages],
      );
      const fill = `INSERT INTO package_event (package_id, type, payload)
                  SELECT 1 + (g % ${packages}), 'Updated', '{"ID":"1","Title":"t"}' FROM generate_series(1, ${events}) g`;
      await q(fill);
      await q(`DELETE FROM package_event`);
      await q(`ANALYZE package_event`);
      // Then the burst, a few events leased, one package dead-lettered.
      await q(fill);
      await q(
        `UPDATE package_event SET locked_by = 'other', locked_until = now() + interval '1 minute' WHERE id % 97 = 0`,
      );
      await q(`INSERT INTO package_event_dead_letter (id, package_id, type, payload, created, attempts, last_error)
             VALUES (1, 7, 'Updated', '{}', now(), 10, 'too large')`);
      const stats = (await q(`SELECT reltuples FROM pg_class WHERE relname = 'package_event'`)) as {
        rows: { reltuples: number }[];
      };
      assert.equal(stats.rows[0]!.reltuples, 0, "the statistics still say the outbox is empty");

      const { db, plans } = explainingDatabase(stale.db);
      const ids = Array.from({ length: 500 }, (_, i) => BigInt(100_001 + i * 7));
      const lease = new Date(Date.now() + 60_000).toISOString();
      const failures = ids.slice(0, 100).map((id) => ({ id, lease, error: "x", retriable: true }));
      await claimHeads(db, { owner: "relay-1", limit: 500, leaseSeconds: 60, cursor: 0n });
      await claimHeads(db, {
        owner: "relay-1",
        limit: 500,
        leaseSeconds: 60,
        cursor: 5000n,
        skipPackages: ids.slice(0, 300),
      });
      await claimHeads(db, { owner: "relay-1", limit: 500, leaseSeconds: 60 });
      await deleteEvents(db, ids);
      await releaseFailedEvents(db, "relay-1", failures, { minMs: 1, maxMs: 1 });
      await releaseUnsentEvents(db, "relay-1", failures);
      await deadLetterEvents(db, "relay-1", failures);
      await readBacklog(db);
      assert.equal(plans.length, 8);

      const indexes = (await q(
        `SELECT c.relname AS index, a.attname AS leading FROM pg_index i
       JOIN pg_class c ON c.oid = i.indexrelid
       JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
       WHERE i.indrelid = 'package_event'::regclass`,
      )) as { rows: { index: string; leading: string }[] };
      const leadingColumns = new Map(indexes.rows.map((r) => [r.index, r.leading]));
      assert.equal(leadingColumns.get("package_event_package_id_idx"), "package_id");

      // The claims run as a named prepared statement (claim-events.ts): their
      // generic plan, which Postgres may keep after five runs, must hold too.
      const claims = plans.slice(0, 3);
      for (const claim of claims) {
        plans.push({
          ...claim,
          sql: `(generic plan) ${claim.sql}`,
          plan: await genericPlan(stale.db, claim.sql, claim.bindings),
        });
      }
      for (const { sql, plan } of plans) {
        const statement = sql.replace(/\s+/g, " ").slice(0, 80);
        // The backlog gauge too: it counts at most its cap of rows, newest first
        // through the primary key (test/outbox-backlog.test.ts checks the rows read).
        const offences = planOffences(plan, leadingColumns);
        assert.deepEqual(offences, [], `${statement}…\n${JSON.stringify(plan, null, 1).slice(0, 4000)}`);
        assert.ok(
          nodes(plan).some(
            (n) =>
              /Index/.test(n["Node Type"]) &&
              (n["Relation Name"] === OUTBOX || /^package_event_/.test(n["Index Name"] ?? "")),
          ),
          `${statement}… uses an index of the outbox`,
        );
      }
    } finally {
      await stale.drop();
    }
  });
}
