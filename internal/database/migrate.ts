import type { Config } from "../config/config.js";
import { apiMigrationSet, createDatabase, type Database, facadeMigrationSet, migrateLatest } from "./database.js";
import { sqlStateOf } from "./pg-errors.js";

/**
 * Migrations failed because their role may not change the schema: the
 * binary was started with the app role (db/roles.sql) and no migration URL.
 * Says which keys to set instead of leaving a bare "permission denied" to be
 * guessed at across restarts.
 */
export class MigrationPermissionError extends Error {
  override name = "MigrationPermissionError";
}

export interface MigrationTarget {
  /** The serving URL; migrations use it only when migrationUrl is empty. */
  url: string;
  migrationUrl: string;
  /** Config keys and variables to name in the error, e.g. database.migrationUrl / DATABASE_MIGRATION_URL. */
  keys: { url: string; migrationUrl: string; migrationEnv: string };
  /** Applies the set's pending migrations; resolves with their names. */
  migrate: (db: Database) => Promise<string[]>;
}

export interface MigrationConnection {
  acquireTimeoutMs: number;
  applicationName: string;
}

const INSUFFICIENT_PRIVILEGE = "42501";

/**
 * Runs `migrate` on a connection of its own to `migrationUrl` (or `url` when
 * empty), so that the serving pool never holds the owner's credentials, and
 * closes it. No statement timeout: a migration may rewrite a large table.
 */
export async function runMigrations(target: MigrationTarget, connection: MigrationConnection): Promise<string[]> {
  const ownUrl = target.migrationUrl !== "";
  const url = ownUrl ? target.migrationUrl : target.url;
  const db = createDatabase({
    url,
    maxConnections: 1,
    statementTimeoutMs: 0,
    acquireTimeoutMs: connection.acquireTimeoutMs,
    applicationName: connection.applicationName,
  });
  try {
    return await target.migrate(db);
  } catch (err) {
    if (sqlStateOf(err) !== INSUFFICIENT_PRIVILEGE) throw err;
    const role = roleOf(url);
    const cause = (err as Error).message;
    throw new MigrationPermissionError(
      ownUrl
        ? `migrations failed: role ${role} of ${target.keys.migrationUrl} may not change the schema (${cause}); ` +
            `it must be the schema owner (see db/roles.sql)`
        : `migrations failed: role ${role} of ${target.keys.url} may not change the schema (${cause}); ` +
            `set ${target.keys.migrationUrl} (${target.keys.migrationEnv}) to the schema owner's URL, ` +
            `or turn database.migrateOnStart off and run \`npm run migrate\` with the owner's URL`,
      { cause: err },
    );
  } finally {
    await db.destroy();
  }
}

/** The user name of a connection URL: never its password. */
function roleOf(url: string): string {
  try {
    const user = decodeURIComponent(new URL(url).username);
    return user === "" ? "(the default user)" : `"${user}"`;
  } catch {
    return "(unparsable URL)";
  }
}

/** The API's migrations (db/migrations) under database.migrationUrl, or database.url. */
export function apiMigrations(config: Readonly<Config>): MigrationTarget {
  return {
    url: config.database.url,
    migrationUrl: config.database.migrationUrl,
    keys: { url: "database.url", migrationUrl: "database.migrationUrl", migrationEnv: "DATABASE_MIGRATION_URL" },
    migrate: (db) => migrateLatest(db, apiMigrationSet),
  };
}

/** The facade's migrations (db/facade-migrations) under facade.migrationUrl, or facade.databaseUrl. */
export function facadeMigrations(config: Readonly<Config>): MigrationTarget {
  return {
    url: config.facade.databaseUrl,
    migrationUrl: config.facade.migrationUrl,
    keys: {
      url: "facade.databaseUrl",
      migrationUrl: "facade.migrationUrl",
      migrationEnv: "FACADE_DATABASE_MIGRATION_URL",
    },
    migrate: (db) => migrateLatest(db, facadeMigrationSet),
  };
}
