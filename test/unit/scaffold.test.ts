// The process scaffold (internal/app/scaffold.ts) and the one status server
// (internal/server/status-server.ts), with no database: what /live, /ready,
// /version and /metrics answer, and how a binary stops (order, failures, deadline).

import assert from "node:assert/strict";
import type { AddressInfo } from "node:net";
import { after, describe, test } from "node:test";
import { Counter, Registry } from "prom-client";
import {
  applicationName,
  type Binary,
  Scaffold,
  startWithScaffold,
  stopMarginMs,
} from "../../internal/app/scaffold.js";
import { type Config, loadConfig } from "../../internal/config/config.js";
import type { MigrationTarget } from "../../internal/database/migrate.js";
import { createStatusServer, type StatusOptions } from "../../internal/server/status-server.js";
import { captureLogs } from "../helpers/logs.js";

const config: Readonly<Config> = loadConfig({ path: "config.yml", env: {} });
const version = { name: "logistic-package-api", version: "1.2.3", commitHash: "abc" };
const local = { port: 0, host: "127.0.0.1" };

async function get(port: number, path: string, method = "GET") {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { method, signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  return { status: res.status, type: res.headers.get("content-type"), text };
}

describe("status server", () => {
  const servers: ReturnType<typeof createStatusServer>[] = [];
  after(() => {
    for (const server of servers) server.close();
  });
  async function serve(options: StatusOptions): Promise<number> {
    const server = createStatusServer(options);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    return (server.address() as AddressInfo).port;
  }

  test("/live, /ready, /version answer JSON; an unknown path is 404 and another verb 405", async () => {
    const port = await serve({ probes: { ready: async () => undefined, version } });
    assert.deepEqual(JSON.parse((await get(port, "/live")).text), { status: "ok" });
    const ready = await get(port, "/ready");
    assert.equal(ready.status, 200);
    assert.equal(ready.type, "application/json");
    assert.deepEqual(JSON.parse(ready.text), { status: "ready" });
    assert.deepEqual(JSON.parse((await get(port, "/version")).text), version);
    assert.equal((await get(port, "/nope")).status, 404);
    assert.equal((await get(port, "/ready", "POST")).status, 405);
  });

  test("/ready is 503 with the reason when the check rejects, 200 with the details when degraded", async () => {
    let answer: () => Promise<undefined | { status: "degraded"; reason: string; ageSeconds: number }> = async () => {
      throw new Error("database did not answer within 500 ms");
    };
    const port = await serve({ probes: { ready: () => answer(), version } });
    const down = await get(port, "/ready");
    assert.equal(down.status, 503);
    assert.deepEqual(JSON.parse(down.text), { status: "not ready", reason: "database did not answer within 500 ms" });
    answer = async () => ({ status: "degraded", reason: "behind", ageSeconds: 7 });
    const degraded = await get(port, "/ready");
    assert.equal(degraded.status, 200);
    assert.deepEqual(JSON.parse(degraded.text), { status: "degraded", reason: "behind", ageSeconds: 7 });
  });

  test("/live is 503 with the reason once the process must be restarted", async () => {
    let dead: { status: string; reason: string } | undefined;
    const port = await serve({ probes: { ready: async () => undefined, live: () => dead, version } });
    assert.equal((await get(port, "/live")).status, 200);
    dead = { status: "consumer stopped", reason: "not retriable" };
    const live = await get(port, "/live");
    assert.equal(live.status, 503);
    assert.deepEqual(JSON.parse(live.text), dead);
  });

  test("/metrics in the Prometheus format where a registry is given; probes only where asked", async () => {
    const registry = new Registry();
    new Counter({ name: "unit_scaffold_total", help: "a counter", registers: [registry] }).inc(3);
    const metricsOnly = await serve({ metrics: registry });
    const metrics = await get(metricsOnly, "/metrics");
    assert.equal(metrics.status, 200);
    assert.equal(metrics.type, registry.contentType);
    assert.match(metrics.text, /^unit_scaffold_total 3$/m);
    assert.equal((await get(metricsOnly, "/live")).status, 404, "a metrics-only port serves no probes");

    const probesOnly = await serve({ probes: { ready: async () => undefined, version } });
    assert.equal((await get(probesOnly, "/metrics")).status, 404, "a probes-only port serves no metrics");
  });
});

describe("scaffold", () => {
  test("pools are named <project.name>/<binary>[ purpose] in pg_stat_activity", () => {
    assert.equal(applicationName(config, "grpc-server"), "logistic-package-api/grpc-server");
    assert.equal(applicationName(config, "retranslator", "readiness"), "logistic-package-api/retranslator readiness");
  });

  test("/ready says 'starting' until the start is done and 'shutting down' once the stop began", async () => {
    const { logger } = captureLogs("info");
    let scaffold!: Scaffold;
    let port = 0;
    const app = await startWithScaffold({ binary: "bot", config, logger, drainMs: 0 }, async (s) => {
      scaffold = s;
      const ready = s.readiness(async () => undefined);
      port = await s.serveStatus(local, { probes: { ready }, metrics: true });
      const starting = await get(port, "/ready");
      assert.equal(starting.status, 503);
      assert.match(starting.text, /starting/);
      return { port };
    });
    assert.equal((await get(port, "/ready")).status, 200);
    assert.match((await get(port, "/metrics")).text, /process_cpu_user_seconds_total/, "Node's default metrics");

    let readyDuringStop: { status: number; text: string } | undefined;
    scaffold.defer("probe while stopping", async () => {
      readyDuringStop = await get(port, "/ready");
    });
    await app.stop();
    assert.equal(readyDuringStop?.status, 503, "the status server answers until the parts have stopped");
    assert.match(readyDuringStop?.text ?? "", /shutting down/);
    await assert.rejects(get(port, "/live"), "the status port is closed after the stop");
  });

  test("stop: the signal first, then the parts in reverse order, then the status servers, then the pools", async () => {
    const { logger } = captureLogs("info");
    const order: string[] = [];
    const scaffold = new Scaffold("retranslator", config, logger, 5000);
    const db = scaffold.database({ maxConnections: 1 });
    // knex drops its pool when destroyed (no connection is ever opened here).
    const poolOpen = () => (db.client as { pool?: unknown }).pool !== undefined;
    const port = await scaffold.serveStatus(local, { probes: { ready: async () => undefined } });
    scaffold.defer(
      "first",
      () => void order.push(`first (stopping: ${scaffold.stopping.aborted}, pool: ${poolOpen()})`),
    );
    scaffold.defer("second", async () => {
      order.push("second");
      // The status server still answers while the parts stop.
      order.push(`status ${(await get(port, "/live")).status}`);
    });
    const app = scaffold.started({});
    await Promise.all([app.stop(), app.stop()]);
    assert.deepEqual(order, ["second", "status 200", "first (stopping: true, pool: true)"]);
    await assert.rejects(get(port, "/live"));
    assert.equal(poolOpen(), false, "the pool is destroyed last");
  });

  test("a part that fails to stop is logged, the others still stop, and the stop rejects", async () => {
    const logs = captureLogs("info");
    const stopped: string[] = [];
    const scaffold = new Scaffold("facade", config, logs.logger, 5000);
    scaffold.defer("a", () => void stopped.push("a"));
    scaffold.defer("broken", () => {
      throw new Error("cannot close");
    });
    scaffold.defer("c", () => void stopped.push("c"));
    await assert.rejects(scaffold.close(), (err: unknown) => {
      assert.ok(err instanceof AggregateError);
      assert.equal(err.errors.length, 1);
      return true;
    });
    assert.deepEqual(stopped, ["c", "a"]);
    assert.ok(logs.lines.some((l) => l.msg === "close failed" && l.part === "broken"));
  });

  test("a stop still running at the deadline rejects, naming the binary and the bound", async () => {
    const { logger } = captureLogs("info");
    const scaffold = new Scaffold("grpc-server", config, logger, 50);
    scaffold.defer("hangs", () => new Promise<void>(() => {}));
    const started = performance.now();
    await assert.rejects(scaffold.close(), /grpc-server did not stop within 50 ms/);
    assert.ok(performance.now() - started < 10_000, "did not wait for the close that hangs");
    assert.ok(stopMarginMs > 0, "startWithScaffold bounds a stop by the drain plus a margin");
  });

  test("a failed start releases what it opened, in reverse order, and rethrows the start's error", async () => {
    const { logger } = captureLogs("info");
    const released: string[] = [];
    let port = 0;
    const failure = new Error("the broker refused");
    await assert.rejects(
      startWithScaffold({ binary: "retranslator" as Binary, config, logger, drainMs: 0 }, async (s) => {
        port = await s.serveStatus(local, { metrics: true });
        s.defer("sender", () => void released.push("sender"));
        s.defer("relay", () => void released.push("relay"));
        throw failure;
      }),
      (err) => err === failure,
    );
    assert.deepEqual(released, ["relay", "sender"]);
    await assert.rejects(get(port, "/metrics"), "the status port was closed");
  });

  test("migrate applies nothing while database.migrateOnStart is off", async () => {
    const { logger } = captureLogs("info");
    const off = { ...config, database: { ...config.database, migrateOnStart: false } };
    const scaffold = new Scaffold("grpc-server", off, logger, 5000);
    let called = false;
    const target: MigrationTarget = {
      url: off.database.url,
      migrationUrl: "",
      keys: { url: "database.url", migrationUrl: "database.migrationUrl", migrationEnv: "DATABASE_MIGRATION_URL" },
      migrate: async () => {
        called = true;
        return [];
      },
    };
    await scaffold.migrate(target);
    assert.equal(called, false);
    await scaffold.close();
  });
});
