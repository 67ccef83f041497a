import { collectDefaultMetrics, Registry } from "prom-client";
import { versionInfo } from "../app/version.js";
import type { Config } from "../config/config.js";
import { metricsHost } from "../config/listen-hosts.js";
import { createDatabase, ping } from "../database/database.js";
import { runMigrations } from "../database/migrate.js";
import { describeKafkaSecurity, kafkaClientSecurity, kafkaSecurityWarning } from "../kafka/security.js";
import type { Logger } from "../logger/logger.js";
import { createMetricsServer } from "../metrics/metrics-server.js";
import { closeServer, listen } from "../server/listen.js";
import { createStatusServer } from "../server/status-server.js";
import { PgBatchApplier } from "./applier.js";
import { TopicsLogger } from "./bot-topics-logger.js";
import { FacadeConsumer } from "./consumer.js";
import { ensureDatabase, migrateFacade } from "./database.js";
import { runInboxRetention } from "./inbox-retention.js";
import { GroupMembership } from "./membership.js";
import { FacadeMetrics } from "./metrics.js";

export interface FacadeApp {
  ports: { metrics: number };
  stop(): Promise<void>;
}

/**
 * Wires the facade binary: its own database (created and migrated at start),
 * the consumer group member that applies batches to it, and /metrics, /live,
 * /ready on one port.
 */
