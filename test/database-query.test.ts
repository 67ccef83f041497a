// internal/database/query.ts against PostgreSQL: a named statement on the pool
// goes to a pooled pg connection without knex's per-run formatting, and must
// behave as the same statement through knex does: prepared under its name with
// knex's $n text, values bound (bigint, null, arrays), errors classified and
// read as knex's (the statement with placeholders, never the values). In a
// transaction it still goes through knex.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createDatabase, type Database } from "../internal/database/database.js";
import { describeDatabaseError, sqlStateOf } from "../internal/database/pg-errors.js";
import { execute, query } from "../internal/database/query.js";
import { UnavailableError } from "../internal/domain/errors.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";

let tdb: TestDatabase;
/** One connection: what one statement prepares, the next one sees. */
let single: Database;

before(async () => {
  tdb = await createTestDatabase();
  single = createDatabase({
    url: tdb.url,
    maxConnections: 1,
    statementTimeoutMs: 30_000,
    acquireTimeoutMs: 10_000,
    applicationName: "lpa-test query",
  });
});

after(async () => {
  await single?.destroy();
  await tdb?.drop();
});

/** The statements prepared on the pool's one connection, by name. */
async function prepared(): Promise<Map<string, string>> {
  const rows = await query<{ name: string; statement: string }>(
    single,
    "SELECT name, statement FROM pg_prepared_statements",
  );
  return new Map(rows.map((r) => [r.name, r.statement]));
}

test("a named statement on the pool is prepared under its name, with knex's $n text, and binds its values", async () => {
  const sql = `SELECT ?::bigint + 1 AS "next", ?::text AS "missing", cardinality(?::int[]) AS "count"`;
  const rows = await query<{ next: bigint; missing: string | null; count: number }>(
    single,
    sql,
    [9007199254740993n, null, [1, 2, 3]],
    { name: "test_query_values" },
  );
  assert.deepEqual(rows, [{ next: 9007199254740994n, missing: null, count: 3 }]);
  const statement = (await prepared()).get("test_query_values");
  assert.equal(statement, `SELECT $1::bigint + 1 AS "next", $2::text AS "missing", cardinality($3::int[]) AS "count"`);
  // Again, on the prepared statement: other values, same answer shape.
  const again = await query<{ next: bigint }>(single, sql, [1n, "x", []], { name: "test_query_values" });
  assert.equal(again[0]!.next, 2n);
});

test("a name used with another text is refused, not run as the first text", async () => {
  await query(single, "SELECT ?::int AS one", [1], { name: "test_query_one_text" });
  await assert.rejects(
    query(single, "SELECT ?::int AS two", [2], { name: "test_query_one_text" }),
    /test_query_one_text/,
  );
});

test("in a transaction a named statement sees the transaction's own rows", async () => {
  await single.transaction(async (trx) => {
    await execute(trx, "CREATE TEMP TABLE query_tx (v int) ON COMMIT DROP");
    await execute(trx, "INSERT INTO query_tx VALUES (?)", [7]);
    const rows = await query<{ n: number }>(trx, "SELECT count(*)::int AS n FROM query_tx WHERE v = ?", [7], {
      name: "test_query_in_tx",
    });
    assert.equal(rows[0]!.n, 1);
  });
});

test("a failing named statement keeps its SQLSTATE; its message names the statement, not its values", async () => {
  const err = await query(single, "SELECT ?::int / 0", [424242], { name: "test_query_fails" }).then(
    () => assert.fail("division by zero succeeded"),
    (e: unknown) => e,
  );
  assert.equal(sqlStateOf(err), "22012");
  assert.match((err as Error).message, /^test_query_fails - division by zero$/);
  assert.doesNotMatch((err as Error).message, /424242/);
  assert.deepEqual(describeDatabaseError(err), { code: "22012", message: "division by zero" });
});

test("a named statement on an unreachable database fails as Unavailable", async () => {
  const unreachable = createDatabase({
    url: "postgres://postgres:postgres@127.0.0.1:1/postgres",
    maxConnections: 1,
    statementTimeoutMs: 1000,
    acquireTimeoutMs: 1000,
    applicationName: "lpa-test unreachable",
  });
  try {
    await assert.rejects(
      query(unreachable, "SELECT ?::int", [1], { name: "test_query_unreachable" }),
      UnavailableError,
    );
  } finally {
    await unreachable.destroy();
  }
});
