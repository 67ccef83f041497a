// Request validation (docs/design.md §1.2): every rule answers INVALID_ARGUMENT with a
// message naming the field, and a rejected request writes nothing: no package,
// no event, no idempotency key.

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError } from "@connectrpc/connect/protocol-grpc";
import { BadRequestSchema } from "../pkg/google/rpc/error_details_pb.js";
import { count } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, rpcError } from "./helpers/grpc-client.js";

const fx = useFixture();
/** A live package for the Update cases, so that only the rule under test can fail. */
let existingId: string;

const valid = { Title: "box", Material: "cardboard", MaximumVolume: 2.5, Reusable: false };
const maxBigint = "9223372036854775807"; // 2^63-1: the largest id Postgres' bigint can hold
fx.onSetUp(async () => {
  existingId = (await fx.client.createPackageV1(valid)).ID;
});

async function snapshot(): Promise<{ packages: number; events: number; keys: number }> {
  return {
    packages: await count(fx.db.db, "package"),
    events: await count(fx.db.db, "package_event"),
    keys: await count(fx.db.db, "idempotency_key"),
  };
}

/** Asserts INVALID_ARGUMENT whose details name `field` (and match `rule` when given). */
async function invalid(call: Promise<unknown>, field: string, rule?: RegExp): Promise<string> {
  const err = await rpcError(call, grpc.status.INVALID_ARGUMENT);
  assert.ok(err.details.includes(field), `details ${JSON.stringify(err.details)} name the field ${field}`);
  if (rule) assert.match(err.details, rule);
  return err.details;
}

describe("invalid requests are rejected and write nothing", () => {
  let start: Awaited<ReturnType<typeof snapshot>>;
  before(async () => {
    start = await snapshot();
  });

  test("Create: Title empty, longer than 32 code points, or containing NUL", async () => {
    await invalid(fx.client.createPackageV1({ ...valid, Title: "" }), "Title", /1 to 32/);
    await invalid(fx.client.createPackageV1({ ...valid, Title: "a".repeat(33) }), "Title", /32/);
    await invalid(fx.client.createPackageV1({ ...valid, Title: "📦".repeat(33) }), "Title", /32/);
    await invalid(fx.client.createPackageV1({ ...valid, Title: "bad\u0000title" }), "Title", /NUL/);
  });

  test("Create: Material empty, longer than 32 characters, or containing NUL", async () => {
    await invalid(fx.client.createPackageV1({ ...valid, Material: "" }), "Material", /1 to 32/);
    await invalid(fx.client.createPackageV1({ ...valid, Material: "m".repeat(33) }), "Material", /32/);
    await invalid(fx.client.createPackageV1({ ...valid, Material: "\u0000" }), "Material", /NUL/);
  });

  test("Create: MaximumVolume 0, negative, NaN or infinite", async () => {
    for (const volume of [0, -1, -0.5, NaN, Infinity, -Infinity]) {
      await invalid(fx.client.createPackageV1({ ...valid, MaximumVolume: volume }), "MaximumVolume");
    }
  });

  test("Create: an x-request-id longer than 255 characters", async () => {
    await invalid(fx.client.createPackageV1(valid, { "x-request-id": "r".repeat(300) }), "x-request-id", /255/);
  });

  test("Update: PackageID 0", async () => {
    await invalid(fx.client.updatePackageV1({ PackageID: 0, Title: "new" }), "PackageID");
  });

  test("Update: Title or Material longer than 32 characters, or containing NUL", async () => {
    await invalid(fx.client.updatePackageV1({ PackageID: existingId, Title: "a".repeat(33) }), "Title", /32/);
    await invalid(fx.client.updatePackageV1({ PackageID: existingId, Material: "m".repeat(33) }), "Material", /32/);
    await invalid(fx.client.updatePackageV1({ PackageID: existingId, Title: "x\u0000" }), "Title", /NUL/);
  });

  test("Update: MaximumVolume negative, NaN or infinite", async () => {
    for (const volume of [-1, NaN, Infinity, -Infinity]) {
      await invalid(fx.client.updatePackageV1({ PackageID: existingId, MaximumVolume: volume }), "MaximumVolume");
    }
  });

  test('Update with no field set → "no changes specified"', async () => {
    const err = await rpcError(fx.client.updatePackageV1({ PackageID: existingId }), grpc.status.INVALID_ARGUMENT);
    assert.equal(err.details, "no changes specified");
    // Zero values mean "unchanged" in v1, so this is no change either.
    const zeros = await rpcError(
      fx.client.updatePackageV1({ PackageID: existingId, Title: "", Material: "", MaximumVolume: 0 }),
      grpc.status.INVALID_ARGUMENT,
    );
    assert.equal(zeros.details, "no changes specified");
  });

  test("Describe and Remove: PackageID 0", async () => {
    await invalid(fx.client.describePackageV1({ PackageID: 0 }), "PackageID");
    await invalid(fx.client.removePackageV1({ PackageID: 0 }), "PackageID");
  });

  test("PackageID above 2^63-1 (no bigint can hold it) → INVALID_ARGUMENT, not INTERNAL", async () => {
    for (const id of ["9223372036854775808", "18446744073709551615"]) {
      await invalid(fx.client.describePackageV1({ PackageID: id }), "PackageID");
      await invalid(fx.client.updatePackageV1({ PackageID: id, Title: "new" }), "PackageID");
      await invalid(fx.client.removePackageV1({ PackageID: id }), "PackageID");
    }
  });

  test("List: Limit above 500, or an Offset no bigint can hold", async () => {
    await invalid(fx.client.listPackagesV1({ Offset: 0, Limit: 501 }), "Limit", /500/);
    await invalid(fx.client.listPackagesV1({ Offset: 0, Limit: "18446744073709551615" }), "Limit");
    await invalid(fx.client.listPackagesV1({ Offset: "18446744073709551615", Limit: 10 }), "Offset");
  });

  test("the existing package is untouched by the rejected updates", async () => {
    const pkg = (await fx.client.describePackageV1({ PackageID: existingId })).Value;
    assert.equal(pkg.Title, valid.Title);
    assert.equal(pkg.Material, valid.Material);
    assert.equal(pkg.MaximumVolume, valid.MaximumVolume);
    assert.equal(pkg.Reusable, valid.Reusable);
    assert.equal(pkg.Updated, null);
  });

  test("no package, event or idempotency key was written by any rejected call", async () => {
    assert.deepEqual(await snapshot(), start);
  });
});

