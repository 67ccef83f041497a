import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { collectDefaultMetrics, Registry } from "prom-client";
import type { Config } from "../config/config.js";
import { metricsHost } from "../config/listen-hosts.js";
import { createDatabase, ping } from "../database/database.js";
import { migrateApiDatabase } from "../database/migrate.js";
import { describeKafkaSecurity, kafkaClientSecurity, kafkaSecurityWarning } from "../kafka/security.js";
import type { Logger } from "../logger/logger.js";
import { createMetricsServer } from "../metrics/metrics-server.js";
import { RetranslatorMetrics } from "../retranslator/metrics.js";
import { startRetranslator } from "../retranslator/retranslator.js";
import { KafkaSender } from "../retranslator/sender/kafka-sender.js";
import { sendBudgetMs } from "../retranslator/sender/send-budget.js";
import { traceSender } from "../retranslator/sender/traced-sender.js";
import { closeServer, listen } from "../server/listen.js";
import { SharedProbe } from "../server/shared-probe.js";
import { createStatusServer } from "../server/status-server.js";
import { versionInfo } from "./version.js";

export interface RetranslatorApp {
  owner: string;
  ports: { metrics: number };
  stop(): Promise<void>;
}

/** Wires the retranslator binary. */
export async function startRetranslatorApp(config: Readonly<Config>, logger: Logger): Promise<RetranslatorApp> {
  const owner = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  // First: an unreadable CA file stops start-up before anything is opened.
  const kafkaSecurity = kafkaClientSecurity(config.kafka);
  logger.info({ kafka: describeKafkaSecurity(config.kafka) }, "kafka connection");
  const kafkaWarning = kafkaSecurityWarning(config.kafka);
  if (kafkaWarning !== undefined) logger.warn(kafkaWarning);
  const db = createDatabase({
    url: config.database.url,
    // Claim, cleaner, maintenance, and a spare; LISTEN has its own connection.
    maxConnections: Math.min(config.database.maxConnections, 4),
    statementTimeoutMs: config.database.statementTimeoutMs,
    acquireTimeoutMs: config.database.acquireTimeoutMs,
    applicationName: "logistic-package-api/retranslator",
  });
  try {
    if (config.database.migrateOnStart) {
      // Under database.migrationUrl when set: the relay's role need not own the schema.
      const applied = await migrateApiDatabase(config, "logistic-package-api/retranslator migrate");
      if (applied.length > 0) logger.info({ applied }, "migrations applied");
    }
  } catch (err) {
    await db.destroy();
    throw err;
  }

  const kafkaSender = new KafkaSender(
    {
      brokers: config.kafka.brokers,
      clientId: config.kafka.clientId,
      topic: config.kafka.topic,
      partitions: config.kafka.partitions,
      replicationFactor: config.kafka.replicationFactor,
      requestTimeoutMs: config.kafka.requestTimeoutMs,
      sendRetries: config.kafka.sendRetries,
      maxRequestBytes: config.kafka.maxRequestBytes,
      idempotent: config.kafka.idempotent,
      security: kafkaSecurity,
    },
    logger,
  );
  await kafkaSender.ensureTopic();
  const sender = traceSender(kafkaSender, config.kafka.topic);

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const metrics = new RetranslatorMetrics(registry);
  metrics.setSlo(config.retranslator.sloSeconds);
  const r = config.retranslator;
  const running = startRetranslator(
    db,
    sender,
    {
      owner,
      databaseUrl: config.database.url,
      batchSize: r.batchSize,
      maxInFlightBatches: r.maxInFlightBatches,
      leaseSeconds: r.leaseSeconds,
      sendBudgetMs: sendBudgetMs(config.kafka),
      pollIntervalMs: r.pollIntervalMs,
      claimLingerMs: r.claimLingerMs,
      listenNotify: r.listenNotify,
      maxAttempts: r.maxAttempts,
      retryBackoffMinMs: r.retryBackoffMinMs,
      retryBackoffMaxMs: r.retryBackoffMaxMs,
      cleanerBatchSize: r.cleanerBatchSize,
      cleanerFlushIntervalMs: r.cleanerFlushIntervalMs,
      shutdownTimeoutMs: r.shutdownTimeoutMs,
      maintenanceIntervalMs: r.maintenanceIntervalMs,
    },
    metrics,
    logger,
  );

  let stopping = false;
  // /ready pings on a connection of its own, shared and cached: a probe flood
  // can neither take the claim and cleaner connections nor queue behind them.
  const probeDb = createDatabase({
    url: config.database.url,
    maxConnections: 1,
    statementTimeoutMs: config.status.readinessTimeoutMs,
    acquireTimeoutMs: config.status.readinessTimeoutMs,
    applicationName: "logistic-package-api/retranslator readiness",
  });
  const probe = new SharedProbe(
    () => ping(probeDb, config.status.readinessTimeoutMs),
    config.status.readinessCacheMs,
    () => metrics.readinessProbes.inc(),
  );
  const status = createStatusServer({
    ready: async () => {
      if (stopping) throw new Error("shutting down");
      await probe.check();
      // Still ready (more relays would not help a stuck partition), but say so:
      // the oldest unpublished event is older than the objective.
      const age = metrics.oldestAgeSeconds;
      if (age > r.sloSeconds) {
        return {
          status: "degraded",
          reason: `the oldest unpublished event is ${age.toFixed(1)} s old, above retranslator.sloSeconds (${r.sloSeconds} s)`,
          oldestEventAgeSeconds: Math.round(age * 10) / 10,
          sloSeconds: r.sloSeconds,
        } as const;
      }
      return undefined;
    },
    version: versionInfo(),
  });
  // /metrics, /live, /ready and /version on one port (docs/design.md §5: 9101).
  const server = createMetricsServer(registry, (req, res) => status.emit("request", req, res));
  let metricsPort: number;
  try {
    metricsPort = await listen(server, r.metricsPort, metricsHost(config));
  } catch (err) {
    // The relay is already claiming: a start-up failure must not leave it
    // running behind a "failed to start" (without signal handlers, so that a
    // SIGTERM would kill it holding leases). Stop it, releasing its leases.
    await running.stop();
    await probeDb.destroy();
    await db.destroy();
    throw err;
  }

  return {
    owner,
    ports: { metrics: metricsPort },
    async stop() {
      stopping = true;
      await running.stop();
      server.closeIdleConnections();
      await closeServer(server);
      await probeDb.destroy();
      await db.destroy();
    },
  };
}
