// `make run`'s supervisor: starts the binaries in the foreground with one
// set of ports and, when KAFKA_BROKERS is not set, a local Kafka-protocol
// broker (librdkafka's mock cluster: nothing is kept across runs; production
// uses real Apache Kafka, see deploy/). Ctrl-C / SIGTERM stops the binaries
// gracefully (they drain), then the broker.
import { type ChildProcess, spawn } from "node:child_process";
import { type KafkaMock, startKafkaMock } from "../tools/kafka-mock/kafka-mock.js";

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
const children = new Map<string, ChildProcess>();
for (const binary of ["grpc-server", "retranslator"]) {
  const child = spawn(process.execPath, [`dist/cmd/${binary}/main.js`], { env, stdio: "inherit" });
  children.set(binary, child);
}

let stopping = false;
const stop = (signal: NodeJS.Signals) => {
  if (stopping) {
    for (const child of children.values()) child.kill("SIGKILL");
    return;
  }
  stopping = true;
  for (const child of children.values()) child.kill(signal);
};
process.on("SIGINT", () => stop("SIGTERM"));
process.on("SIGTERM", () => stop("SIGTERM"));

const exits = [...children].map(
  ([name, child]) =>
    new Promise<number>((resolve) => {
      child.on("exit", (code, signal) => {
        if (!stopping) {
          console.error(`run: ${name} exited (${code ?? signal}); stopping the others`);
          stop("SIGTERM");
        }
        resolve(code ?? 1);
      });
    }),
);
const codes = await Promise.all(exits);
await broker?.stop();
process.exit(codes.every((c) => c === 0) ? 0 : 1);
