import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { type Config, loadConfig } from "../../internal/config/config.js";
import { createDatabase, type Database } from "../../internal/database/database.js";
import { type FacadeApp, startFacadeApp } from "../../internal/facade/app.js";
import { migrateFacade } from "../../internal/facade/database.js";
import { type CapturedLogs, captureLogs } from "./logs.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

/** The facade's environment for a test: its database, the file's Kafka mock and topic, an ephemeral metrics port. */
export const facadeEnv = (facadeDatabaseUrl: string, brokers: string[], topic: string): Record<string, string> => ({
  FACADE_DATABASE_URL: facadeDatabaseUrl,
  KAFKA_BROKERS: brokers.join(","),
  KAFKA_TOPIC: topic,
  FACADE_METRICS_PORT: "0",
});

/** Applies the facade migrations to a test database (a clone of the API template: the tables do not collide). */
export async function migrateFacadeDatabase(url: string): Promise<void> {
  const db = createDatabase({
    url,
    maxConnections: 1,
    statementTimeoutMs: 0,
    acquireTimeoutMs: 10_000,
    applicationName: "lpa-test-facade-migrate",
  });
  try {
    await migrateFacade(db);
  } finally {
    await db.destroy();
  }
}

/**
 * config.yml with some `facade:` keys changed (those without an environment
 * variable, e.g. a short session timeout), in a temp file for CONFIG_PATH.
 */
export async function writeFacadeConfig(
  facade: Record<string, number | string>,
): Promise<{ path: string; cleanup(): Promise<void> }> {
  const base = (parseYaml(await readFile(join(root, "config.yml"), "utf8")) ?? {}) as Record<
    string,
    Record<string, unknown>
  >;
  base.facade = { ...(base.facade ?? {}), ...facade };
  const dir = await mkdtemp(join(tmpdir(), "lpa-facade-"));
  const path = join(dir, "config.yml");
  await writeFile(path, stringifyYaml(base));
  return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

export interface TestFacade extends FacadeApp {
  config: Readonly<Config>;
  logs: CapturedLogs;
  metricsUrl: string;
}

/** The real facade wiring in this process, logging at debug into `logs`. */
export async function startTestFacade(env: Record<string, string>): Promise<TestFacade> {
  const config = loadConfig({ path: env.CONFIG_PATH ?? join(root, "config.yml"), env });
  const hostConfig = { ...config, grpc: { ...config.grpc, host: "127.0.0.1" } };
  const logs = captureLogs("debug");
  const app = await startFacadeApp(hostConfig, logs.logger);
  return { ...app, config: hostConfig, logs, metricsUrl: `http://127.0.0.1:${app.ports.metrics}` };
}

/** The real binary (`npm run facade`) as a child process, for kill -9 and SIGTERM. */
export function spawnFacade(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "cmd/facade/main.ts"], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

/** Samples of one metric from a /metrics text: the unlabelled value, or the sum over labels. */
export async function readFacadeMetric(metricsUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${metricsUrl}/metrics`)).text();
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))) sum += Number(m[1]);
  return sum;
}

export interface PackageRow {
  id: string;
  title: string;
  material: string;
  maximum_volume: string;
  reusable: boolean;
  created: string;
  updated: string | null;
  removed: boolean;
}

// Text forms, so that microseconds and the stored float4 compare exactly.
const columns = `id::text AS id, title, material, maximum_volume::text AS maximum_volume, reusable,
  to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS created,
  to_char(updated AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') AS updated, removed`;

/** The API's packages (removed ones included), by id. */
export async function apiPackages(db: Database): Promise<PackageRow[]> {
  const result = await db.raw(`SELECT ${columns} FROM package ORDER BY id`);
  return (result as { rows: PackageRow[] }).rows;
}

/** The facade's read model, by id, in the same shape. */
export async function facadePackages(db: Database): Promise<PackageRow[]> {
  const result = await db.raw(`SELECT ${columns} FROM facade_package ORDER BY id`);
  return (result as { rows: PackageRow[] }).rows;
}

export async function inboxIds(db: Database): Promise<string[]> {
  const result = await db.raw(`SELECT event_id::text AS id FROM facade_inbox ORDER BY event_id`);
  return (result as { rows: { id: string }[] }).rows.map((r) => r.id);
}

export interface RejectedRow {
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  raw: Buffer | null;
  error: string;
}

export async function rejectedRows(db: Database): Promise<RejectedRow[]> {
  const result = await db.raw(
    `SELECT topic, partition, "offset"::text AS "offset", key, raw, error FROM facade_rejected ORDER BY partition, "offset"`,
  );
  return (result as { rows: RejectedRow[] }).rows;
}

export async function poll<T>(
  what: string,
  fn: () => Promise<T>,
  ok: (v: T) => boolean,
  timeoutMs = 30_000,
  everyMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (ok(v)) return v;
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}; last value ${JSON.stringify(v, (_k, x: unknown) => (typeof x === "bigint" ? x.toString() : x)).slice(0, 2000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
