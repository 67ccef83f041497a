import type { ChildProcess } from "node:child_process";
import { type RetranslatorApp, startRetranslatorApp } from "../../internal/app/start-retranslator.js";
import type { Config } from "../../internal/config/config.js";
import { type BinaryRun, runBinary, spawnBinary } from "./binaries.js";
import { type ConfigOverrides, testConfig } from "./config.js";
import { type CapturedLogs, captureLogs } from "./logs.js";

/** Settings that make the tests quick without changing behaviour: short polls, leases and backoff. */
export const fastRetranslatorEnv = (databaseUrl: string, brokers: string[], topic: string): Record<string, string> => ({
  DATABASE_URL: databaseUrl,
  KAFKA_BROKERS: brokers.join(","),
  KAFKA_TOPIC: topic,
  RETRANSLATOR_METRICS_PORT: "0",
});

export interface TestRetranslator extends RetranslatorApp {
  config: Readonly<Config>;
  logs: CapturedLogs;
}

/** The real retranslator wiring in this process; `overrides` for the keys that have no environment variable. */
export async function startTestRetranslator(
  env: Record<string, string>,
  overrides: ConfigOverrides = {},
): Promise<TestRetranslator> {
  const config = testConfig(env, overrides);
  const logs = captureLogs("info");
  const app = await startRetranslatorApp(config, logs.logger);
  return { ...app, config, logs };
}

/** The real binary as a child process (for kill -9 and SIGTERM tests). */
export function spawnRetranslator(env: Record<string, string>): ChildProcess {
  return spawnBinary("retranslator", { LOG_LEVEL: "info", ...env });
}

/** One unlabelled sample (counter or gauge) from a retranslator's /metrics; 0 when absent. */
export async function readMetric(metricsPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/**
 * The relay's produce requests of one kind: `partitions` "one" or "shared"
 * (several partitions in one request), `result` "published" or "failed".
 */
export function produceRequests(
  relay: TestRetranslator,
  partitions: "one" | "shared",
  result: "published" | "failed",
): Promise<number> {
  return readMetric(
    relay.ports.metrics,
    `logistic_package_api_retranslator_produce_requests_total\\{partitions="${partitions}",result="${result}"\\}`,
  );
}

/** Runs the admin binary (`npm run admin -- ARGS`) against `databaseUrl`; resolves with its exit code and output. */
export function runAdmin(databaseUrl: string, args: string[]): Promise<BinaryRun> {
  return runBinary("admin", { DATABASE_URL: databaseUrl }, args);
}
