import type { Database } from "../../database/database.js";
import { query, rowsJson } from "../../database/query.js";
import type { EventType } from "../../domain/package.js";

export interface InboxEntry {
  eventId: bigint;
  packageId: bigint;
  type: EventType;
}

/**
 * Records event ids in the inbox, a whole batch in one statement. Returns the
 * ids that were new; the others were taken in before (a redelivered copy) and
 * must change nothing. A copy inside the same set is inserted once.
 */
export async function recordInbox(db: Database, entries: readonly InboxEntry[]): Promise<Set<bigint>> {
  if (entries.length === 0) return new Set();
  const rows = await query<{ eventId: bigint }>(
    db,
    `INSERT INTO facade_inbox (event_id, package_id, type)
     SELECT event_id, package_id, type
     FROM jsonb_to_recordset(?::jsonb) AS e(event_id bigint, package_id bigint, type text)
     ON CONFLICT (event_id) DO NOTHING
     RETURNING event_id AS "eventId"`,
    [rowsJson(entries.map((e) => ({ event_id: e.eventId, package_id: e.packageId, type: e.type })))],
  );
  return new Set(rows.map((r) => r.eventId));
}
