// Idempotent create (docs/design.md §1.3): a client that retries a Create with the
// same `x-request-id` gets the first result back and causes no second package
// or event; the same id with a different body is AlreadyExists; keys expire
// after the configured retention and are swept from the table.

import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { PgPackageRepository } from "../internal/packages/package-repo.js";
import { count, events } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, packageApiClient, rpcError } from "./helpers/grpc-client.js";
import { poll } from "./helpers/poll.js";
import { startTestServer } from "./helpers/server.js";

const fx = useFixture();

const body = { Title: "box", Material: "cardboard", MaximumVolume: 2.5, Reusable: true };

interface Counts {
  packages: number;
  events: number;
  keys: number;
}

async function counts(): Promise<Counts> {
  return {
    packages: await count(fx.db.db, "package"),
    events: await count(fx.db.db, "package_event"),
    keys: await count(fx.db.db, "idempotency_key"),
  };
}

function plus(c: Counts, packages: number, eventsAdded: number, keys: number): Counts {
  return { packages: c.packages + packages, events: c.events + eventsAdded, keys: c.keys + keys };
}

async function keyRow(key: string): Promise<{ package_id: string } | undefined> {
  const result = await fx.db.db.raw(`SELECT package_id::text AS package_id FROM idempotency_key WHERE key = ?`, [key]);
  return (result as { rows: { package_id: string }[] }).rows[0];
}

async function backdate(key: string): Promise<void> {
  const result = await fx.db.db.raw(`UPDATE idempotency_key SET created = now() - interval '2 days' WHERE key = ?`, [
    key,
  ]);
  assert.equal((result as { rowCount: number }).rowCount, 1, `key ${key} exists to backdate`);
}

async function restCreate(
  payload: unknown,
  requestId?: string,
  extraHeaders: Record<string, string> = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const headers: Record<string, string> = { "content-type": "application/json", ...extraHeaders };
  if (requestId !== undefined) headers["x-request-id"] = requestId;
  // The body as text, so that a test can send a number spelled exactly as a client would.
  const text = typeof payload === "string" ? payload : JSON.stringify(payload);
  const res = await fetch(`${fx.server.gatewayUrl}/v1/packages`, { method: "POST", headers, body: text });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

describe("gRPC x-request-id", () => {
  test("the same key and body twice → the same ID, one package, one Created event", async () => {
    const key = randomUUID();
    const start = await counts();
    const first = await fx.client.createPackageV1(body, { "x-request-id": key });
    const second = await fx.client.createPackageV1(body, { "x-request-id": key });
    assert.equal(second.ID, first.ID);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));

    const rows = await events(fx.db.db, BigInt(first.ID));
    assert.deepEqual(
      rows.map((r) => r.type),
      ["Created"],
    );
    assert.equal((await keyRow(key))?.package_id, first.ID, "the key names its package");
    const pkg = (await fx.client.describePackageV1({ PackageID: first.ID })).Value;
    assert.equal(pkg.Title, body.Title);
  });

  test("10 concurrent creates with one new key → one ID, one package, one event", async () => {
    const key = randomUUID();
    const start = await counts();
    const results = await Promise.all(
      Array.from({ length: 10 }, () => fx.client.createPackageV1(body, { "x-request-id": key })),
    );
    const ids = new Set(results.map((r) => r.ID as string));
    assert.equal(ids.size, 1, `all ten got the same ID (got ${[...ids].join(", ")})`);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));
    assert.equal((await events(fx.db.db, BigInt([...ids][0]!))).length, 1);
  });

  test("the same key with a different body → ALREADY_EXISTS naming x-request-id, nothing written", async () => {
    const key = randomUUID();
    const first = await fx.client.createPackageV1(body, { "x-request-id": key });
    const start = await counts();
    for (const different of [
      { ...body, Title: "other" },
      { ...body, Material: "steel" },
      { ...body, MaximumVolume: 3 },
      { ...body, Reusable: false },
    ]) {
      const err = await rpcError(
        fx.client.createPackageV1(different, { "x-request-id": key }),
        grpc.status.ALREADY_EXISTS,
      );
      assert.match(err.details, /x-request-id/);
    }
    assert.deepEqual(await counts(), start);
    assert.equal((await keyRow(key))?.package_id, first.ID, "the key still names the first package");
    // The original request still replays.
    assert.equal((await fx.client.createPackageV1(body, { "x-request-id": key })).ID, first.ID);
  });

  test("different keys → different packages", async () => {
    const start = await counts();
    const a = await fx.client.createPackageV1(body, { "x-request-id": randomUUID() });
    const b = await fx.client.createPackageV1(body, { "x-request-id": randomUUID() });
    assert.notEqual(a.ID, b.ID);
    assert.deepEqual(await counts(), plus(start, 2, 2, 2));
  });

  test("creates without a key are not deduplicated", async () => {
    const start = await counts();
    const a = await fx.client.createPackageV1(body);
    const b = await fx.client.createPackageV1(body);
    assert.notEqual(a.ID, b.ID);
    assert.deepEqual(await counts(), plus(start, 2, 2, 0));
  });

  test("an expired key creates a new package, and then replays that one", async () => {
    const key = randomUUID();
    const first = await fx.client.createPackageV1(body, { "x-request-id": key });
    await backdate(key);

    const start = await counts();
    const second = await fx.client.createPackageV1(body, { "x-request-id": key });
    assert.notEqual(second.ID, first.ID, "an expired key is forgotten");
    assert.deepEqual(await counts(), plus(start, 1, 1, 0), "one new package and event; the key row is reused");
    assert.equal((await keyRow(key))?.package_id, second.ID);
    assert.equal((await fx.client.createPackageV1(body, { "x-request-id": key })).ID, second.ID);

    // Expired with a different body: not AlreadyExists, a new package.
    await backdate(key);
    const third = await fx.client.createPackageV1({ ...body, Title: "new body" }, { "x-request-id": key });
    assert.notEqual(third.ID, second.ID);
    assert.equal((await fx.client.describePackageV1({ PackageID: third.ID })).Value.Title, "new body");
  });
});

