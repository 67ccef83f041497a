import type { Database } from "../../database/database.js";
import { query } from "../../database/query.js";

/**
 * The event id each package's stored state comes from, with the rows locked
 * for the rest of the transaction (in id order, so two transactions cannot
 * deadlock on them). Packages not stored yet are absent.
 */
export async function lockPackages(db: Database, packageIds: readonly bigint[]): Promise<Map<bigint, bigint>> {
  if (packageIds.length === 0) return new Map();
  const rows = await query<{ id: bigint; lastEventId: bigint }>(
    db,
    `SELECT id, last_event_id AS "lastEventId" FROM facade_package WHERE id = ANY(?::bigint[]) ORDER BY id FOR UPDATE`,
    [packageIds],
  );
  return new Map(rows.map((r) => [r.id, r.lastEventId]));
}
