// What a lease on package heads alone would save Postgres (docs/relay.md, "A
// lease on heads only: measured, not built"). Runs the relay's claim statement
// as shipped and a variant whose UPDATE leases only the heads (the rest of each
// claimed run read by id), each in a loop of claim + delete of 500 events on
// one connection, on stale-statistics bursts like the relay-v2 rows, and
// prints the Postgres backend's CPU per event (from /proc: Postgres must run
// on this machine).
//
//   node --import tsx bench/claim-heads-only.ts
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { query } from "../internal/database/query.js";
import { CLAIM_HEADS_SQL, type ClaimRow, claimBindings, claimFromRows } from "../internal/outbox/claim-events.js";
import { deleteEvents } from "../internal/outbox/delete-events.js";
import { createTestDatabase } from "../test/helpers/database.js";
import { cpuWindow } from "./lib/cpu.js";
import { root } from "./lib/procs.js";
import { makeStale, seedBurst } from "./scenarios/relay-v2.js";

const HEADS_ONLY_SQL = CLAIM_HEADS_SQL.replace(
  /claimed AS \(\s*UPDATE package_event e[\s\S]*?RETURNING[\s\S]*?e\.locked_until\n {5}\)/,
  `leased AS (
       UPDATE package_event e
       SET locked_by = ?, locked_until = now() + make_interval(secs => ?), attempts = e.attempts + 1
       WHERE e.id = ANY(ARRAY(SELECT head_id FROM heads)) AND e.package_id = ANY(ARRAY(SELECT package_id FROM heads))
       RETURNING e.id, e.locked_until
     ), claimed AS (
       SELECT e.id, e.package_id, e.type, e.payload, e.created, e.traceparent, e.tracestate, e.reason, e.attempts,
              (SELECT locked_until FROM leased LIMIT 1) AS locked_until
       FROM package_event e
       WHERE e.id = ANY(ARRAY(SELECT id FROM chosen)) AND e.package_id = ANY(ARRAY(SELECT package_id FROM heads))
         AND e.id >= (SELECT min(id) FROM chosen) AND e.id <= (SELECT max(id) FROM chosen)
     )`,
);
if (HEADS_ONLY_SQL === CLAIM_HEADS_SQL)
  throw new Error("the claim statement changed: the heads-only variant no longer applies");

await promisify(execFile)(process.execPath, ["--import", "tsx", "test/setup/prepare-template.ts"], { cwd: root });
const tdb = await createTestDatabase();
try {
  const db = tdb.db;
  const pid = (await query<{ pid: number }>(db, `SELECT pg_backend_pid() AS pid`))[0]!.pid;
  for (const [events, packages] of [
    [20_000, 1000],
    [20_000, 10],
    [50_000, 50_000],
  ] as const) {
    for (let round = 0; round < 2; round++) {
      for (const [label, sql] of [
        ["every event leased", CLAIM_HEADS_SQL],
        ["heads only", HEADS_ONLY_SQL],
      ] as const) {
        // Stale, as the relay-v2 rows: used, emptied and analyzed ("no rows"), then the burst without ANALYZE.
        await makeStale(db, 5000, Math.min(5000, packages));
        await seedBurst(db, events, packages);
        let cursor: bigint | undefined;
        let done = 0;
        const endWindow = cpuWindow({ postgres: () => [pid] });
        for (;;) {
          const claim = claimFromRows(
            await query<ClaimRow>(db, sql, claimBindings({ owner: "bench", limit: 500, leaseSeconds: 60, cursor })),
          );
          cursor = claim.cursor;
          if (claim.events.length === 0) break;
          done += await deleteEvents(
            db,
            claim.events.map((e) => e.id),
          );
        }
        const usedMs = endWindow().cpuSeconds.postgres! * 1000;
        process.stdout.write(
          `${events} events / ${packages} packages, ${label}: Postgres ${((usedMs * 1000) / done).toFixed(1)} µs per event (${done} events)\n`,
        );
      }
    }
  }
} finally {
  await tdb.drop();
}
