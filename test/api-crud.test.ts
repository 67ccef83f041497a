// Every v1 RPC through a stock @grpc/grpc-js client built from the .proto files
// (the way existing clients of the original Go service call us), plus the
// outbox contract: each Create/Update/Remove writes exactly one package_event
// row whose payload is the package state after the change (docs/design.md §1.3, §2.2).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { count, type EventRow, events } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { createPackage, grpc, rpcError } from "./helpers/grpc-client.js";

interface WireTimestamp {
  seconds: string;
  nanos: number;
}

interface WirePackage {
  ID: string;
  Title: string;
  Material: string;
  MaximumVolume: number;
  Reusable: boolean;
  Created: WireTimestamp | null;
  Updated: { Time: WireTimestamp | null } | null;
}

const fx = useFixture();

const millis = (t: WireTimestamp): number => Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6);
const isoPattern = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$/;

const create = (fields: Partial<Omit<WirePackage, "ID" | "Created" | "Updated">> = {}) =>
  createPackage(fx.client, fields);

async function describePackage(id: string): Promise<WirePackage> {
  const res = await fx.client.describePackageV1({ PackageID: id });
  assert.ok(res.Value, "Describe returns a Value");
  return res.Value as WirePackage;
}

async function lastEvent(id: string): Promise<EventRow> {
  const rows = await events(fx.db.db, BigInt(id));
  assert.ok(rows.length > 0, `package ${id} has events`);
  return rows[rows.length - 1]!;
}

/** The event payload is exactly the Package JSON of `pkg` plus Removed. */
function assertPayloadMatches(payload: Record<string, unknown>, pkg: WirePackage, removed: boolean): void {
  const keys = ["ID", "Title", "Material", "MaximumVolume", "Reusable", "Created", "Removed"];
  if (pkg.Updated !== null) keys.push("Updated");
  assert.deepEqual(Object.keys(payload).sort(), keys.sort(), "payload keys");
  assert.equal(payload.ID, pkg.ID, "payload ID is the decimal string of the package id");
  assert.equal(payload.Title, pkg.Title);
  assert.equal(payload.Material, pkg.Material);
  assert.equal(payload.MaximumVolume, pkg.MaximumVolume);
  assert.equal(payload.Reusable, pkg.Reusable);
  assert.equal(payload.Removed, removed);
  assert.match(payload.Created as string, isoPattern);
  assert.equal(Date.parse(payload.Created as string), millis(pkg.Created!), "payload Created = package Created");
  if (pkg.Updated !== null) {
    const updated = payload.Updated as Record<string, unknown>;
    assert.deepEqual(Object.keys(updated), ["Time"], "payload Updated is {Time}");
    assert.match(updated.Time as string, isoPattern);
    assert.equal(
      Date.parse(updated.Time as string),
      millis(pkg.Updated.Time!),
      "payload Updated.Time = package Updated",
    );
  }
}

describe("CreatePackageV1 and DescribePackageV1", () => {
  test("Create returns an ID; Describe returns every field, Created set and Updated absent", async () => {
    const before = Date.now();
    const id = await create({ Title: "Fragile 📦", Material: "plywood", MaximumVolume: 12.25, Reusable: true });
    const afterCall = Date.now();
    assert.match(id, /^[1-9][0-9]*$/, "ID is a positive uint64 (a decimal string with longs: String)");

    const pkg = await describePackage(id);
    assert.equal(pkg.ID, id);
    assert.equal(pkg.Title, "Fragile 📦");
    assert.equal(pkg.Material, "plywood");
    assert.equal(pkg.MaximumVolume, 12.25);
    assert.equal(pkg.Reusable, true);
    assert.ok(pkg.Created !== null, "Created is set");
    // Same machine as Postgres: the creation time lies around the call (a minute of slack for clock steps).
    assert.ok(millis(pkg.Created) >= before - 60_000 && millis(pkg.Created) <= afterCall + 60_000, "Created is now");
    assert.equal(pkg.Updated, null, "Updated is absent until the first update");
  });

  test("Create writes exactly one Created event carrying the new state", async () => {
    const eventsBefore = await count(fx.db.db, "package_event");
    const id = await create({ Title: "crate", Material: "pine", MaximumVolume: 40, Reusable: true });
    assert.equal(await count(fx.db.db, "package_event"), eventsBefore + 1);

    const rows = await events(fx.db.db, BigInt(id));
    assert.equal(rows.length, 1);
    assert.equal(rows[0]!.type, "Created");
    assert.equal(String(rows[0]!.package_id), id);
    assertPayloadMatches(rows[0]!.payload, await describePackage(id), false);
  });

  test("Create with Reusable false stores false", async () => {
    const id = await create({ Reusable: false });
    assert.equal((await describePackage(id)).Reusable, false);
    assert.equal((await lastEvent(id)).payload.Reusable, false);
  });

  test("Describe and List write no events", async () => {
    const id = await create();
    const eventsBefore = await count(fx.db.db, "package_event");
    await describePackage(id);
    await fx.client.listPackagesV1({ Offset: 0, Limit: 10 });
    await fx.client.listPackagesV1({});
    assert.equal(await count(fx.db.db, "package_event"), eventsBefore);
  });
});

