import { execFileSync } from "node:child_process";
import { cpus, loadavg, release, totalmem } from "node:os";
import pg from "pg";
import { adminUrl } from "../../test/helpers/database.js";
import { root } from "./procs.js";

export interface MachineInfo {
  cores: number;
  memoryGiB: number;
  cpuModel: string;
  kernel: string;
  node: string;
  postgres: string;
  broker: string;
}

function run(cmd: string, args: string[]): string | undefined {
  try {
    return execFileSync(cmd, args, { cwd: root, encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return undefined;
  }
}

export async function machineInfo(): Promise<MachineInfo> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  let postgres: string;
  try {
    postgres = (await client.query<{ v: string }>("SELECT version() AS v")).rows[0]!.v;
  } finally {
    await client.end();
  }
  // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own format syntax, not a template.
  const librdkafka = run("dpkg-query", ["-W", "-f", "${Version}", "librdkafka1"])?.replace(/-\d+$/, "") ?? "2.0.2";
  return {
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    cpuModel: cpus()[0]?.model.trim() ?? "unknown",
    kernel: release(),
    node: process.version,
    postgres,
    broker: `librdkafka mock cluster ${librdkafka} (tools/kafka-mock, in memory, 1 broker unless a row records its own)`,
  };
}

/** `dirty`: code differs from the commit (earlier results in bench/results do not count). */
export function gitInfo(): { commit: string; dirty: boolean } {
  return {
    commit: run("git", ["rev-parse", "HEAD"]) ?? "unknown",
    dirty: (run("git", ["status", "--porcelain", "--", ".", ":(exclude)bench/results"]) ?? "") !== "",
  };
}

export const loadAverage = () => loadavg().map((x) => Math.round(x * 100) / 100) as [number, number, number];
