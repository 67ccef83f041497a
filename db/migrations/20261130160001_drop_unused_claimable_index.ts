import type { Knex } from "knex";

// package_event_claimable_idx, (id) WHERE locked_by IS NULL, served the first
// relay's claim ("the first N unleased events by id"). The claim now walks
// package heads over package_event_package_id_idx and nothing reads this index
// any more, while every create, release and takeover of an event still wrote
// an entry into it.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`DROP INDEX package_event_claimable_idx`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`CREATE INDEX package_event_claimable_idx ON package_event (id) WHERE locked_by IS NULL`);
}