describe("ListPackagesV1", () => {
  test("orders by ID and honours Offset and Limit", async () => {
    const created: string[] = [];
    for (let i = 0; i < 7; i++) created.push(await create({ Title: `list-${i}` }));

    const all = (await fx.client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages as WirePackage[];
    const ids = all.map((p) => BigInt(p.ID));
    const sorted = [...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
    assert.deepEqual(ids, sorted, "List is ordered by ID");
    assert.equal(new Set(ids).size, ids.length, "no package listed twice");
    const allIds = all.map((p) => p.ID);
    for (const id of created) assert.ok(allIds.includes(id), `package ${id} is listed`);
    assert.ok(all.length >= 7);

    // Pages are consecutive slices of the full, ordered list.
    for (const [offset, limit] of [
      [0, 1],
      [0, 3],
      [2, 3],
      [5, 2],
      [all.length - 2, 5],
    ] as const) {
      const page = (await fx.client.listPackagesV1({ Offset: offset, Limit: limit })).Packages as WirePackage[];
      assert.deepEqual(
        page.map((p) => p.ID),
        allIds.slice(offset, offset + limit),
        `page Offset=${offset} Limit=${limit}`,
      );
    }
    const pastEnd = await fx.client.listPackagesV1({ Offset: all.length, Limit: 10 });
    assert.deepEqual(pastEnd.Packages, [], "an offset past the end gives an empty page");

    // Walking the pages visits every package once, in order.
    const walked: string[] = [];
    for (let offset = 0; ; offset += 3) {
      const page = (await fx.client.listPackagesV1({ Offset: offset, Limit: 3 })).Packages as WirePackage[];
      if (page.length === 0) break;
      walked.push(...page.map((p) => p.ID));
    }
    assert.deepEqual(walked, allIds);
  });

  test("listed packages carry the same fields as Describe", async () => {
    const id = await create({ Title: "listed", Material: "steel", MaximumVolume: 7.5, Reusable: true });
    const all = (await fx.client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages as WirePackage[];
    const listed = all.find((p) => p.ID === id);
    assert.ok(listed, "the new package is listed");
    assert.deepEqual(listed, await describePackage(id));
  });
});

describe("UpdatePackageV1", () => {
  const base = { Title: "orig", Material: "paper", MaximumVolume: 3.5, Reusable: true };

  // Each case sets one field; every other field must stay as created.
  const cases: { name: string; request: Record<string, unknown>; expect: Partial<WirePackage> }[] = [
    { name: "Title", request: { Title: "renamed" }, expect: { Title: "renamed" } },
    { name: "Material", request: { Material: "aluminium" }, expect: { Material: "aluminium" } },
    { name: "MaximumVolume", request: { MaximumVolume: 99.75 }, expect: { MaximumVolume: 99.75 } },
    {
      name: "Reusable=false (via the MaybeBool wrapper)",
      request: { Reusable: { Reusable: false } },
      expect: { Reusable: false },
    },
  ];

  for (const c of cases) {
    test(`updating only ${c.name} changes only that field and sets Updated`, async () => {
      const id = await create(base);
      const original = await describePackage(id);
      const eventsBefore = await count(fx.db.db, "package_event");

      const res = await fx.client.updatePackageV1({ PackageID: id, ...c.request });
      assert.equal(res.Suc, true);

      const updated = await describePackage(id);
      const { Updated, ...rest } = updated;
      const { Updated: originalUpdated, ...originalRest } = original;
      assert.equal(originalUpdated, null);
      assert.deepEqual(rest, { ...originalRest, ...c.expect }, "only the requested field changed");
      assert.ok(Updated !== null && Updated.Time !== null, "Updated is set after an update");
      assert.ok(millis(Updated.Time) >= millis(original.Created!), "Updated is not before Created");

      assert.equal(await count(fx.db.db, "package_event"), eventsBefore + 1, "exactly one new event");
      const event = await lastEvent(id);
      assert.equal(event.type, "Updated");
      assertPayloadMatches(event.payload, updated, false);
    });
  }

  test("Reusable can be set back to true through the wrapper", async () => {
    const id = await create({ ...base, Reusable: false });
    await fx.client.updatePackageV1({ PackageID: id, Reusable: { Reusable: true } });
    const pkg = await describePackage(id);
    assert.equal(pkg.Reusable, true);
    assert.equal(pkg.Title, base.Title);
    assert.equal(pkg.Material, base.Material);
    assert.equal(pkg.MaximumVolume, base.MaximumVolume);

    await fx.client.updatePackageV1({ PackageID: id, Reusable: { Reusable: false } });
    assert.equal((await describePackage(id)).Reusable, false);
    await fx.client.updatePackageV1({ PackageID: id, Reusable: { Reusable: true } });
    assert.equal((await describePackage(id)).Reusable, true);

    const rows = await events(fx.db.db, BigInt(id));
    assert.deepEqual(
      rows.map((r) => [r.type, r.payload.Reusable]),
      [
        ["Created", false],
        ["Updated", true],
        ["Updated", false],
        ["Updated", true],
      ],
    );
  });

  test("several fields at once, and a later update keeps earlier changes", async () => {
    const id = await create(base);
    await fx.client.updatePackageV1({ PackageID: id, Title: "t2", MaximumVolume: 1.5 });
    await fx.client.updatePackageV1({ PackageID: id, Material: "m3" });
    const pkg = await describePackage(id);
    assert.deepEqual(
      { Title: pkg.Title, Material: pkg.Material, MaximumVolume: pkg.MaximumVolume, Reusable: pkg.Reusable },
      { Title: "t2", Material: "m3", MaximumVolume: 1.5, Reusable: true },
    );
    const rows = await events(fx.db.db, BigInt(id));
    assert.deepEqual(
      rows.map((r) => r.type),
      ["Created", "Updated", "Updated"],
    );
    assertPayloadMatches(rows[2]!.payload, pkg, false);
    assert.equal(rows[1]!.payload.Material, "paper", "the first update's event shows the state after it");
    assert.equal(rows[1]!.payload.Title, "t2");
  });
});

describe("RemovePackageV1", () => {
  test("Remove returns Suc, writes one Removed event with the last state, and the package is gone", async () => {
    const id = await create({ Title: "doomed", Material: "foam", MaximumVolume: 5.5, Reusable: true });
    await fx.client.updatePackageV1({ PackageID: id, Title: "doomed-2" });
    const last = await describePackage(id);
    const eventsBefore = await count(fx.db.db, "package_event");

    const res = await fx.client.removePackageV1({ PackageID: id });
    assert.equal(res.Suc, true);
    assert.equal(await count(fx.db.db, "package_event"), eventsBefore + 1, "exactly one new event");
    const event = await lastEvent(id);
    assert.equal(event.type, "Removed");
    assertPayloadMatches(event.payload, last, true);

    for (const call of [
      () => fx.client.describePackageV1({ PackageID: id }),
      () => fx.client.updatePackageV1({ PackageID: id, Title: "zombie" }),
      () => fx.client.removePackageV1({ PackageID: id }),
    ]) {
      const err = await rpcError(call(), grpc.status.NOT_FOUND);
      assert.equal(err.details, "package not found");
    }
    assert.equal(
      await count(fx.db.db, "package_event"),
      eventsBefore + 1,
      "failed calls on a removed package write nothing",
    );

    const all = (await fx.client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages as WirePackage[];
    assert.ok(!all.some((p) => p.ID === id), "a removed package vanishes from List");
    assert.ok(all.length > 0, "other packages are still listed");
  });

  test('Describe, Update and Remove of an unknown id → NOT_FOUND "package not found", nothing written', async () => {
    const eventsBefore = await count(fx.db.db, "package_event");
    const packagesBefore = await count(fx.db.db, "package");
    for (const unknown of ["987654321", "9223372036854775807"]) {
      for (const call of [
        () => fx.client.describePackageV1({ PackageID: unknown }),
        () => fx.client.updatePackageV1({ PackageID: unknown, Title: "ghost" }),
        () => fx.client.updatePackageV1({ PackageID: unknown, Reusable: { Reusable: false } }),
        () => fx.client.removePackageV1({ PackageID: unknown }),
      ]) {
        const err = await rpcError(call(), grpc.status.NOT_FOUND);
        assert.equal(err.details, "package not found");
      }
    }
    assert.equal(await count(fx.db.db, "package_event"), eventsBefore);
    assert.equal(await count(fx.db.db, "package"), packagesBefore);
  });
});

test("a package's whole life is one event per change, in order", async () => {
  const id = await create({ Title: "life", Material: "jute", MaximumVolume: 8, Reusable: false });
  await fx.client.updatePackageV1({ PackageID: id, Material: "hemp" });
  await fx.client.updatePackageV1({ PackageID: id, Reusable: { Reusable: true } });
  await fx.client.removePackageV1({ PackageID: id });
  const rows = await events(fx.db.db, BigInt(id));
  assert.deepEqual(
    rows.map((r) => [r.type, r.payload.Material, r.payload.Reusable, r.payload.Removed, "Updated" in r.payload]),
    [
      ["Created", "jute", false, false, false],
      ["Updated", "hemp", false, false, true],
      ["Updated", "hemp", true, false, true],
      ["Removed", "hemp", true, true, true],
    ],
  );
});
