import assert from "node:assert/strict";
import { test } from "node:test";
import { InMemorySpanExporter, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { useFixture } from "./helpers/fixture.js";
import { readTopic } from "./helpers/topic-checker.js";

// Tracing on: the fixture starts telemetry first, as the binaries do (the pg
// instrumentation must patch the driver before any database client exists).
const exporter = new InMemorySpanExporter();
const topic = "tracing-package-events";
const fx = useFixture({ spans: exporter, kafka: { topic, partitions: 2 }, relay: {} });

const spanId = (s: ReadableSpan) => s.spanContext().spanId;
const parentId = (s: ReadableSpan) => s.parentSpanContext?.spanId;

test("one Create gives the span tree RPC → repository method → SQL, and the publish span continues the same trace", async () => {
  const callerTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const callerSpanId = "00f067aa0ba902b7";
  const res = await fx.client.createPackageV1(
    { Title: "traced", Material: "m", MaximumVolume: 1 },
    { traceparent: `00-${callerTraceId}-${callerSpanId}-01` },
  );

  const messages = await readTopic(fx.kafka.brokers, topic, (m) =>
    m.some((x) => x.event.PackageID.toString() === res.ID),
  );
  const message = messages.find((m) => m.event.PackageID.toString() === res.ID)!;

  // Spans end asynchronously (the publish span after the send resolves): wait for it.
  const deadline = Date.now() + 10_000;
  let spans: ReadableSpan[] = [];
  while (Date.now() < deadline) {
    spans = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === callerTraceId);
    if (spans.some((s) => s.name === `${topic} publish`)) break;
    await new Promise((r) => setTimeout(r, 50));
  }

  const rpc = spans.find((s) => s.name === "hablof.logistic_package_api.v1.LogisticPackageApiService/CreatePackageV1");
  assert.ok(rpc, `server span missing; got ${spans.map((s) => s.name).join(", ")}`);
  assert.equal(parentId(rpc), callerSpanId, "the server span continues the caller's span");

  const repo = spans.find((s) => s.name === "PackageRepository.create");
  assert.ok(repo, "repository span missing");
  assert.equal(parentId(repo), spanId(rpc));

  const sql = spans.filter((s) => parentId(s) === spanId(repo));
  assert.ok(sql.length >= 1, `no SQL span under the repository span; spans: ${spans.map((s) => s.name).join(", ")}`);
  assert.ok(
    sql.some((s) =>
      String(s.attributes["db.statement"] ?? s.attributes["db.query.text"] ?? "").includes("INSERT INTO package"),
    ),
    "the SQL span carries the statement",
  );

  const publish = spans.find((s) => s.name === `${topic} publish`);
  assert.ok(publish, "publish span missing");
  assert.equal(parentId(publish), spanId(rpc), "publish continues the request's server span");
  assert.equal(publish.attributes["messaging.message.id"], message.event.ID.toString());

  const [, headerTraceId, headerSpanId] = message.headers.traceparent!.split("-");
  assert.equal(headerTraceId, callerTraceId, "the Kafka message's traceparent carries the request's trace id");
  assert.equal(headerSpanId, spanId(publish), "and points at the publish span, for consumers to continue");
});

test("every RPC gets a server span, including failures, with the gRPC code", async () => {
  await fx.client.describePackageV1({ PackageID: "999999" }).catch(() => undefined);
  const span = exporter
    .getFinishedSpans()
    .find((s) => s.name.endsWith("/DescribePackageV1") && s.attributes["rpc.grpc.status_code"] === 5);
  assert.ok(span, "a NotFound Describe is traced with code 5");
});
