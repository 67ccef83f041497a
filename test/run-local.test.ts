import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, test } from "node:test";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { poll } from "./helpers/poll.js";
import { freePort } from "./helpers/ports.js";

// `make run`'s supervisor (scripts/run-local.ts), as a user at a terminal meets it: the
// grpc-server, the retranslator and a local broker start, a package created over REST reaches
// the broker, and Ctrl-C (SIGINT to the whole foreground process group) stops everything
// gracefully: each binary drains once, none is told twice, and the run exits 0.

const root = new URL("..", import.meta.url).pathname;
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db.drop();
});

async function outboxSize(): Promise<number> {
  const r = (await db.db.raw(`SELECT count(*)::int AS n FROM package_event`)) as { rows: { n: number }[] };
  return r.rows[0]!.n;
}

test("make run: a create reaches the broker, and Ctrl-C stops every process gracefully, once", {
  timeout: 180_000,
}, async () => {
  const [grpc, gateway, status, metrics, relayStatus] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const child = spawn(process.execPath, ["--import", "tsx", "scripts/run-local.ts"], {
    cwd: root,
    env: {
      ...process.env,
      DATABASE_URL: db.url,
      RUN_BINARIES: "tsx",
      GRPC_PORT: String(grpc),
      GATEWAY_PORT: String(gateway),
      STATUS_PORT: String(status),
      METRICS_PORT: String(metrics),
      RETRANSLATOR_METRICS_PORT: String(relayStatus),
      LOG_LEVEL: "info",
      KAFKA_BROKERS: "",
    },
    // Its own process group, as a terminal's foreground job has: the Ctrl-C below goes to the group.
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-200_000);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once("close", (code, signal) => resolve([code, signal])),
  );
  try {
    const ready = async (port: number) => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/ready`)).status;
      } catch {
        return 0;
      }
    };
    await poll(
      "the grpc-server to be ready",
      () => ready(status),
      (s) => s === 200,
      90_000,
      200,
    );
    await poll(
      "the retranslator to be ready",
      () => ready(relayStatus),
      (s) => s === 200,
      90_000,
      200,
    );

    const create = async (title: string) => {
      const res = await fetch(`http://127.0.0.1:${gateway}/v1/packages`, {
        method: "POST",
        body: JSON.stringify({ Title: title, Material: "wood", MaximumVolume: 1, Reusable: true }),
      });
      assert.equal(res.status, 200, await res.clone().text());
      return ((await res.json()) as { ID: string }).ID;
    };
    await create("first");
    // Published and acknowledged: the relay deleted its event.
    await poll("the first event to be relayed", outboxSize, (n) => n === 0, 30_000, 50);

    await create("second");
    process.kill(-child.pid!, "SIGINT");
    const [code, signal] = await closed;
    assert.deepEqual([code, signal], [0, null], output);
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // Already gone.
      }
    }
  }
  const lines = output.split("\n").filter((l) => l.startsWith("{"));
  const messages = lines.map((l) => JSON.parse(l) as { name?: string; msg?: string });
  const said = (name: string, msg: string) => messages.filter((m) => m.name === name && m.msg === msg).length;
  for (const name of ["logistic-package-api/grpc-server", "logistic-package-api/retranslator"]) {
    assert.equal(said(name, "shutting down"), 1, `${name} asked to stop once:\n${output}`);
    assert.equal(said(name, "second signal: exiting now"), 0, `${name} was not told twice:\n${output}`);
  }
  // Nothing left leased behind: the second event was either relayed or given back.
  const leased = (await db.db.raw(`SELECT count(*)::int AS n FROM package_event WHERE locked_by IS NOT NULL`)) as {
    rows: { n: number }[];
  };
  assert.equal(leased.rows[0]!.n, 0);
});