describe("REST gateway x-request-id header", () => {
  test("POST /v1/packages twice with the same header → the same ID, one package", async () => {
    const key = randomUUID();
    const start = await counts();
    const first = await restCreate(body, key);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.match(String(first.body.ID), /^[1-9][0-9]*$/);
    const second = await restCreate(body, key);
    assert.equal(second.status, 200);
    assert.equal(second.body.ID, first.body.ID);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));

    const conflict = await restCreate({ ...body, Title: "other" }, key);
    assert.equal(conflict.status, 409);
    assert.match(String(conflict.body.message), /x-request-id/);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));
  });

  test("a key first used over gRPC replays over REST (the same request, another protocol)", async () => {
    const key = randomUUID();
    const viaGrpc = await fx.client.createPackageV1(body, { "x-request-id": key });
    const viaRest = await restCreate(body, key);
    assert.equal(viaRest.status, 200);
    assert.equal(viaRest.body.ID, viaGrpc.ID);
  });

  test("POST without the header is not deduplicated", async () => {
    const a = await restCreate(body);
    const b = await restCreate(body);
    assert.equal(a.status, 200);
    assert.equal(b.status, 200);
    assert.notEqual(a.body.ID, b.body.ID);
  });
});

describe("expiry sweeper", () => {
  test("expired keys are deleted by the sweeper; live keys stay", async () => {
    const sweeping = await startTestServer(fx.db.url, {}, { idempotency: { cleanupIntervalSeconds: 1 } });
    try {
      assert.equal(sweeping.config.idempotency.cleanupIntervalSeconds, 1, "the override was honoured");
      const expired = randomUUID();
      const live = randomUUID();
      const sweepingClient = packageApiClient(sweeping.grpcAddress);
      try {
        await sweepingClient.createPackageV1(body, { "x-request-id": expired });
        await sweepingClient.createPackageV1(body, { "x-request-id": live });
      } finally {
        sweepingClient.close();
      }
      await backdate(expired);

      await poll(
        "the expired key to be swept",
        () => keyRow(expired),
        (row) => row === undefined,
        15_000,
        200,
      );
      assert.ok((await keyRow(live)) !== undefined, "a live key is kept");
      // (The first server sweeps too, but only once a minute: normally this one logs it.)
      assert.ok(
        [...sweeping.logs.lines, ...fx.server.logs.lines].some(
          (l) => l.msg === "expired idempotency keys deleted" && typeof l.deleted === "number" && l.deleted >= 1,
        ),
        "the sweep is logged",
      );
    } finally {
      await sweeping.stop();
    }
  });
});

