import type { Database } from "../../database/database.js";
import { execute } from "../../database/query.js";

/**
 * Deletes up to `limit` inbox rows taken in more than `retentionHours` ago;
 * returns how many. Rows a batch transaction holds are skipped (SKIP LOCKED):
 * the sweep never waits on, nor delays, the applier. Served by
 * facade_inbox_applied_at.
 */
export function deleteOldInbox(db: Database, retentionHours: number, limit: number): Promise<number> {
  return execute(
    db,
    `DELETE FROM facade_inbox
     WHERE event_id IN (
       SELECT event_id FROM facade_inbox
       WHERE applied_at < now() - make_interval(hours => ?::int)
       LIMIT ?::int
       FOR UPDATE SKIP LOCKED
     )`,
    [retentionHours, limit],
  );
}
