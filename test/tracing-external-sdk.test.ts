import assert from "node:assert/strict";
import { test } from "node:test";
import { trace } from "@opentelemetry/api";
import {
  BasicTracerProvider,
  InMemorySpanExporter,
  type ReadableSpan,
  SimpleSpanProcessor,
} from "@opentelemetry/sdk-trace-base";
import { useFixture } from "./helpers/fixture.js";
import { readTopic } from "./helpers/topic-checker.js";

// Tracing set up from outside the service: an SDK registered globally before
// the binary starts (as `node --import <an OpenTelemetry register hook>` does),
// with the service's own tracing left off (no startTelemetry here). The relay
// must still publish under spans: it asks whether any tracer provider is
// registered, not whether it started one itself.
const exporter = new InMemorySpanExporter();
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
const topic = "external-sdk-package-events";
const fx = useFixture({ kafka: { topic, partitions: 2 }, relay: {} });

test("with an SDK registered from outside, the relay records a publish span per event", async () => {
  const res = await fx.client.createPackageV1({ Title: "traced outside", Material: "m", MaximumVolume: 1 });
  const messages = await readTopic(fx.kafka.brokers, topic, (m) =>
    m.some((x) => x.event.PackageID.toString() === res.ID),
  );
  const eventId = messages.find((m) => m.event.PackageID.toString() === res.ID)!.event.ID.toString();

  // The span ends after the send resolves: wait for it.
  const deadline = Date.now() + 10_000;
  let publish: ReadableSpan | undefined;
  while (publish === undefined && Date.now() < deadline) {
    publish = exporter
      .getFinishedSpans()
      .find((s) => s.name === `${topic} publish` && s.attributes["messaging.message.id"] === eventId);
    if (publish === undefined) await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(
    publish,
    `no publish span for event ${eventId}; spans: ${exporter
      .getFinishedSpans()
      .map((s) => s.name)
      .join(", ")}`,
  );
  assert.equal(publish.attributes["messaging.destination.name"], topic);
});
