import type http from "node:http";
import { collectDefaultMetrics, Gauge, Registry } from "prom-client";
import type { Config } from "../config/config.js";
import { createDatabase, type Database, ping } from "../database/database.js";
import { type MigrationTarget, runMigrations } from "../database/migrate.js";
import { settleWithin, withDeadline } from "../lifecycle/deadline.js";
import { droppedLogLines, type Logger } from "../logger/logger.js";
import { closeServer, listen } from "../server/listen.js";
import { SharedProbe } from "../server/shared-probe.js";
import { createStatusServer, type Probes, type ReadyCheck } from "../server/status-server.js";
import { versionInfo } from "./version.js";

/** The binaries, as they name themselves in logs and in pg_stat_activity. */
export type Binary = "grpc-server" | "retranslator" | "facade" | "bot" | "admin" | "migrate";

export interface PoolOptions {
  /** Default database.url. */
  url?: string;
  maxConnections: number;
  /** Default database.statementTimeoutMs. */
  statementTimeoutMs?: number;
  /** Default database.acquireTimeoutMs. */
  acquireTimeoutMs?: number;
  /** What the pool is for, after the binary's name in pg_stat_activity ("readiness", "migrate"). */
  purpose?: string;
}

/** `<project.name>/<binary>[ <purpose>]`: an operator tells the pools apart in pg_stat_activity. */
export function applicationName(config: Readonly<Config>, binary: Binary, purpose?: string): string {
  return `${config.project.name}/${binary}${purpose === undefined ? "" : ` ${purpose}`}`;
}

/** A pool built from config: database.* unless `pool` says otherwise. The one place a binary opens one. */
export function openDatabase(config: Readonly<Config>, binary: Binary, pool: PoolOptions): Database {
  return createDatabase({
    url: pool.url ?? config.database.url,
    maxConnections: pool.maxConnections,
    statementTimeoutMs: pool.statementTimeoutMs ?? config.database.statementTimeoutMs,
    acquireTimeoutMs: pool.acquireTimeoutMs ?? config.database.acquireTimeoutMs,
    applicationName: applicationName(config, binary, pool.purpose),
  });
}

/**
 * Applies `target`'s migrations on a connection of their own (named `<binary> migrate`,
 * or just `migrate` for that binary); resolves with the names applied.
 */
export function applyMigrations(config: Readonly<Config>, binary: Binary, target: MigrationTarget): Promise<string[]> {
  return runMigrations(target, {
    acquireTimeoutMs: config.database.acquireTimeoutMs,
    applicationName: applicationName(config, binary, binary === "migrate" ? undefined : "migrate"),
  });
}

interface Closer {
  name: string;
  close: () => Promise<void>;
}

/**
 * What every long-running binary has in common, built one way: database pools
 * from config, migrations at start (database.migrateOnStart), the metrics
 * registry, readiness on a connection of its own, the status server, and a
 * graceful stop with a deadline. runMain (run-main.ts) does what comes before:
 * config, logger, tracing, and the signals that call the stop. A binary's
 * start (start-<binary>.ts, through startWithScaffold) wires its own parts and
 * registers how to stop each (`defer`); when it fails, what it opened is released.
 *
 * Stop order: `stopping` is aborted first (loops end, /ready answers "shutting
 * down"), then the binary's own parts in reverse order of their `defer` (the
 * API drains, the relay releases its leases), then the status servers (they
 * answer until the parts are done), then the pools.
 */
export class Scaffold {
  /** Prometheus registry of the binary, with Node's default metrics. */
  readonly registry = new Registry();
  private readonly stop = new AbortController();
  /** Aborted when the binary begins to stop: every loop takes it. */
  readonly stopping: AbortSignal = this.stop.signal;
  private readonly parts: Closer[] = [];
  private readonly servers: Closer[] = [];
  private readonly pools: Closer[] = [];
  private running = false;
  private stopped: Promise<void> | undefined;

