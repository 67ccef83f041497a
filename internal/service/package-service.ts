import { createHash } from "node:crypto";
import type { NewPackage, PackageChanges, PackageRecord, TraceContext } from "../domain/package.js";
import type { PackageRepository } from "../repo/package-repo.js";

export interface ChangeContext {
  /** Client-chosen idempotency key (`Idempotency-Key` or `x-request-id`), already validated. */
  idempotencyKey?: { key: string; header: string };
  trace?: TraceContext;
}

export interface PackageServiceOptions {
  idempotencyRetentionSeconds: number;
}

export interface CreateResult {
  id: bigint;
  replayed: boolean;
}

export class PackageService {
  constructor(
    private readonly repo: PackageRepository,
    private readonly options: PackageServiceOptions,
  ) {}

  async create(input: NewPackage, ctx: ChangeContext = {}): Promise<CreateResult> {
    if (ctx.idempotencyKey === undefined) {
      return { id: await this.repo.create(input, ctx.trace), replayed: false };
    }
    return this.repo.createOnce(input, ctx.trace, {
      key: ctx.idempotencyKey.key,
      header: ctx.idempotencyKey.header,
      requestHash: requestDigest(input),
      retentionSeconds: this.options.idempotencyRetentionSeconds,
    });
  }

  describe(id: bigint): Promise<PackageRecord> {
    return this.repo.describe(id);
  }

  list(offset: bigint, limit: number): Promise<PackageRecord[]> {
    return this.repo.list(offset, limit);
  }

  update(id: bigint, changes: PackageChanges, ctx: ChangeContext = {}): Promise<void> {
    return this.repo.update(id, changes, ctx.trace);
  }

  remove(id: bigint, ctx: ChangeContext = {}): Promise<void> {
    return this.repo.remove(id, ctx.trace);
  }
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
