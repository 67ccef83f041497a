// The delivery objective (retranslator.sloSeconds) as an operator sees it: while
// the broker is away and an event waits longer than the objective, /ready still
// answers 200 but says "degraded" with the oldest event's age; once the broker is
// back and the event is published, /ready is plain "ready" again and the event is
// counted over the objective.
// Run: bash scripts/test.sh test/retranslator-slo.test.ts
import assert from "node:assert/strict";
import { test } from "node:test";
import { useFixture } from "./helpers/fixture.js";
import { until } from "./helpers/poll.js";

const topic = "slo-package-events";
const fx = useFixture({
  kafka: { topic, partitions: 2 },
  relay: { retranslator: { sloSeconds: 1, maintenanceIntervalMs: 200 } },
});

const base = () => `http://127.0.0.1:${fx.relay.ports.metrics}`;

async function ready(): Promise<{ status: number; body: Record<string, unknown> }> {
  const res = await fetch(`${base()}/ready`);
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

test("an event older than retranslator.sloSeconds makes /ready 'degraded' (still 200) until it is published", async () => {
  assert.deepEqual((await ready()).body, { status: "ready" });
  const metricsBefore = await (await fetch(`${base()}/metrics`)).text();
  assert.match(metricsBefore, /^logistic_package_api_retranslator_slo_seconds 1$/m);

  await fx.kafka.brokerDown(1);
  await fx.client.createPackageV1({ Title: "late", Material: "lead", MaximumVolume: 1 });
  const degraded = await until("/ready to say degraded", async () => {
    const r = await ready();
    return r.body.status === "degraded" ? r : undefined;
  });
  assert.equal(degraded.status, 200, "degraded is still ready: more relays would not help");
  assert.ok(Number(degraded.body.oldestEventAgeSeconds) > 1);
  assert.equal(degraded.body.sloSeconds, 1);
  assert.match(String(degraded.body.reason), /above retranslator\.sloSeconds \(1 s\)/);

  await fx.kafka.brokerUp(1);
  await until("/ready to be plain ready again", async () =>
    (await ready()).body.status === "ready" ? true : undefined,
  );
  const metrics = await (await fetch(`${base()}/metrics`)).text();
  const over = Number(
    /^logistic_package_api_retranslator_published_slo_total\{result="over"\} (\d+)$/m.exec(metrics)?.[1],
  );
  assert.ok(over >= 1, "the late event is counted over the objective");
});
