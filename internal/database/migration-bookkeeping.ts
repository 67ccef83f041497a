import type { Knex } from "knex";

/**
 * The migrations' bookkeeping (knex_migrations, facade_knex_migrations, their
 * locks and sequences) belongs to the role that migrates. db/roles.sql gives the
 * app role default privileges on every table the owner creates, and knex creates
 * these tables itself, so they would be granted too: an app role that could
 * delete bookkeeping rows could make the next migration run twice, and one that
 * could set the lock could stop every future migration. Takes every right on them
 * back from everyone but their owner. A database without such roles has no
 * grants to revoke, and nothing changes.
 *
 * Called by one migration of each set (db/migrations, db/facade-migrations);
 * the pattern matches both sets' tables, so either call covers a database that
 * holds both.
 */
export async function revokeBookkeepingGrants(knex: Knex): Promise<void> {
  await knex.raw(`
    DO $$
    DECLARE g record;
    BEGIN
      FOR g IN
        SELECT DISTINCT c.oid::regclass AS object, c.relkind, a.grantee
          FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
         WHERE c.relnamespace = current_schema()::regnamespace
           AND c.relname LIKE '%knex_migrations%'
           AND c.relkind IN ('r', 'S')
           AND a.grantee <> c.relowner
      LOOP
        EXECUTE format('REVOKE ALL ON %s %s FROM %s',
          CASE WHEN g.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END,
          g.object,
          CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END);
      END LOOP;
    END
    $$;
  `);
}
