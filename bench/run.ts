// npm run bench [-- --quick | --smoke] [--profile] [--only=drain,create,framework,e2e,memory,scale]
//                 [--set=retranslator.batchSize=2000] [--events=N] [--packages=N]
// npm run bench -- --only=relay-v2 [--quick | --smoke]   (the relay's stale-statistics, instances, leader-less partition and scaling rows)
// npm run bench -- --only=kafka-clients [--quick]   (kafkajs against @platformatic/kafka, alone and in the relay)
//
// Measures the relay, the create RPC, end-to-end latency, memory and scaling,
// each beside a raw bound measured in the same run, on this machine, against
// the local PostgreSQL and the librdkafka mock broker; prints progress and a
// table, and writes bench/results/latest.json. See docs/performance.md.
//
// This file only sets the environment and then loads the suite: the test
// helpers it reuses read TEST_DATABASE_TEMPLATE when they are imported.

import { parse as parseYaml } from "yaml";

const args = process.argv.slice(2);
// The rows of issue "Relay v2" (docs/relay.md) run on their own: --only=relay-v2 [--quick | --smoke].
const relayV2 = args.includes("--only=relay-v2");
const kafkaClients = args.includes("--only=kafka-clients");
const known = ["drain", "create", "framework", "e2e", "memory", "scale"] as const;
let only: (typeof known)[number][] = [...known];
const overrides: Record<string, unknown> = {};
const sizes: { events?: number; packages?: number } = {};
for (const arg of args) {
  if (["--quick", "--smoke", "--profile", "--only=relay-v2", "--only=kafka-clients"].includes(arg)) continue;
  const num = /^--(events|packages)=(\d+)$/.exec(arg);
  if (num) {
    // Experiments: the relay drain's size and spread (defaults: see bench/suite.ts).
    sizes[num[1] as "events" | "packages"] = Number(num[2]);
    continue;
  }
  const set = /^--set=([a-zA-Z]+(?:\.[a-zA-Z]+)+)=(.*)$/.exec(arg);
  if (set) {
    // --set=retranslator.batchSize=2000: the value is read as YAML (numbers, booleans).
    const path = set[1]!.split(".");
    let node = overrides;
    for (const key of path.slice(0, -1)) node = (node[key] ??= {}) as Record<string, unknown>;
    node[path.at(-1)!] = parseYaml(set[2]!) as unknown;
    continue;
  }
  const m = /^--only=(.+)$/.exec(arg);
  if (m) {
    const names = m[1]!.split(",");
    const bad = names.filter((n) => !(known as readonly string[]).includes(n));
    if (bad.length > 0) {
      process.stderr.write(`bench: unknown scenario(s) ${bad.join(", ")}; known: ${known.join(", ")}\n`);
      process.exit(2);
    }
    only = names as typeof only;
    continue;
  }
  process.stderr.write(
    `bench: unknown argument ${arg}\nusage: npm run bench -- [--quick | --smoke] [--profile] [--only=${known.join(",")}] [--set=section.key=value] [--events=N] [--packages=N]\n`,
  );
  process.exit(2);
}

// A template of our own, named like the test runs' (lpa_tpl_<pid>), so that
// test/setup/prepare-template.ts elsewhere removes it only once we are gone.
process.env.TEST_DATABASE_TEMPLATE = `lpa_tpl_${process.pid}`;
process.env.TEST_DATABASE_ADMIN_URL ??= "postgres://postgres:postgres@127.0.0.1:5432/postgres";
// No telemetry exporters (the SDK would try to reach a collector).
process.env.OTEL_METRICS_EXPORTER = "none";
process.env.OTEL_LOGS_EXPORTER = "none";
process.env.OTEL_TRACES_EXPORTER = "none";

// --smoke: every step at a tiny size, results in latest-smoke.json (see bench/suite.ts).
const mode = args.includes("--smoke") ? "smoke" : args.includes("--quick") ? "quick" : "full";

if (kafkaClients) {
  const { runKafkaClients } = await import("./kafka-clients-suite.js");
  if (mode === "smoke") {
    process.stderr.write(
      "bench: --smoke is not available for --only=kafka-clients (it compares two clients' speed, which a tiny run cannot show)\n",
    );
    process.exit(2);
  }
  process.exitCode = await runKafkaClients({ quick: mode === "quick" });
} else if (relayV2) {
  // Children from the sources unless told otherwise: this run needs no build.
  process.env.BENCH_BINARIES ??= "tsx";
  const { runRelayV2 } = await import("./relay-v2-suite.js");
  process.exitCode = await runRelayV2({ mode });
} else {
  const { runSuite } = await import("./suite.js");
  process.exitCode = await runSuite({
    mode,
    profile: args.includes("--profile"),
    only,
    overrides,
    ...sizes,
  });
}
