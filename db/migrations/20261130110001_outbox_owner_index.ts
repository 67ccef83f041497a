import type { Knex } from "knex";

// A relay's shutdown gives back every row it holds (`WHERE locked_by = owner`).
// Without an index of its own that statement reads every lease of every
// instance, and under stale statistics the planner may read the whole outbox.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`CREATE INDEX package_event_locked_by_idx ON package_event (locked_by) WHERE locked_by IS NOT NULL`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP INDEX package_event_locked_by_idx`);
}
