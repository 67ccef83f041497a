import type { ChildProcess } from "node:child_process";
import { type FacadeApp, startFacadeApp } from "../../internal/app/start-facade.js";
import type { Config } from "../../internal/config/config.js";
import { createDatabase, type Database } from "../../internal/database/database.js";
import { migrateFacade } from "../../internal/facade/database.js";
import { spawnBinary } from "./binaries.js";
import { type ConfigOverrides, testConfig } from "./config.js";
import { type CapturedLogs, captureLogs } from "./logs.js";

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
 * A session short enough for tests that stop or kill a member: one that is
 * gone holds up the group's next join until its session expires (the Kafka
 * mock seems to ignore LeaveGroup).
 */
export const shortSession = { sessionTimeoutMs: 6000, heartbeatIntervalMs: 500 } as const;

export interface TestFacade extends FacadeApp {
  config: Readonly<Config>;
  logs: CapturedLogs;
  metricsUrl: string;
}

/** The real facade wiring in this process, logging at debug into `logs`; `overrides` for keys without a variable. */
export async function startTestFacade(
  env: Record<string, string>,
  overrides: ConfigOverrides = {},
): Promise<TestFacade> {
  const config = testConfig(env, overrides);
  const logs = captureLogs("debug");
  const app = await startFacadeApp(config, logs.logger);
  return { ...app, config, logs, metricsUrl: `http://127.0.0.1:${app.ports.metrics}` };
}

/** The real binary (`npm run facade`) as a child process, for kill -9 and SIGTERM. */
export function spawnFacade(env: Record<string, string>): ChildProcess {
  return spawnBinary("facade", { LOG_LEVEL: "info", ...env });
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
