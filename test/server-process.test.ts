// The grpc-server binary as operators run it: a child process started with the
// package.json script's command, configured by environment variables, stopped
// by SIGTERM. Checks start-up, graceful drain and config errors at start.
// Run: bash scripts/test.sh test/server-process.test.ts

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { packageApiClient } from "./helpers/grpc-client.js";
import { until } from "./helpers/poll.js";
import { freePort } from "./helpers/ports.js";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));
const applicationName = "logistic-package-api/grpc-server";

/** The command of `npm run grpc-server` (what the README tells people to run), with this node. */
function serverCommand(): { command: string; args: string[] } {
  const pkg = JSON.parse(readFileSync(join(repoRoot, "package.json"), "utf8")) as { scripts: Record<string, string> };
  const [bin, ...args] = pkg.scripts["grpc-server"]!.split(/\s+/);
  assert.equal(bin, "node", `the grpc-server script runs node: ${pkg.scripts["grpc-server"]}`);
  return { command: process.execPath, args };
}

interface ServerProcess {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or the signal name) once the process has exited. */
  exited: Promise<number | string>;
}

function startServer(env: Record<string, string>): ServerProcess {
  const { command, args } = serverCommand();
  const childEnv: NodeJS.ProcessEnv = { ...process.env, LOG_LEVEL: "info", ...env };
  if (!("CONFIG_PATH" in env)) delete childEnv.CONFIG_PATH;
  delete childEnv.COMMIT_HASH;
  const child = spawn(command, args, { cwd: repoRoot, env: childEnv, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  child.stderr!.setEncoding("utf8").on("data", (s: string) => (stderr += s));
  const exited = new Promise<number | string>((resolve) => {
    child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown"));
  });
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

/** Waits (bounded) for the process to exit; kills it and fails if it does not. */
async function exitCode(server: ServerProcess, timeoutMs = 30_000): Promise<number | string> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), timeoutMs);
  });
  const result = await Promise.race([server.exited, timeout]);
  clearTimeout(timer);
  if (result === "timeout") {
    server.child.kill("SIGKILL");
    assert.fail(
      `the process did not exit within ${timeoutMs} ms\nstdout:\n${server.stdout()}\nstderr:\n${server.stderr()}`,
    );
  }
  return result;
}

/** Waits for a child process: its ports refuse connections until it listens, so a failed probe means "not yet". */
function untilUp<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000): Promise<T> {
  return until(what, () => probe().catch(() => undefined), timeoutMs);
}

function connectRefused(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ECONNREFUSED"));
  });
}

let db: TestDatabase;
const children: ChildProcess[] = [];
const clients: { close(): unknown }[] = [];
let tempDir: string;

before(async () => {
  db = await createTestDatabase();
  tempDir = mkdtempSync(join(tmpdir(), "lpa-process-"));
});

after(async () => {
  for (const c of clients) await c.close();
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  await db?.drop();
  if (tempDir) rmSync(tempDir, { recursive: true, force: true });
});

/** The binary against this file's database, on free loopback ports. */
async function startOnFreePorts() {
  const ports = {
    grpc: await freePort(),
    gateway: await freePort(),
    status: await freePort(),
    metrics: await freePort(),
  };
  const server = startServer({
    DATABASE_URL: db.url,
    GRPC_PORT: String(ports.grpc),
    GATEWAY_PORT: String(ports.gateway),
    STATUS_PORT: String(ports.status),
    METRICS_PORT: String(ports.metrics),
  });
  children.push(server.child);
  return { ports, server };
}

