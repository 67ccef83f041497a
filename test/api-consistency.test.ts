// What a client can rely on when things go wrong or happen at once:
//  a. internal errors never show SQL; they carry a trace id that finds the cause in the log;
//  b. a failed change leaves neither the package change nor its event (one transaction);
//  c. per package, event id order is the commit order (docs/design.md §3.2), so each
//     event's payload is the previous event's state plus exactly one update's changes.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { count, events } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, rpcError } from "./helpers/grpc-client.js";

const fx = useFixture();

const valid = { Title: "box", Material: "cardboard", MaximumVolume: 2.5, Reusable: false };
const internalMessage = /^internal error \(trace id ([0-9a-f]{32})\)$/;
const leaks = ["relation", "package_event", "sql", "select", "insert", "syntax", "update", "with p as"];

function assertNoLeak(message: string): void {
  for (const word of leaks) {
    assert.ok(
      !message.toLowerCase().includes(word),
      `client-visible message ${JSON.stringify(message)} leaks "${word}"`,
    );
  }
}

/** The log line of the failed request with `traceId`: an error line that holds the underlying cause. */
function errorLogLine(traceId: string): Record<string, unknown> {
  const line = fx.server.logs.lines.find((l) => l.traceId === traceId && l.level === "error");
  assert.ok(line, `an error log line with traceId ${traceId}`);
  return line;
}

