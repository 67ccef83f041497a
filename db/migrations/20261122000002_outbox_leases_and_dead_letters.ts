import type { Knex } from "knex";

// What the retranslator needs (docs/design.md §3, docs/relay.md): leases instead of held locks,
// attempts counted at claim time, backoff, a dead-letter table that parks a
// package's later events, and a wake-up for idle relays.
export async function up(knex: Knex): Promise<void> {
  await knex.raw(`
    ALTER TABLE package_event
      ADD COLUMN attempts     integer     NOT NULL DEFAULT 0,
      -- Instance that holds the lease; NULL = claimable (once available_at has passed).
      ADD COLUMN locked_by    text,
      ADD COLUMN locked_until timestamptz,
      -- Earliest time of the next attempt (backoff after a failure).
      ADD COLUMN available_at timestamptz NOT NULL DEFAULT '-infinity',
      ADD COLUMN last_error   text;

    -- Per-package order: "is there an earlier event of this package?"
    CREATE INDEX package_event_package_id_idx ON package_event (package_id, id);
    -- The claim scans unleased events in id order; leased ones stay out of it.
    CREATE INDEX package_event_claimable_idx ON package_event (id) WHERE locked_by IS NULL;
    -- Expired leases are found without scanning the whole outbox.
    CREATE INDEX package_event_lease_idx ON package_event (locked_until) WHERE locked_by IS NOT NULL;

    CREATE TABLE package_event_dead_letter (
      id          bigint      PRIMARY KEY,
      package_id  bigint      NOT NULL,
      type        text        NOT NULL,
      payload     jsonb       NOT NULL,
      created     timestamptz NOT NULL,
      traceparent text,
      tracestate  text,
      attempts    integer     NOT NULL,
      last_error  text        NOT NULL,
      failed_at   timestamptz NOT NULL DEFAULT now()
    );
    -- A dead letter parks every later event of its package (the claim checks this).
    CREATE INDEX package_event_dead_letter_package_id_idx ON package_event_dead_letter (package_id);

    -- One notification per inserting statement, delivered at commit: idle
    -- retranslators wake at once instead of waiting for their next poll.
    CREATE FUNCTION package_event_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify('package_event', '');
      RETURN NULL;
    END
    $$;
    CREATE TRIGGER package_event_notify AFTER INSERT ON package_event
      FOR EACH STATEMENT EXECUTE FUNCTION package_event_notify();
  `);
}

export async function down(knex: Knex): Promise<void> {
  await knex.raw(`
    DROP TRIGGER package_event_notify ON package_event;
    DROP FUNCTION package_event_notify();
    DROP TABLE package_event_dead_letter;
    DROP INDEX package_event_lease_idx;
    DROP INDEX package_event_claimable_idx;
    DROP INDEX package_event_package_id_idx;
    ALTER TABLE package_event
      DROP COLUMN attempts, DROP COLUMN locked_by, DROP COLUMN locked_until,
      DROP COLUMN available_at, DROP COLUMN last_error;
  `);
}
