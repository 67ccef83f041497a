// The binaries' logger on its real destination (stdout): lines are buffered and
// written together (internal/logger/logger.ts), yet a line logged by a process
// that then goes quiet must still reach stdout while it runs, and what is left
// at exit must not be lost.

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { after, test } from "node:test";
import { fileURLToPath } from "node:url";

const loggerModule = fileURLToPath(new URL("../../internal/logger/logger.ts", import.meta.url));
const children: ChildProcess[] = [];
after(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
});

/** A node process that creates the logger on stdout, then runs `script` (the logger is `logger`). */
function run(script: string): { child: ChildProcess; stdout: () => string } {
  const source = `const { createLogger } = await import(${JSON.stringify(loggerModule)});
const logger = createLogger({ name: "test", level: "info" });
${script}`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", source], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  let stdout = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => (stdout += s));
  return { child, stdout: () => stdout };
}

test("a single line reaches stdout while the process keeps running, with nothing more logged", async () => {
  // Far less than the 4 KiB gathered before a write: only the periodic flush
  // writes it. The child says on stderr when it has logged; the wait after
  // that is generous (the flush runs every 100 ms): without the flush the
  // line would never come while the process runs.
  const { child, stdout } = run(
    `logger.info({ n: 1 }, "lonely line"); process.stderr.write("logged\\n"); setInterval(() => {}, 1000);`,
  );
  await new Promise<void>((resolve) => child.stderr!.once("data", () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!stdout().includes("lonely line") && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  assert.equal(child.exitCode, null, "the process is still running");
  assert.ok(stdout().includes("lonely line"), "the line was written while the process ran");
  const line = JSON.parse(stdout().trim()) as Record<string, unknown>;
  assert.equal(line.msg, "lonely line");
  assert.equal(line.n, 1);
});

test("every line logged before process.exit() is written", async () => {
  const { child, stdout } = run(`for (let i = 0; i < 500; i++) logger.info({ i }, "line"); process.exit(0);`);
  await once(child, "exit");
  const lines = stdout().trim().split("\n");
  assert.equal(lines.length, 500);
  assert.deepEqual(
    lines.map((l) => (JSON.parse(l) as { i: number }).i),
    Array.from({ length: 500 }, (_, i) => i),
  );
});

test("lines wait for a stalled stdout up to a bound; beyond it they are dropped and counted, not kept", async () => {
  // stdout is a pipe nobody reads: once its buffer is full, every line waits in the logger.
  const source = `const { createLogger, droppedLogLines } = await import(${JSON.stringify(loggerModule)});
const logger = createLogger({ name: "test", level: "info" });
const pad = "x".repeat(200);
for (let i = 0; i < 150000; i++) logger.info({ i, pad }, "line");
process.stderr.write(JSON.stringify({ dropped: droppedLogLines() }) + "\\n");
setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", source], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const [report] = (await once(child.stderr!.setEncoding("utf8"), "data")) as [string];
  child.kill("SIGKILL");
  // ~40 MiB logged against a 16 MiB bound.
  const { dropped } = JSON.parse(report) as { dropped: number };
  assert.ok(dropped > 50_000, `lines dropped: ${dropped}`);
});