describe("the field at fault reaches clients as a google.rpc.BadRequest detail", () => {
  test("native gRPC (grpc-js): grpc-status-details-bin carries a google.rpc.Status with the detail", async () => {
    const err = await rpcError(fx.client.createPackageV1({ ...valid, Title: "" }), grpc.status.INVALID_ARGUMENT);
    const [bin] = (err as unknown as { metadata: InstanceType<typeof grpc.Metadata> }).metadata.get(
      "grpc-status-details-bin",
    );
    assert.ok(Buffer.isBuffer(bin), "the trailer grpc-status-details-bin is sent");
    // Decoded as a connect client decodes it: the Status' code and message are the call's.
    const status = findTrailerError(new Headers({ "grpc-status-details-bin": bin.toString("base64") }));
    assert.ok(status instanceof ConnectError);
    assert.equal(status.code, grpc.status.INVALID_ARGUMENT);
    assert.equal(status.rawMessage, err.details);
    const [detail] = status.findDetails(BadRequestSchema);
    assert.deepEqual(
      detail?.fieldViolations.map(({ field, description }) => ({ field, description })),
      [{ field: "Title", description: err.details }],
    );
    assert.match(err.details, /1 to 32/);
  });

  test("Connect JSON: the error's details hold the BadRequest, its fields readable in debug", async () => {
    const res = await fetch(
      `${fx.server.grpcUrl}/hablof.logistic_package_api.v1.LogisticPackageApiService/CreatePackageV1`,
      {
        method: "POST",
        signal: AbortSignal.timeout(10_000),
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ ...valid, MaximumVolume: -1 }),
      },
    );
    assert.equal(res.status, 400);
    const body = (await res.json()) as {
      code: string;
      message: string;
      details: { type: string; value: string; debug: unknown }[];
    };
    assert.equal(body.code, "invalid_argument");
    assert.equal(body.details.length, 1);
    assert.equal(body.details[0]!.type, "google.rpc.BadRequest");
    assert.deepEqual(body.details[0]!.debug, {
      fieldViolations: [{ field: "MaximumVolume", description: body.message }],
    });
    // The binary value is the same detail, for clients that decode it.
    const error = new ConnectError(body.message, Code.InvalidArgument);
    error.details = [{ type: body.details[0]!.type, value: Buffer.from(body.details[0]!.value, "base64") }];
    assert.equal(error.findDetails(BadRequestSchema)[0]?.fieldViolations[0]?.field, "MaximumVolume");
  });
});

