import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import type { Config } from "../config/config.js";
import { metricsHost } from "../config/listen-hosts.js";
import { apiMigrations } from "../database/migrate.js";
import type { Logger } from "../logger/logger.js";
import { RetranslatorMetrics } from "../retranslator/metrics.js";
import { postgresOutbox } from "../retranslator/outbox.js";
import { startRetranslator } from "../retranslator/retranslator.js";
import { KafkaSender } from "../retranslator/sender/kafka-sender.js";
import { produceClientFactory } from "../retranslator/sender/produce-client.js";
import { sendBudgetMs } from "../retranslator/sender/send-budget.js";
import { traceSender } from "../retranslator/sender/traced-sender.js";
import { tracerRegistered } from "../tracer/telemetry.js";
import { kafkaConnection } from "./kafka-connection.js";
import { applicationName, startWithScaffold } from "./scaffold.js";

export interface RetranslatorApp {
  owner: string;
  ports: { metrics: number };
  stop(): Promise<void>;
}

/** Wires the retranslator binary's own parts on the process scaffold (scaffold.ts). */
export function startRetranslatorApp(config: Readonly<Config>, logger: Logger): Promise<RetranslatorApp> {
  const r = config.retranslator;
  // The relay's stop after its drain: a moment for the last outcomes (2 s), releasing its leases
  // (a pooled connection and one statement), then the producer's close (1 s at least). All of
  // it inside the scaffold's bound, so that a slow database does not cut the release short and
  // leave rows leased until leaseSeconds.
  const { acquireTimeoutMs, statementTimeoutMs } = config.database;
  const drainMs = r.shutdownTimeoutMs + 2000 + acquireTimeoutMs + statementTimeoutMs + 1000;
  const options = { binary: "retranslator", config, logger, drainMs } as const;
  return startWithScaffold(options, async (scaffold) => {
    const owner = `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
    // First: an unreadable CA file, or a producer client this installation lacks, stops
    // start-up before anything is opened.
    const kafkaSecurity = kafkaConnection(config, logger);
    const produceClients = await produceClientFactory(config.kafka.producerClient);
    // Claim, acknowledger, maintenance, and a spare; LISTEN has its own connection.
    const db = scaffold.database({ maxConnections: Math.min(config.database.maxConnections, 4) });
    await scaffold.migrate(apiMigrations(config));

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
        // The idempotent producer's deduplication covers one producer's own
        // retries; a shared request's fallback sends again outside it.
        sharedRequests: r.sharedRequests && !config.kafka.idempotent,
        security: kafkaSecurity,
        produceClients,
      },
      logger,
    );
    await kafkaSender.ensureTopic();
    // With no tracer registered the wrapper's spans would be no-ops and the stored trace context
    // would go out as it is, which the bare sender does too: the wrapper is left out rather than
    // run for nothing (maps and a no-op span per event; no saving measurable in the bench).
    const sender = tracerRegistered() ? traceSender(kafkaSender, config.kafka.topic) : kafkaSender;

    const metrics = new RetranslatorMetrics(scaffold.registry);
    metrics.setSlo(r.sloSeconds);
    const databaseReady = scaffold.databaseProbe(config.database.url, () => metrics.readinessProbes.inc());
    const ready = scaffold.readiness(async () => {
      await databaseReady();
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
    });
    // /metrics, /live, /ready and /version on one port (docs/design.md §5: 9101). Before the
    // relay claims: a port in use fails the start while no lease is held yet.
    const metricsPort = await scaffold.serveStatus(
      { port: r.metricsPort, host: metricsHost(config) },
      { probes: { ready }, metrics: true },
    );

    const running = startRetranslator(
      postgresOutbox(db),
      sender,
      {
        owner,
        databaseUrl: config.database.url,
        listenApplicationName: applicationName(config, "retranslator", "listen"),
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
    // Finishes the sends in flight and releases every lease, while /ready says "shutting down".
    scaffold.defer("relay", () => running.stop());
    return { owner, ports: { metrics: metricsPort } };
  });
}
