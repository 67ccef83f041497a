import type { Database } from "../database/database.js";
import { query, type SqlValue } from "../database/query.js";
import type { OutboxEvent } from "./types.js";

export interface ClaimRequest {
  owner: string;
  /** Most events in one claim. */
  limit: number;
  leaseSeconds: number;
  /**
   * Where the walk over packages resumes: the last package the previous
   * claim visited (undefined on the first claim: a random start, so that
   * instances do not all start at the same package).
   */
  cursor?: bigint | undefined;
  /** Packages not to claim now (their Kafka partition is backing off): skipped, not taken. */
  skipPackages?: readonly bigint[];
  /** Most packages visited in one claim, claimable or not: bounds a claim when most are blocked. */
  maxVisits?: number;
}

export interface Claim {
  events: OutboxEvent[];
  /** Pass to the next claim. */
  cursor: bigint;
  /** Packages the walk looked at (claimed or skipped as blocked). */
  visited: number;
  /**
   * Events this claim took whose previous lease had run out: their relay died
   * or stalled past its lease without an outcome (there is no separate reaper;
   * the walk treats an expired lease as free).
   */
  takenOver: number;
  /**
   * The claim filled up inside its last package (`cursor`), which has events
   * after those taken: they become claimable once these are acknowledged. False
   * when the claim ended on a package's last event, so that the relay does not
   * wait on acknowledgements that free nothing.
   */
  cutShort: boolean;
  /**
   * A claimable head exists beyond what this claim took: after filling up, the
   * walk looked on (taking nothing) until it found one. False when the claim
   * did not fill, or when the walk ended (wrapped round, or maxVisits) without
   * finding one, so that the relay does not claim again at once only to find
   * nothing.
   */
  more: boolean;
}

/**
 * A row of the claim: a claimed event (its `summary` false), or the one row
 * with the walk's figures and the claim's lease (`summary` true, the event's
 * columns NULL). The figures and the lease are the same for every event of a
 * claim, so they come once rather than on each of up to `limit` rows, which
 * the relay would parse each time; `created` comes as epoch milliseconds,
 * which parse as a number, not as timestamp text.
 */
export type ClaimRow =
  | {
      summary: true;
      cursor: bigint;
      visits: number;
      takenOver: number;
      cutShort: boolean;
      more: boolean;
      lease: string | null;
    }
  | ({ summary: false; createdMs: number } & Omit<OutboxEvent, "created" | "lease">);

