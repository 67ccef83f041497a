import { createHash } from "node:crypto";
import type { NewPackage, TraceContext } from "../domain/package.js";
import type { PackageRepository } from "./package-repo.js";

export interface CreateContext {
  /** Client-chosen idempotency key (`Idempotency-Key` or `x-request-id`), already validated. */
  idempotencyKey?: { key: string; header: string } | undefined;
  trace?: TraceContext | undefined;
  /** How long a key keeps answering repeats with the package it created (idempotency.retentionSeconds). */
  idempotencyRetentionSeconds: number;
}

/**
 * The Create use case: a create with an idempotency key goes through createOnce
 * (a repeat gets the first package's id back), one without is a plain create
 * (group-committed by the repository when batching is on).
 */
export async function createPackage(repo: PackageRepository, input: NewPackage, ctx: CreateContext): Promise<bigint> {
  if (ctx.idempotencyKey === undefined) return repo.create(input, ctx.trace);
  const { id } = await repo.createOnce(input, ctx.trace, {
    key: ctx.idempotencyKey.key,
    header: ctx.idempotencyKey.header,
    requestHash: requestDigest(input),
    retentionSeconds: ctx.idempotencyRetentionSeconds,
  });
  return id;
}

// What makes two creates "the same request": the field values as protobuf
// holds them, in a fixed order, so that field order, JSON spelling or protocol
// do not matter. MaximumVolume is a float: gRPC carries 0.1 as the float32
// 0.100000001490116…, REST JSON as the double 0.1; both are stored as the same
// real, so the digest rounds to float32 too (Math.fround), and a retry over
// another protocol replays instead of failing with AlreadyExists.
export function requestDigest(input: NewPackage): Buffer {
  const canonical = JSON.stringify([input.title, input.material, Math.fround(input.maximumVolume), input.reusable]);
  return createHash("sha256").update(canonical).digest();
}
