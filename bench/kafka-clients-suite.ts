import { execFile } from "node:child_process";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { nextBinaryPath, startKafkaMock } from "../tools/kafka-mock/kafka-mock.js";
import { BATCH, PARTITIONS } from "./lib/kafka-client-producer.js";
import { gitInfo, loadAverage, machineInfo } from "./lib/machine.js";
import { root } from "./lib/procs.js";
import { fmtInt } from "./lib/stats.js";

// `npm run bench -- --only=kafka-clients [--quick]`: kafkajs (the relay's client,
// patched as installed) against @platformatic/kafka, each producing the relay's
// messages (toEventMessage: a PackageEvent value and five headers) in requests of
// 500 to 32 partitions, acks=all, one request at a time, alone in a process of its
// own, runs alternated. The broker is the same mock program built against
// librdkafka 2.12.0 with a fix to its ApiVersions v3 (scripts/build-kafka-mock-next.sh):
// the mock the tests use refuses @platformatic/kafka at its first request.
// A comparison of the clients, not yet of the relay behind the Sender interface
// (docs/relay.md, "Another Kafka client"). Results: bench/results/kafka-clients-<mode>.json.

const clients = ["kafkajs", "platformatic"] as const;

interface Run {
  client: (typeof clients)[number];
  records: number;
  recordsPerSecond: number;
  cpuMicrosPerRecord: number;
}

const median = (xs: readonly number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function runKafkaClients(options: { quick: boolean }): Promise<number> {
  const startedAt = new Date().toISOString();
  const log = (line: string) => process.stdout.write(`${line}\n`);
  const rounds = options.quick ? 3 : 5;
  const warmup = 5000;
  const measured = options.quick ? 20_000 : 100_000;
  log(`kafka clients bench: ${rounds} rounds, ${fmtInt(measured)} records each after ${fmtInt(warmup)}`);
  log("building the mock against librdkafka 2.12.0 (first time: a few minutes)");
  await promisify(execFile)("bash", [join(root, "scripts/build-kafka-mock-next.sh")], { cwd: root });
  const runs: Run[] = [];
  for (let round = 0; round < rounds; round++) {
    // Alternated, each on a fresh broker and topic, the first client of a round alternating too.
    const order = round % 2 === 0 ? clients : ([...clients].reverse() as unknown as typeof clients);
    for (const client of order) {
      const kafka = await startKafkaMock({ binary: nextBinaryPath });
      try {
        const topic = `clients-${round}-${client}`;
        await kafka.createTopic(topic, PARTITIONS);
        const { stdout } = await promisify(execFile)(
          process.execPath,
          [
            "--import",
            "tsx",
            "bench/lib/kafka-client-producer.ts",
            client,
            kafka.brokers[0]!,
            topic,
            String(warmup),
            String(measured),
          ],
          { cwd: root, maxBuffer: 1024 * 1024 },
        );
        const run = JSON.parse(stdout.trim().split("\n").at(-1)!) as Run;
        // As many records on the topic as were sent (its offsets): a client that dropped some must not look fast.
        const admin = new Kafka({ brokers: kafka.brokers, logLevel: logLevel.NOTHING }).admin();
        await admin.connect();
        const offsets = await admin.fetchTopicOffsets(topic);
        await admin.disconnect();
        const stored = offsets.reduce((sum, p) => sum + Number(p.high), 0);
        if (stored !== warmup + measured)
          throw new Error(`${client}: ${stored} of ${warmup + measured} records on the topic`);
        runs.push(run);
        log(
          `round ${round + 1} ${client}: ${fmtInt(run.recordsPerSecond)} records/s, ${run.cpuMicrosPerRecord} µs CPU per record`,
        );
      } finally {
        await kafka.stop();
      }
    }
  }
  const summary = Object.fromEntries(
    clients.map((c) => {
      const mine = runs.filter((r) => r.client === c);
      return [
        c,
        {
          recordsPerSecond: mine.map((r) => r.recordsPerSecond),
          cpuMicrosPerRecord: mine.map((r) => r.cpuMicrosPerRecord),
          medianRecordsPerSecond: median(mine.map((r) => r.recordsPerSecond)),
          medianCpuMicrosPerRecord: median(mine.map((r) => r.cpuMicrosPerRecord)),
        },
      ];
    }),
  );
  log("\n| client | records/s (runs) | median | CPU µs/record (runs) | median |\n|---|---|---|---|---|");
  for (const c of clients) {
    const s = summary[c]!;
    log(
      `| ${c} | ${s.recordsPerSecond.map(fmtInt).join(", ")} | ${fmtInt(s.medianRecordsPerSecond)} | ${s.cpuMicrosPerRecord.join(", ")} | ${s.medianCpuMicrosPerRecord} |`,
    );
  }
  const mode = options.quick ? "quick" : "full";
  const out = join(root, `bench/results/kafka-clients-${mode}.json`);
  await writeFile(
    out,
    `${JSON.stringify(
      {
        startedAt,
        // The broker of this run is not the tests' mock (machineInfo names that one).
        machine: {
          ...(await machineInfo()),
          broker:
            "tools/kafka-mock built against librdkafka 2.12.0 + tools/kafka-mock/librdkafka-2.12.0-apiversions-v3.patch",
        },
        git: gitInfo(),
        loadAverage: loadAverage(),
        shape: { warmup, measured, batch: BATCH, partitions: PARTITIONS, acks: "all", inFlight: 1 },
        broker:
          "tools/kafka-mock built against librdkafka 2.12.0 + tools/kafka-mock/librdkafka-2.12.0-apiversions-v3.patch",
        summary,
      },
      null,
      2,
    )}\n`,
  );
  log(`written to ${out}`);
  return 0;
}
