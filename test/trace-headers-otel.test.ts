// Client trace headers with tracing on: the OpenTelemetry propagator extracts
// the caller's context, and what it is given has been validated first (cases
// in helpers/trace-header-cases.ts). Its own process: the SDK is global.
import assert from "node:assert/strict";
import { test } from "node:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { useFixture } from "./helpers/fixture.js";
import { traceHeaderCases } from "./helpers/trace-header-cases.js";

const exporter = new InMemorySpanExporter();
const fx = useFixture({ spans: exporter });

test("tracing is on: the stored traceparent names the server span, a child of the caller's", async () => {
  assert.equal(fx.telemetry.enabled, true);
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const callerSpan = "00f067aa0ba902b7";
  const { ID } = await fx.client.createPackageV1(
    { Title: "otel", Material: "tin", MaximumVolume: 1 },
    { traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: "congo=t61rcWkgMzE" },
  );
  const result = await fx.db.db.raw(`SELECT traceparent, tracestate FROM package_event WHERE package_id = ?`, [ID]);
  const row = (result as { rows: { traceparent: string; tracestate: string }[] }).rows[0]!;
  const [, storedTrace, storedSpan] = row.traceparent.split("-");
  assert.equal(storedTrace, traceId);
  assert.notEqual(storedSpan, callerSpan, "the server's span, not the caller's");
  const rpc = exporter.getFinishedSpans().find((s) => s.spanContext().spanId === storedSpan);
  assert.ok(rpc, "the stored span id is an exported server span");
  assert.equal(rpc.parentSpanContext?.spanId, callerSpan);
  assert.equal(row.tracestate, "congo=t61rcWkgMzE");
});

traceHeaderCases(fx);
