import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";

// The benchmark is how the project's performance targets are judged, and nothing else runs
// its code: a change to a config key, a statement or a binary's start-up could break it
// unnoticed until the next measurement. `--smoke` runs every step of both suites at a tiny
// size. What is asserted is that each step ran and that what the relays delivered is whole
// (the bench itself fails on a lost or dead-lettered event); never a figure's size, which at
// this size and beside the other tests means nothing.

const root = new URL("..", import.meta.url).pathname;

/** Runs `npm run bench -- ARGS` (as bench/run.ts) with results in `dir`; its exit code and last output. */
function runBench(args: string[], dir: string): Promise<{ code: number | null; tail: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "bench/run.ts", ...args], {
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

async function readResults(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
}

const positive = (n: unknown) => typeof n === "number" && Number.isFinite(n) && n > 0;

test("npm run bench -- --smoke: every scenario runs, and each drain delivered every event", {
  timeout: 600_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), "lpa-bench-smoke-"));
  try {
    const run = await runBench(["--smoke"], dir);
    assert.equal(run.code, 0, `the bench failed:\n${run.tail}`);
    const report = await readResults(join(dir, "latest-smoke.json"));
    assert.equal(report.mode, "smoke");
    type Results = {
      relayDrain: {
        relay: { events: number; eventsPerSecond: number };
        boundClaimDelete: { eventsPerSecond: number };
        boundKafka: { eventsPerSecond: number };
      };
      createRpc: { concurrency: number; grpc: { rps: number }; sql: { rps: number } }[];
      framework: { protocol: string; engine: string; load: { rps: number; errors: number } }[];
      endToEnd: {
        phase: string;
        listenNotify: boolean;
        serverSettings?: string;
        achievedRate: number;
        latency: { p99Ms: number };
      }[];
      restingMemory: { binary: string; rssMiB: number }[];
      scale: { two: { events: number; instances: number; eventsPerSecond: number } };
    };
    const r = report.results as Results;

    assert.equal(r.relayDrain.relay.events, 2000);
    assert.ok(positive(r.relayDrain.relay.eventsPerSecond));
    assert.ok(
      positive(r.relayDrain.boundClaimDelete.eventsPerSecond) && positive(r.relayDrain.boundKafka.eventsPerSecond),
    );

    assert.deepEqual(
      r.createRpc.map((c) => c.concurrency),
      [16],
    );
    assert.ok(r.createRpc.every((c) => positive(c.grpc.rps) && positive(c.sql.rps)));

    // A ceiling row for each protocol, so that a regression of any one shows.
    const protocols = new Set(r.framework.map((f) => f.protocol));
    for (const p of ["native gRPC", "Connect JSON", "Connect (binary)", "gRPC-Web"]) {
      assert.ok(
        [...protocols].some((name) => name.startsWith(p)),
        `a framework ceiling row for ${p}: ${[...protocols].join("; ")}`,
      );
    }
    assert.ok(r.framework.every((f) => positive(f.load.rps) && f.load.errors === 0));

    // The three end-to-end passes (notify on, notify off, the linger variant), each with a target phase.
    const targets = r.endToEnd.filter((p) => p.phase === "target");
    assert.deepEqual(
      targets.map((p) => [p.listenNotify, p.serverSettings !== undefined]),
      [
        [true, false],
        [false, false],
        [true, true],
      ],
    );
    assert.ok(r.endToEnd.every((p) => positive(p.achievedRate) && positive(p.latency.p99Ms)));

    assert.deepEqual(r.restingMemory.map((m) => m.binary).sort(), ["grpc-server", "retranslator"]);
    assert.ok(r.restingMemory.every((m) => positive(m.rssMiB)));

    assert.deepEqual([r.scale.two.events, r.scale.two.instances], [2000, 2]);
    assert.ok(positive(r.scale.two.eventsPerSecond));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("npm run bench -- --only=relay-v2 --smoke: every row runs, and the leader-less partition loses and reorders nothing", {
  timeout: 600_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), "lpa-bench-smoke-"));
  try {
    const run = await runBench(["--only=relay-v2", "--smoke"], dir);
    assert.equal(run.code, 0, `the bench failed:\n${run.tail}`);
    const report = (await readResults(join(dir, "relay-v2-smoke.json"))) as {
      mode: string;
      rows: Record<
        string,
        {
          relay: { events: number; eventsPerSecond: number };
          sqlBound: { eventsPerSecond: number };
          kafkaBound: { eventsPerSecond: number };
        }
      >;
      twoInstances: { pairs: { one: number; two: number }[] };
      leaderless: {
        healthyEvents: number;
        backlog: number;
        lost: number;
        reordered: number;
        duplicated: number;
        malformed: number;
        deadLettered: number;
      };
      scaling: { runs: { instances: number; eventsPerSecond: number }[] };
    };
    assert.equal(report.mode, "smoke");
    assert.deepEqual(Object.keys(report.rows).sort(), ["stale-10", "stale-1000", "stale-wide"]);
    for (const [name, row] of Object.entries(report.rows)) {
      assert.equal(row.relay.events, 2000, name);
      assert.ok(
        positive(row.relay.eventsPerSecond) &&
          positive(row.sqlBound.eventsPerSecond) &&
          positive(row.kafkaBound.eventsPerSecond),
        name,
      );
    }
    assert.equal(report.twoInstances.pairs.length, 1);
    assert.ok(report.twoInstances.pairs.every((p) => positive(p.one) && positive(p.two)));

    const l = report.leaderless;
    assert.ok(l.backlog > 0 && l.healthyEvents > 0);
    assert.deepEqual(
      { lost: l.lost, reordered: l.reordered, malformed: l.malformed, deadLettered: l.deadLettered },
      { lost: 0, reordered: 0, malformed: 0, deadLettered: 0 },
    );

    assert.deepEqual(
      report.scaling.runs.map((s) => s.instances),
      [1, 2],
    );
    assert.ok(report.scaling.runs.every((s) => positive(s.eventsPerSecond)));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
