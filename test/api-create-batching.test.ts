// Concurrent CreatePackageV1 calls share statements (database.createBatchSize /
// createConcurrency / createLingerMs): what a client must still be able to rely on.
//  - every call gets its own package, with exactly the fields it sent, and
//    exactly one Created event carrying its own data and its own traceparent;
//  - a row that fails the shared statement fails only its own call.

import assert from "node:assert/strict";
import { test } from "node:test";
import { events } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, packageApiClient, rpcError } from "./helpers/grpc-client.js";
import { poll } from "./helpers/poll.js";
import { startTestServer } from "./helpers/server.js";

// One create statement at a time: calls that arrive meanwhile must wait and share the next one.
const fx = useFixture({ server: { database: { createBatchSize: 50, createConcurrency: 1 } } });

const traceIdOf = (i: number) => `${(0x1000 + i).toString(16).padStart(8, "0")}${"ab".repeat(12)}`;
const traceparentOf = (i: number) => `00-${traceIdOf(i)}-00f067aa0ba902b7-01`;

/** How many transactions wrote these packages (rows written by one transaction share xmin). */
async function transactionsOf(ids: readonly string[]): Promise<number> {
  const result = await fx.db.db.raw(
    `SELECT count(DISTINCT xmin::text)::int AS n FROM package WHERE id = ANY(?::bigint[])`,
    [`{${ids.join(",")}}`],
  );
  return (result as { rows: { n: number }[] }).rows[0]!.n;
}

test("concurrent creates share statements, yet each gets its own package, fields and one event with its trace", async () => {
  const n = 120;
  const requests = Array.from({ length: n }, (_, i) => ({
    // Quotes, backslashes, Cyrillic and an emoji travel through the statement's JSON parameter.
    Title: i % 3 === 0 ? `кор"об\\'-${i}📦` : `batch-${i}`,
    Material: `material-${i % 7}`,
    MaximumVolume: i + 0.5,
    Reusable: i % 2 === 0,
  }));
  const responses = await Promise.all(
    requests.map(
      (req, i) => fx.client.createPackageV1(req, { traceparent: traceparentOf(i) }) as Promise<{ ID: string }>,
    ),
  );
  const ids = responses.map((r) => r.ID);
  assert.equal(new Set(ids).size, n, "every call got its own id");
  assert.ok((await transactionsOf(ids)) < n, "calls shared transactions (else this test checks nothing)");

  for (const [i, req] of requests.entries()) {
    const described = (await fx.client.describePackageV1({ PackageID: ids[i] })) as { Value: Record<string, unknown> };
    assert.equal(described.Value.Title, req.Title, `call ${i}: its id holds its own title`);
    assert.equal(described.Value.Material, req.Material);
    assert.equal(described.Value.MaximumVolume, req.MaximumVolume);
    assert.equal(described.Value.Reusable, req.Reusable);

    const rows = await events(fx.db.db, BigInt(ids[i]!));
    assert.equal(rows.length, 1, `call ${i}: exactly one event`);
    assert.equal(rows[0]!.type, "Created");
    assert.equal(rows[0]!.payload.ID, ids[i]);
    assert.equal(rows[0]!.payload.Title, req.Title);
    assert.equal(rows[0]!.payload.MaximumVolume, req.MaximumVolume);
    assert.equal(rows[0]!.traceparent, traceparentOf(i), `call ${i}: the event carries the call's own trace`);
  }
});

test("a row that fails the shared statement fails only its own call", async () => {
  // A rule the API does not know about (as a DBA might add): the statement
  // that carries this row fails, and with it, at first, every row beside it.
  await fx.db.db.raw(`
    CREATE FUNCTION refuse_title() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN RAISE EXCEPTION 'title refused by a trigger'; END $$;
    CREATE TRIGGER refuse_title BEFORE INSERT ON package FOR EACH ROW
      WHEN (NEW.title = 'refused') EXECUTE FUNCTION refuse_title();`);
  try {
    const before = await events(fx.db.db);
    const n = 60;
    const refused = 30;
    const outcomes = await Promise.allSettled(
      Array.from(
        { length: n },
        (_, i) =>
          fx.client.createPackageV1(
            { Title: i === refused ? "refused" : `kept-${i}`, Material: "wood", MaximumVolume: 1, Reusable: false },
            { traceparent: traceparentOf(1000 + i) },
          ) as Promise<{ ID: string }>,
      ),
    );

    const failed = outcomes.flatMap((o, i) => (o.status === "rejected" ? [i] : []));
    assert.deepEqual(failed, [refused], "only the refused call failed");
    await rpcError(Promise.reject((outcomes[refused] as PromiseRejectedResult).reason), grpc.status.INTERNAL);

    const ids = outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value.ID] : []));
    assert.equal(new Set(ids).size, n - 1);
    const added = (await events(fx.db.db)).filter((e) => !before.some((b) => b.id === e.id));
    assert.equal(added.length, n - 1, "one event per created package, none for the refused call, no duplicates");
    assert.deepEqual(added.map((e) => String(e.package_id)).sort(), [...ids].sort());
    const refusedRows = await fx.db.db.raw(`SELECT count(*)::int AS n FROM package WHERE title = 'refused'`);
    assert.equal((refusedRows as { rows: { n: number }[] }).rows[0]!.n, 0);
  } finally {
    await fx.db.db.raw(`DROP TRIGGER refuse_title ON package; DROP FUNCTION refuse_title();`);
  }
});

