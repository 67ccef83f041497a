import type http from "node:http";
import { type ConnectRouter, createRouterTransport } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { collectDefaultMetrics, Registry } from "prom-client";
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
import { reflectionHandlers, reflectionV1AlphaHandlers } from "../api/reflection.js";
import type { Config } from "../config/config.js";
import { metricsHost, statusHost } from "../config/listen-hosts.js";
import { createDatabase, ping } from "../database/database.js";
import { migrateApiDatabase } from "../database/migrate.js";
import type { Logger } from "../logger/logger.js";
import { ApiMetrics } from "../metrics/api-metrics.js";
import { createMetricsServer } from "../metrics/metrics-server.js";
import { CreateBatchingRepository } from "../repo/create-batcher.js";
import { PgPackageRepository } from "../repo/package-repo.js";
import { ApiListener, type StreamRoute } from "../server/api-listener.js";
import { closeServer, listen } from "../server/listen.js";
import { NativeGrpcServer, serviceBinding } from "../server/native-grpc.js";
import { SharedProbe } from "../server/shared-probe.js";
import { createStatusServer } from "../server/status-server.js";
import { watchTlsFiles } from "../server/tls-files.js";
import { runKeySweeper } from "../service/key-sweeper.js";
import { PackageService } from "../service/package-service.js";
import { traceMethods } from "../tracer/trace-repository.js";
import { ApiSecurity } from "./api-security.js";
import { versionInfo } from "./version.js";

export interface GrpcServerApp {
  ports: { grpc: number; gateway: number; status: number; metrics: number };
  /** Graceful stop: drain requests within grpc.shutdownTimeoutMs, then release everything. */
  stop(): Promise<void>;
  /** Re-reads TLS certificates and API tokens (SIGHUP). */
  reload(): void;
}

