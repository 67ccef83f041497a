import type { Knex } from "knex";

// Leases without indexes, so that taking and giving back a lease is a HOT update.
//
// A claim writes locked_by, locked_until and attempts on every event it takes.
// While any index covers one of those columns (in its key or its predicate),
// Postgres must write a new entry into every index of the table for each such
// update: four index insertions per claimed event, WAL for each, and index
// bloat that VACUUM has to clean. With no index on them the update can stay on
// the row's page (a heap-only tuple) and touch no index at all.
//
// What the three indexes served is done without them now: the claim walks
// package heads through (package_id, id) and takes over a lease that ran out
// itself (no separate reaper looking for expired leases), and a relay's
// shutdown gives back the leases it tracked by id, through the primary key.
//
// fillfactor leaves room on each page for the updated copy of its rows, which
// a HOT update needs (the default, 100, fills pages with inserts). It applies
// to pages filled from now on.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    DROP INDEX package_event_claimable_idx;
    DROP INDEX package_event_lease_idx;
    DROP INDEX package_event_locked_by_idx;
    ALTER TABLE package_event SET (fillfactor = 70);
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE package_event RESET (fillfactor);
    CREATE INDEX package_event_claimable_idx ON package_event (id) WHERE locked_by IS NULL;
    CREATE INDEX package_event_lease_idx ON package_event (locked_until) WHERE locked_by IS NOT NULL;
    CREATE INDEX package_event_locked_by_idx ON package_event (locked_by) WHERE locked_by IS NOT NULL;
  `);
}
