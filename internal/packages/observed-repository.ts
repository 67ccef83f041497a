import type { Counter } from "prom-client";
import type { Database } from "../database/database.js";
import { inSpan } from "../tracer/span.js";
import type { CreateBatchingOptions } from "./create-batcher.js";
import { type PackageRepository, PgPackageRepository } from "./package-repo.js";

/**
 * The grpc-server's package repository, everything a call goes through built
 * in this one place: Postgres (package-repo.ts; creates without an idempotency
 * key group-committed by create-batcher.ts), observed by one decorator.
 */
export function packageRepository(
  db: Database,
  batching: CreateBatchingOptions,
  cudEvents: Counter<"type">,
): PackageRepository {
  return observed(new PgPackageRepository(db, batching), cudEvents);
}

/**
 * Each method in a span `PackageRepository.<method>`, so that a trace shows
 * RPC → repository method → SQL; and the outbox events written counted by
 * type (logistic_package_api_cud_event_total: a replayed createOnce wrote none).
 */
function observed(repo: PackageRepository, cudEvents: Counter<"type">): PackageRepository {
  const span = <T>(method: string, fn: () => Promise<T>) => inSpan(`PackageRepository.${method}`, fn);
  return {
    create: (input, trace) =>
      span("create", async () => {
        const id = await repo.create(input, trace);
        cudEvents.inc({ type: "Created" });
        return id;
      }),
    createOnce: (input, trace, key) =>
      span("createOnce", async () => {
        const result = await repo.createOnce(input, trace, key);
        if (!result.replayed) cudEvents.inc({ type: "Created" });
        return result;
      }),
    describe: (id) => span("describe", () => repo.describe(id)),
    list: (offset, limit) => span("list", () => repo.list(offset, limit)),
    update: (id, changes, trace) =>
      span("update", async () => {
        await repo.update(id, changes, trace);
        cudEvents.inc({ type: "Updated" });
      }),
    remove: (id, trace) =>
      span("remove", async () => {
        await repo.remove(id, trace);
        cudEvents.inc({ type: "Removed" });
      }),
    deleteExpiredKeys: (retentionSeconds, batchSize) =>
      span("deleteExpiredKeys", () => repo.deleteExpiredKeys(retentionSeconds, batchSize)),
  };
}
