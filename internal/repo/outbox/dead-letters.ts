import type { Database } from "../../database/database.js";
import { NotFoundError } from "../../domain/errors.js";

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

export async function listDeadLetters(db: Database, limit: number): Promise<DeadLetter[]> {
  const result = await db.raw(
    `SELECT d.id, d.package_id, d.type, d.attempts, d.last_error, d.created, d.failed_at,
            (SELECT count(*)::int FROM package_event e WHERE e.package_id = d.package_id) AS parked
     FROM package_event_dead_letter d ORDER BY d.id LIMIT ?`,
    [limit],
  );
  return (
    result as {
      rows: {
        id: bigint;
        package_id: bigint;
        type: string;
        attempts: number;
        last_error: string;
        created: Date;
        failed_at: Date;
        parked: number;
      }[];
    }
  ).rows.map((r) => ({
    id: r.id,
    packageId: r.package_id,
    type: r.type,
    attempts: r.attempts,
    lastError: r.last_error,
    created: r.created,
    failedAt: r.failed_at,
    parked: r.parked,
  }));
}

/**
 * Puts a dead letter back into the outbox under its own id (so it is again the
 * earliest event of its package and goes first), with fresh attempts.
 */
export async function requeueDeadLetter(db: Database, id: bigint): Promise<void> {
  const result = await db.raw(
    `WITH moved AS (DELETE FROM package_event_dead_letter WHERE id = ? RETURNING *)
     INSERT INTO package_event (id, package_id, type, payload, created, traceparent, tracestate, reason, last_error)
     OVERRIDING SYSTEM VALUE
     SELECT id, package_id, type, payload, created, traceparent, tracestate, reason, last_error FROM moved`,
    [id.toString()],
  );
  if ((result as { rowCount: number }).rowCount === 0) throw new NotFoundError(`dead letter ${id} not found`);
}

/** Drops a dead letter for good; its package's parked events flow again. */
export async function discardDeadLetter(db: Database, id: bigint): Promise<void> {
  const result = await db.raw(`DELETE FROM package_event_dead_letter WHERE id = ?`, [id.toString()]);
  if ((result as { rowCount: number }).rowCount === 0) throw new NotFoundError(`dead letter ${id} not found`);
}
