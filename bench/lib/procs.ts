import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, existsSync, openSync, readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { withParentDeathSignal } from "../../tools/parent-death.js";

export const root = fileURLToPath(new URL("../..", import.meta.url));

/** A production binary (`cmd/<name>/main.ts`) running as a child of the bench. */
export interface BinaryProcess {
  name: string;
  pid: number;
  logPath: string;
  /** Resolves with the exit code (or signal name) when the process is gone. */
  exited: Promise<string>;
  isRunning(): boolean;
  /** SIGTERM (graceful, as in production), SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<string>;
}

/**
 * How the bench runs the binaries: "compiled" (the default) as production does,
 * `node dist/cmd/<binary>/main.js` from `npm run build` (make bench builds
 * first); "tsx" (BENCH_BINARIES=tsx) from the sources, as `npm run <binary>`
 * does in development, for comparing the two.
 */
export const binaryForm: "compiled" | "tsx" = process.env.BENCH_BINARIES === "tsx" ? "tsx" : "compiled";

/**
 * The NODE_OPTIONS a binary runs with when deployed (the image's default from
 * deploy/Dockerfile, or what docker-compose.yml gives that binary's service, e.g. the
 * retranslator's small young generation), so that the compiled children are measured
 * as deployed; BENCH_NODE_OPTIONS replaces them (e.g. "" for V8's defaults).
 */
export function childNodeOptions(binary: string): string {
  const override = process.env.BENCH_NODE_OPTIONS;
  if (override !== undefined) return override;
  if (binaryForm !== "compiled") return process.env.NODE_OPTIONS ?? "";
  const compose = parseYaml(readFileSync(join(root, "deploy/docker-compose.yml"), "utf8"), { merge: true }) as {
    services: Record<string, { environment?: Record<string, string> }>;
  };
  const ofService = compose.services[binary]?.environment?.NODE_OPTIONS;
  if (ofService !== undefined) return ofService;
  const dockerfile = readFileSync(join(root, "deploy/Dockerfile"), "utf8");
  return /\bNODE_OPTIONS="([^"]*)"/.exec(dockerfile)?.[1] ?? "";
}

function entryArgs(binary: string): string[] {
  // Scripts of the bench itself (bench/lib/…) always run from their sources.
  if (binary.endsWith(".ts")) return ["--import", "tsx", binary];
  if (binaryForm === "tsx") return ["--import", "tsx", `cmd/${binary}/main.ts`];
  const compiled = join(root, "dist", "cmd", binary, "main.js");
  if (!existsSync(compiled))
    throw new Error(`${compiled} is missing: run \`npm run build\` first (make bench does), or set BENCH_BINARIES=tsx`);
  return [compiled];
}

/**
 * Starts a binary (compiled or through tsx, see binaryForm) with its output in a log
 * file (so the bench's own event loop never relays log lines). Where
 * util-linux `setpriv` exists the child gets a parent-death signal, so even a
 * bench killed with SIGKILL leaves no relay or server behind; setpriv execs,
 * so the pid is node's own (for /proc sampling).
 */
export function spawnBinary(
  /** A binary of cmd/, or the path of a script (bench/lib/…). */
  binary: "grpc-server" | "retranslator" | `${string}.ts`,
  label: string,
  env: Record<string, string>,
  logDir: string,
  nodeArgs: readonly string[] = [],
): BinaryProcess {
  const logPath = join(logDir, `${label}.log`);
  // Bench scripts (bench/lib/…) run with the bench's own options, binaries as deployed.
  // BENCH_NODE_ARGS adds options for the binaries that NODE_OPTIONS may not carry (most V8 flags).
  const binaryArgs = binary.endsWith(".ts") ? [] : (process.env.BENCH_NODE_ARGS ?? "").split(" ").filter(Boolean);
  const args = [...binaryArgs, ...nodeArgs, ...entryArgs(binary)];
  if (!binary.endsWith(".ts")) env = { ...env, NODE_OPTIONS: childNodeOptions(binary) };
  const fd = openSync(logPath, "a");
  let child: ChildProcess;
  try {
    const [file, fileArgs] = withParentDeathSignal([process.execPath, ...args], "TERM");
    child = spawn(file, fileArgs, { cwd: root, env: { ...process.env, ...env }, stdio: ["ignore", fd, fd] });
  } finally {
    closeSync(fd);
  }
  if (child.pid === undefined) throw new Error(`could not start ${binary}`);
  let running = true;
  const exited = new Promise<string>((resolve) => {
    child.once("exit", (code, signal) => {
      running = false;
      resolve(signal ?? String(code));
    });
    child.once("error", (err) => {
      running = false;
      resolve(`spawn error: ${err.message}`);
    });
  });
  return {
    name: label,
    pid: child.pid,
    logPath,
    exited,
    isRunning: () => running,
    async stop(graceMs = 15_000) {
      if (!running) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const how = await exited;
      clearTimeout(timer);
      return how;
    },
  };
}

/** `count` distinct free loopback ports (held together, released at once: the child binds them a moment later). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<Server>((resolve, reject) => {
          const server = createServer();
          server.once("error", reject);
          server.listen(0, "127.0.0.1", () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => {
    const address = s.address();
    return typeof address === "object" && address !== null ? address.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}

/** Polls `url` until it answers 200; fails when the child exits or `timeoutMs` passes. */
export async function waitReady(url: string, child: BinaryProcess, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (!child.isRunning()) {
      throw new Error(
        `${child.name} exited (${await child.exited}) before it was ready; log: ${child.logPath}\n${tail(child.logPath)}`,
      );
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      if (res.status === 200) return Date.now() - started;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  throw new Error(`${child.name} not ready within ${timeoutMs} ms; log: ${child.logPath}\n${tail(child.logPath)}`);
}

export function tail(path: string, lines = 15): string {
  try {
    return readFileSync(path, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** VmHWM (peak resident set) and VmRSS of a live process, in KiB. */
export function memoryOf(pid: number): { hwmKiB: number; rssKiB: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
    return { hwmKiB: field("VmHWM"), rssKiB: field("VmRSS") };
  } catch {
    return undefined;
  }
}

/** Pids of this process's direct children whose command name is `comm` (e.g. the kafka-mock). */
export function childPids(comm: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const close = stat.lastIndexOf(")");
      const name = stat.slice(stat.indexOf("(") + 1, close);
      const ppid = Number(stat.slice(close + 2).split(" ")[1]);
      if (name === comm && ppid === process.pid) pids.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return pids;
}
