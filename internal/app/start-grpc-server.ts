import { type ConnectRouter, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Health } from "../../pkg/grpc/health/v1/health_pb.js";
import { ServerReflection } from "../../pkg/grpc/reflection/v1/reflection_pb.js";
import { ServerReflection as ServerReflectionV1Alpha } from "../../pkg/grpc/reflection/v1alpha/reflection_pb.js";
import { LogisticPackageApiService } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { loadApiDocs } from "../api/api-docs.js";
import { createGatewayHandler } from "../api/gateway.js";
import { packageApiHandlers } from "../api/handlers.js";
import { healthHandlers } from "../api/health.js";
import { requestInterceptor } from "../api/interceptors.js";
import { serviceWithStrictJson } from "../api/json-body.js";
import { ApiMetrics } from "../api/metrics.js";
import { reflectionHandlers, reflectionV1AlphaHandlers } from "../api/reflection.js";
import type { Config } from "../config/config.js";
import { metricsHost, statusHost } from "../config/listen-hosts.js";
import { apiMigrations } from "../database/migrate.js";
import type { Logger } from "../logger/logger.js";
import { runKeySweeper } from "../packages/key-sweeper.js";
import { packageRepository } from "../packages/observed-repository.js";
import { ApiListener, type StreamRoute } from "../server/api-listener.js";
import { listen } from "../server/listen.js";
import { NativeGrpcServer, serviceBinding } from "../server/native-grpc.js";
import { watchTlsFiles } from "../server/tls-files.js";
import { ApiSecurity } from "./api-security.js";
import { startWithScaffold } from "./scaffold.js";

export interface GrpcServerApp {
  ports: { grpc: number; gateway: number; status: number; metrics: number };
  /** Graceful stop: drain requests within grpc.shutdownTimeoutMs, then release everything. */
  stop(): Promise<void>;
  /** Re-reads TLS certificates and API tokens (SIGHUP). */
  reload(): void;
}

