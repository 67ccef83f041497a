import type { Knex } from "knex";

// The inbox retention deletes rows by age (applied_at); without this index each
// batch would scan the whole inbox. Built CONCURRENTLY (outside a transaction)
// so that a facade upgraded over a large inbox keeps applying while it builds.
export const config = { transaction: false };

export async function up(knex: Knex): Promise<void> {
  await knex.raw(`CREATE INDEX CONCURRENTLY IF NOT EXISTS facade_inbox_applied_at ON facade_inbox (applied_at)`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`DROP INDEX CONCURRENTLY IF EXISTS facade_inbox_applied_at`);
}
