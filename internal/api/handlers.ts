import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { LogisticPackageApiService } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import type { TraceContext } from "../domain/package.js";
import { createPackage } from "../packages/create-package.js";
import type { PackageRepository } from "../packages/package-repo.js";
import { toPackageMessage } from "./convert.js";
import { requestTraceKey } from "./request-context.js";
import {
  type ListLimits,
  validateCreate,
  validateIdempotencyKey,
  validateList,
  validatePackageId,
  validateUpdate,
} from "./validate.js";

export interface PackageApiOptions {
  limits: ListLimits;
  idempotencyRetentionSeconds: number;
}

/**
 * The v1 handlers: validate, call the use case (Create) or the repository (the
 * others, which have no logic of their own), convert. Errors are mapped by the
 * request interceptor.
 */
export function packageApiHandlers(
  repo: PackageRepository,
  options: PackageApiOptions,
): ServiceImpl<typeof LogisticPackageApiService> {
  return {
    async createPackageV1(req, ctx) {
      const input = validateCreate(req);
      const idempotencyKey = validateIdempotencyKey(ctx.requestHeader);
      const id = await createPackage(repo, input, {
        idempotencyKey,
        trace: traceOf(ctx),
        idempotencyRetentionSeconds: options.idempotencyRetentionSeconds,
      });
      return { ID: id };
    },
    async describePackageV1(req) {
      const record = await repo.describe(validatePackageId(req.PackageID));
      return { Value: toPackageMessage(record) };
    },
    async listPackagesV1(req) {
      const { offset, limit } = validateList(req, options.limits);
      const records = await repo.list(offset, limit);
      return { Packages: records.map(toPackageMessage) };
    },
    async removePackageV1(req, ctx) {
      await repo.remove(validatePackageId(req.PackageID), traceOf(ctx));
      return { Suc: true };
    },
    async updatePackageV1(req, ctx) {
      const { id, changes } = validateUpdate(req);
      await repo.update(id, changes, traceOf(ctx));
      return { Suc: true };
    },
  };
}

/** The request's trace context (set by the request interceptor), stored with the change's event. */
function traceOf(ctx: HandlerContext): TraceContext | undefined {
  return ctx.values.get(requestTraceKey)?.context;
}
