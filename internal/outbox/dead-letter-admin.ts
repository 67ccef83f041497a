import type { Database } from "../database/database.js";
import { execute, query } from "../database/query.js";
import { NotFoundError } from "../domain/errors.js";

// The operator's statements on the dead-letter table (npm run admin -- dead-letters | requeue | discard);
// the relay moves events into it with deadLetterEvents (dead-letter-events.ts).

export interface DeadLetter {
  id: bigint;
  packageId: bigint;
  type: string;
  attempts: number;
  lastError: string;
  created: Date;
  failedAt: Date;
  /** Later events of the same package waiting behind this one. */
  parked: number;
}

export function listDeadLetters(db: Database, limit: number): Promise<DeadLetter[]> {
  return query<DeadLetter>(
    db,
    `SELECT d.id, d.package_id AS "packageId", d.type, d.attempts, d.last_error AS "lastError", d.created,
            d.failed_at AS "failedAt",
            (SELECT count(*)::int FROM package_event e WHERE e.package_id = d.package_id) AS parked
     FROM package_event_dead_letter d ORDER BY d.id LIMIT ?`,
    [limit],
  );
}

/**
 * Puts a dead letter back into the outbox under its own id (so it is again the
 * earliest event of its package and goes first), with fresh attempts.
 */
export async function requeueDeadLetter(db: Database, id: bigint): Promise<void> {
  const moved = await execute(
    db,
    `WITH moved AS (DELETE FROM package_event_dead_letter WHERE id = ? RETURNING *)
     INSERT INTO package_event (id, package_id, type, payload, created, traceparent, tracestate, reason, last_error)
     OVERRIDING SYSTEM VALUE
     SELECT id, package_id, type, payload, created, traceparent, tracestate, reason, last_error FROM moved`,
    [id],
  );
  if (moved === 0) throw new NotFoundError(`dead letter ${id} not found`);
}

/** Drops a dead letter for good; its package's parked events flow again. */
export async function discardDeadLetter(db: Database, id: bigint): Promise<void> {
  const deleted = await execute(db, `DELETE FROM package_event_dead_letter WHERE id = ?`, [id]);
  if (deleted === 0) throw new NotFoundError(`dead letter ${id} not found`);
}
