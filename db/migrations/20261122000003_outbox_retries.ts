import type { Knex } from "knex";

// `attempts` is the dead-letter budget: claims that ended in a non-retriable
// failure or in no outcome at all (a crash). A broker outage must not spend
// it, or a long outage would dead-letter the head event of every package; so
// failures of any kind are counted separately in `retries`, which drives the
// backoff.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE package_event ADD COLUMN retries integer NOT NULL DEFAULT 0`);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`ALTER TABLE package_event DROP COLUMN retries`);
}
