import pg from "pg";
import { type Database, facadeMigrationSet, migrateLatest } from "../database/database.js";
import { sqlStateOf } from "../database/pg-errors.js";

/** Applies the facade's migrations (db/facade-migrations, recorded in facade_knex_migrations). */
export function migrateFacade(db: Database): Promise<string[]> {
  return migrateLatest(db, facadeMigrationSet);
}

const INVALID_CATALOG_NAME = "3D000";
const DUPLICATE_DATABASE = "42P04";
// Two facades creating the database at once: the loser sees pg_database's unique index.
const UNIQUE_VIOLATION = "23505";

/**
 * Creates the database of `url` when it does not exist, through the `postgres`
 * maintenance database of the same server. Returns whether it created it.
 * Only a missing database leads to CREATE: any other connection error (server
 * down, bad password) is thrown as it is.
 */
export async function ensureDatabase(url: string, connectTimeoutMs: number, applicationName: string): Promise<boolean> {
  const connect = { connectTimeoutMs, applicationName };
  try {
    await withClient(url, connect, async () => undefined);
    return false;
  } catch (err) {
    if (sqlStateOf(err) !== INVALID_CATALOG_NAME) throw err;
  }
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.replace(/^\//, ""));
  const maintenance = new URL(url);
  maintenance.pathname = "/postgres";
  try {
    await withClient(maintenance.toString(), connect, (client) =>
      client.query(`CREATE DATABASE ${client.escapeIdentifier(name)}`),
    );
    return true;
  } catch (err) {
    const code = sqlStateOf(err);
    if (code === DUPLICATE_DATABASE || code === UNIQUE_VIOLATION) return false;
    throw err;
  }
}

async function withClient<T>(
  url: string,
  connect: { connectTimeoutMs: number; applicationName: string },
  fn: (client: pg.Client) => Promise<T>,
): Promise<T> {
  const client = new pg.Client({
    connectionString: url,
    connectionTimeoutMillis: connect.connectTimeoutMs,
    application_name: connect.applicationName,
  });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}
