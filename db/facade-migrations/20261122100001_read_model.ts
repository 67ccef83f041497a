import type { Knex } from "knex";

// The facade's own database: a read model of packages built from the events on
// Kafka, the inbox that makes redelivery a no-op, and the messages it could
// not use. No CHECK constraints on the data: a value the API would refuse must
// still be storable here, or one odd event would block its partition forever.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    CREATE TABLE facade_package (
      id             bigint      PRIMARY KEY,
      title          text        NOT NULL,
      material       text        NOT NULL,
      maximum_volume real        NOT NULL,
      reusable       boolean     NOT NULL,
      created        timestamptz NOT NULL,
      updated        timestamptz,
      removed        boolean     NOT NULL,
      -- The event whose state this row holds: an event with a smaller id is
      -- older than this state and is ignored.
      last_event_id  bigint      NOT NULL
    );

    -- Every event id taken in (applied, or older than the state and ignored):
    -- a copy delivered again conflicts here and changes nothing.
    CREATE TABLE facade_inbox (
      event_id   bigint      PRIMARY KEY,
      package_id bigint      NOT NULL,
      type       text        NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now()
    );

    -- Messages that could not be used (undecodable, or refused by this
    -- database), kept with their bytes for an operator; the partition moved on.
    -- Keyed by position, so a redelivered copy is recorded once.
    CREATE TABLE facade_rejected (
      topic       text        NOT NULL,
      partition   integer     NOT NULL,
      "offset"    bigint      NOT NULL,
      key         bytea,
      raw         bytea,
      error       text        NOT NULL,
      rejected_at timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (topic, partition, "offset")
    );
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    DROP TABLE facade_rejected;
    DROP TABLE facade_inbox;
    DROP TABLE facade_package;
  `);
}