test("a steady stream of creates shares statements through the linger, though a slot is always free", async () => {
  // 40 creates 5 ms apart, never waiting for a slot (64 of them): without a linger each is its
  // own statement; with one, once the stream is steady, a create waits for the next ones.
  // How many share depends on this machine's timing (a running statement that finishes ends a
  // linger early), so the count is only bounded here; the unit tests pin the policy exactly.
  const streamOf = async (lingerMs: number): Promise<string[]> => {
    const server = await startTestServer(
      fx.db.url,
      {},
      { database: { createBatchSize: 50, createConcurrency: 64, createLingerMs: lingerMs } },
    );
    const client = packageApiClient(server.grpcAddress);
    try {
      const calls: Promise<{ ID: string }>[] = [];
      for (let i = 0; i < 40; i++) {
        calls.push(
          client.createPackageV1({
            Title: `stream-${lingerMs}-${i}`,
            Material: "wood",
            MaximumVolume: 1,
            Reusable: false,
          }) as Promise<{ ID: string }>,
        );
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      return (await Promise.all(calls)).map((r) => r.ID);
    } finally {
      client.close();
      await server.stop();
    }
  };
  const alone = await streamOf(0);
  assert.equal(await transactionsOf(alone), 40, "no linger: one statement per create");
  const lingered = await streamOf(100);
  assert.equal(new Set(lingered).size, 40, "every call got its own id");
  // About a dozen go alone while the average gap comes down; after that creates share. With 64
  // slots nothing ever waits for one (the run without a linger shows it), so any statement holding
  // two creates is the linger's. How many share varies with the machine's load (16–31 transactions
  // seen), so only that some did is asserted.
  const shared = await transactionsOf(lingered);
  assert.ok(shared < 40, `creates shared statements: ${shared} transactions for 40`);
  for (const id of lingered) assert.equal((await events(fx.db.db, BigInt(id))).length, 1, `package ${id}: one event`);
});

test("an overloaded server answers Unavailable at once for creates beyond createMaxWaiting, and writes nothing for them", async () => {
  const busy = await startTestServer(
    fx.db.url,
    {},
    { database: { createBatchSize: 10, createConcurrency: 1, createMaxWaiting: 20 } },
  );
  const busyClient = packageApiClient(busy.grpcAddress);
  // Holds the server's only create statement until the test lets it go (an advisory lock this
  // test's transaction holds), so that the calls below must wait, however slow the machine.
  const lockKey = 4242;
  let letGo = () => {};
  let holder: Promise<void> = Promise.resolve();
  let triggerMade = false;
  try {
    let held = () => {};
    const lockHeld = new Promise<void>((resolve) => {
      held = resolve;
    });
    holder = fx.db.db.transaction(async (trx) => {
      await trx.raw(`SELECT pg_advisory_xact_lock(${lockKey})`);
      await new Promise<void>((resolve) => {
        letGo = resolve;
        held();
      });
    });
    await Promise.race([lockHeld, holder]);
    await fx.db.db.raw(`
      CREATE FUNCTION slow_title() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN PERFORM pg_advisory_xact_lock(${lockKey}); RETURN NEW; END $$;
      CREATE TRIGGER slow_title BEFORE INSERT ON package FOR EACH ROW
        WHEN (NEW.title = 'slow') EXECUTE FUNCTION slow_title();`);
    triggerMade = true;
    const slow = busyClient.createPackageV1({ Title: "slow", Material: "wood", MaximumVolume: 1, Reusable: false });
    // Awaited below; until then a failure must not surface as an unhandled rejection.
    slow.catch(() => undefined);
    await poll(
      "the slow create waiting in the database",
      async () => {
        const r = await fx.db.db.raw(
          `SELECT count(*)::int AS n FROM pg_stat_activity
            WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'`,
        );
        return (r as { rows: { n: number }[] }).rows[0]!.n;
      },
      (waiting) => waiting > 0,
    );

    const n = 100;
    let turnedAway = 0;
    const calls = Array.from({ length: n }, (_, i) =>
      (
        busyClient.createPackageV1({
          Title: `flood-${i}`,
          Material: "wood",
          MaximumVolume: 1,
          Reusable: false,
        }) as Promise<{ ID: string }>
      ).catch((err: unknown) => {
        turnedAway += 1;
        throw err;
      }),
    );
    const outcomes = Promise.allSettled(calls);
    // The slot stays taken until every call beyond the 20 that may wait has been answered: they
    // were turned away without waiting for it (10 s bounds "at once" loosely, for a loaded machine).
    await poll(
      "the calls beyond createMaxWaiting turned away",
      () => turnedAway,
      (count) => count >= n - 20,
      10_000,
    );
    letGo();
    await slow;

    const settled = await outcomes;
    const rejected = settled.filter((o): o is PromiseRejectedResult => o.status === "rejected");
    assert.equal(rejected.length, n - 20, "exactly the calls beyond the 20 waiting were turned away");
    for (const r of rejected) {
      const err = await rpcError(Promise.reject(r.reason), grpc.status.UNAVAILABLE);
      assert.match(err.details, /too many creates waiting; retry/);
    }
    const ids = settled.flatMap((o) => (o.status === "fulfilled" ? [o.value.ID] : []));
    const rows = await fx.db.db.raw(
      `SELECT id::text AS id FROM package WHERE title LIKE 'flood-%' ORDER BY package.id`,
    );
    assert.deepEqual(
      (rows as { rows: { id: string }[] }).rows.map((r) => r.id),
      [...ids].sort((a, b) => Number(a) - Number(b)),
      "a package for every accepted call and none for a rejected one",
    );
    for (const id of ids) assert.equal((await events(fx.db.db, BigInt(id))).length, 1);
  } finally {
    letGo();
    if (triggerMade) await fx.db.db.raw(`DROP TRIGGER slow_title ON package; DROP FUNCTION slow_title();`);
    busyClient.close();
    await busy.stop();
    // Last, so that a failed lock transaction still lets the rest be cleaned up before its error.
    await holder;
  }
});

test("a batch that fails for the database's sake (a statement timeout) fails its calls without retrying each alone", async () => {
  const slow = await startTestServer(
    fx.db.url,
    {},
    { database: { createBatchSize: 50, createConcurrency: 1, statementTimeoutMs: 300 } },
  );
  const slowClient = packageApiClient(slow.grpcAddress);
  // Every statement carrying such a row outlasts the timeout; the sequence (not
  // rolled back with the statement) counts how many statements tried.
  await fx.db.db.raw(`
    CREATE SEQUENCE slow_statements;
    CREATE FUNCTION slow_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN PERFORM nextval('slow_statements'); PERFORM pg_sleep(2); RETURN NEW; END $$;
    CREATE TRIGGER slow_insert BEFORE INSERT ON package FOR EACH ROW
      WHEN (NEW.title LIKE 'timeout-%') EXECUTE FUNCTION slow_insert();`);
  try {
    const n = 20;
    const outcomes = await Promise.allSettled(
      Array.from({ length: n }, (_, i) =>
        slowClient.createPackageV1({ Title: `timeout-${i}`, Material: "wood", MaximumVolume: 1, Reusable: false }),
      ),
    );
    for (const o of outcomes) {
      assert.equal(o.status, "rejected", "a statement that times out creates nothing");
      await rpcError(Promise.reject((o as PromiseRejectedResult).reason), grpc.status.INTERNAL);
    }
    const tried = await fx.db.db.raw(
      `SELECT CASE WHEN is_called THEN last_value ELSE 0 END::int AS n FROM slow_statements`,
    );
    const statements = (tried as { rows: { n: number }[] }).rows[0]!.n;
    assert.ok(
      statements < n / 2,
      `${statements} statements for ${n} calls: the timed-out batch was not retried call by call`,
    );
    const rows = await fx.db.db.raw(`SELECT count(*)::int AS n FROM package WHERE title LIKE 'timeout-%'`);
    assert.equal((rows as { rows: { n: number }[] }).rows[0]!.n, 0);
  } finally {
    await fx.db.db.raw(
      `DROP TRIGGER slow_insert ON package; DROP FUNCTION slow_insert(); DROP SEQUENCE slow_statements;`,
    );
    slowClient.close();
    await slow.stop();
  }
});
