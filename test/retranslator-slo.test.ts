// The delivery objective (retranslator.sloSeconds) as an operator sees it: while
// the broker is away and an event waits longer than the objective, /ready still
// answers 200 but says "degraded" with the oldest event's age; once the broker is
// back and the event is published, /ready is plain "ready" again and the event is
// counted over the objective.
// Run: bash scripts/test.sh test/retranslator-slo.test.ts
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type PackageApiClient, packageApiClient } from "./helpers/grpc-client.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import {
  fastRetranslatorEnv,
  startTestRetranslator,
  type TestRetranslator,
  writeTestConfig,
} from "./helpers/retranslator.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

const topic = "slo-package-events";
let db: TestDatabase;
let kafka: KafkaMock;
let server: TestServer;
let relay: TestRetranslator;
let client: PackageApiClient;
let config: { path: string; cleanup(): Promise<void> };

before(async () => {
  db = await createTestDatabase();
  kafka = await startKafkaMock();
  await kafka.createTopic(topic, 2);
  server = await startTestServer(db.url);
  config = await writeTestConfig({ retranslator: { sloSeconds: 1, maintenanceIntervalMs: 200 } });
  relay = await startTestRetranslator(fastRetranslatorEnv(db.url, kafka.brokers, topic), config.path);
  client = packageApiClient(server.grpcAddress);
});

after(async () => {
  client?.close();
  await relay?.stop();
  await server?.stop();
  await kafka?.stop();
  await db?.drop();
  await config?.cleanup();
});

const base = () => `http://127.0.0.1:${relay.ports.metrics}`;

async function ready(): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base()}/ready`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

async function until<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

test("an event older than retranslator.sloSeconds makes /ready 'degraded' (still 200) until it is published", async () => {
  assert.deepEqual((await ready()).body, { status: "ready" });
  const metricsBefore = await (await fetch(`${base()}/metrics`)).text();
  assert.match(metricsBefore, /^logistic_package_api_retranslator_slo_seconds 1$/m);

  await kafka.brokerDown(1);
  await client.createPackageV1({ Title: "late", Material: "lead", MaximumVolume: 1 });
  const degraded = await until("/ready to say degraded", async () => {
    const r = await ready();
    return r.body.status === "degraded" ? r : undefined;
  });
  assert.equal(degraded.status, 200, "degraded is still ready: more relays would not help");
  assert.ok(Number(degraded.body.oldestEventAgeSeconds) > 1);
  assert.equal(degraded.body.sloSeconds, 1);
  assert.match(String(degraded.body.reason), /above retranslator\.sloSeconds \(1 s\)/);

  await kafka.brokerUp(1);
  await until("/ready to be plain ready again", async () =>
    (await ready()).body.status === "ready" ? true : undefined,
  );
  const metrics = await (await fetch(`${base()}/metrics`)).text();
  const over = Number(
    /^logistic_package_api_retranslator_published_slo_total\{result="over"\} (\d+)$/m.exec(metrics)?.[1],
  );
  assert.ok(over >= 1, "the late event is counted over the objective");
});
