import type { Config } from "../config/config.js";
import { metricsHost } from "../config/listen-hosts.js";
import { facadeMigrations } from "../database/migrate.js";
import { PgBatchApplier } from "../facade/applier.js";
import { TopicsLogger } from "../facade/bot-topics-logger.js";
import { FacadeConsumer } from "../facade/consumer.js";
import { ensureDatabase } from "../facade/database.js";
import { runInboxRetention } from "../facade/inbox-retention.js";
import { GroupMembership } from "../facade/membership.js";
import { FacadeMetrics } from "../facade/metrics.js";
import type { Logger } from "../logger/logger.js";
import { kafkaConnection } from "./kafka-connection.js";
import { applicationName, startWithScaffold } from "./scaffold.js";

export interface FacadeApp {
  ports: { metrics: number };
  stop(): Promise<void>;
}

/**
 * Wires the facade binary's own parts on the process scaffold (scaffold.ts):
 * its database (created and migrated at start), the consumer group member that
 * applies batches to it, the inbox retention and the topics' message log.
 */
export function startFacadeApp(config: Readonly<Config>, logger: Logger): Promise<FacadeApp> {
  const f = config.facade;
  const options = { binary: "facade", config, logger, drainMs: f.shutdownTimeoutMs } as const;
  return startWithScaffold(options, async (scaffold) => {
    // First: an unreadable CA file stops start-up before anything is opened.
    const kafkaSecurity = kafkaConnection(config, logger);
    if (config.database.migrateOnStart) {
      // The owner's URL creates the database; the serving pool below uses databaseUrl.
      const ownerUrl = f.migrationUrl === "" ? f.databaseUrl : f.migrationUrl;
      if (
        await ensureDatabase(
          ownerUrl,
          config.database.acquireTimeoutMs,
          applicationName(config, "facade", "create database"),
        )
      ) {
        logger.info({ database: new URL(f.databaseUrl).pathname.slice(1) }, "facade database created");
      }
    }
    // One transaction per partition being applied, and one for the inbox retention.
    const db = scaffold.database({
      url: f.databaseUrl,
      maxConnections: Math.min(config.database.maxConnections, f.partitionsConsumedConcurrently + 1),
    });
    await scaffold.migrate(facadeMigrations(config));
    // Registered first among the parts, so logged once the consumers have stopped (the
    // status port and the pools close after the parts).
    scaffold.defer("stopped line", () => logger.info("facade stopped"));

    const membership = new GroupMembership();
    const metrics = new FacadeMetrics(scaffold.registry, membership);
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

    const databaseReady = scaffold.databaseProbe(f.databaseUrl);
    const ready = scaffold.readiness(async () => {
      if (consumer.failure) throw new Error(`consumer stopped: ${consumer.failure.message}`);
      // Without partitions the read model falls behind; a rebalance legitimately
      // takes a while, so only a gap longer than maxUnassignedMs counts.
      const unassigned = membership.notReadyReason(f.maxUnassignedMs);
      if (unassigned !== undefined) throw new Error(unassigned);
      await databaseReady();
    });
    // A consumer kafkajs gave up on fails /live too: only a restart brings it back.
    const live = () =>
      consumer.failure === undefined ? undefined : { status: "consumer stopped", reason: consumer.failure.message };
    // /metrics, /live, /ready and /version on one port.
    const metricsPort = await scaffold.serveStatus(
      { port: f.metricsPort, host: metricsHost(config) },
      { probes: { ready, live }, metrics: true },
    );

    // Joining the group can take a session timeout or more; /ready tells when it did.
    consumer.start();
    // Owned from here on, so a failure further down the start still stops it. The message log
    // leaves its group while the read model's consumer leaves its own; kafkajs lets the batch in
    // hand finish (its transaction and offset commit) first.
    let retention: Promise<void> = Promise.resolve();
    let topicsLog: Promise<void> = Promise.resolve();
    scaffold.defer("consumers", async () => {
      await Promise.all([consumer.stop(), retention, topicsLog]);
    });
    retention = runInboxRetention(
      db,
      {
        retentionHours: f.inboxRetentionHours,
        intervalMs: f.inboxCleanupIntervalMs,
        batchSize: f.inboxCleanupBatchSize,
      },
      (rows) => metrics.inboxDeleted.inc(rows),
      logger,
      scaffold.stopping,
    );
    // One readable line per message of the package events and the bot's two topics,
    // in a consumer group of its own beside the read model's.
    topicsLog = new TopicsLogger(
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
    ).run(scaffold.stopping);
    logger.info({ topic: config.kafka.topic, groupId: f.groupId }, "facade started");
    return { ports: { metrics: metricsPort } };
  });
}
