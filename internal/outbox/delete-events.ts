import type { Database } from "../database/database.js";
import { execute } from "../database/query.js";

/** Deletes published events, a whole set in one statement. Returns how many rows went. */
export async function deleteEvents(db: Database, ids: readonly bigint[]): Promise<number> {
  if (ids.length === 0) return 0;
  return execute(db, `DELETE FROM package_event WHERE id = ANY(?::bigint[])`, [ids]);
}
