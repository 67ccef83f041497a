import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { positive, readResults, runBench } from "./helpers/bench-run.js";

// The benchmark is how the project's performance targets are judged, and nothing else runs
// its code: a change to a config key, a statement or a binary's start-up could break it
// unnoticed until the next measurement. `--smoke` runs every step of the main suite at a tiny
// size (the relay-v2 suite: bench-smoke-relay-v2.test.ts; one per file, as the runner's
// 300 s timeout is per file). What is asserted is that each step ran and that what the relays
// delivered is whole: none lost or dead-lettered (the bench itself fails on those), none
// copied; never a figure's size, which at this size and beside the other tests means nothing.

type Results = {
  relayDrain: {
    relay: { events: number; eventsPerSecond: number; extraRecords: number };
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
  scale: { two: { events: number; instances: number; eventsPerSecond: number; extraRecords: number } };
};

test("npm run bench -- --smoke: every scenario runs, and each drain delivered every event once", {
  timeout: 280_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), "lpa-bench-smoke-"));
  try {
    const run = await runBench(["--smoke"], dir);
    assert.equal(run.code, 0, `the bench failed:\n${run.tail}`);
    const report = await readResults<{ mode: string; results: Results }>(join(dir, "latest-smoke.json"));
    assert.equal(report.mode, "smoke");
    const r = report.results;

    assert.deepEqual([r.relayDrain.relay.events, r.relayDrain.relay.extraRecords], [2000, 0]);
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
    const protocols = [...new Set(r.framework.map((f) => f.protocol))];
    for (const p of ["native gRPC", "Connect JSON", "Connect (binary)", "gRPC-Web"]) {
      assert.ok(
        protocols.some((name) => name.startsWith(p)),
        `a framework ceiling row for ${p}: ${protocols.join("; ")}`,
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

    assert.deepEqual([r.scale.two.events, r.scale.two.instances, r.scale.two.extraRecords], [2000, 2, 0]);
    assert.ok(positive(r.scale.two.eventsPerSecond));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
