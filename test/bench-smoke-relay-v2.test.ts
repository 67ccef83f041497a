import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { positive, readResults, runBench } from "./helpers/bench-run.js";

// The relay-v2 suite's smoke run (see bench-smoke.test.ts): each row ran, at a size that
// only shows the suite works, and what the relays delivered is whole.

type Report = {
  mode: string;
  rows: Record<
    string,
    {
      relay: { events: number; eventsPerSecond: number; extraRecords: number };
      sqlBound: { eventsPerSecond: number };
      kafkaBound: { eventsPerSecond: number };
    }
  >;
  twoInstances: { pairs: { one: number; two: number; extraRecords: number }[] };
  leaderless: {
    healthyEvents: number;
    backlog: number;
    lost: number;
    reordered: number;
    duplicated: number;
    malformed: number;
    deadLettered: number;
  };
  scaling: { runs: { instances: number; eventsPerSecond: number; extraRecords: number }[] };
};

test("npm run bench -- --only=relay-v2 --smoke: every row runs, and the leader-less partition loses and reorders nothing", {
  timeout: 280_000,
}, async () => {
  const dir = await mkdtemp(join(tmpdir(), "lpa-bench-smoke-"));
  try {
    const run = await runBench(["--only=relay-v2", "--smoke"], dir);
    assert.equal(run.code, 0, `the bench failed:\n${run.tail}`);
    const report = await readResults<Report>(join(dir, "relay-v2-smoke.json"));
    assert.equal(report.mode, "smoke");
    assert.deepEqual(Object.keys(report.rows).sort(), ["stale-10", "stale-1000", "stale-wide"]);
    for (const [name, row] of Object.entries(report.rows)) {
      assert.deepEqual([row.relay.events, row.relay.extraRecords], [2000, 0], name);
      assert.ok(
        positive(row.relay.eventsPerSecond) &&
          positive(row.sqlBound.eventsPerSecond) &&
          positive(row.kafkaBound.eventsPerSecond),
        name,
      );
    }
    assert.equal(report.twoInstances.pairs.length, 1);
    assert.ok(report.twoInstances.pairs.every((p) => positive(p.one) && positive(p.two) && p.extraRecords === 0));

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
    assert.ok(report.scaling.runs.every((s) => positive(s.eventsPerSecond) && s.extraRecords === 0));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
