import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { Kafka, logLevel } from "kafkajs";
import { withParentDeathSignal } from "../tools/parent-death.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { poll } from "./helpers/poll.js";
import { freePort } from "./helpers/ports.js";

// `make run`'s supervisor (scripts/run-local.ts), as a user at a terminal meets it: the
// grpc-server, the retranslator and a local broker start, a package created over REST reaches
// the broker, and Ctrl-C (SIGINT to the whole foreground process group) stops everything
// gracefully: each binary drains once, none is told twice, and the run exits 0. A binary that
// dies stops the others the same way, and the run fails.
//
// The supervisor runs under setpriv's parent-death signal where it exists, so that a test
// process the runner kills takes it (and, through theirs, the binaries and broker) down too.

const root = new URL("..", import.meta.url).pathname;
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase();
});
after(async () => {
  await db.drop();
});

async function count(table: "package_event" | "package_event_dead_letter"): Promise<number> {
  const r = (await db.db.raw(`SELECT count(*)::int AS n FROM ${table}`)) as { rows: { n: number }[] };
  return r.rows[0]!.n;
}

/** Records on `topic` (the sum of its partitions' high watermarks). */
async function recordsOn(brokers: string, topic: string): Promise<number> {
  const admin = new Kafka({ clientId: "run-local-test", brokers: [brokers], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    return (await admin.fetchTopicOffsets(topic)).reduce((sum, p) => sum + Number(p.high), 0);
  } finally {
    await admin.disconnect();
  }
}

interface Supervisor {
  child: ChildProcess;
  ports: { gateway: number };
  output: () => string;
  /** Exit code and signal once the supervisor has closed. */
  closed: Promise<[number | null, NodeJS.Signals | null]>;
  /** The binaries' JSON log lines that say `msg`, from the binary `name`. */
  said: (name: string, msg: string) => number;
  /** On a failure: what a user at the terminal would do, Ctrl-C three times, then SIGKILL. */
  stop: () => Promise<void>;
}

/** `make run`'s supervisor, with the binaries from their sources, until both are ready. */
async function startSupervisor(): Promise<Supervisor> {
  const [grpc, gateway, status, metrics, relayStatus] = [
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
    await freePort(),
  ];
  const command = [process.execPath, "--import", "tsx", "scripts/run-local.ts"];
  const [file, args] = withParentDeathSignal(command, "KILL");
  const child = spawn(file, args, {
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
    // Its own process group, as a terminal's foreground job has: a Ctrl-C goes to the group.
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
  });
  // Both streams for diagnostics and the supervisor's own lines (stderr); the binaries'
  // JSON lines from stdout alone, where a chunk of stderr cannot land inside one.
  let output = "";
  let stdout = "";
  child.stdout!.on("data", (chunk: Buffer) => {
    output += chunk.toString();
    stdout += chunk.toString();
  });
  child.stderr!.on("data", (chunk: Buffer) => {
    output += chunk.toString();
  });
  const closed = new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once("close", (code, signal) => resolve([code, signal])),
  );
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, s);
    } catch {
      // Already gone.
    }
  };
  const supervisor: Supervisor = {
    child,
    ports: { gateway },
    output: () => output,
    closed,
    // Whole lines only (it is also read while output is still arriving). Two binaries share
    // the pipe, and a write above PIPE_BUF may interleave with the other's: such a line is
    // skipped, not fatal; the lines counted here are small writes at shutdown.
    said: (name, msg) =>
      stdout
        .split("\n")
        .slice(0, -1)
        .filter((l) => l.startsWith("{"))
        .flatMap((l) => {
          try {
            return [JSON.parse(l) as { name?: string; msg?: string }];
          } catch {
            return [];
          }
        })
        .filter((m) => m.name === name && m.msg === msg).length,
    // The supervisor's third signal SIGKILLs each binary's group (a binary whose event loop is
    // stuck never runs its SIGTERM handler), then the supervisor itself goes.
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      for (let i = 0; i < 3; i++) {
        signal("SIGINT");
        await new Promise((r) => setTimeout(r, 200));
      }
      await Promise.race([closed, new Promise((r) => setTimeout(r, 3000).unref())]);
      signal("SIGKILL");
    },
  };
  try {
    const ready = async (port: number) => {
      try {
        return (await fetch(`http://127.0.0.1:${port}/ready`)).status;
      } catch {
        return 0;
      }
    };
    for (const [binary, port] of [
      ["grpc-server", status],
      ["retranslator", relayStatus],
    ] as const) {
      await poll(
        `the ${binary} to be ready`,
        () => ready(port),
        (s) => s === 200,
        90_000,
        200,
      );
    }
  } catch (err) {
    await supervisor.stop();
    throw err;
  }
  return supervisor;
}

/** Until the supervisor has closed, or 60 s (a stop that hangs is what these tests are for). */
async function closedWithin60s(supervisor: Supervisor): Promise<[number | null, NodeJS.Signals | null]> {
  const timer = new Promise<"hung">((resolve) => setTimeout(() => resolve("hung"), 60_000).unref());
  const outcome = await Promise.race([supervisor.closed, timer]);
  assert.notEqual(outcome, "hung", `not stopped within 60 s:\n${supervisor.output()}`);
  return outcome as [number | null, NodeJS.Signals | null];
}

