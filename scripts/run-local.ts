// `make run`'s supervisor: starts the binaries in the foreground with one
// set of ports and, when KAFKA_BROKERS is not set, a local Kafka-protocol
// broker (librdkafka's mock cluster: nothing is kept across runs; production
// uses real Apache Kafka, see deploy/). Ctrl-C / SIGTERM stops the binaries
// gracefully (they drain), then the broker; a second Ctrl-C makes them exit at once, a
// third kills them.
// RUN_BINARIES=tsx runs them from their sources (the tests do; `make run` builds dist/).
import { type ChildProcess, spawn } from "node:child_process";
import { type KafkaMock, startKafkaMock } from "../tools/kafka-mock/kafka-mock.js";
import { withParentDeathSignal } from "../tools/parent-death.js";

const env: NodeJS.ProcessEnv = { ...process.env };
let broker: KafkaMock | undefined;
if (!env.KAFKA_BROKERS) {
  broker = await startKafkaMock();
  const topic = env.KAFKA_TOPIC ?? "omp-package-events";
  await broker.createTopic(topic, 12);
  env.KAFKA_BROKERS = broker.brokers.join(",");
  console.error(
    `run: local Kafka-protocol broker at ${env.KAFKA_BROKERS} (topic ${topic}); set KAFKA_BROKERS to use a real cluster`,
  );
}

// The compiled binaries (scripts/run.sh builds dist/ first), as the image runs them.
const fromSources = env.RUN_BINARIES === "tsx";
// Each binary in a process group of its own (detached): a terminal's Ctrl-C then reaches this
// supervisor alone, which asks each binary once. Sharing the terminal's group, each binary got
// the terminal's SIGINT and this one's SIGTERM, a second signal, and exited without draining.
// setpriv's parent-death signal stops them should this process be killed outright.
const children = new Map<string, ChildProcess>();
for (const binary of ["grpc-server", "retranslator"]) {
  const entry = fromSources ? ["--import", "tsx", `cmd/${binary}/main.ts`] : [`dist/cmd/${binary}/main.js`];
  const command = [process.execPath, ...entry];
  const [file, args] = withParentDeathSignal(command, "TERM");
  const child = spawn(file, args, { env, stdio: "inherit", detached: true });
  children.set(binary, child);
}

// Each Ctrl-C (or SIGTERM) asks a little harder: the first, drain and stop; the second, exit
// now (each binary's own handling of a second signal); after that, SIGKILL to each binary's
// group, for one whose event loop is stuck and so never runs its signal handler. `asked`
// counts what each binary has been sent, so that a binary already stopping because another
// exited is not told "exit now" by the user's first Ctrl-C.
const asked = new Map<ChildProcess, number>([...children.values()].map((c) => [c, 0]));
const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
let requests = 0;
let stoppingOthers = false;
const ask = (times: number): number => {
  let told = 0;
  for (const child of children.values()) {
    if (!running(child) || asked.get(child)! >= times) continue;
    asked.set(child, times);
    told += 1;
    if (times <= 2) child.kill("SIGTERM");
    else {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {
        // No pid (a spawn that failed): nothing to kill.
      }
    }
  }
  return told;
};
const onSignal = () => {
  requests += 1;
  if (ask(requests) === 0 && requests === 1) {
    console.error(
      [...children.values()].some(running)
        ? "run: already stopping (a binary exited); Ctrl-C again to make the others exit at once"
        : "run: the binaries have stopped; stopping the broker",
    );
  }
};
process.on("SIGINT", onSignal);
process.on("SIGTERM", onSignal);

const exits = [...children].map(
  ([name, child]) =>
    new Promise<number>((resolve) => {
      child.on("exit", (code, signal) => {
        if (requests === 0 && !stoppingOthers) {
          stoppingOthers = true;
          console.error(`run: ${name} exited (${code ?? signal}); stopping the others`);
          ask(1);
        }
        resolve(code ?? 1);
      });
    }),
);
const codes = await Promise.all(exits);
await broker?.stop();
process.exit(codes.every((c) => c === 0) ? 0 : 1);
