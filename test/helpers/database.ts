import { randomBytes } from "node:crypto";
import pg from "pg";
import { createDatabase, type Database } from "../../internal/database/database.js";

/** The maintenance database URL (scripts/test.sh exports it; the default matches scripts/ensure-postgres.sh). */
export const adminUrl = process.env.TEST_DATABASE_ADMIN_URL ?? "postgres://postgres:postgres@127.0.0.1:5432/postgres";
/** Migrated once per run by test/setup/prepare-template.ts; every test file clones it. */
export const templateName = process.env.TEST_DATABASE_TEMPLATE ?? "lpa_test_template";

export interface TestDatabase {
  name: string;
  url: string;
  /** A knex handle for assertions (pool of 4). */
  db: Database;
  drop(): Promise<void>;
}

export function databaseUrl(name: string): string {
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** One statement (or a few) as the maintenance user, on a connection of their own. */
export async function asAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** A fresh, migrated database of its own for one test file (a copy of the template: milliseconds). */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `lpa_test_${process.pid}_${randomBytes(4).toString("hex")}`;
  await asAdmin((c) => c.query(`CREATE DATABASE ${name} TEMPLATE ${templateName}`));
  const url = databaseUrl(name);
  const db = createDatabase({
    url,
    maxConnections: 4,
    statementTimeoutMs: 30_000,
    acquireTimeoutMs: 10_000,
    applicationName: "lpa-test",
  });
  return {
    name,
    url,
    db,
    async drop() {
      await db.destroy();
      await asAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

/**
 * An empty database (no migrations) named lpa_test_<pid>_<label>, like every
 * test database, so that an interrupted run's is dropped by the next run's set-up.
 */
export async function createEmptyDatabase(
  label: string,
): Promise<{ name: string; url: string; drop(): Promise<void> }> {
  const name = `lpa_test_${process.pid}_${label}`;
  await asAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  await asAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  return {
    name,
    url: databaseUrl(name),
    drop: async () => {
      await asAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

export async function count(db: Database, table: "package" | "package_event" | "idempotency_key"): Promise<number> {
  const result = await db.raw(`SELECT count(*)::int AS n FROM ${table}`);
  return (result as { rows: { n: number }[] }).rows[0]!.n;
}

export interface EventRow {
  id: bigint;
  package_id: bigint;
  type: "Created" | "Updated" | "Removed";
  payload: Record<string, unknown>;
  traceparent: string | null;
}

export async function events(db: Database, packageId?: bigint): Promise<EventRow[]> {
  const result =
    packageId === undefined
      ? await db.raw(`SELECT id, package_id, type, payload, traceparent FROM package_event ORDER BY id`)
      : await db.raw(
          `SELECT id, package_id, type, payload, traceparent FROM package_event WHERE package_id = ? ORDER BY id`,
          [packageId.toString()],
        );
  return (result as { rows: EventRow[] }).rows;
}
