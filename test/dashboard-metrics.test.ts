// The Grafana dashboard may only query what the binaries really export: every
// metric name in every expression is checked against the /metrics output of a
// real grpc-server and a real retranslator, after traffic that fills them.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { grpc, packageApiClient, rpcError, type PackageApiClient } from "./helpers/grpc-client.js";
import { startKafkaMock, type KafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const topic = "dashboard-metrics-events";
const PREFIX = /logistic_package_api_[a-z0-9_]+/g;
const HISTOGRAM_PART = /_(bucket|sum|count)$/;
/** Labels Prometheus adds at scrape time (not in /metrics). */
const TARGET_LABELS = new Set(["instance", "job"]);

interface Target {
  panel: string;
  expr: string;
}

const dashboard = JSON.parse(readFileSync(`${root}deploy/grafana/dashboards/logistic-package-api.json`, "utf8")) as {
  panels: { title: string; type: string; targets?: { expr: string }[]; panels?: unknown[] }[];
};
const targets: Target[] = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })));

/** One /metrics page: family types, and the label names seen on each sample name. */
interface Exposition {
  types: Map<string, string>;
  samples: Map<string, Set<string>>;
}

function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const samples = new Map<string, Set<string>>();
  for (const line of text.split("\n")) {
    const type = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (type) {
      types.set(type[1]!, type[2]!);
      continue;
    }
    if (line.startsWith("#") || line.trim() === "") continue;
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+/.exec(line);
    if (!sample) continue;
    const labels = samples.get(sample[1]!) ?? new Set<string>();
    for (const m of (sample[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) labels.add(m[1]!);
    samples.set(sample[1]!, labels);
  }
  return { types, samples };
}

function merge(a: Exposition, b: Exposition): Exposition {
  return { types: new Map([...a.types, ...b.types]), samples: new Map([...a.samples, ...b.samples]) };
}

let db: TestDatabase;
let kafka: KafkaMock;
let server: TestServer;
let relay: TestRetranslator;
let client: PackageApiClient;
let exported: Exposition;

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

before(async () => {
  db = await createTestDatabase();
  kafka = await startKafkaMock();
  await kafka.createTopic(topic, 2);
  server = await startTestServer(db.url);
  relay = await startTestRetranslator(fastRetranslatorEnv(db.url, kafka.brokers, topic));
  client = packageApiClient(server.grpcAddress);

  // Traffic that gives the labelled families samples: a create (request counter and
  // latency histogram, a CUD event, an outbox event to publish) and a NotFound.
  await client.createPackageV1({ Title: "dashboard", Material: "cardboard", MaximumVolume: 1 });
  await rpcError(client.describePackageV1({ PackageID: "999999999" }), grpc.status.NOT_FOUND);
  // Until the event is acknowledged, so that the publish-latency histogram has a sample.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const m = /^logistic_package_api_retranslator_publish_latency_seconds_count (\S+)$/m.exec(await scrape(relay.ports.metrics));
    if (m && Number(m[1]) >= 1) break;
    assert.ok(Date.now() < deadline, "the retranslator published the event within 30 s");
    await new Promise((r) => setTimeout(r, 100));
  }
  exported = merge(parseExposition(await scrape(server.ports.metrics)), parseExposition(await scrape(relay.ports.metrics)));
});

after(async () => {
  client?.close();
  await relay?.stop();
  await server?.stop();
  await kafka?.stop();
  await db?.drop();
});

test("the dashboard has queries", () => {
  assert.ok(targets.length >= 15, `${targets.length} queries`);
  for (const t of targets) assert.match(t.expr, /logistic_package_api_/, `${t.panel}: ${t.expr}`);
});

test("every metric name in the dashboard is exported by the running binaries, with the right kind", () => {
  const problems: string[] = [];
  for (const { panel, expr } of targets) {
    for (const name of expr.match(PREFIX) ?? []) {
      const base = name.replace(HISTOGRAM_PART, "");
      if (base !== name && exported.types.get(base) === "histogram") {
        // A histogram series: its # TYPE line names the family, the sample line the series.
        if (!exported.samples.has(name)) problems.push(`${panel}: ${name} has no samples`);
        continue;
      }
      const type = exported.types.get(name);
      if (type === undefined) problems.push(`${panel}: ${name} is not exported (no # TYPE line)`);
      else if (type === "histogram") problems.push(`${panel}: ${name} is a histogram: query ${name}_bucket, _sum or _count`);
      else if (!exported.samples.has(name)) problems.push(`${panel}: ${name} has no sample line`);
    }
  }
  assert.deepEqual(problems, []);
});