/** The claim statement (see claimHeads); exported for tests that run it under a forced interleaving. */
export const CLAIM_HEADS_SQL = `WITH RECURSIVE start AS (
       -- A random place among the packages that have events, when no cursor is given.
       -- (Two LIMIT 1 probes of the index, not min()/max() in one aggregate, which reads it whole.)
       SELECT coalesce(?::bigint, lo - 1 + floor(random() * (hi - lo + 1))::bigint) AS cursor
       FROM (SELECT (SELECT package_id FROM package_event ORDER BY package_id LIMIT 1) AS lo,
                    (SELECT package_id FROM package_event ORDER BY package_id DESC LIMIT 1) AS hi) range
     ), walk (package_id, head_id, take, more, total, visits, wrapped, ahead) AS (
       SELECT coalesce(s.cursor, 0), NULL::bigint, 0::bigint, false, 0::bigint, 0, false, false FROM start s
       UNION ALL
       -- ahead: the claim had filled before this package (a look-ahead row: it takes nothing,
       -- and its "more" says whether its head is claimable).
       SELECT nx.package_id, nx.id, t.take, t.more, w.total + t.take, w.visits + 1, nx.wrapped,
              w.total >= ?::bigint
       FROM walk w CROSS JOIN start s
       CROSS JOIN LATERAL (
         -- The next package's head; past the last package, once, back to the first.
         (SELECT e.package_id, e.id, e.locked_by, e.locked_until, e.available_at, w.wrapped AS wrapped FROM package_event e
          WHERE e.package_id > w.package_id AND (NOT w.wrapped OR e.package_id <= s.cursor)
          ORDER BY e.package_id, e.id LIMIT 1)
         UNION ALL
         (SELECT e.package_id, e.id, e.locked_by, e.locked_until, e.available_at, true FROM package_event e
          WHERE NOT w.wrapped AND e.package_id <= s.cursor
          ORDER BY e.package_id, e.id LIMIT 1)
         LIMIT 1
       ) nx
       CROSS JOIN LATERAL (
         -- How many of its events to take: none when the head is blocked. One
         -- more is counted than the claim has room for, to tell whether it
         -- leaves some of the package behind (with no room left, a look-ahead
         -- row: whether its head is claimable, LIMIT 1).
         SELECT least(count(*), ?::bigint - w.total) AS take, count(*) > ?::bigint - w.total AS more FROM (
           SELECT 1 FROM package_event c
           -- A range of one package, not "=": with "=" the planner may read the
           -- primary key in id order and filter on the package (every package's
           -- events, until this one's), which stale statistics make look as
           -- cheap; only the (package_id, id) index gives this order unsorted.
           WHERE c.package_id >= nx.package_id AND c.package_id <= nx.package_id
             -- The head is locked here, as the walk counts it, rather than after the walk: a
             -- head another claim holds at this moment is passed over like a leased one, and the
             -- walk fills from other packages (locking after the walk, a claim whose walk met
             -- another's chose heads that the other then held, and came back empty). The lock is
             -- checked again on the head's latest version; a head another claim leased and
             -- committed after this statement's snapshot stays locked until this one commits,
             -- though not taken (its owner's outcome waits that long). A CASE, so that the lock
             -- is tried only after every other test passed (AND leaves the order to the
             -- planner): never for a blocked head, nor on a look-ahead row (no room left), which
             -- takes nothing. By package and id, one probe.
             AND CASE WHEN ((nx.locked_by IS NULL OR nx.locked_until < now()) AND nx.available_at <= now()
                            AND nx.package_id <> ALL(?::bigint[])
                            AND NOT EXISTS (SELECT 1 FROM package_event_dead_letter d
                                            WHERE d.package_id = nx.package_id)) IS NOT TRUE THEN false
                      WHEN w.total >= ?::bigint THEN true
                      ELSE EXISTS (SELECT 1 FROM package_event h
                                   WHERE h.package_id = nx.package_id AND h.id = nx.id
                                     AND (h.locked_by IS NULL OR h.locked_until < now()) AND h.available_at <= now()
                                   FOR UPDATE SKIP LOCKED) END
           ORDER BY c.package_id, c.id LIMIT ?::bigint - w.total + 1) n
       ) t
       -- Until a look-ahead row found a claimable head, the walk ends, or maxVisits.
       WHERE NOT (w.ahead AND w.more) AND w.visits < ?::int
     ), heads AS (
       -- Every head taken from is locked by this statement (the walk's count locks it).
       SELECT package_id, head_id, take FROM walk WHERE take > 0
     ), chosen AS (
       SELECT x.id, x.expired FROM heads h
       CROSS JOIN LATERAL (
         -- Ordered as the index reads it (package, id: within one package, id order), so
         -- that no sort runs per head; by id alone the planner sorted each head's rows.
         SELECT r.id, r.locked_by IS NOT NULL AS expired,
                bool_and(r.locked_by IS NULL OR r.locked_until < now()) OVER (ORDER BY r.package_id, r.id) AS free
         FROM (SELECT c.package_id, c.id, c.locked_by, c.locked_until FROM package_event c
               -- The package from its head (its earliest event) on: as in the walk's count,
               -- a range of one package, so that only the (package_id, id) index fits.
               WHERE c.package_id >= h.package_id AND c.package_id <= h.package_id
               ORDER BY c.package_id, c.id LIMIT h.take) r
       ) x
       WHERE x.free
     ), claimed AS (
       UPDATE package_event e
       SET locked_by = ?, locked_until = now() + make_interval(secs => ?), attempts = e.attempts + 1,
           last_error = CASE WHEN e.locked_by IS NULL THEN e.last_error ELSE coalesce(e.last_error, 'lease expired') END
       -- By id, so that a row changed since this statement's snapshot (a late outcome of an
       -- older claim) is followed to its current version and checked again; a row address
       -- (ctid) would skip it and could take a package's later events without an earlier one.
       -- The packages and the span of the ids beside them keep the plan on the ids whatever the
       -- statistics say: one probe per id through the primary key, or through (package_id, id)
       -- each package from its head to the span's end (with the packages alone, the planner
       -- read every event of each claimed package).
       WHERE e.id = ANY(ARRAY(SELECT id FROM chosen)) AND e.package_id = ANY(ARRAY(SELECT package_id FROM heads))
         AND e.id >= (SELECT min(id) FROM chosen) AND e.id <= (SELECT max(id) FROM chosen)
         AND (e.locked_by IS NULL OR e.locked_until < now())
       RETURNING e.id, e.package_id, e.type, e.payload, e.created, e.traceparent, e.tracestate, e.reason,
                 e.attempts, e.locked_until
     )
     -- The events, then one summary row (see ClaimRow). Cursor and cutShort come from the last
     -- package the claim took from or looked at before filling, not from the look-ahead, so the
     -- next claim starts with what the look-ahead passed.
     SELECT false AS summary, NULL::bigint AS cursor, NULL::int AS visits, NULL::boolean AS "cutShort",
            NULL::boolean AS more, NULL::int AS "takenOver", NULL::text AS lease,
            c.id, c.package_id AS "packageId", c.type, c.payload::text AS payload,
            floor(extract(epoch FROM c.created) * 1000)::float8 AS "createdMs",
            c.traceparent, c.tracestate, c.reason, c.attempts
     FROM claimed c
     UNION ALL
     SELECT true, last.package_id, (SELECT max(visits) FROM walk), last.more,
            EXISTS (SELECT 1 FROM walk WHERE ahead AND more),
            (SELECT count(*) FROM chosen WHERE expired AND id IN (SELECT id FROM claimed))::int,
            (SELECT locked_until::text FROM claimed LIMIT 1),
            NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL
     FROM (SELECT package_id, more FROM walk WHERE NOT ahead ORDER BY visits DESC LIMIT 1) last`;

