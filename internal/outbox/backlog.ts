import type { Database } from "../database/database.js";
import { query } from "../database/query.js";

export interface Backlog {
  /** Rows in the outbox: exact up to `exactUpTo`, an estimate above it (`eventsEstimated`). */
  events: number;
  eventsEstimated: boolean;
  /** Seconds since the oldest unpublished event was written (0 when empty). */
  oldestAgeSeconds: number;
  /** Rows in the dead-letter table, counted the same way as `events`. */
  deadLetters: number;
  deadLettersEstimated: boolean;
}

/**
 * Up to this many rows a table is counted exactly; above it the reading is an
 * estimate. Every retranslator reads the backlog every maintenanceIntervalMs,
 * and the outbox holds millions of rows after a Kafka outage, exactly when
 * Postgres is busiest: counting 100,000 rows costs about 5-30 ms, a whole
 * outbox of 2,000,000 0.2-0.3 s (docs/relay.md, "The backlog gauge"). The
 * backlogs of normal operation stay far below it. The docs and the gauges'
 * help texts name this figure.
 */
export const BACKLOG_EXACT_UP_TO = 100_000;

export interface BacklogOptions {
  /** Tests pass a small cap; production uses BACKLOG_EXACT_UP_TO. */
  exactUpTo?: number;
}

/** What one statement learns of a table's size without reading more than exactUpTo + 1 of its rows. */
interface SizeReading {
  /** Rows counted, newest first, stopping at exactUpTo + 1. */
  counted: number;
  /** Postgres' planner figure: rows per page at the last ANALYZE/VACUUM times the pages now; null without statistics. */
  planned: number | null;
  /** max(id) - min(id) + 1: no more rows than that can exist (ids are unique); null when empty. */
  idSpan: number | null;
}

interface TableSize {
  rows: number;
  estimated: boolean;
}

/**
 * The figure reported for a table: the count when it did not pass the cap;
 * above it, the planner's figure held between what is known for sure: at least
 * the rows counted (so never less than the cap, whatever stale statistics say)
 * and at most the id span (close to the count while nothing in between was
 * deleted, and below the planner's figure while a drain outruns ANALYZE).
 */
function tableSize(reading: SizeReading, exactUpTo: number): TableSize {
  if (reading.counted <= exactUpTo) return { rows: reading.counted, estimated: false };
  const atMost = reading.idSpan ?? Number.POSITIVE_INFINITY;
  const figure = Math.min(Math.max(reading.planned ?? 0, reading.counted), atMost);
  return { rows: Math.round(figure), estimated: true };
}

/**
 * The size columns of `table` (a constant of this module, never input). The
 * count walks the primary key from the newest row: published events stay as
 * dead rows until autovacuum removes them, and they lie among the older ids,
 * which a sequential count meets first (1 s instead of 25-33 ms with the
 * oldest 1,600,000 of 2,000,000 deleted; docs/relay.md). The id span
 * probes both ends of the key as two LIMIT 1 lookups: written as
 * max(id) - min(id), a planner whose statistics say the table is empty
 * aggregates the whole key instead.
 */
function sizeColumns(table: "package_event" | "package_event_dead_letter", as: string): string {
  return `(SELECT count(*)::int FROM (SELECT FROM ${table} ORDER BY id DESC LIMIT ?) newest) AS "${as}Counted",
          ((SELECT id FROM ${table} ORDER BY id DESC LIMIT 1) - (SELECT id FROM ${table} ORDER BY id LIMIT 1) + 1)::float8
            AS "${as}IdSpan",
          (SELECT CASE WHEN c.reltuples >= 0 AND c.relpages > 0
                       THEN c.reltuples::float8 / c.relpages
                            * (pg_relation_size(c.oid) / current_setting('block_size')::float8) END
             FROM pg_class c WHERE c.oid = '${table}'::regclass) AS "${as}Planned"`;
}

interface BacklogRow {
  eventsCounted: number;
  eventsIdSpan: number | null;
  eventsPlanned: number | null;
  oldestAgeSeconds: number;
  deadLettersCounted: number;
  deadLettersIdSpan: number | null;
  deadLettersPlanned: number | null;
}

/**
 * Outbox and dead-letter sizes for the metrics, in one statement whose cost
 * does not grow with the tables: at most exactUpTo + 1 rows of each plus a few
 * index probes and catalog lookups.
 */
export async function readBacklog(
  db: Database,
  { exactUpTo = BACKLOG_EXACT_UP_TO }: BacklogOptions = {},
): Promise<Backlog> {
  const [row] = await query<BacklogRow>(
    db,
    `SELECT ${sizeColumns("package_event", "events")},
            -- The oldest by id (the primary key), not min(created), which would read every row.
            greatest(coalesce(extract(epoch FROM now() - (SELECT created FROM package_event ORDER BY id LIMIT 1)), 0), 0)::float8
              AS "oldestAgeSeconds",
            ${sizeColumns("package_event_dead_letter", "deadLetters")}`,
    [exactUpTo + 1, exactUpTo + 1],
  );
  const events = tableSize(
    { counted: row!.eventsCounted, planned: row!.eventsPlanned, idSpan: row!.eventsIdSpan },
    exactUpTo,
  );
  const deadLetters = tableSize(
    { counted: row!.deadLettersCounted, planned: row!.deadLettersPlanned, idSpan: row!.deadLettersIdSpan },
    exactUpTo,
  );
  return {
    events: events.rows,
    eventsEstimated: events.estimated,
    oldestAgeSeconds: row!.oldestAgeSeconds,
    deadLetters: deadLetters.rows,
    deadLettersEstimated: deadLetters.estimated,
  };
}