describe("boundaries that are accepted", () => {
  test("a Title of 32 emoji (32 code points, 64 UTF-16 units) is accepted and stored intact", async () => {
    const title = "📦".repeat(32);
    assert.equal(title.length, 64);
    const id = (await fx.client.createPackageV1({ ...valid, Title: title, Material: "🧱".repeat(32) })).ID;
    const pkg = (await fx.client.describePackageV1({ PackageID: id })).Value;
    assert.equal(pkg.Title, title);
    assert.equal(pkg.Material, "🧱".repeat(32));

    await fx.client.updatePackageV1({ PackageID: id, Title: "é".repeat(32) });
    assert.equal((await fx.client.describePackageV1({ PackageID: id })).Value.Title, "é".repeat(32));
  });

  test("32 ASCII characters and a single character are accepted", async () => {
    const id = (await fx.client.createPackageV1({ ...valid, Title: "t".repeat(32), Material: "m" })).ID;
    const pkg = (await fx.client.describePackageV1({ PackageID: id })).Value;
    assert.equal(pkg.Title, "t".repeat(32));
    assert.equal(pkg.Material, "m");
  });

  test("Update with MaximumVolume 0 means unchanged, alongside a real change", async () => {
    const id = (await fx.client.createPackageV1({ ...valid, MaximumVolume: 4.5 })).ID;
    await fx.client.updatePackageV1({ PackageID: id, Title: "renamed", MaximumVolume: 0 });
    const pkg = (await fx.client.describePackageV1({ PackageID: id })).Value;
    assert.equal(pkg.Title, "renamed");
    assert.equal(pkg.MaximumVolume, 4.5);
  });

  test("PackageID 2^63-1 is a valid id: NOT_FOUND, not INVALID_ARGUMENT", async () => {
    await rpcError(fx.client.describePackageV1({ PackageID: maxBigint }), grpc.status.NOT_FOUND);
    await rpcError(fx.client.removePackageV1({ PackageID: maxBigint }), grpc.status.NOT_FOUND);
  });

  test("an x-request-id of 255 characters is accepted", async () => {
    const res = await fx.client.createPackageV1(valid, { "x-request-id": "k".repeat(255) });
    assert.match(res.ID, /^[1-9][0-9]*$/);
  });
});

describe("List limits", () => {
  before(async () => {
    const live = (await fx.client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages.length;
    for (let i = live; i < 55; i++) await fx.client.createPackageV1({ ...valid, Title: `p${i}` });
    assert.equal((await fx.client.listPackagesV1({ Offset: 0, Limit: 500 })).Packages.length, 55);
  });

  test("Limit 0 (or no Limit) returns the default of 50", async () => {
    const zero = await fx.client.listPackagesV1({ Offset: 0, Limit: 0 });
    assert.equal(zero.Packages.length, 50);
    const unset = await fx.client.listPackagesV1({});
    assert.equal(unset.Packages.length, 50);
    assert.deepEqual(
      unset.Packages.map((p: { ID: string }) => p.ID),
      zero.Packages.map((p: { ID: string }) => p.ID),
    );
    // The default page is the first 50 by id; the rest follows at Offset 50.
    const rest = await fx.client.listPackagesV1({ Offset: 50, Limit: 0 });
    assert.equal(rest.Packages.length, 5);
  });

  test("Limit 500 is accepted, Limit 501 is not", async () => {
    const max = await fx.client.listPackagesV1({ Offset: 0, Limit: 500 });
    assert.equal(max.Packages.length, 55);
    await invalid(fx.client.listPackagesV1({ Offset: 0, Limit: 501 }), "Limit");
  });
});
