import type {
  CreatePackageV1Request,
  ListPackagesV1Request,
  UpdatePackageV1Request,
} from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { InvalidArgumentError } from "../domain/errors.js";
import type { NewPackage, PackageChanges } from "../domain/package.js";

// Request validation. Each message names the field and the rule,
// because that is what a client developer needs to fix the call.

const maxTextLength = 32;
// Ids are bigint in Postgres: a larger uint64 can name no package.
const maxId = 2n ** 63n - 1n;

export interface ListLimits {
  defaultLimit: number;
  maxLimit: number;
  /** Postgres reads and discards every skipped row, so the offset bounds a List's work. */
  maxOffset: number;
}

export function validateCreate(req: CreatePackageV1Request): NewPackage {
  checkText("Title", req.Title, 1);
  checkText("Material", req.Material, 1);
  if (!Number.isFinite(req.MaximumVolume) || req.MaximumVolume <= 0) {
    throw new InvalidArgumentError("MaximumVolume", "MaximumVolume must be a finite number greater than 0");
  }
  return { title: req.Title, material: req.Material, maximumVolume: req.MaximumVolume, reusable: req.Reusable };
}

export function validateUpdate(req: UpdatePackageV1Request): { id: bigint; changes: PackageChanges } {
  const id = validatePackageId(req.PackageID);
  checkText("Title", req.Title, 0);
  checkText("Material", req.Material, 0);
  if (!Number.isFinite(req.MaximumVolume) || req.MaximumVolume < 0) {
    throw new InvalidArgumentError(
      "MaximumVolume",
      "MaximumVolume must be a finite number of at least 0 (0 = unchanged)",
    );
  }
  // Zero values mean "unchanged" in the v1 contract; Reusable uses a wrapper
  // so that `false` can be set.
  const changes: PackageChanges = {};
  if (req.Title !== "") changes.title = req.Title;
  if (req.Material !== "") changes.material = req.Material;
  if (req.MaximumVolume !== 0) changes.maximumVolume = req.MaximumVolume;
  if (req.Reusable !== undefined) changes.reusable = req.Reusable.Reusable;
  if (Object.keys(changes).length === 0) {
    throw new InvalidArgumentError("PackageID", "no changes specified");
  }
  return { id, changes };
}

export function validatePackageId(id: bigint): bigint {
  if (id <= 0n || id > maxId) {
    throw new InvalidArgumentError("PackageID", `PackageID must be between 1 and ${maxId}`);
  }
  return id;
}

export function validateList(req: ListPackagesV1Request, limits: ListLimits): { offset: bigint; limit: number } {
  if (req.Limit > BigInt(limits.maxLimit)) {
    throw new InvalidArgumentError(
      "Limit",
      `Limit must be at most ${limits.maxLimit} (0 means ${limits.defaultLimit})`,
    );
  }
  if (req.Offset > BigInt(limits.maxOffset)) {
    throw new InvalidArgumentError(
      "Offset",
      `Offset must be at most ${limits.maxOffset} (the server's api.maxListOffset)`,
    );
  }
  const limit = req.Limit === 0n ? limits.defaultLimit : Number(req.Limit);
  return { offset: req.Offset, limit };
}

const maxKeyLength = 255;
// Visible ASCII and space: what gRPC metadata can carry as text, and what an
// HTTP header holds without charset guessing (Node reads other bytes as latin1).
const keyPattern = /^[\x20-\x7e]+$/;
// The IETF Idempotency-Key draft sends the key as a structured-field string
// ("..." with \" and \\ escapes); Stripe-style clients send it bare. Both work.
const sfString = /^"((?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\["\\])*)"$/;

export interface IdempotencyKeyHeader {
  key: string;
  /** The header the key came from, for messages: "x-request-id" or "Idempotency-Key". */
  header: string;
}

/**
 * The idempotency key of a create: `Idempotency-Key` or (the original
 * clients') `x-request-id`, as gRPC metadata or HTTP header. Both may be sent
 * when they agree; two different keys are a client bug, not a choice to make.
 */
export function validateIdempotencyKey(headers: Headers): IdempotencyKeyHeader | undefined {
  const requestId = headers.get("x-request-id");
  const rawIdempotencyKey = headers.get("idempotency-key");
  const fromRequestId = requestId === null ? undefined : checkKey("x-request-id", requestId);
  let fromIdempotencyKey: string | undefined;
  if (rawIdempotencyKey !== null) {
    const quoted = sfString.exec(rawIdempotencyKey);
    const unquoted = quoted === null ? rawIdempotencyKey : quoted[1]!.replace(/\\(["\\])/g, "$1");
    fromIdempotencyKey = checkKey("Idempotency-Key", unquoted);
  }
  if (fromRequestId !== undefined && fromIdempotencyKey !== undefined && fromRequestId !== fromIdempotencyKey) {
    throw new InvalidArgumentError(
      "Idempotency-Key",
      "Idempotency-Key and x-request-id differ: send one key (or the same key in both)",
    );
  }
  if (fromIdempotencyKey !== undefined) return { key: fromIdempotencyKey, header: "Idempotency-Key" };
  if (fromRequestId !== undefined) return { key: fromRequestId, header: "x-request-id" };
  return undefined;
}

function checkKey(header: string, value: string): string {
  if (value.length === 0 || value.length > maxKeyLength) {
    throw new InvalidArgumentError(header, `${header} must be 1 to ${maxKeyLength} characters (got ${value.length})`);
  }
  if (!keyPattern.test(value)) {
    throw new InvalidArgumentError(header, `${header} must be printable ASCII (space to ~)`);
  }
  return value;
}

function checkText(field: string, value: string, min: number): void {
  // Code points, not UTF-16 units: "📦" is one character to the user.
  const length = [...value].length;
  if (length < min || length > maxTextLength) {
    const range = min === 0 ? `at most ${maxTextLength}` : `${min} to ${maxTextLength}`;
    throw new InvalidArgumentError(field, `${field} must be ${range} characters long (got ${length})`);
  }
  // Postgres text cannot hold NUL; rejecting it here keeps it a client error.
  if (value.includes("\u0000")) {
    throw new InvalidArgumentError(field, `${field} must not contain NUL characters`);
  }
}