test("counters and histogram series are queried through rate(), gauges as they are", () => {
  const problems: string[] = [];
  for (const { panel, expr } of targets) {
    for (const name of new Set(expr.match(PREFIX) ?? [])) {
      const base = name.replace(HISTOGRAM_PART, "");
      const type = exported.types.get(name) ?? exported.types.get(base);
      const inRate = new RegExp(`\\b(rate|increase)\\(\\s*${name}\\b`).test(expr);
      if ((type === "counter" || type === "histogram") && !inRate) problems.push(`${panel}: ${name} (${type}) outside rate(): ${expr}`);
      if (type === "gauge" && inRate) problems.push(`${panel}: rate() of the gauge ${name}: ${expr}`);
    }
    if (/histogram_quantile/.test(expr) && !/by \([^)]*\ble\b/.test(expr)) problems.push(`${panel}: histogram_quantile without "by (le)"`);
  }
  assert.deepEqual(problems, []);
});

test("the labels the dashboard groups and filters by exist on the metrics it queries", () => {
  const problems: string[] = [];
  for (const { panel, expr } of targets) {
    const names = [...new Set(expr.match(PREFIX) ?? [])];
    const available = new Set(names.flatMap((n) => [...(exported.samples.get(n) ?? [])]));
    const used = new Set<string>();
    for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g)) for (const l of m[1]!.split(",")) used.add(l.trim());
    for (const m of expr.matchAll(/\{([^}]*)\}/g)) {
      for (const l of m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)/g)) used.add(l[1]!);
    }
    for (const label of used) {
      if (label === "" || TARGET_LABELS.has(label)) continue;
      if (!available.has(label)) problems.push(`${panel}: label ${label} is on none of ${names.join(", ")}`);
    }
  }
  assert.deepEqual(problems, []);
});

test("every metric family of the service has a place on the dashboard", () => {
  const used = new Set(targets.flatMap((t) => (t.expr.match(PREFIX) ?? []).map((n) => n.replace(HISTOGRAM_PART, ""))));
  const families = [...exported.types.keys()].filter((n) => n.startsWith("logistic_package_api_"));
  assert.ok(families.length >= 14, `${families.length} families exported`);
  assert.deepEqual(families.filter((f) => !used.has(f)), [], "exported but not on the dashboard");
});

/** Runs a `node -e` healthcheck command (exec form minus "CMD") with `env`; resolves with the exit code. */
function runHealthcheck(command: string[], env: Record<string, string>): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, command.slice(1), { env: { PATH: process.env["PATH"] ?? "", ...env }, stdio: "ignore" });
    child.once("error", reject);
    child.once("exit", (code) => resolve(code));
  });
}

test("the image's and compose's healthchecks pass against the real binaries' /ready", async () => {
  const dockerfile = readFileSync(`${root}deploy/Dockerfile`, "utf8").replace(/\\\n/g, " ");
  const line = dockerfile.split("\n").find((l) => l.startsWith("HEALTHCHECK"));
  assert.ok(line, "the Dockerfile has a HEALTHCHECK");
  const image = JSON.parse(line.slice(line.indexOf("[", line.indexOf(" CMD ")))) as string[];
  const compose = parseYaml(readFileSync(`${root}deploy/docker-compose.yml`, "utf8")) as {
    services: Record<string, { healthcheck?: { test: string[] } }>;
  };
  const relayCheck = compose.services["retranslator"]!.healthcheck!.test.slice(1);
  assert.equal(await runHealthcheck(image, { STATUS_PORT: String(server.ports.status) }), 0, "grpc-server healthy");
  assert.equal(await runHealthcheck(relayCheck, { RETRANSLATOR_METRICS_PORT: String(relay.ports.metrics) }), 0, "retranslator healthy");
});
