// The relay's own PackageEvent encoder (internal/retranslator/sender/package-event-encoding.ts)
// against @bufbuild/protobuf's: the same bytes for any event, and a schema that still has exactly
// the fields the encoder writes (a field added to api/.../kafka_proto.proto fails here first).

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, fromBinary, ScalarType, toBinary } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import fc from "fast-check";
import {
  encodePackageEvent,
  type PackageEventFields,
} from "../../internal/retranslator/sender/package-event-encoding.js";
import { PackageEventSchema } from "../../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";

const byProtobufEs = (e: PackageEventFields) =>
  Buffer.from(
    toBinary(
      PackageEventSchema,
      create(PackageEventSchema, {
        ID: e.id,
        PackageID: e.packageId,
        Type: e.type,
        Created: timestampFromDate(e.created),
        Payload: Buffer.from(e.payload, "utf8"),
      }),
    ),
  );

const events = fc.record({
  id: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 53n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
  packageId: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 53n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
  type: fc.constantFrom(0, 1, 2),
  // Before 1970 too (negative seconds), to the millisecond.
  created: fc.integer({ min: -8_640_000_000_000, max: 8_640_000_000_000 }).map((ms) => new Date(ms)),
  payload: fc.oneof(fc.json(), fc.string({ unit: "grapheme", maxLength: 300 }), fc.constant("")),
});

describe("PackageEvent encoding", () => {
  test("writes the bytes protobuf-es writes, for any event", () => {
    const edges: PackageEventFields[] = [
      { id: 0n, packageId: 0n, type: 0, created: new Date(0), payload: "" },
      { id: 1n, packageId: 127n, type: 2, created: new Date(999), payload: "{}" },
      { id: 128n, packageId: 2n ** 53n, type: 1, created: new Date(-1), payload: "é" },
      {
        id: 2n ** 64n - 1n,
        packageId: 2n ** 63n,
        type: 0,
        created: new Date(1_780_000_000_123),
        payload: "x".repeat(200),
      },
    ];
    for (const e of edges)
      assert.deepEqual(
        encodePackageEvent(e),
        byProtobufEs(e),
        JSON.stringify(e, (_, v) => (typeof v === "bigint" ? v.toString() : v)),
      );
    fc.assert(
      fc.property(events, (e) => encodePackageEvent(e).equals(byProtobufEs(e))),
      { numRuns: 3000 },
    );
  });

  test("refuses what protobuf-es refuses, and types that are no event type, instead of writing another value", () => {
    const valid: PackageEventFields = { id: 1n, packageId: 1n, type: 0, created: new Date(0), payload: "{}" };
    for (const bad of [{ id: -1n }, { id: 2n ** 64n }, { packageId: -5n }, { packageId: 2n ** 70n }]) {
      const e = { ...valid, ...bad };
      assert.throws(() => encodePackageEvent(e), /is not a uint64/);
      assert.throws(() => byProtobufEs(e), "protobuf-es refuses it too");
    }
    for (const type of [-1, 1.5, 3, 128, Number.NaN, undefined as unknown as number]) {
      assert.throws(() => encodePackageEvent({ ...valid, type }), /is not one of the event types/);
    }
  });

  test("decodes with protobuf-es to the event's values", () => {
    const e: PackageEventFields = {
      id: 42n,
      packageId: 7n,
      type: 1,
      created: new Date("2026-11-30T12:00:00.123Z"),
      payload: '{"ID":"7","Title":"box ✓"}',
    };
    const decoded = fromBinary(PackageEventSchema, encodePackageEvent(e));
    assert.equal(decoded.ID, 42n);
    assert.equal(decoded.PackageID, 7n);
    assert.equal(decoded.Type, 1);
    assert.equal(decoded.Created?.seconds, 1_796_040_000n);
    assert.equal(decoded.Created?.nanos, 123_000_000);
    assert.equal(Buffer.from(decoded.Payload).toString("utf8"), e.payload);
  });

  test("the schema has exactly the fields the encoder writes", () => {
    const fields = PackageEventSchema.fields.map((f) => {
      const kind =
        f.fieldKind === "scalar"
          ? ScalarType[f.scalar]
          : f.fieldKind === "enum"
            ? f.enum.typeName
            : f.fieldKind === "message"
              ? f.message.typeName
              : f.fieldKind;
      return `${f.number} ${f.name} ${kind}`;
    });
    assert.deepEqual(fields, [
      "1 ID UINT64",
      "2 PackageID UINT64",
      "3 Type hablof.proto.v1.EventType",
      "4 Created google.protobuf.Timestamp",
      "5 Payload BYTES",
    ]);
  });
});
