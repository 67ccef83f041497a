import type { Database } from "../database/database.js";
import { query } from "../database/query.js";

export interface Backlog {
  events: number;
  /** Seconds since the oldest unpublished event was written (0 when empty). */
  oldestAgeSeconds: number;
  deadLetters: number;
}

/** Outbox size for the metrics; the outbox stays small, so count(*) is cheap. */
export async function readBacklog(db: Database): Promise<Backlog> {
  const [row] = await query<Backlog>(
    db,
    `SELECT (SELECT count(*)::int FROM package_event) AS events,
            -- The oldest by id (the primary key), not min(created), which would read every row.
            greatest(coalesce(extract(epoch FROM now() - (SELECT created FROM package_event ORDER BY id LIMIT 1)), 0), 0)::float8
              AS "oldestAgeSeconds",
            (SELECT count(*)::int FROM package_event_dead_letter) AS "deadLetters"`,
  );
  return row!;
}
