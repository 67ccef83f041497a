import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { loadConfig, type Config } from "../../internal/config/config.js";
import { startRetranslatorApp, type RetranslatorApp } from "../../internal/app/retranslator.js";
import { captureLogs, type CapturedLogs } from "./logs.js";

const root = fileURLToPath(new URL("../..", import.meta.url));

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

/** The real retranslator wiring in this process. `yaml` overrides config keys (written to a temp file). */
export async function startTestRetranslator(env: Record<string, string>, configPath?: string): Promise<TestRetranslator> {
  const config = loadConfig({ path: configPath ?? `${root}config.yml`, env });
  const hostConfig = { ...config, grpc: { ...config.grpc, host: "127.0.0.1" } };
  const logs = captureLogs("info");
  const app = await startRetranslatorApp(hostConfig, logs.logger);
  return { ...app, config: hostConfig, logs };
}

/** The real binary as a child process (for kill -9 and SIGTERM tests). */
export function spawnRetranslator(env: Record<string, string>): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "cmd/retranslator/main.ts"], {
    cwd: root,
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}
