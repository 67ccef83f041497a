import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("../..", import.meta.url));

export type BinaryName = "grpc-server" | "retranslator" | "facade" | "bot" | "admin" | "migrate";

/** A binary as a child process, started as `npm run <name>` starts it, with `env` over this process's. */
export function spawnBinary(name: BinaryName, env: Record<string, string>, args: string[] = []): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", `cmd/${name}/main.ts`, ...args], {
    cwd: root,
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

export interface BinaryRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a binary to its end (a command such as admin or migrate); resolves with its exit code and output. */
export function runBinary(name: BinaryName, env: Record<string, string>, args: string[] = []): Promise<BinaryRun> {
  return new Promise((resolve, reject) => {
    const child = spawnBinary(name, env, args);
    let stdout = "";
    let stderr = "";
    child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
    child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
    child.once("error", reject);
    child.once("close", (code) => resolve({ code, stdout, stderr }));
  });
}