/**
 * Claims whole package heads: walks the packages that have events in
 * package_id order, starting after `cursor` and wrapping around once, and
 * from each package whose head (earliest event) is claimable takes the head
 * and the events right after it, until `limit` events are taken. Leased in one
 * statement, committed at once: no transaction stays open across a send.
 *
 * Look-ahead: once the claim has filled, the walk goes on over the next
 * packages taking nothing (rows marked `ahead`, one probe each, LIMIT 1) until
 * it meets a claimable head or ends; `more` says which. Without it the claim
 * after the last full one of a drain is empty: only a claim can tell that
 * nothing is left. The cursor stays at the last package the claim took from
 * (or looked at before filling), so the next claim starts with the packages
 * the look-ahead passed over and the head it found: none loses its turn. The
 * walk's two legs, (cursor, max] then [min, cursor], never repeat a package,
 * so the look-ahead cannot find a package this claim took.
 *
 * Why this shape: every step of the walk is an index probe bounded by LIMIT
 * (the next package after the previous one, its head, its next events), so
 * the plan is the same with fresh statistics and with "empty table" ones left
 * by ANALYZE after a quiet period; the old "first N events by id, minus those
 * with an earlier event elsewhere" claim turned into a nested loop over the
 * whole outbox under such statistics (seconds per claim during a burst).
 * And a package whose head is blocked (leased, in backoff, behind a dead
 * letter, on a partition backing off) costs one probe and is passed over:
 * blocked packages cannot fill a claim, whatever their backlog.
 *
 * Per-package order: a package is taken only from its head, only when the
 * head itself is not leased (locked by the walk with SKIP LOCKED, so two
 * instances walking over the same package cannot both take it: the second
 * passes over it as blocked), and only as an unbroken
 * run of unleased events after it. A lease that has run out counts as none:
 * its relay died or stalled past it, and the outcome it may still write is
 * fenced by the lease token (see release-events.ts). Taking over expired
 * leases here, instead of a reaper that finds them, is what lets the lease
 * columns go without indexes, which makes every lease write a HOT update
 * (db/migrations/20261201000001_outbox_hot_leases.ts). So a package has at most one claim
 * anywhere, and its events leave in id order. Attempts are counted here, so
 * an event whose relay crashes mid-send still runs out of attempts.
 */

export async function claimHeads(db: Database, request: ClaimRequest): Promise<Claim> {
  return claimFromRows(
    await query<ClaimRow>(db, CLAIM_HEADS_SQL, claimBindings(request), { name: "outbox_claim_heads" }),
  );
}

/** The claim's bound values, in the order of its placeholders. */
export function claimBindings(request: ClaimRequest): SqlValue[] {
  const maxVisits = request.maxVisits ?? Math.max(1000, request.limit * 4);
  return [
    request.cursor ?? null,
    request.limit,
    request.limit,
    request.limit,
    request.skipPackages ?? [],
    request.limit,
    request.limit,
    maxVisits,
    request.owner,
    request.leaseSeconds,
  ];
}

/** The claim's rows (its events and one summary row, see ClaimRow) as a Claim. */
export function claimFromRows(rows: readonly ClaimRow[]): Claim {
  const summary = rows.find((row) => row.summary);
  if (summary === undefined) throw new Error("the claim returned no summary row");
  const events: OutboxEvent[] = [];
  const lease = summary.lease;
  for (const row of rows) {
    if (row.summary) continue;
    if (lease === null) throw new Error("the claim returned events without a lease");
    events.push({
      id: row.id,
      packageId: row.packageId,
      type: row.type,
      payload: row.payload,
      created: new Date(row.createdMs),
      traceparent: row.traceparent,
      tracestate: row.tracestate,
      reason: row.reason,
      attempts: row.attempts,
      // now() is the same for every row of a statement: one lease per claim.
      lease,
    });
  }
  events.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return {
    events,
    cursor: summary.cursor,
    visited: summary.visits,
    takenOver: summary.takenOver,
    cutShort: summary.cutShort,
    more: summary.more,
  };
}

/** One claim from a random place (tests, bench): the events only. */
export async function claimEvents(
  db: Database,
  owner: string,
  limit: number,
  leaseSeconds: number,
): Promise<OutboxEvent[]> {
  return (await claimHeads(db, { owner, limit, leaseSeconds, cursor: 0n })).events;
}
