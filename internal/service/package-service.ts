import { createHash } from "node:crypto";
import type { NewPackage, PackageChanges, PackageRecord, TraceContext } from "../domain/package.js";
import type { PackageRepository } from "../repo/package-repo.js";

export interface ChangeContext {
  /** Client-chosen idempotency key (`x-request-id`), already validated. */
  requestId?: string;
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
    if (ctx.requestId === undefined) {
      return { id: await this.repo.create(input, ctx.trace), replayed: false };
    }
    return this.repo.createOnce(input, ctx.trace, {
      key: ctx.requestId,
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

// What makes two creates "the same request": the decoded field values, in a
// fixed order, so that field order or JSON spelling on the wire does not matter.
function requestDigest(input: NewPackage): Buffer {
  const canonical = JSON.stringify([input.title, input.material, input.maximumVolume, input.reusable]);
  return createHash("sha256").update(canonical).digest();
}