export async function startFacadeApp(config: Readonly<Config>, logger: Logger): Promise<FacadeApp> {
  const f = config.facade;
  // First: an unreadable CA file stops start-up before anything is opened.
  const kafkaSecurity = kafkaClientSecurity(config.kafka);
  logger.info({ kafka: describeKafkaSecurity(config.kafka) }, "kafka connection");
  const kafkaWarning = kafkaSecurityWarning(config.kafka);
  if (kafkaWarning !== undefined) logger.warn(kafkaWarning);
  // The owner's URL creates and migrates; the serving pool below uses databaseUrl.
  const migrationUrl = f.migrationUrl === "" ? f.databaseUrl : f.migrationUrl;
  if (config.database.migrateOnStart) {
    if (await ensureDatabase(migrationUrl, config.database.acquireTimeoutMs)) {
      logger.info({ database: new URL(f.databaseUrl).pathname.slice(1) }, "facade database created");
    }
  }
  const db = createDatabase({
    url: f.databaseUrl,
    // One transaction per partition being applied, and one for /ready.
    maxConnections: Math.min(config.database.maxConnections, f.partitionsConsumedConcurrently + 1),
    statementTimeoutMs: config.database.statementTimeoutMs,
    acquireTimeoutMs: config.database.acquireTimeoutMs,
    applicationName: "logistic-package-api/facade",
  });
  try {
    if (config.database.migrateOnStart) {
      const applied = await runMigrations(
        {
          url: f.databaseUrl,
          migrationUrl: f.migrationUrl,
          keys: {
            url: "facade.databaseUrl",
            migrationUrl: "facade.migrationUrl",
            migrationEnv: "FACADE_DATABASE_MIGRATION_URL",
          },
          acquireTimeoutMs: config.database.acquireTimeoutMs,
          applicationName: "logistic-package-api/facade migrate",
        },
        migrateFacade,
      );
      if (applied.length > 0) logger.info({ applied }, "facade migrations applied");
    }
  } catch (err) {
    await db.destroy();
    throw err;
  }

  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const membership = new GroupMembership();
  const metrics = new FacadeMetrics(registry, membership);
  const consumer = new FacadeConsumer(
    {
      brokers: config.kafka.brokers,
      clientId: config.kafka.clientId,
      topic: config.kafka.topic,
      groupId: f.groupId,
      // The facade's own: kafka.requestTimeoutMs is sized for the retranslator's sends.
      requestTimeoutMs: f.requestTimeoutMs,
      maxBytesPerPartition: f.maxBytesPerPartition,
      partitionsConsumedConcurrently: f.partitionsConsumedConcurrently,
      sessionTimeoutMs: f.sessionTimeoutMs,
      heartbeatIntervalMs: f.heartbeatIntervalMs,
      rebalanceTimeoutMs: f.rebalanceTimeoutMs,
      restartBackoffMinMs: f.restartBackoffMinMs,
      restartBackoffMaxMs: f.restartBackoffMaxMs,
      shutdownTimeoutMs: f.shutdownTimeoutMs,
      security: kafkaSecurity,
    },
    metrics.instrument(new PgBatchApplier(db, logger)),
    {
      onAssignment: (assigned) => {
        metrics.rebalances.inc();
        metrics.retainPartitions(assigned);
        membership.assigned(assigned);
      },
      onUnassigned: (reason) => membership.lost(reason),
      onRestart: (error, delayMs) => {
        metrics.restarts.inc();
        membership.lost(`consumer failed (${error.message}); restarting in ${delayMs} ms`);
      },
    },
    logger,
  );

  let stopping = false;
  const status = createStatusServer({
    ready: async () => {
      if (stopping) throw new Error("shutting down");
      if (consumer.failure) throw new Error(`consumer stopped: ${consumer.failure.message}`);
      // Without partitions the read model falls behind; a rebalance legitimately
      // takes a while, so only a gap longer than maxUnassignedMs counts.
      const unassigned = membership.notReadyReason(f.maxUnassignedMs);
      if (unassigned !== undefined) throw new Error(unassigned);
      await ping(db, config.status.readinessTimeoutMs);
    },
    version: versionInfo(),
  });
  // /metrics, /live, /ready (and /version) on one port.
  // A consumer kafkajs gave up on fails /live too: only a restart brings it back.
  const server = createMetricsServer(registry, (req, res) => {
    const path = new URL(req.url ?? "/", "http://facade").pathname;
    if (path === "/live" && consumer.failure) {
      const body = JSON.stringify({ status: "consumer stopped", reason: consumer.failure.message });
      res.writeHead(503, { "content-type": "application/json" }).end(body);
      return;
    }
    status.emit("request", req, res);
  });
  let metricsPort: number;
  try {
    metricsPort = await listen(server, f.metricsPort, metricsHost(config));
  } catch (err) {
    await db.destroy();
    throw err;
  }
  // Joining the group can take a session timeout or more; /ready tells when it did.
  consumer.start();
  const retention = new AbortController();
  const retentionLoop = runInboxRetention(
    db,
    { retentionHours: f.inboxRetentionHours, intervalMs: f.inboxCleanupIntervalMs, batchSize: f.inboxCleanupBatchSize },
    (rows) => metrics.inboxDeleted.inc(rows),
    logger,
    retention.signal,
  );
  // One readable line per message of the package events and the bot's two topics,
  // in a consumer group of its own beside the read model's.
  const topicsLog = new AbortController();
  const topicsLogLoop = new TopicsLogger(
    {
      brokers: config.kafka.brokers,
      clientId: config.kafka.clientId,
      groupId: `${f.groupId}-message-log`,
      packageTopic: config.kafka.topic,
      commandsTopic: config.bot.kafka.commandsTopic,
      cacheEventsTopic: config.bot.kafka.cacheEventsTopic,
      security: kafkaSecurity,
      shutdownTimeoutMs: f.shutdownTimeoutMs,
    },
    logger,
  ).run(topicsLog.signal);
  logger.info({ topic: config.kafka.topic, groupId: f.groupId }, "facade started");

  return {
    ports: { metrics: metricsPort },
    async stop() {
      stopping = true;
      // Leaves its group while the read model's consumer leaves its own.
      topicsLog.abort();
      // kafkajs lets the batch in hand finish (its transaction and offset commit), then leaves the group.
      await consumer.stop();
      retention.abort();
      await retentionLoop;
      await topicsLogLoop;
      server.closeIdleConnections();
      await closeServer(server);
      await db.destroy();
      logger.info("facade stopped");
    },
  };
}