async function create(supervisor: Supervisor, title: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${supervisor.ports.gateway}/v1/packages`, {
    method: "POST",
    body: JSON.stringify({ Title: title, Material: "wood", MaximumVolume: 1, Reusable: true }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  return ((await res.json()) as { ID: string }).ID;
}

/** Events the retranslator left leased: none, once it has stopped as it should. */
async function leased(): Promise<number> {
  const r = (await db.db.raw(`SELECT count(*)::int AS n FROM package_event WHERE locked_by IS NOT NULL`)) as {
    rows: { n: number }[];
  };
  return r.rows[0]!.n;
}

const grpcServer = "logistic-package-api/grpc-server";
const retranslator = "logistic-package-api/retranslator";

test("make run: a create reaches the broker, and Ctrl-C stops every process gracefully, once", {
  timeout: 240_000,
}, async () => {
  const supervisor = await startSupervisor();
  try {
    await create(supervisor, "first");
    // Acknowledged (the relay deleted its event), not dead-lettered, and on the topic.
    await poll(
      "the first event to be relayed",
      () => count("package_event"),
      (n) => n === 0,
      30_000,
      50,
    );
    assert.equal(await count("package_event_dead_letter"), 0);
    const broker = /local Kafka-protocol broker at (\S+) \(topic (\S+)\)/.exec(supervisor.output());
    assert.ok(broker, `the supervisor names its broker:\n${supervisor.output()}`);
    assert.equal(await recordsOn(broker[1]!, broker[2]!), 1);

    await create(supervisor, "second");
    process.kill(-supervisor.child.pid!, "SIGINT");
    assert.deepEqual(await closedWithin60s(supervisor), [0, null], supervisor.output());
  } finally {
    await supervisor.stop();
  }
  for (const name of [grpcServer, retranslator]) {
    assert.equal(supervisor.said(name, "shutting down"), 1, `${name} asked to stop once:\n${supervisor.output()}`);
    assert.equal(
      supervisor.said(name, "second signal: exiting now"),
      0,
      `${name} was not told twice:\n${supervisor.output()}`,
    );
  }
  // Nothing left leased behind: the second event was either relayed or given back.
  assert.equal(await leased(), 0);
});

test("make run: a binary that dies (kill -9) stops the others gracefully, and the run fails naming it", {
  timeout: 240_000,
}, async () => {
  const supervisor = await startSupervisor();
  try {
    await create(supervisor, "before the crash");
    await poll(
      "the event to be relayed",
      () => count("package_event"),
      (n) => n === 0,
      30_000,
      50,
    );
    // The grpc-server is a child of the supervisor (setpriv execs node), in a group of its own.
    const grpcPid = childPidRunning(supervisor.child.pid!, "cmd/grpc-server/main.ts");
    process.kill(grpcPid, "SIGKILL");
    assert.deepEqual(await closedWithin60s(supervisor), [1, null], supervisor.output());
  } finally {
    await supervisor.stop();
  }
  assert.match(supervisor.output(), /run: grpc-server exited \(SIGKILL\); stopping the others/);
  assert.equal(supervisor.said(retranslator, "shutting down"), 1, supervisor.output());
  assert.equal(supervisor.said(retranslator, "second signal: exiting now"), 0, supervisor.output());
  assert.equal(await leased(), 0, "the retranslator left nothing leased");
});

/** The pid of `parent`'s child whose command line holds `entry`. */
function childPidRunning(parent: number, entry: string): number {
  const pids = readdirSync("/proc")
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        // "pid (comm) state ppid …": the comm may hold spaces, so read after its ")".
        const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
        const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        return ppid === parent && readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").includes(entry);
      } catch {
        return false; // Gone while we looked.
      }
    })
    .map(Number);
  assert.equal(pids.length, 1, `one child of ${parent} runs ${entry}: ${pids.join(", ")}`);
  return pids[0]!;
}

test("make run: a binary stuck in its event loop (SIGSTOP) is killed at the third Ctrl-C; the other drains at the first", {
  timeout: 240_000,
}, async () => {
  const supervisor = await startSupervisor();
  const ctrlC = () => process.kill(-supervisor.child.pid!, "SIGINT");
  let grpcPid: number | undefined;
  try {
    grpcPid = childPidRunning(supervisor.child.pid!, "cmd/grpc-server/main.ts");
    await create(supervisor, "before the hang");
    process.kill(grpcPid, "SIGSTOP");
    ctrlC();
    // The retranslator drains and stops; the stopped grpc-server cannot answer.
    await poll(
      "the retranslator to stop",
      async () => supervisor.said(retranslator, "stopped"),
      (n) => n === 1,
      60_000,
    );
    assert.equal(supervisor.child.exitCode, null, "the supervisor waits for the grpc-server");
    ctrlC();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(supervisor.child.exitCode, null, "a second Ctrl-C asks again; a stopped process cannot answer");
    ctrlC();
    // The third SIGKILLs the grpc-server's group; the supervisor then stops the broker and fails.
    assert.deepEqual(await closedWithin60s(supervisor), [1, null], supervisor.output());
  } finally {
    await supervisor.stop();
    try {
      if (grpcPid !== undefined) process.kill(grpcPid, "SIGKILL");
    } catch {
      // Gone, as it should be.
    }
  }
  assert.throws(() => process.kill(grpcPid!, 0), /ESRCH/, "the grpc-server is gone");
  assert.equal(supervisor.said(retranslator, "shutting down"), 1, supervisor.output());
  assert.equal(supervisor.said(retranslator, "second signal: exiting now"), 0, supervisor.output());
  assert.equal(supervisor.said(grpcServer, "shutting down"), 0, "the grpc-server never ran again");
  assert.equal(await leased(), 0, "the retranslator left nothing leased");
});
