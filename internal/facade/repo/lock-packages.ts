import type { Database } from "../../database/database.js";
import { idArray } from "./types.js";

/**
 * The event id each package's stored state comes from, with the rows locked
 * for the rest of the transaction (in id order, so two transactions cannot
 * deadlock on them). Packages not stored yet are absent.
 */
export async function lockPackages(db: Database, packageIds: readonly bigint[]): Promise<Map<bigint, bigint>> {
  if (packageIds.length === 0) return new Map();
  const result = await db.raw(
    `SELECT id, last_event_id FROM facade_package WHERE id = ANY(?::bigint[]) ORDER BY id FOR UPDATE`,
    [idArray(packageIds)],
  );
  return new Map(
    (result as { rows: { id: bigint; last_event_id: bigint }[] }).rows.map((r) => [r.id, r.last_event_id]),
  );
}