describe("Idempotency-Key header", () => {
  test("gRPC: a repeat with the same Idempotency-Key → the same ID, no second package, event or key", async () => {
    const key = randomUUID();
    const start = await counts();
    const first = await fx.client.createPackageV1(body, { "idempotency-key": key });
    const second = await fx.client.createPackageV1(body, { "idempotency-key": key });
    assert.equal(second.ID, first.ID);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1), "one package, one package_event row, one key");
    assert.equal((await events(fx.db.db, BigInt(first.ID))).length, 1);
    assert.equal((await keyRow(key))?.package_id, first.ID);

    const err = await rpcError(
      fx.client.createPackageV1({ ...body, Title: "other" }, { "idempotency-key": key }),
      grpc.status.ALREADY_EXISTS,
    );
    assert.match(err.details, /Idempotency-Key/, "the message names the header the client used");
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));
  });

  test("REST: the Idempotency-Key header is forwarded; the quoted (structured-field) form is the same key", async () => {
    const key = randomUUID();
    const start = await counts();
    const first = await restCreate(body, undefined, { "Idempotency-Key": key });
    assert.equal(first.status, 200, JSON.stringify(first.body));
    const quoted = await restCreate(body, undefined, { "Idempotency-Key": `"${key}"` });
    assert.equal(quoted.status, 200, JSON.stringify(quoted.body));
    assert.equal(quoted.body.ID, first.body.ID);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));
  });

  test("a key sent as x-request-id replays when retried as Idempotency-Key (one key space)", async () => {
    const key = randomUUID();
    const first = await fx.client.createPackageV1(body, { "x-request-id": key });
    const start = await counts();
    const second = await fx.client.createPackageV1(body, { "idempotency-key": key });
    assert.equal(second.ID, first.ID);
    assert.deepEqual(await counts(), start);
  });

  test("both headers with the same key are fine; with different keys → INVALID_ARGUMENT naming both, nothing written", async () => {
    const key = randomUUID();
    const start = await counts();
    const same = await fx.client.createPackageV1(body, { "idempotency-key": key, "x-request-id": key });
    assert.equal((await keyRow(key))?.package_id, same.ID);
    const err = await rpcError(
      fx.client.createPackageV1(body, { "idempotency-key": randomUUID(), "x-request-id": randomUUID() }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.match(err.details, /Idempotency-Key/);
    assert.match(err.details, /x-request-id/);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));

    const rest = await restCreate(body, randomUUID(), { "Idempotency-Key": randomUUID() });
    assert.equal(rest.status, 400);
    assert.match(String(rest.body.message), /Idempotency-Key and x-request-id differ/);
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));
  });

  test("invalid keys → INVALID_ARGUMENT naming the header: too long, not printable ASCII", async () => {
    const start = await counts();
    const long = await rpcError(
      fx.client.createPackageV1(body, { "idempotency-key": "k".repeat(256) }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.match(long.details, /Idempotency-Key must be 1 to 255 characters \(got 256\)/);
    // Latin-1 reaches the gateway as such (fetch sends the byte 0xE9).
    const accented = await restCreate(body, undefined, { "Idempotency-Key": "cl\u00e9" });
    assert.equal(accented.status, 400, JSON.stringify(accented.body));
    assert.match(String(accented.body.message), /Idempotency-Key must be printable ASCII/);
    const requestId = await restCreate(body, "r\u00e9f");
    assert.equal(requestId.status, 400);
    assert.match(String(requestId.body.message), /x-request-id must be printable ASCII/);
    assert.deepEqual(await counts(), start);
    // 255 printable characters, spaces and punctuation included, are a key (HTTP
    // trims spaces at either end of a header value, so they sit inside).
    const edge = `~ !"#$%&'()*+,-./:;<=>?@[\\]^_\`{|}`.padEnd(255, "z");
    const ok = await fx.client.createPackageV1(body, { "idempotency-key": edge });
    assert.equal((await keyRow(edge))?.package_id, ok.ID);
  });
});

