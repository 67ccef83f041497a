import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import {
  type Health,
  type HealthCheckResponse,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus as ServingStatus,
} from "../../pkg/grpc/health/v1/health_pb.js";
import { sleep, untilAborted } from "../lifecycle/abortable.js";

export interface HealthOptions {
  /** Fully qualified names of the services this server answers for. */
  services: readonly string[];
  /**
   * Resolves when the server can do its work (the database answers). Shared
   * and cached (SharedProbe): Check and every Watch ask it freely.
   */
  probe: () => Promise<void>;
  /** How often Watch re-probes; a change is sent at once. */
  watchIntervalMs: number;
  /** Watch streams open at once; more are refused with ResourceExhausted. */
  maxWatchers: number;
}

/**
 * grpc.health.v1 so that standard tools (grpc_health_probe, Kubernetes gRPC
 * probes, grpcurl) work. Every service shares one status: serving while the
 * database answers, because no RPC can succeed without it.
 */
export function healthHandlers(options: HealthOptions): ServiceImpl<typeof Health> {
  const known = new Set(["", ...options.services]);
  const status = async (): Promise<ServingStatus> => {
    try {
      await options.probe();
      return ServingStatus.SERVING;
    } catch {
      return ServingStatus.NOT_SERVING;
    }
  };
  const checkKnown = (service: string) => {
    if (!known.has(service)) throw new ConnectError(`unknown service ${service}`, Code.NotFound);
  };
  const response = (s: ServingStatus): HealthCheckResponse => create(HealthCheckResponseSchema, { status: s });
  // Each Watch holds a stream and a timer for as long as the client likes.
  let watchers = 0;

  return {
    async check(req) {
      checkKnown(req.service);
      return response(await status());
    },
    async *watch(req, ctx) {
      if (watchers >= options.maxWatchers) {
        throw new ConnectError(
          `too many health Watch streams open (limit ${options.maxWatchers}); use Check, or retry later`,
          Code.ResourceExhausted,
        );
      }
      watchers++;
      try {
        // The spec asks Watch to report an unknown service rather than fail.
        if (!known.has(req.service)) {
          yield response(ServingStatus.SERVICE_UNKNOWN);
          await untilAborted(ctx.signal);
          return;
        }
        let last: ServingStatus | undefined;
        while (!ctx.signal.aborted) {
          const current = await status();
          if (current !== last) {
            yield response(current);
            last = current;
          }
          await sleep(options.watchIntervalMs, ctx.signal);
        }
      } finally {
        watchers--;
      }
    },
    async list() {
      const current = await status();
      const statuses: Record<string, HealthCheckResponse> = {};
      for (const service of known) statuses[service] = response(current);
      return { statuses };
    },
  };
}
