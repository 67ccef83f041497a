import { fromBinary } from "@bufbuild/protobuf";
import { z } from "zod";
import {
  EventType,
  type PackageEvent,
  PackageEventSchema,
} from "../../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import type { EventType as EventTypeName } from "../domain/package.js";

/** A package as an event's payload describes it after the change. */
export interface PackageState {
  id: bigint;
  title: string;
  material: string;
  maximumVolume: number;
  reusable: boolean;
  /** RFC 3339 text as sent: Postgres parses it, so microseconds survive. */
  created: string;
  updated: string | null;
  removed: boolean;
}

/** One decoded `hablof.proto.v1.PackageEvent`. */
export interface PackageChange {
  eventId: bigint;
  packageId: bigint;
  type: EventTypeName;
  state: PackageState;
}

/** The message cannot be used, whatever the retries: it is recorded and skipped. */
export class DecodeError extends Error {
  override name = "DecodeError";
}

const typeNames: Record<number, EventTypeName> = {
  [EventType.Created]: "Created",
  [EventType.Updated]: "Updated",
  [EventType.Removed]: "Removed",
};

// uint64 on the wire, bigint (signed) in Postgres: a larger id would fail the
// transaction on every retry, so it is refused here instead.
const MAX_BIGINT = 2n ** 63n - 1n;
const MAX_REAL = 3.4028234663852886e38;
// The smallest positive real (a subnormal); Postgres refuses what would round to 0.
const MIN_REAL = 1.401298464324817e-45;
const utf8 = new TextDecoder("utf-8", { fatal: true });

// Everything that passes these checks can be stored by the facade's tables;
// a value Postgres would refuse (NUL in text, an unpaired surrogate, a real
// out of range, an impossible date) must be caught here, not by the database.
const storableText = z
  .string()
  .refine((s) => !s.includes("\u0000") && !/\p{Cs}/u.test(s), "contains NUL or an unpaired surrogate");
const timestamp = z.string().refine(isTimestamp, "expected an RFC 3339 timestamp");
const payloadSchema = z.object({
  ID: z.union([z.string().regex(/^\d{1,19}$/), z.number().int().nonnegative()]),
  Title: storableText,
  Material: storableText,
  MaximumVolume: z
    .number()
    .refine((v) => v === 0 || (Math.abs(v) <= MAX_REAL && Math.abs(v) >= MIN_REAL), "out of range for real"),
  // Protobuf JSON leaves out false booleans.
  Reusable: z.boolean().optional(),
  Created: timestamp,
  Updated: z.object({ Time: timestamp.nullish() }).nullish(),
  Removed: z.boolean().optional(),
});

/** Decodes a message value; throws DecodeError with the reason when it cannot be used. */
export function decodePackageEvent(value: Buffer | null): PackageChange {
  if (value === null) throw new DecodeError("message has no value");
  let event: PackageEvent;
  try {
    event = fromBinary(PackageEventSchema, value);
  } catch (err) {
    throw new DecodeError(`not a PackageEvent: ${(err as Error).message}`);
  }
  checkId("ID", event.ID);
  checkId("PackageID", event.PackageID);
  const type = typeNames[event.Type];
  if (type === undefined) throw new DecodeError(`unknown event Type ${event.Type}`);

  let json: unknown;
  try {
    json = JSON.parse(utf8.decode(event.Payload));
  } catch (err) {
    throw new DecodeError(`Payload is not UTF-8 JSON: ${(err as Error).message}`);
  }
  const parsed = payloadSchema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`);
    throw new DecodeError(`Payload does not describe a package: ${issues.join("; ")}`);
  }
  const p = parsed.data;
  if (BigInt(p.ID) !== event.PackageID) {
    throw new DecodeError(`Payload ID ${String(p.ID)} differs from PackageID ${event.PackageID}`);
  }
  return {
    eventId: event.ID,
    packageId: event.PackageID,
    type,
    state: {
      id: event.PackageID,
      title: p.Title,
      material: p.Material,
      maximumVolume: p.MaximumVolume,
      reusable: p.Reusable ?? false,
      created: p.Created,
      updated: p.Updated?.Time ?? null,
      removed: p.Removed ?? type === "Removed",
    },
  };
}

function checkId(field: string, id: bigint): void {
  if (id < 1n || id > MAX_BIGINT) throw new DecodeError(`${field} ${id} is outside 1..2^63-1`);
}

const rfc3339 = /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.\d{1,9})?(?:[Zz]|[+-](\d{2}):(\d{2}))$/;

function isTimestamp(text: string): boolean {
  const m = rfc3339.exec(text);
  if (m === null) return false;
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [
    number,
    number,
    number,
    number,
    number,
    number,
  ];
  const offsetHours = m[7] === undefined ? 0 : Number(m[7]);
  const offsetMinutes = m[8] === undefined ? 0 : Number(m[8]);
  if (year < 1 || hour > 23 || minute > 59 || second > 59 || offsetHours > 15 || offsetMinutes > 59) return false;
  // Day within its month (Date.UTC rolls 31 February over into March).
  const date = new Date(Date.UTC(2000, month - 1, day));
  date.setUTCFullYear(year);
  return month >= 1 && month <= 12 && date.getUTCMonth() === month - 1 && date.getUTCDate() === day;
}