describe("the same body over another protocol", () => {
  test("MaximumVolume 0.1 over REST or Connect JSON, then over gRPC (float32) with the same key → the same ID", async () => {
    const key = randomUUID();
    const start = await counts();
    // REST JSON parses 0.1 as a double; gRPC carries the float32 nearest to 0.1.
    const viaRest = await restCreate(
      `{"Title":"tenth","Material":"foil","MaximumVolume":0.1,"Reusable":false}`,
      undefined,
      {
        "Idempotency-Key": key,
      },
    );
    assert.equal(viaRest.status, 200, JSON.stringify(viaRest.body));
    const viaGrpc = await fx.client.createPackageV1(
      { Title: "tenth", Material: "foil", MaximumVolume: 0.1, Reusable: false },
      { "idempotency-key": key },
    );
    assert.equal(viaGrpc.ID, viaRest.body.ID, "a retry over gRPC replays the REST create");
    assert.deepEqual(await counts(), plus(start, 1, 1, 1));

    // And the other way round, with a value that is not a float32 either.
    const key2 = randomUUID();
    const grpcFirst = await fx.client.createPackageV1(
      { Title: "third", Material: "foil", MaximumVolume: 1 / 3, Reusable: true },
      { "x-request-id": key2 },
    );
    const restSecond = await restCreate(
      { Title: "third", Material: "foil", MaximumVolume: 1 / 3, Reusable: true },
      key2,
    );
    assert.equal(restSecond.status, 200, JSON.stringify(restSecond.body));
    assert.equal(restSecond.body.ID, grpcFirst.ID);
    // Connect JSON decodes 0.1 straight into the message (no binary round trip,
    // unlike the gateway's in-process transport), so the value stays a double.
    const key3 = randomUUID();
    const connect = await fetch(
      `${fx.server.grpcUrl}/hablof.logistic_package_api.v1.LogisticPackageApiService/CreatePackageV1`,
      {
        method: "POST",
        headers: { "content-type": "application/json", "idempotency-key": key3 },
        body: `{"Title":"tenth","Material":"foil","MaximumVolume":0.1}`,
      },
    );
    assert.equal(connect.status, 200);
    const viaConnect = (await connect.json()) as { ID: string };
    const retried = await fx.client.createPackageV1(
      { Title: "tenth", Material: "foil", MaximumVolume: 0.1 },
      { "idempotency-key": key3 },
    );
    assert.equal(retried.ID, viaConnect.ID, "a retry over gRPC replays the Connect JSON create");

    // A different float32 is a different body.
    const conflict = await restCreate(
      { Title: "third", Material: "foil", MaximumVolume: 0.3334, Reusable: true },
      key2,
    );
    assert.equal(conflict.status, 409);
  });
});

describe("sweeper race", () => {
  test("a key renewed while a sweep that selected it as expired waits for its row lock survives the sweep", async () => {
    const key = randomUUID();
    const created = await fx.client.createPackageV1(body, { "x-request-id": key });
    await backdate(key);
    const repo = new PgPackageRepository(fx.db.db);

    // The renewal createOnce makes when it takes an expired key over (ON CONFLICT DO
    // UPDATE ... created = now()), held open in a transaction so that the sweep
    // starts while the key is still old in every snapshot and then has to wait.
    const renewal = await fx.db.db.transaction();
    try {
      await renewal.raw(`UPDATE idempotency_key SET created = now() WHERE key = ?`, [key]);
      const sweep = repo.deleteExpiredKeys(3600, 1000);
      // Deterministic ordering, no sleeps: wait (bounded) until the sweep is
      // blocked on the renewal's row lock; its subquery has selected the key by then.
      const deadline = Date.now() + 10_000;
      for (;;) {
        const waiting = await fx.db.db.raw(
          `SELECT count(*)::int AS n FROM pg_stat_activity
           WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM idempotency_key%'`,
        );
        if ((waiting as { rows: { n: number }[] }).rows[0]!.n === 1) break;
        assert.ok(Date.now() < deadline, "the sweep blocked on the renewed key within 10 s");
        await new Promise((r) => setTimeout(r, 10));
      }
      await renewal.commit();
      assert.equal(await sweep, 0, "the sweep deleted nothing");
    } finally {
      if (!renewal.isCompleted()) await renewal.rollback();
    }
    assert.equal((await keyRow(key))?.package_id, created.ID, "the renewed key is still there");

    // Control: the same sweep without a concurrent renewal deletes an expired key.
    await backdate(key);
    assert.equal(await repo.deleteExpiredKeys(3600, 1000), 1);
    assert.equal(await keyRow(key), undefined);
  });
});
