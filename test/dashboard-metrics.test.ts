// The Grafana dashboard and the Prometheus alert rules may only query what the
// binaries really export: every metric name in every expression is checked against
// the /metrics output of a real grpc-server, retranslator and facade, after traffic
// that fills them.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { parse as parseYaml } from "yaml";
import { writeTokensFile } from "./helpers/config.js";
import { readFacadeMetric } from "./helpers/facade.js";
import { useFixture } from "./helpers/fixture.js";
import { poll } from "./helpers/poll.js";

const root = fileURLToPath(new URL("..", import.meta.url));
const topic = "dashboard-metrics-events";
/** The service's metrics and Node's default process metrics (prom-client). */
const PREFIX = /\b(?:logistic_package_api|nodejs|process)_[a-z0-9_]+/g;
const HAS_METRIC = new RegExp(PREFIX.source); // not global: no lastIndex state between tests
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
const targets: Target[] = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ panel: p.title, expr: t.expr })),
);
const alertRules = parseYaml(readFileSync(`${root}deploy/prometheus/alerts.yml`, "utf8")) as {
  groups: { rules: { alert?: string; record?: string; expr: string }[] }[];
};
/** The alert rules' expressions, checked like the dashboard's queries ("panel" = the alert). */
const alertTargets: Target[] = alertRules.groups.flatMap((g) =>
  g.rules.map((r) => ({ panel: r.alert ?? r.record ?? "?", expr: r.expr })),
);

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

const tokensDir = mkdtempSync(join(tmpdir(), "lpa-dashboard-"));
const TOKEN = "dashboard-metrics-test-token";
// Tokens (auth decisions) and a short first-byte timeout (a closed connection) give those
// labelled families samples too.
const fx = useFixture({
  kafka: { topic, partitions: 2 },
  server: {
    grpc: { firstByteTimeoutMs: 200 },
    auth: { tokensFile: writeTokensFile(tokensDir, [{ name: "dashboard", token: TOKEN, role: "admin" }]) },
  },
  relay: {},
  facade: {},
});
fx.onTearDown(() => rmSync(tokensDir, { recursive: true, force: true }));
let exported: Exposition;

async function scrape(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

fx.onSetUp(async () => {
  const { kafka, server, relay, facade } = fx;
  // Traffic that gives the labelled families samples, through the REST gateway: a create
  // (request counter and latency histogram, a CUD event, an outbox event to publish), a
  // NotFound, a call without a token. The first Produce requests fail (retriable codes, as
  // many as kafkajs' retries of one send): the relay backs the partition off, then publishes.
  await kafka.pushErrors(0, relay.config.kafka.sendRetries + 1, [7]);
  const gateway = `http://127.0.0.1:${server.ports.gateway}/v1/packages`;
  const auth = { authorization: `Bearer ${TOKEN}` };
  const created = await fetch(gateway, {
    method: "POST",
    headers: auth,
    body: JSON.stringify({ Title: "dashboard", Material: "cardboard", MaximumVolume: 1 }),
  });
  assert.equal(created.status, 200, await created.text());
  assert.equal((await fetch(`${gateway}/999999999`, { headers: auth })).status, 404);
  assert.equal((await fetch(`${gateway}/1`)).status, 401);
  // A connection that sends nothing is closed after grpc.firstByteTimeoutMs.
  await new Promise<void>((resolve, reject) => {
    const socket = net.connect(server.ports.gateway, "127.0.0.1");
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("the silent connection was not closed within 10 s"));
    }, 10_000);
    socket.once("error", () => undefined);
    socket.once("close", () => {
      clearTimeout(timer);
      resolve();
    });
  });
  // Until the event is acknowledged, so that the publish-latency histogram has a sample.
  await poll(
    "the retranslator to publish the event",
    async () =>
      /^logistic_package_api_retranslator_publish_latency_seconds_count (\S+)$/m.exec(
        await scrape(relay.ports.metrics),
      ),
    (m) => m !== null && Number(m[1]) >= 1,
  );
  // Until the facade has applied it, so that its per-partition lag gauge has a sample.
  await poll(
    "the facade to apply the event",
    () => readFacadeMetric(facade.metricsUrl, "logistic_package_api_facade_events_applied_total"),
    (n) => n >= 1,
  );
  exported = [
    parseExposition(await scrape(server.ports.metrics)),
    parseExposition(await scrape(relay.ports.metrics)),
    parseExposition(await (await fetch(`${facade.metricsUrl}/metrics`)).text()),
  ].reduce(merge);
});

