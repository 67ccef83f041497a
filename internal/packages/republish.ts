import type { Database } from "../database/database.js";
import { query, type SqlValue } from "../database/query.js";
import { packageNotFound } from "../domain/errors.js";

/**
 * Republish: a new outbox event carrying a package's current state, so that a
 * consumer can rebuild its read model or a new consumer can backfill. It is an
 * `Updated` event (the consumers' enum is the wire contract) whose row carries
 * reason = 'republish', which the relay sends as the Kafka header
 * `event-reason: republish`.
 *
 * The event is written like a change (package-repo.ts): one statement that
 * takes the package's row lock and inserts the event from the locked row, so
 * the event id is drawn while the lock is held. A concurrent Update of the same
 * package therefore commits either before (and its event id is lower, the
 * republished state includes it) or after (its event id is higher): per
 * package, event order is commit order, and the republished state is never
 * older than an event ahead of it. Removed packages are not republished.
 */

export interface RepublishFilter {
  /** Only packages created or updated at or after this time. */
  since?: Date;
}

export interface RepublishBatch {
  /** Live packages the batch looked at (up to the batch size). */
  scanned: number;
  /** Events written: scanned less packages removed meanwhile. */
  written: number;
  /** The highest package id looked at: where the next batch starts (exclusive). */
  lastId: bigint | null;
}

const payloadAndReason = `'Updated', package_event_payload(ROW(p.*)::package), 'republish'`;

function sinceClause(filter: RepublishFilter, alias: string): { sql: string; bindings: SqlValue[] } {
  if (filter.since === undefined) return { sql: "", bindings: [] };
  return { sql: ` AND (${alias}.created >= ? OR ${alias}.updated >= ?)`, bindings: [filter.since, filter.since] };
}

/** One package's current state as a new event; NotFound when it does not exist, is removed, or is outside `filter`. */
export async function republishPackage(db: Database, id: bigint, filter: RepublishFilter = {}): Promise<bigint> {
  const since = sinceClause(filter, "package");
  const rows = await query<{ id: bigint }>(
    db,
    `WITH p AS (
       SELECT * FROM package WHERE id = ? AND NOT removed${since.sql} FOR UPDATE
     ), e AS (
       INSERT INTO package_event (package_id, type, payload, reason)
       SELECT p.id, ${payloadAndReason} FROM p
       RETURNING id
     )
     SELECT id FROM e`,
    [id, ...since.bindings],
  );
  if (rows.length === 0) throw packageNotFound();
  return rows[0]!.id;
}

/**
 * The next `batchSize` live packages after `afterId` (by id), each with a new
 * event, in one statement and so one transaction. The candidates are chosen
 * first and locked after: a package removed between the two is skipped (the
 * lock re-checks NOT removed), and the batch still ends at the last candidate,
 * so the caller's cursor never stops short.
 */
export async function republishBatch(
  db: Database,
  afterId: bigint,
  batchSize: number,
  filter: RepublishFilter = {},
): Promise<RepublishBatch> {
  const since = sinceClause(filter, "c");
  const [batch] = await query<RepublishBatch>(
    db,
    `WITH candidates AS MATERIALIZED (
       SELECT c.id FROM package c
       WHERE c.id > ? AND NOT c.removed${since.sql}
       ORDER BY c.id LIMIT ?
     ), p AS (
       SELECT * FROM package
       WHERE id = ANY(ARRAY(SELECT id FROM candidates)) AND NOT removed
       ORDER BY id FOR UPDATE
     ), e AS (
       INSERT INTO package_event (package_id, type, payload, reason)
       SELECT p.id, ${payloadAndReason} FROM p ORDER BY p.id
       RETURNING 1
     )
     SELECT (SELECT count(*) FROM candidates)::int AS scanned,
            (SELECT count(*) FROM e)::int AS written,
            (SELECT max(id) FROM candidates) AS "lastId"`,
    [afterId, ...since.bindings, batchSize],
  );
  return batch!;
}

/** How many live packages after `afterId` (and within `filter`) a republish would write an event for. */
export async function countRepublishable(
  db: Database,
  afterId: bigint,
  filter: RepublishFilter = {},
  id?: bigint,
): Promise<number> {
  const since = sinceClause(filter, "c");
  const byId = id === undefined ? "" : " AND c.id = ?";
  const rows = await query<{ n: number }>(
    db,
    `SELECT count(*)::int AS n FROM package c WHERE c.id > ? AND NOT c.removed${since.sql}${byId}`,
    [afterId, ...since.bindings, ...(id === undefined ? [] : [id])],
  );
  return rows[0]!.n;
}
