import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { type RetranslatorApp, startRetranslatorApp } from "../../internal/app/retranslator.js";
import { type Config, loadConfig } from "../../internal/config/config.js";
import { type CapturedLogs, captureLogs } from "./logs.js";

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
export async function startTestRetranslator(
  env: Record<string, string>,
  configPath?: string,
): Promise<TestRetranslator> {
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

/**
 * A copy of config.yml with `overrides` deep-merged in (for keys that have no
 * environment variable), written to a temp file for `startTestRetranslator(env, path)`.
 * `cleanup()` removes it.
 */
export async function writeTestConfig(
  overrides: Record<string, unknown>,
): Promise<{ path: string; cleanup(): Promise<void> }> {
  const { mkdtemp, readFile, rm, writeFile } = await import("node:fs/promises");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const { parse, stringify } = await import("yaml");
  const base = (parse(await readFile(`${root}config.yml`, "utf8")) ?? {}) as Record<string, unknown>;
  const merge = (target: Record<string, unknown>, source: Record<string, unknown>): void => {
    for (const [key, value] of Object.entries(source)) {
      const current = target[key];
      if (
        typeof value === "object" &&
        value !== null &&
        !Array.isArray(value) &&
        typeof current === "object" &&
        current !== null
      ) {
        merge(current as Record<string, unknown>, value as Record<string, unknown>);
      } else target[key] = value;
    }
  };
  merge(base, overrides);
  const dir = await mkdtemp(join(tmpdir(), "lpa-config-"));
  const path = join(dir, "config.yml");
  await writeFile(path, stringify(base));
  return { path, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** One unlabelled sample (counter or gauge) from a retranslator's /metrics; 0 when absent. */
export async function readMetric(metricsPort: number, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** Runs the admin binary (`npm run admin -- ARGS`) against `databaseUrl`; resolves with its exit code and output. */
export function runAdmin(
  databaseUrl: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "cmd/admin/main.ts", ...args], {
      cwd: root,
      env: { ...process.env, DATABASE_URL: databaseUrl },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}