describe("a. internal errors do not leak SQL to clients", () => {
  before(async () => {
    await fx.db.db.raw(`ALTER TABLE package_event RENAME TO package_event_gone`);
  });
  after(async () => {
    await fx.db.db.raw(`ALTER TABLE package_event_gone RENAME TO package_event`);
  });

  test("Create → INTERNAL with only a trace id; the log has that trace id and the cause", async () => {
    const err = await rpcError(fx.client.createPackageV1(valid), grpc.status.INTERNAL);
    const match = internalMessage.exec(err.details);
    assert.ok(match, `details ${JSON.stringify(err.details)} is the generic internal error`);
    assertNoLeak(err.details);

    const line = errorLogLine(match[1]!);
    assert.equal(line.method, "CreatePackageV1");
    assert.equal(line.code, "Internal");
    const cause = JSON.stringify(line.err);
    assert.match(cause, /relation \\"package_event\\" does not exist/, "the log holds the database's own message");
  });

  test("the caller's traceparent is the trace id in the message and in the log", async () => {
    const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
    const err = await rpcError(
      fx.client.createPackageV1(valid, { traceparent: `00-${traceId}-00f067aa0ba902b7-01` }),
      grpc.status.INTERNAL,
    );
    assert.equal(err.details, `internal error (trace id ${traceId})`);
    errorLogLine(traceId);
  });

  test("Update and Remove fail the same way, and no metadata carries the cause", async () => {
    // The package row exists (a package can be inserted without an event only by hand).
    const rows = await fx.db.db.raw(
      `INSERT INTO package (title, material, maximum_volume) VALUES ('by hand', 'wood', 1) RETURNING id::text AS id`,
    );
    const id = (rows as { rows: { id: string }[] }).rows[0]!.id;
    for (const call of [
      () => fx.client.updatePackageV1({ PackageID: id, Title: "new" }),
      () => fx.client.removePackageV1({ PackageID: id }),
    ]) {
      const err = (await rpcError(call(), grpc.status.INTERNAL)) as Awaited<ReturnType<typeof rpcError>> & {
        metadata: grpc.Metadata;
      };
      assert.match(err.details, internalMessage);
      assertNoLeak(err.details);
      for (const [key, value] of Object.entries(err.metadata.getMap())) {
        assertNoLeak(`${key}: ${String(value)}`);
      }
    }
    // The failed statements rolled back: the hand-made row is unchanged and live.
    const after = await fx.db.db.raw(`SELECT title, removed FROM package WHERE id = ?`, [id]);
    assert.deepEqual((after as { rows: unknown[] }).rows, [{ title: "by hand", removed: false }]);
  });

  test("the REST gateway answers 500 with the same generic message", async () => {
    const res = await fetch(`${fx.server.gatewayUrl}/v1/packages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(valid),
    });
    assert.equal(res.status, 500);
    const text = await res.text();
    assertNoLeak(text);
    const body = JSON.parse(text) as { code: number; message: string };
    assert.equal(body.code, grpc.status.INTERNAL);
    assert.match(body.message, internalMessage);
  });
});

describe("b. a failed transaction leaves neither package nor event", () => {
  let existingId: string;
  before(async () => {
    existingId = (await fx.client.createPackageV1({ ...valid, Title: "keeper" })).ID;
    await fx.db.db.raw(`ALTER TABLE package_event ADD CONSTRAINT test_fail CHECK (payload->>'Title' <> 'explode')`);
  });
  after(async () => {
    await fx.db.db.raw(`ALTER TABLE package_event DROP CONSTRAINT IF EXISTS test_fail`);
  });

  test("Create whose event cannot be written → INTERNAL and no package", async () => {
    const packages = await count(fx.db.db, "package");
    const eventCount = await count(fx.db.db, "package_event");
    const err = await rpcError(fx.client.createPackageV1({ ...valid, Title: "explode" }), grpc.status.INTERNAL);
    assert.match(err.details, internalMessage);
    assert.equal(await count(fx.db.db, "package"), packages, "no package without its event");
    assert.equal(await count(fx.db.db, "package_event"), eventCount);
    const listed = (await fx.client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages as { Title: string }[];
    assert.ok(!listed.some((p) => p.Title === "explode"), "the failed package is not listed");
  });

  test("an idempotent Create that fails keeps no key, so a retry with that key can succeed", async () => {
    const key = "consistency-retry-key";
    await rpcError(
      fx.client.createPackageV1({ ...valid, Title: "explode" }, { "x-request-id": key }),
      grpc.status.INTERNAL,
    );
    assert.equal(await count(fx.db.db, "idempotency_key"), 0, "the key was not remembered");
    // A different body with the same key is not AlreadyExists: the failed request never happened.
    const res = await fx.client.createPackageV1({ ...valid, Title: "retried" }, { "x-request-id": key });
    assert.equal((await fx.client.describePackageV1({ PackageID: res.ID })).Value.Title, "retried");
  });

  test("Update whose event cannot be written → INTERNAL, the package keeps its state", async () => {
    const beforeEvents = await events(fx.db.db, BigInt(existingId));
    const err = await rpcError(
      fx.client.updatePackageV1({ PackageID: existingId, Title: "explode", Material: "tnt" }),
      grpc.status.INTERNAL,
    );
    assert.match(err.details, internalMessage);
    const pkg = (await fx.client.describePackageV1({ PackageID: existingId })).Value;
    assert.equal(pkg.Title, "keeper");
    assert.equal(pkg.Material, valid.Material);
    assert.equal(pkg.Updated, null, "Updated was not set by the failed update");
    assert.deepEqual(await events(fx.db.db, BigInt(existingId)), beforeEvents, "no event added");

    // And the package is not wedged: a later update works and writes one event.
    await fx.client.updatePackageV1({ PackageID: existingId, Title: "fine" });
    assert.equal((await events(fx.db.db, BigInt(existingId))).length, beforeEvents.length + 1);
  });
});

describe("c. concurrent updates of one package", () => {
  interface Change {
    Title: string;
    Material?: string;
    MaximumVolume?: number;
    Reusable?: boolean;
  }

  test("event id order is the commit order: each event = previous state + one update's changes", async () => {
    const id = (
      await fx.client.createPackageV1({ Title: "start", Material: "m-start", MaximumVolume: 1.5, Reusable: false })
    ).ID;
    const n = 40;
    const changes = new Map<string, Change>();
    const requests = Array.from({ length: n }, (_, i) => {
      const change: Change = { Title: `t${i}` };
      const request: Record<string, unknown> = { PackageID: id, Title: change.Title };
      switch (i % 4) {
        case 1:
          change.Material = request.Material = `m${i}`;
          break;
        case 2:
          change.MaximumVolume = request.MaximumVolume = i + 0.5; // exact in a float
          break;
        case 3:
          change.Reusable = i % 8 === 3;
          request.Reusable = { Reusable: change.Reusable };
          break;
      }
      changes.set(change.Title, change);
      return request;
    });

    const results = await Promise.all(requests.map((r) => fx.client.updatePackageV1(r)));
    assert.ok(results.every((r) => r.Suc === true));

    const rows = await events(fx.db.db, BigInt(id));
    assert.equal(rows.length, n + 1, "one event per change");
    assert.equal(rows[0]!.type, "Created");
    assert.ok(rows.slice(1).every((r) => r.type === "Updated"));
    const titles = rows.slice(1).map((r) => r.payload.Title as string);
    assert.deepEqual([...titles].sort(), [...changes.keys()].sort(), "every update has exactly one event");

    const fields = ["Material", "MaximumVolume", "Reusable"] as const;
    for (let j = 1; j < rows.length; j++) {
      const previous = rows[j - 1]!.payload;
      const current = rows[j]!.payload;
      const change = changes.get(current.Title as string)!;
      for (const field of fields) {
        const expected = change[field] ?? previous[field];
        assert.equal(
          current[field],
          expected,
          `event ${j} (${change.Title}): ${field} should be ${String(expected)} ` +
            `(${change[field] === undefined ? "unchanged from the previous event" : "set by this update"})`,
        );
      }
      assert.equal(current.ID, id);
      assert.equal(current.Created, previous.Created);
    }

    const last = rows[rows.length - 1]!.payload;
    const pkg = (await fx.client.describePackageV1({ PackageID: id })).Value;
    assert.deepEqual(
      { Title: pkg.Title, Material: pkg.Material, MaximumVolume: pkg.MaximumVolume, Reusable: pkg.Reusable },
      {
        Title: last.Title,
        Material: last.Material,
        MaximumVolume: last.MaximumVolume,
        Reusable: last.Reusable,
      },
      "the last event is the state Describe shows",
    );
    const updated = Number(pkg.Updated.Time.seconds) * 1000 + Math.floor(pkg.Updated.Time.nanos / 1e6);
    assert.equal(Date.parse((last.Updated as { Time: string }).Time), updated);
  });
});