/** Wires the grpc-server binary: the one place that builds and owns every part. */
export async function startGrpcServer(config: Readonly<Config>, logger: Logger): Promise<GrpcServerApp> {
  const db = createDatabase({
    url: config.database.url,
    maxConnections: config.database.maxConnections,
    statementTimeoutMs: config.database.statementTimeoutMs,
    acquireTimeoutMs: config.database.acquireTimeoutMs,
    applicationName: "logistic-package-api/grpc-server",
  });
  // Readiness has its own connection: a flood of probes (or a probe during a
  // request storm) can neither take request connections nor wait behind them.
  const probeDb = createDatabase({
    url: config.database.url,
    maxConnections: 1,
    statementTimeoutMs: config.status.readinessTimeoutMs,
    acquireTimeoutMs: config.status.readinessTimeoutMs,
    applicationName: "logistic-package-api/grpc-server readiness",
  });
  const owned = new AbortController();
  const servers: { name: string; close: () => Promise<void> }[] = [];
  let sweeper: Promise<void> = Promise.resolve();
  let stopping = false;

  const stop = async () => {
    stopping = true;
    owned.abort();
    // Reverse order: stop taking requests first, the database last.
    for (const server of servers.reverse()) {
      await server.close().catch((err: unknown) => logger.warn({ err, server: server.name }, "close failed"));
    }
    await sweeper;
    await probeDb.destroy();
    await db.destroy();
  };

  try {
    if (config.database.migrateOnStart) {
      // Under database.migrationUrl when set: the serving pool's role need not own the schema.
      const applied = await migrateApiDatabase(config, "logistic-package-api/grpc-server migrate");
      if (applied.length > 0) logger.info({ applied }, "migrations applied");
    }

    const security = new ApiSecurity(config, logger);
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    const metrics = new ApiMetrics(registry);
    const pgRepo = new PgPackageRepository(db);
    const batching = new CreateBatchingRepository(pgRepo, {
      maxBatch: config.database.createBatchSize,
      maxInFlight: config.database.createConcurrency,
      maxWaiting: config.database.createMaxWaiting,
    });
    const repo = metrics.instrument(traceMethods("PackageRepository", batching));
    const service = new PackageService(repo, { idempotencyRetentionSeconds: config.idempotency.retentionSeconds });
    const probe = new SharedProbe(
      () => ping(probeDb, config.status.readinessTimeoutMs),
      config.status.readinessCacheMs,
      () => metrics.readinessProbes.inc(),
    );
    const ready = async () => {
      if (stopping) throw new Error("shutting down");
      await probe.check();
    };
    // The first interceptor is the outermost: metrics wrap the request
    // interceptor, which maps errors to codes, so they count exactly the code
    // that the client sees.
    // Auth is innermost: its Unauthenticated and PermissionDenied are logged
    // and counted like any other code.
    const auth = security.interceptor((caller, decision) => metrics.authDecisions.inc({ caller, decision }));
    const interceptors = [
      metrics.interceptor(),
      requestInterceptor({ logger, allowRiseToDebug: config.project.allowRiseToDebug }),
      ...(auth === undefined ? [] : [auth]),
    ];
    // One implementation of each service, served by connect-node (Connect,
    // gRPC-Web, REST through the gateway) and by grpc-js (native gRPC).
    const packageApi = packageApiHandlers(service, {
      defaultLimit: config.api.defaultListLimit,
      maxLimit: config.api.maxListLimit,
      maxOffset: config.api.maxListOffset,
    });
    const served = [LogisticPackageApiService, Health, ServerReflection, ServerReflectionV1Alpha];
    const health = healthHandlers({
      services: served.map((s) => s.typeName),
      probe: ready,
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
          { interceptors, maxRequestBytes: config.grpc.maxRequestBytes, shutdownSignal: owned.signal },
        )
      : undefined;

    const listeners: ApiListener[] = [];
    const apiListener = (
      name: string,
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
      return listener;
    };
    const grpc = apiListener(
      "grpc",
      connectNodeAdapter({
        routes,
        interceptors,
        readMaxBytes: config.grpc.maxRequestBytes,
        shutdownSignal: owned.signal,
      }),
      nativeGrpc === undefined
        ? undefined
        : {
            accepts: NativeGrpcServer.accepts,
            handleStream: (stream, headers) => nativeGrpc.handleStream(stream, headers),
          },
    );
    const grpcPort = await listen(grpc.server, config.grpc.port, config.grpc.host);
    servers.push({ name: "grpc", close: () => grpc.close(config.grpc.shutdownTimeoutMs) });

    let gatewayPort = 0;
    if (config.gateway.enabled) {
      const gateway = apiListener(
        "gateway",
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
      gatewayPort = await listen(gateway.server, config.gateway.port, config.grpc.host);
      servers.push({ name: "gateway", close: () => gateway.close(config.grpc.shutdownTimeoutMs) });
    }

    const status = createStatusServer({ ready, version: versionInfo() });
    const statusPort = await listen(status, config.status.port, statusHost(config));
    servers.push({ name: "status", close: () => closeHttp(status, 1000) });

    const metricsServer = createMetricsServer(registry);
    const metricsPort = await listen(metricsServer, config.metrics.port, metricsHost(config));
    servers.push({ name: "metrics", close: () => closeHttp(metricsServer, 1000) });

    sweeper = runKeySweeper(
      repo,
      {
        retentionSeconds: config.idempotency.retentionSeconds,
        intervalMs: config.idempotency.cleanupIntervalSeconds * 1000,
        batchSize: config.idempotency.cleanupBatchSize,
      },
      logger,
      owned.signal,
    );

    const reload = () => security.reload(listeners);
    if (security.tls !== undefined) watchTlsFiles(config.tls, reload, owned.signal);

    const ports = { grpc: grpcPort, gateway: gatewayPort, status: statusPort, metrics: metricsPort };
    logger.info({ ports, tls: security.tls !== undefined }, "grpc-server started");
    return { ports, stop, reload };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function closeHttp(server: http.Server, deadlineMs: number): Promise<void> {
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), deadlineMs);
  await closeServer(server);
  clearTimeout(timer);
}