  constructor(
    readonly binary: Binary,
    readonly config: Readonly<Config>,
    readonly logger: Logger,
    /** The whole stop's bound: the binary's own drain time and a margin for the rest. */
    private readonly stopDeadlineMs: number,
  ) {
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: "logistic_package_api_log_lines_dropped",
      help: "Log lines dropped since start because stdout did not take them and 16 MiB were already waiting",
      registers: [this.registry],
      collect() {
        this.set(droppedLogLines());
      },
    });
  }

  /** A pool from config (openDatabase), destroyed after everything else on stop. */
  database(pool: PoolOptions): Database {
    const db = openDatabase(this.config, this.binary, pool);
    this.pools.push({ name: `database ${pool.purpose ?? "pool"}`, close: () => db.destroy() });
    return db;
  }

  /** Applies `target`'s migrations when database.migrateOnStart is on, logging what it applied. */
  async migrate(target: MigrationTarget): Promise<void> {
    if (!this.config.database.migrateOnStart) return;
    // Under the target's migration URL when set: the serving role need not own the schema.
    const applied = await applyMigrations(this.config, this.binary, target);
    if (applied.length > 0) this.logger.info({ applied }, "migrations applied");
  }

  /**
   * The database part of readiness: `select 1` on a connection of its own
   * (status.readinessTimeoutMs), shared by every asker and cached for
   * status.readinessCacheMs (SharedProbe). A probe flood can neither take the
   * working connections nor queue behind them. `onProbe` counts real pings.
   */
  databaseProbe(url: string, onProbe: () => void = () => {}): () => Promise<void> {
    const { readinessTimeoutMs, readinessCacheMs } = this.config.status;
    const probeDb = this.database({
      url,
      maxConnections: 1,
      statementTimeoutMs: readinessTimeoutMs,
      acquireTimeoutMs: readinessTimeoutMs,
      purpose: "readiness",
    });
    const probe = new SharedProbe(() => ping(probeDb, readinessTimeoutMs), readinessCacheMs, onProbe);
    return () => probe.check();
  }

  /** `check`, answered only while the binary is started and not stopping. */
  readiness(check: ReadyCheck): ReadyCheck {
    return async () => {
      if (this.stopping.aborted) throw new Error("shutting down");
      if (!this.running) throw new Error("starting");
      return check();
    };
  }

  /**
   * Listens with the status server (/live, /ready, /version when `probes` is
   * given, /metrics of the registry when `metrics`); resolves with its port.
   * It answers until the binary's parts have stopped.
   */
  async serveStatus(
    where: { port: number; host: string },
    serve: { probes?: Omit<Probes, "version">; metrics?: boolean },
  ): Promise<number> {
    const server = createStatusServer({
      ...(serve.probes === undefined ? {} : { probes: { ...serve.probes, version: versionInfo() } }),
      ...(serve.metrics === true ? { metrics: this.registry } : {}),
    });
    const port = await listen(server, where.port, where.host);
    this.servers.push({ name: `status :${port}`, close: () => closeHttp(server, 1000) });
    return port;
  }

  /** Registers how to stop one part of the binary; parts stop in reverse order. */
  defer(name: string, close: () => Promise<void> | void): void {
    this.parts.push({ name, close: async () => close() });
  }

  /** Start-up is complete: /ready may answer. Returns `app` with the scaffold's stop. */
  started<T extends object>(app: T): T & { stop(): Promise<void> } {
    this.running = true;
    return { ...app, stop: () => this.close() };
  }

  /** Start-up failed: releases what was opened, then rethrows `err`. */
  async failed(err: unknown): Promise<never> {
    await this.close().catch((closeErr: unknown) =>
      this.logger.warn({ err: closeErr }, "releasing after a failed start failed too"),
    );
    throw err;
  }

  /**
   * Stops the parts, then the status servers, then the pools, each group in
   * reverse order; once, however often it is called. A part that fails to
   * stop is logged and the others still stop; the stop then rejects. So does a
   * stop still running after the deadline (what is left goes on unobserved).
   */
  close(): Promise<void> {
    this.stopped ??= withDeadline(
      this.closeAll(),
      this.stopDeadlineMs,
      () => new Error(`${this.binary} did not stop within ${this.stopDeadlineMs} ms`),
    );
    return this.stopped;
  }

  private async closeAll(): Promise<void> {
    this.stop.abort();
    const failures: unknown[] = [];
    for (const closer of [...this.parts.reverse(), ...this.servers.reverse(), ...this.pools.reverse()]) {
      try {
        await closer.close();
      } catch (err) {
        this.logger.warn({ err, part: closer.name }, "close failed");
        failures.push(err);
      }
    }
    if (failures.length > 0) {
      throw new AggregateError(failures, `${this.binary}: ${failures.length} part(s) failed to stop`);
    }
  }
}

export interface ScaffoldOptions {
  binary: Binary;
  config: Readonly<Config>;
  logger: Logger;
  /**
   * How long the binary's own parts may take to stop (its drain timeout); the
   * whole stop is bounded by this plus stopMarginMs for the status servers, the
   * pools and the last writes (released leases).
   */
  drainMs: number;
}

/** Time on top of a binary's drain for the rest of its stop. */
export const stopMarginMs = 10_000;

/**
 * Runs `wire` with a new Scaffold: what it returns is the started binary with
 * a `stop`; when it throws, whatever it opened is released first.
 */
export async function startWithScaffold<T extends object>(
  options: ScaffoldOptions,
  wire: (scaffold: Scaffold) => Promise<T>,
): Promise<T & { stop(): Promise<void> }> {
  const { binary, config, logger, drainMs } = options;
  const scaffold = new Scaffold(binary, config, logger, drainMs + stopMarginMs);
  try {
    return scaffold.started(await wire(scaffold));
  } catch (err) {
    return scaffold.failed(err);
  }
}

/** Closes an HTTP server: idle connections at once, busy ones once `deadlineMs` has passed. */
async function closeHttp(server: http.Server, deadlineMs: number): Promise<void> {
  server.closeIdleConnections();
  const closed = closeServer(server);
  if (!(await settleWithin(closed, deadlineMs))) {
    server.closeAllConnections();
    await closed;
  }
}
