import type { Knex } from "knex";

// Why an event was written when it is not a change of its package: today only
// 'republish' (`npm run admin -- republish`), an Updated
// event carrying the package's current state again. The relay turns it into
// the Kafka header `event-reason`, so consumers can tell a replay from an edit
// without a new event type (the PackageEvent enum is the wire contract).
// NULL for every ordinary change. Dead letters keep it, so a requeued
// republish is still marked as one.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE package_event ADD COLUMN reason text CHECK (reason IN ('republish'));
    ALTER TABLE package_event_dead_letter ADD COLUMN reason text;
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE package_event_dead_letter DROP COLUMN reason;
    ALTER TABLE package_event DROP COLUMN reason;
  `);
}
