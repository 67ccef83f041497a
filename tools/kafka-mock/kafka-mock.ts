// A local Kafka-protocol cluster (tests and `make run`): spawns tools/kafka-mock/bin/kafka-mock
// (librdkafka's mock cluster) and drives it over its stdin/stdout line protocol.
//
// Limits of the librdkafka 2.0.2 mock (the stock build): it reports controller
// id 0, so kafkajs admin.createTopics and the kafkajs idempotent producer do not
// work against it. Create topics with createTopic() (auto-create also works: 4
// partitions). The "next" build (below) takes CreateTopics from a client and
// checks an idempotent producer's sequence numbers as Kafka does.

import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { execFile, spawn } from "node:child_process";
import { statSync } from "node:fs";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

export interface KafkaMock {
  /** Bootstrap addresses, e.g. ["127.0.0.1:39217"]; broker ids are 1..N in this order. */
  brokers: string[];
  createTopic(name: string, partitions: number): Promise<void>;
  brokerDown(id: number): Promise<void>;
  brokerUp(id: number): Promise<void>;
  /** The next `count` requests with this API key (0 = Produce) fail with these codes (one code is repeated). */
  pushErrors(apiKey: number, count: number, errorCodes: number[]): Promise<void>;
  setRtt(id: number, ms: number): Promise<void>;
  /** Moves a partition's leadership to broker `id`, or with -1 leaves it without a leader (a broker restarting). */
  setPartitionLeader(topic: string, partition: number, id: number): Promise<void>;
  /**
   * Whether a metadata request creates an unknown topic (a broker's
   * auto.create.topics.enable; on at start). The "next" build only.
   */
  setAutoCreateTopics(enabled: boolean): Promise<void>;
  stop(): Promise<void>;
}

const repoRoot = fileURLToPath(new URL("../../", import.meta.url));
const binaryPath = fileURLToPath(new URL("../../tools/kafka-mock/bin/kafka-mock", import.meta.url));
const buildScript = fileURLToPath(new URL("../../scripts/build-kafka-mock.sh", import.meta.url));
const sourcePath = fileURLToPath(new URL("../../tools/kafka-mock/kafka-mock.c", import.meta.url));

const STARTUP_TIMEOUT_MS = 10_000;
const COMMAND_TIMEOUT_MS = 10_000;
const STOP_GRACE_MS = 5_000;

function mtimeMs(path: string): number | undefined {
  try {
    return statSync(path).mtimeMs;
  } catch {
    return undefined;
  }
}

/** Build scripts in progress, by script: concurrent starts wait for one build; a failed one may be tried again. */
const builds = new Map<string, Promise<void>>();

function runBuild(script: string, what: string): Promise<void> {
  let build = builds.get(script);
  if (build === undefined) {
    build = promisify(execFile)("bash", [script], { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024 }).then(
      () => undefined,
      (err: unknown) => {
        builds.delete(script);
        const stderr = (err as { stderr?: string }).stderr ?? "";
        throw new Error(`building ${what} failed: ${String(err)}\n${stderr}`);
      },
    );
    builds.set(script, build);
  }
  return build;
}

/** Runs scripts/build-kafka-mock.sh when the binary is missing or older than its source. */
function ensureBinary(): Promise<void> {
  const built = mtimeMs(binaryPath);
  const source = mtimeMs(sourcePath);
  if (built !== undefined && (source === undefined || source <= built)) return Promise.resolve();
  return runBuild(buildScript, "kafka-mock");
}

const nextBinaryPath = fileURLToPath(new URL("../../tools/kafka-mock/bin/kafka-mock-next", import.meta.url));
const nextBuildScript = fileURLToPath(new URL("../../scripts/build-kafka-mock-next.sh", import.meta.url));

/** Runs scripts/build-kafka-mock-next.sh, which returns at once when its binary is up to date. */
function ensureNextBinary(): Promise<void> {
  return runBuild(nextBuildScript, "kafka-mock-next");
}

/**
 * Which build of the program: "stock" links Debian's librdkafka 2.0.2 (every
 * test's broker but those of @platformatic/kafka); "next" links librdkafka
 * 2.12.0 with librdkafka-2.12.0-mock-fixes.patch (scripts/build-kafka-mock-next.sh),
 * which @platformatic/kafka needs (the stock build refuses that client at its
 * first request) and which lets a client create topics.
 */
export type KafkaMockBuild = "stock" | "next";