describe("grpc-server process", () => {
  test("starts, answers /ready, logs JSON lines, drains an in-flight request on SIGTERM and exits 0", async () => {
    const { ports, server } = await startOnFreePorts();
    const failedEarly = server.exited.then((code) => {
      // A start-up failure is logged on stdout (JSON lines), an import error on stderr.
      throw new Error(
        `the server exited (${code}) during the test\nstdout:\n${server.stdout()}\nstderr:\n${server.stderr()}`,
      );
    });
    failedEarly.catch(() => undefined);

    const ready = await Promise.race([
      untilUp("/ready 200", async () => {
        const res = await fetch(`http://127.0.0.1:${ports.status}/ready`, { signal: AbortSignal.timeout(5000) });
        return res.status === 200 ? res.status : undefined;
      }),
      failedEarly,
    ]);
    assert.equal(ready, 200);

    // Structured logs on stdout: every line is JSON, and start-up is announced.
    const started = await untilUp("the start-up log line", async () => {
      const lines = server
        .stdout()
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as Record<string, unknown>);
      return lines.find((l) => l.msg === "grpc-server started");
    });
    assert.equal(started.level, "info");
    assert.deepEqual(started.ports, ports);

    const api = packageApiClient(`127.0.0.1:${ports.grpc}`);
    clients.push(api);
    const { ID } = await api.createPackageV1({
      Title: "in flight",
      Material: "oak",
      MaximumVolume: 10,
      Reusable: false,
    });

    // Hold the package's row lock so that the Update is in flight when SIGTERM comes.
    const locker = new pg.Client({ connectionString: db.url });
    await locker.connect();
    clients.push({ close: () => locker.end() });
    await locker.query("BEGIN");
    await locker.query("SELECT id FROM package WHERE id = $1 FOR UPDATE", [ID]);

    const update = api.updatePackageV1({ PackageID: ID, Title: "drained" });
    update.catch(() => undefined); // awaited below; avoid an unhandled rejection meanwhile
    await untilUp(
      "the Update to wait on the row lock",
      async () => {
        const res = await locker.query(
          `SELECT count(*)::int AS n FROM pg_stat_activity
         WHERE datname = $1 AND application_name = $2 AND wait_event_type = 'Lock'`,
          [db.name, applicationName],
        );
        return (res.rows[0] as { n: number }).n > 0 ? true : undefined;
      },
      15_000,
    );

    server.child.kill("SIGTERM");
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(server.child.exitCode, null, "the process waits for the in-flight request");
    await locker.query("COMMIT");

    assert.deepEqual(await update, { Suc: true });
    assert.equal(await exitCode(server), 0, `stderr:\n${server.stderr()}`);

    const row = await db.db.raw("SELECT title FROM package WHERE id = ?", [ID]);
    assert.equal((row as { rows: { title: string }[] }).rows[0]!.title, "drained");
    assert.equal(await connectRefused(ports.grpc), true, "the gRPC port is closed after exit");
    assert.equal(await connectRefused(ports.status), true, "the status port is closed after exit");
    assert.match(server.stdout(), /"msg":"shutting down"/);
  });

  test("a port scanner's resets before the first byte and a SIGHUP leave the process serving", async () => {
    const { ports, server } = await startOnFreePorts();
    await untilUp("/ready 200", async () => {
      const res = await fetch(`http://127.0.0.1:${ports.status}/ready`, { signal: AbortSignal.timeout(5000) });
      return res.status === 200 ? true : undefined;
    });
    // What a TCP health check or a scanner does: connect, then RST (SO_LINGER 0).
    for (const port of [ports.grpc, ports.gateway]) {
      for (let i = 0; i < 100; i++) {
        const socket = await new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect(port, "127.0.0.1", () => resolve(s));
          s.once("error", reject);
        });
        socket.resetAndDestroy();
      }
    }
    server.child.kill("SIGHUP");
    await untilUp(
      "the reload log line",
      async () => (server.stdout().includes('"msg":"reloading"') ? true : undefined),
      10_000,
    );
    const api = packageApiClient(`127.0.0.1:${ports.grpc}`);
    clients.push(api);
    const { ID } = await api.createPackageV1({
      Title: "after resets",
      Material: "oak",
      MaximumVolume: 1,
      Reusable: false,
    });
    assert.ok(Number(ID) > 0);
    assert.equal(server.child.exitCode, null, `the process is still running\nstderr:\n${server.stderr()}`);
    server.child.kill("SIGTERM");
    assert.equal(await exitCode(server), 0, `stderr:\n${server.stderr()}`);
  });

  test("GRPC_PORT=abc stops start-up with exit code 2, naming the key and the variable", async () => {
    const server = startServer({ DATABASE_URL: db.url, GRPC_PORT: "abc" });
    children.push(server.child);
    assert.equal(await exitCode(server), 2);
    assert.match(server.stderr(), /grpc\.port/);
    assert.match(server.stderr(), /GRPC_PORT/);
  });

  test("an unknown key in the YAML config stops start-up with exit code 2, naming the key", async () => {
    const configPath = join(tempDir, "typo.yml");
    writeFileSync(configPath, "grpc:\n  prot: 1\n");
    const server = startServer({ DATABASE_URL: db.url, CONFIG_PATH: configPath });
    children.push(server.child);
    assert.equal(await exitCode(server), 2);
    assert.match(server.stderr(), /prot/);
    assert.match(server.stderr(), /grpc/);
  });
});
