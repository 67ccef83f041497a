import { fileURLToPath } from "node:url";
import knexFactory, { type Knex } from "knex";
import pg from "pg";
import { withDeadline } from "../lifecycle/deadline.js";
import { RecordedNameMigrationSource } from "./migration-source.js";

export type Database = Knex;

export interface DatabaseOptions {
  url: string;
  maxConnections: number;
  statementTimeoutMs: number;
  acquireTimeoutMs: number;
  /** Shown in pg_stat_activity, so an operator can tell the binaries apart. */
  applicationName: string;
}

// int8 arrives as a string by default; ids are uint64 on the wire, which
// protobuf-es represents as bigint, so parse them straight into bigint. Passed
// per connection rather than set globally on pg.types.
const types = {
  getTypeParser(oid: number, format?: "text" | "binary") {
    if (oid === pg.types.builtins.INT8) return (value: string) => BigInt(value);
    return format === undefined ? pg.types.getTypeParser(oid) : pg.types.getTypeParser(oid, format);
  },
};

export function createDatabase(options: DatabaseOptions): Database {
  return knexFactory({
    client: "pg",
    connection: {
      connectionString: options.url,
      application_name: options.applicationName,
      statement_timeout: options.statementTimeoutMs,
      // A dead server must not hang a request until the OS gives up on TCP.
      connectionTimeoutMillis: options.acquireTimeoutMs,
      keepAlive: true,
      types,
    } as Knex.PgConnectionConfig,
    pool: { min: 0, max: options.maxConnections },
    // Error messages keep the SQL with its placeholders, not the bound values:
    // logs of internal errors must not fill with request data.
    compileSqlOnError: false,
    acquireConnectionTimeout: options.acquireTimeoutMs,
  });
}

/** A directory of migrations and the table in which knex records those applied. */
export interface MigrationSet {
  directory: string;
  tableName: string;
}

/** The API's schema: db/migrations, applied by `npm run migrate` or at the start of its binaries. */
export const apiMigrationSet: MigrationSet = {
  directory: fileURLToPath(new URL("../../db/migrations", import.meta.url)),
  tableName: "knex_migrations",
};

/**
 * The facade's read model: db/facade-migrations, applied at the facade's start. Their own
 * bookkeeping table keeps them apart from the API's, so the facade may also share the API's database.
 */
export const facadeMigrationSet: MigrationSet = {
  directory: fileURLToPath(new URL("../../db/facade-migrations", import.meta.url)),
  tableName: "facade_knex_migrations",
};

export const migrationsDirectory = apiMigrationSet.directory;

/** Applies the set's pending migrations; resolves with their recorded names. */
export async function migrateLatest(db: Database, set: MigrationSet = apiMigrationSet): Promise<string[]> {
  // Recorded as `<base>.ts` whether the sources or the compiled dist/ run (migration-source.ts).
  const [, applied] = (await db.migrate.latest({
    migrationSource: new RecordedNameMigrationSource(set.directory),
    tableName: set.tableName,
  })) as [number, string[]];
  return applied;
}

/** `select 1` within a deadline: the readiness probe. */
export async function ping(db: Database, timeoutMs: number): Promise<void> {
  await withDeadline(db.raw("select 1"), timeoutMs, () => new Error(`database did not answer within ${timeoutMs} ms`));
}