test("the dashboard has queries", () => {
  assert.ok(targets.length >= 15, `${targets.length} queries`);
  for (const t of targets) assert.match(t.expr, HAS_METRIC, `${t.panel}: ${t.expr}`);
  // Node's process metrics of every binary: event loop and heap.
  for (const name of ["nodejs_eventloop_lag_seconds", "nodejs_heap_size_used_bytes"]) {
    assert.ok(
      targets.some((t) => t.expr.includes(name)),
      `a panel plots ${name}`,
    );
  }
});

/** Metric names of `list` that the binaries do not export, or not as the kind queried. */
function unexported(list: Target[]): string[] {
  const problems: string[] = [];
  for (const { panel, expr } of list) {
    for (const name of expr.match(PREFIX) ?? []) {
      const base = name.replace(HISTOGRAM_PART, "");
      if (base !== name && exported.types.get(base) === "histogram") {
        // A histogram series: its # TYPE line names the family, the sample line the series.
        if (!exported.samples.has(name)) problems.push(`${panel}: ${name} has no samples`);
        continue;
      }
      const type = exported.types.get(name);
      if (type === undefined) problems.push(`${panel}: ${name} is not exported (no # TYPE line)`);
      else if (type === "histogram")
        problems.push(`${panel}: ${name} is a histogram: query ${name}_bucket, _sum or _count`);
      else if (!exported.samples.has(name)) problems.push(`${panel}: ${name} has no sample line`);
    }
  }
  return problems;
}

test("every metric name in the dashboard is exported by the running binaries, with the right kind", () => {
  assert.deepEqual(unexported(targets), []);
});

test("every metric name in the alert rules is exported by the running binaries (an alert on a missing metric never fires)", () => {
  assert.ok(alertTargets.length >= 8, `${alertTargets.length} rules`);
  assert.ok(
    alertTargets.every((t) => HAS_METRIC.test(t.expr) || /\bup\b/.test(t.expr)),
    "every rule queries a metric",
  );
  assert.deepEqual(unexported(alertTargets), []);
});

test("counters and histogram series are queried through rate(), gauges as they are (dashboard and alerts)", () => {
  const problems: string[] = [];
  for (const { panel, expr } of [...targets, ...alertTargets]) {
    for (const name of new Set(expr.match(PREFIX) ?? [])) {
      const base = name.replace(HISTOGRAM_PART, "");
      const type = exported.types.get(name) ?? exported.types.get(base);
      const inRate = new RegExp(`\\b(rate|increase)\\(\\s*${name}\\b`).test(expr);
      if ((type === "counter" || type === "histogram") && !inRate)
        problems.push(`${panel}: ${name} (${type}) outside rate(): ${expr}`);
      if (type === "gauge" && inRate) problems.push(`${panel}: rate() of the gauge ${name}: ${expr}`);
    }
    if (/histogram_quantile/.test(expr) && !/by \([^)]*\ble\b/.test(expr))
      problems.push(`${panel}: histogram_quantile without "by (le)"`);
  }
  assert.deepEqual(problems, []);
});

test("the labels the dashboard and the alerts group and filter by exist on the metrics they query", () => {
  const problems: string[] = [];
  for (const { panel, expr } of [...targets, ...alertTargets]) {
    const names = [...new Set(expr.match(PREFIX) ?? [])];
    const available = new Set(names.flatMap((n) => [...(exported.samples.get(n) ?? [])]));
    const used = new Set<string>();
    for (const m of expr.matchAll(/\b(?:by|without)\s*\(([^)]*)\)/g))
      for (const l of m[1]!.split(",")) used.add(l.trim());
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
  assert.deepEqual(
    families.filter((f) => !used.has(f)),
    [],
    "exported but not on the dashboard",
  );
});

/** Runs a `node -e` healthcheck command (exec form minus "CMD") with `env`; resolves with the exit code. */
function runHealthcheck(command: string[], env: Record<string, string>): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, command.slice(1), {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: "ignore",
    });
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
  const relayCheck = compose.services.retranslator!.healthcheck!.test.slice(1);
  assert.equal(await runHealthcheck(image, { STATUS_PORT: String(fx.server.ports.status) }), 0, "grpc-server healthy");
  assert.equal(
    await runHealthcheck(relayCheck, { RETRANSLATOR_METRICS_PORT: String(fx.relay.ports.metrics) }),
    0,
    "retranslator healthy",
  );
});