/** Wires the grpc-server binary's own parts on the process scaffold (scaffold.ts). */
export function startGrpcServer(config: Readonly<Config>, logger: Logger): Promise<GrpcServerApp> {
  const options = { binary: "grpc-server", config, logger, drainMs: config.grpc.shutdownTimeoutMs } as const;
  return startWithScaffold(options, async (scaffold) => {
    const db = scaffold.database({ maxConnections: config.database.maxConnections });
    await scaffold.migrate(apiMigrations(config));

    const security = new ApiSecurity(config, logger);
    const metrics = new ApiMetrics(scaffold.registry);
    const repo = packageRepository(
      db,
      {
        maxBatch: config.database.createBatchSize,
        maxInFlight: config.database.createConcurrency,
        maxWaiting: config.database.createMaxWaiting,
        lingerMs: config.database.createLingerMs,
      },
      metrics.cudEvents,
    );
    // /ready, gRPC health Check and every Watch share one probe.
    const ready = scaffold.readiness(scaffold.databaseProbe(config.database.url, () => metrics.readinessProbes.inc()));
    // The first interceptor is the outermost: the request interceptor maps
    // errors to codes, then logs, traces and counts them; auth runs inside it.
    const auth = security.interceptor((caller, decision) => metrics.authDecisions.inc({ caller, decision }));
    const interceptors = [
      requestInterceptor({ logger, metrics, allowRiseToDebug: config.project.allowRiseToDebug }),
      ...(auth === undefined ? [] : [auth]),
    ];
    // One implementation of each service, served by connect-node (Connect,
    // gRPC-Web, REST through the gateway) and by grpc-js (native gRPC).
    const packageApi = packageApiHandlers(repo, {
      limits: {
        defaultLimit: config.api.defaultListLimit,
        maxLimit: config.api.maxListLimit,
        maxOffset: config.api.maxListOffset,
      },
      idempotencyRetentionSeconds: config.idempotency.retentionSeconds,
    });
    const served = [LogisticPackageApiService, Health, ServerReflection, ServerReflectionV1Alpha];
    const health = healthHandlers({
      services: served.map((s) => s.typeName),
      probe: async () => void (await ready()),
      watchIntervalMs: config.status.readinessCacheMs,
      maxWatchers: config.health.maxWatchers,
    });
    const reflection = reflectionHandlers(served);
    const reflectionV1Alpha = reflectionV1AlphaHandlers(served);
    const routes = (router: ConnectRouter) => {
      // Strict JSON: exact 64-bit numbers, valid UTF-8, no duplicate keys, bounded depth.
      serviceWithStrictJson(router, LogisticPackageApiService, packageApi);
      router.service(Health, health);
      router.service(ServerReflection, reflection);
      router.service(ServerReflectionV1Alpha, reflectionV1Alpha);
    };
    const nativeGrpc = config.grpc.nativeGrpcJs
      ? new NativeGrpcServer(
          [
            serviceBinding(LogisticPackageApiService, packageApi),
            serviceBinding(Health, health),
            serviceBinding(ServerReflection, reflection),
            serviceBinding(ServerReflectionV1Alpha, reflectionV1Alpha),
          ],
          { interceptors, maxRequestBytes: config.grpc.maxRequestBytes, shutdownSignal: scaffold.stopping },
        )
      : undefined;

    const listeners: ApiListener[] = [];
    // Started below; its last pass is awaited with the listeners' drain, not before it (parts stop
    // in reverse order, and a sweep waiting for a busy pool must not keep the API accepting).
    let sweeper: Promise<void> = Promise.resolve();
    // On stop the API port and the gateway drain together, within grpc.shutdownTimeoutMs.
    scaffold.defer("api listeners", async () => {
      await Promise.all([...listeners.map((listener) => listener.close(config.grpc.shutdownTimeoutMs)), sweeper]);
    });
    const serveApi = async (
      name: string,
      port: number,
      handler: ConstructorParameters<typeof ApiListener>[0],
      streamRoute?: StreamRoute,
    ) => {
      const listener = new ApiListener(handler, {
        limits: config.grpc,
        ...(streamRoute === undefined ? {} : { streamRoute }),
        ...(security.tls === undefined ? {} : { tls: security.tls }),
        onClose: (reason) => metrics.connectionsClosed.inc({ listener: name, reason }),
      });
      metrics.watchOpenConnections(name, () => listener.openConnections);
      listeners.push(listener);
      return listen(listener.server, port, config.grpc.host);
    };
    const grpcPort = await serveApi(
      "grpc",
      config.grpc.port,
      connectNodeAdapter({
        routes,
        interceptors,
        readMaxBytes: config.grpc.maxRequestBytes,
        shutdownSignal: scaffold.stopping,
      }),
      nativeGrpc === undefined
        ? undefined
        : {
            accepts: NativeGrpcServer.accepts,
            handleStream: (stream, headers) => nativeGrpc.handleStream(stream, headers),
          },
    );
    const gatewayPort = !config.gateway.enabled
      ? 0
      : await serveApi(
          "gateway",
          config.gateway.port,
          createGatewayHandler({
            services: [LogisticPackageApiService],
            transport: createRouterTransport(routes, {
              router: { interceptors, readMaxBytes: config.grpc.maxRequestBytes },
            }),
            maxRequestBytes: config.grpc.maxRequestBytes,
            onInternalError: (err) => logger.error({ err }, "REST gateway failed a request"),
            // The API's own description: GET /openapi.json and a Swagger UI page at /docs.
            docs: loadApiDocs(),
          }) as ConstructorParameters<typeof ApiListener>[0],
        );

    const statusPort = await scaffold.serveStatus(
      { port: config.status.port, host: statusHost(config) },
      { probes: { ready } },
    );
    const metricsPort = await scaffold.serveStatus(
      { port: config.metrics.port, host: metricsHost(config) },
      { metrics: true },
    );

    sweeper = runKeySweeper(
      repo,
      {
        retentionSeconds: config.idempotency.retentionSeconds,
        intervalMs: config.idempotency.cleanupIntervalSeconds * 1000,
        batchSize: config.idempotency.cleanupBatchSize,
      },
      logger,
      scaffold.stopping,
    );

    const reload = () => security.reload(listeners);
    if (security.tls !== undefined) watchTlsFiles(config.tls, reload, scaffold.stopping);

    const ports = { grpc: grpcPort, gateway: gatewayPort, status: statusPort, metrics: metricsPort };
    logger.info({ ports, tls: security.tls !== undefined }, "grpc-server started");
    return { ports, reload };
  });
}