export async function startKafkaMock(opts: { brokers?: number; build?: KafkaMockBuild } = {}): Promise<KafkaMock> {
  const brokerCount = opts.brokers ?? 1;
  if (!Number.isInteger(brokerCount) || brokerCount < 1) {
    throw new Error(`startKafkaMock: brokers must be a positive integer, got ${brokerCount}`);
  }
  const next = opts.build === "next";
  await (next ? ensureNextBinary() : ensureBinary());
  const program = next ? nextBinaryPath : binaryPath;

  const child: ChildProcessWithoutNullStreams = spawn(program, ["--brokers", String(brokerCount)], {
    cwd: repoRoot,
    stdio: ["pipe", "pipe", "pipe"],
    // A process group of its own, so that a terminal's Ctrl-C aimed at its owner (make run's
    // supervisor) does not take the broker away while the binaries drain. It still ends with
    // its owner: the program sets its own parent-death signal, and EOF on stdin quits it.
    detached: true,
  });
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-8192);
  });
  // A write after the child died must not crash the test process.
  child.stdin.on("error", () => {});

  let exited = false;
  const exitPromise = new Promise<void>((resolve) => {
    const done = (): void => {
      exited = true;
      resolve();
    };
    child.once("exit", done);
    // A failed spawn (e.g. ENOENT) emits 'error' and no 'exit'.
    child.once("error", () => {
      if (child.pid === undefined) done();
    });
  });

  // Lines from stdout go to whoever waits for the next one.
  const waiters: Array<{ resolve: (line: string) => void; reject: (err: Error) => void }> = [];
  let closedError: Error | undefined;
  const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
  rl.on("line", (line) => {
    const w = waiters.shift();
    if (w) w.resolve(line);
    else stderr += `\n[kafka-mock: unexpected stdout line] ${line}`;
  });
  const failAll = (err: Error): void => {
    closedError ??= err;
    for (const w of waiters.splice(0)) w.reject(closedError);
  };
  rl.on("close", () => {
    // Report once the process is gone, so the exit status and all of stderr are known.
    void exitPromise.then(() =>
      failAll(new Error(`kafka-mock exited (code ${child.exitCode}, signal ${child.signalCode}); stderr:\n${stderr}`)),
    );
  });
  child.once("error", (err) => failAll(new Error(`kafka-mock failed to start: ${err.message}\n${stderr}`)));

  function nextLine(timeoutMs: number, what: string): Promise<string> {
    if (closedError) return Promise.reject(closedError);
    return new Promise<string>((resolve, reject) => {
      const waiter = {
        resolve: (line: string) => {
          clearTimeout(timer);
          resolve(line);
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        const i = waiters.indexOf(waiter);
        if (i >= 0) waiters.splice(i, 1);
        reject(new Error(`kafka-mock: timed out after ${timeoutMs} ms waiting for ${what}; stderr:\n${stderr}`));
      }, timeoutMs);
      waiters.push(waiter);
    });
  }

  function kill(): Promise<void> {
    if (!exited) child.kill("SIGKILL");
    return exitPromise;
  }

  let brokers: string[];
  try {
    const first = await nextLine(STARTUP_TIMEOUT_MS, "the BOOTSTRAP line");
    const m = /^BOOTSTRAP (\S+)$/.exec(first);
    if (!m?.[1]) throw new Error(`kafka-mock: expected "BOOTSTRAP host:port,...", got ${JSON.stringify(first)}`);
    brokers = m[1].split(",");
  } catch (err) {
    await kill();
    throw err;
  }

  // One command in flight at a time: each command waits for the previous one.
  let chain: Promise<unknown> = Promise.resolve();
  let stopped = false;

  function command(line: string): Promise<void> {
    if (/[\r\n]/.test(line)) return Promise.reject(new Error(`kafka-mock: command contains a newline: ${line}`));
    const run = async (): Promise<void> => {
      if (stopped) throw new Error(`kafka-mock: already stopped (command: ${line})`);
      if (closedError) throw closedError;
      const reply = nextLine(COMMAND_TIMEOUT_MS, `the reply to "${line}"`);
      child.stdin.write(`${line}\n`);
      const answer = await reply;
      if (answer === "OK") return;
      if (answer.startsWith("ERR")) throw new Error(`kafka-mock: "${line}" failed: ${answer.slice(3).trim()}`);
      throw new Error(`kafka-mock: unexpected reply to "${line}": ${JSON.stringify(answer)}`);
    };
    const result = chain.then(run, run);
    chain = result.catch(() => {});
    return result;
  }

  const checkId = (id: number): number => {
    if (!Number.isInteger(id) || id < 1 || id > brokerCount) {
      throw new Error(`kafka-mock: broker id must be 1..${brokerCount}, got ${id}`);
    }
    return id;
  };

  return {
    brokers,
    createTopic: async (name, partitions) => {
      if (!/^[A-Za-z0-9._-]+$/.test(name)) throw new Error(`kafka-mock: invalid topic name ${JSON.stringify(name)}`);
      return command(`create-topic ${name} ${partitions}`);
    },
    brokerDown: async (id) => command(`broker-down ${checkId(id)}`),
    brokerUp: async (id) => command(`broker-up ${checkId(id)}`),
    pushErrors: async (apiKey, count, errorCodes) => {
      if (errorCodes.length === 0) throw new Error("kafka-mock: pushErrors needs at least one error code");
      return command(`push-errors ${apiKey} ${count} ${errorCodes.join(" ")}`);
    },
    setRtt: async (id, ms) => command(`rtt ${checkId(id)} ${ms}`),
    setPartitionLeader: async (topic, partition, id) => {
      if (!/^[A-Za-z0-9._-]+$/.test(topic)) throw new Error(`kafka-mock: invalid topic name ${JSON.stringify(topic)}`);
      return command(`partition-leader ${topic} ${partition} ${id === -1 ? -1 : checkId(id)}`);
    },
    setAutoCreateTopics: async (enabled) => command(`auto-create ${enabled ? "on" : "off"}`),
    stop: async () => {
      if (stopped) return exitPromise;
      // Let queued commands finish, then ask the process to quit.
      await chain;
      stopped = true;
      if (!exited && !closedError) {
        // Consume the "OK" so it is not reported as an unexpected line.
        void nextLine(STOP_GRACE_MS, 'the reply to "quit"').catch(() => {});
        child.stdin.write("quit\n");
        child.stdin.end();
      }
      const timer = setTimeout(() => void kill(), STOP_GRACE_MS);
      await exitPromise;
      clearTimeout(timer);
      rl.close();
    },
  };
}
