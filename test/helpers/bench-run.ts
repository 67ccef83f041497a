import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { withParentDeathSignal } from "../../tools/parent-death.js";

// Runs the benchmark (`npm run bench -- ARGS`, i.e. bench/run.ts) for the smoke tests.

const root = new URL("../..", import.meta.url).pathname;

/**
 * `bench/run.ts ARGS` from the sources, results in `dir`; resolves with its exit code and the
 * end of its output. Under setpriv's parent-death signal where it exists, so that a test
 * process the runner kills (its per-file timeout) takes the bench down with it, and the
 * bench's own SIGTERM handler stops what it started.
 */
export function runBench(args: string[], dir: string): Promise<{ code: number | null; tail: string }> {
  const command = [process.execPath, "--import", "tsx", "bench/run.ts", ...args];
  return new Promise((resolve, reject) => {
    const [file, fileArgs] = withParentDeathSignal(command, "TERM");
    const child = spawn(file, fileArgs, {
      cwd: root,
      // From the sources: the test suite does not build dist/.
      env: { ...process.env, BENCH_BINARIES: "tsx", BENCH_RESULTS_DIR: dir },
      stdio: ["ignore", "pipe", "pipe"],
    });
    // Only the end is kept: enough to say where a failing run stopped.
    let tail = "";
    const keep = (chunk: Buffer) => {
      tail = (tail + chunk.toString()).slice(-20_000);
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, tail }));
  });
}

export async function readResults<T>(path: string): Promise<T> {
  return JSON.parse(await readFile(path, "utf8")) as T;
}

export const positive = (n: unknown): boolean => typeof n === "number" && Number.isFinite(n) && n > 0;
