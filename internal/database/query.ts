import type { Knex } from "knex";
import type pg from "pg";
import { classifyDatabaseError } from "./pg-errors.js";

/** What runs a statement: the pool's knex handle, or a transaction of it (`db.transaction(async (trx) => …)`). */
export type Queryable = Pick<Knex, "raw">;

/** The part of knex's client (the pool's) that named statements use: its pooled pg connections. */
interface PoolClient {
  acquireConnection(): Promise<pg.ClientBase>;
  releaseConnection(connection: pg.ClientBase): Promise<unknown>;
}

/**
 * A bound value. Arrays go to Postgres as one array parameter (pg formats
 * them; knex's raw passes them through whole), so a set of ids is one
 * binding: `WHERE id = ANY(?::bigint[])`. Sets of rows travel as one JSON
 * document (rowsJson) unpacked by jsonb_to_recordset.
 */
export type SqlValue = string | number | bigint | boolean | Date | Buffer | null | readonly SqlValue[];

export interface StatementOptions {
  /**
   * Runs the statement as a named prepared statement: pg parses it once per
   * pooled connection and Postgres keeps its plan (a generic one after five
   * runs), instead of parsing and planning the text at every call: on the
   * single-package create about half of Postgres' CPU per statement, and less
   * to send (docs/performance.md, Create RPC). For hot statements whose text never
   * changes: one name must always stand for one text (pg refuses a second text
   * under a name a connection has prepared), so name a constant, never a
   * statement built from a variable number of values.
   *
   * On the pool (not in a transaction) a named statement also skips knex's
   * formatting: its `$n` text is made once, and each run goes to a pooled pg
   * connection as is, its values bound by pg.
   */
  name?: string;
}

/**
 * Runs one statement and returns its rows, typed as the caller declares them.
 * Placeholders are `?` (knex numbers them $1, $2, … for pg). Columns are named
 * in the SQL as `Row` names them (`package_id AS "packageId"`), so rows need no
 * mapper. A connectivity failure becomes UnavailableError (pg-errors.ts); any
 * other error is thrown as the driver gave it, its SQLSTATE in `code`.
 */
export async function query<Row extends object>(
  db: Queryable,
  sql: string,
  params: readonly SqlValue[] = [],
  options: StatementOptions = {},
): Promise<Row[]> {
  return (await run<Row>(db, sql, params, options)).rows;
}

/** Runs one statement for its effect: how many rows it inserted, updated or deleted. */
export async function execute(
  db: Queryable,
  sql: string,
  params: readonly SqlValue[] = [],
  options: StatementOptions = {},
): Promise<number> {
  return (await run<object>(db, sql, params, options)).rowCount ?? 0;
}

async function run<Row extends object>(
  db: Queryable,
  sql: string,
  params: readonly SqlValue[],
  { name }: StatementOptions,
): Promise<pg.QueryResult<Row>> {
  try {
    const pool = name === undefined ? undefined : poolOf(db);
    if (name !== undefined && pool !== undefined) return await runNamed<Row>(pool, db, name, sql, params);
    // bigint is not among knex's binding types, but pg binds it (as its decimal text).
    const raw = db.raw<pg.QueryResult<Row>>(sql, params as readonly Knex.RawBinding[]);
    // knex hands a raw statement's options to pg as part of its query config ({ name, text, values }).
    // A stand-in for the database whose raw() returns a plain promise gets no name.
    if (name !== undefined && typeof raw.options === "function") raw.options({ name });
    return await raw;
  } catch (err) {
    throw classifyDatabaseError(err);
  }
}

/**
 * knex's pool client when `db` is the pool's knex handle; undefined for a
 * transaction (its statements go through knex, which checks that the
 * transaction is still open) and for stand-ins of the database.
 */
function poolOf(db: Queryable): PoolClient | undefined {
  const knex = db as Partial<Knex> & { isTransaction?: boolean };
  if (knex.isTransaction === true) return undefined;
  const client = knex.client as Partial<PoolClient> | undefined;
  return typeof client?.acquireConnection === "function" && typeof client.releaseConnection === "function"
    ? (client as PoolClient)
    : undefined;
}

/** Each statement name's text as knex wrote it for pg (`$n` placeholders), with the text it came from. */
const namedTexts = new Map<string, { sql: string; text: string }>();

/**
 * A named statement on a pooled connection without knex's per-run
 * formatting (on the create, ~5% of the server's CPU per create in
 * profiles at 1,000 creates/s): the `$n` text is what knex's own formatting
 * gives, made once per name. Errors start with the statement's name, where
 * knex's start with its text: a name is a constant of the code, easy to find,
 * and the claim's text is about 5 KB, which every failed claim would log.
 */
async function runNamed<Row extends object>(
  pool: PoolClient,
  db: Queryable,
  name: string,
  sql: string,
  params: readonly SqlValue[],
): Promise<pg.QueryResult<Row>> {
  let named = namedTexts.get(name);
  if (named === undefined) {
    named = {
      sql,
      text: db
        .raw(sql, params as readonly Knex.RawBinding[])
        .toSQL()
        .toNative().sql,
    };
    namedTexts.set(name, named);
  } else if (named.sql !== sql) {
    throw new Error(`statement name ${name} already stands for another statement`);
  }
  const undefinedAt = params.indexOf(undefined as never);
  if (undefinedAt >= 0) throw new Error(`undefined binding at ${undefinedAt} in statement ${name}`);
  const connection = await pool.acquireConnection();
  try {
    return await connection.query<Row>({ name, text: named.text, values: params as unknown[] });
  } catch (err) {
    if (err instanceof Error) err.message = `${name} - ${err.message}`;
    throw err;
  } finally {
    await pool.releaseConnection(connection);
  }
}

/**
 * A set of rows as one JSON parameter, for `jsonb_to_recordset(?::jsonb) AS t(…)`:
 * one statement per set, whatever its size. bigints go as strings (JSON has no int64).
 */
export const rowsJson = (rows: readonly object[]): string =>
  JSON.stringify(rows, (_key, value: unknown) => (typeof value === "bigint" ? value.toString() : value));
