-- Least-privilege roles for one database of logistic-package-api.
--
--   owner  owns the schema and everything migrations create. Only migrations use it:
--          its URL is DATABASE_MIGRATION_URL (FACADE_DATABASE_MIGRATION_URL for the facade).
--   app    may SELECT, INSERT, UPDATE and DELETE rows of the tables and use their sequences;
--          it cannot create, alter, drop or truncate anything, nor touch the migrations'
--          bookkeeping. The binaries serve with it: DATABASE_URL (FACADE_DATABASE_URL).
--
-- Run with psql as a superuser (or a role that is a member of both roles), connected to the
-- database to set up; once for the API's database and once for the facade's (roles are
-- cluster-wide, grants are per database, so the same two roles may serve both):
--
--   psql "postgres://postgres@db:5432/logistic_package_api" -v ON_ERROR_STOP=1 \
--     -v owner=lpa_owner -v owner_password="$OWNER_PASSWORD" \
--     -v app=lpa_app     -v app_password="$APP_PASSWORD" \
--     -f db/roles.sql
--
-- Safe to run again. On a fresh database run it before the first migration; on a database
-- migrated earlier by another role it hands the existing tables and functions to the owner
-- and grants the app role on them.
\set ON_ERROR_STOP on

SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'owner', :'owner_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'app', :'app_password')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec

-- Only these two roles (and superusers) may connect.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I, %I', current_database(), :'owner', :'app') \gexec

-- The schema is the owner's; the app may only look names up in it.
SELECT format('ALTER SCHEMA public OWNER TO %I', :'owner') \gexec
REVOKE ALL ON SCHEMA public FROM PUBLIC;
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'app') \gexec

-- Objects that already exist (a database migrated before these roles): the owner's now.
-- ALTER TABLE moves the table's indexes and owned sequences along.
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'owner')
  FROM pg_tables WHERE schemaname = 'public' \gexec
SELECT format('ALTER FUNCTION %s OWNER TO %I', p.oid::regprocedure, :'owner')
  FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
   AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e') \gexec

-- Rows of every existing table except the migrations' bookkeeping (knex_migrations,
-- knex_migrations_lock, facade_knex_migrations, ...), which only the owner touches.
SELECT format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO %I', tablename, :'app')
  FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '%knex_migrations%' \gexec
SELECT format('GRANT USAGE, SELECT ON SEQUENCE public.%I TO %I', sequencename, :'app')
  FROM pg_sequences WHERE schemaname = 'public' AND sequencename NOT LIKE '%knex_migrations%' \gexec

-- Tables and sequences the owner creates from now on (future migrations) get the same
-- grants by themselves. The bookkeeping tables are created this way too; the migration
-- ..._private_migration_bookkeeping takes the app's rights on them back.
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I', :'owner', :'app') \gexec
SELECT format('ALTER DEFAULT PRIVILEGES FOR ROLE %I IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I', :'owner', :'app') \gexec
