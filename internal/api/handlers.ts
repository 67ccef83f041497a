import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { LogisticPackageApiService } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import type { ChangeContext, PackageService } from "../service/package-service.js";
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

/** The v1 handlers: validate, call the service, convert. Errors are mapped by the interceptor. */
export function packageApiHandlers(
  service: PackageService,
  limits: ListLimits,
): ServiceImpl<typeof LogisticPackageApiService> {
  return {
    async createPackageV1(req, ctx) {
      const input = validateCreate(req);
      const idempotencyKey = validateIdempotencyKey(ctx.requestHeader);
      const { id } = await service.create(input, { ...changeContext(ctx), idempotencyKey });
      return { ID: id };
    },
    async describePackageV1(req) {
      const record = await service.describe(validatePackageId(req.PackageID));
      return { Value: toPackageMessage(record) };
    },
    async listPackagesV1(req) {
      const { offset, limit } = validateList(req, limits);
      const records = await service.list(offset, limit);
      return { Packages: records.map(toPackageMessage) };
    },
    async removePackageV1(req, ctx) {
      await service.remove(validatePackageId(req.PackageID), changeContext(ctx));
      return { Suc: true };
    },
    async updatePackageV1(req, ctx) {
      const { id, changes } = validateUpdate(req);
      await service.update(id, changes, changeContext(ctx));
      return { Suc: true };
    },
  };
}

function changeContext(ctx: HandlerContext): ChangeContext {
  const trace = ctx.values.get(requestTraceKey);
  return trace === undefined ? {} : { trace: trace.context };
}
