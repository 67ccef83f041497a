import assert from "node:assert/strict";
import { test } from "node:test";
import { trace } from "@opentelemetry/api";
import { BasicTracerProvider } from "@opentelemetry/sdk-trace-base";
import { tracerRegistered } from "../../internal/tracer/telemetry.js";

// Whether the relay publishes under spans (start-retranslator.ts) follows whether any tracer
// provider is registered in the process, whoever registered it.
test("tracerRegistered: no with the API's no-op provider, yes once a provider is registered from anywhere", () => {
  assert.equal(tracerRegistered(), false);
  assert.ok(trace.setGlobalTracerProvider(new BasicTracerProvider()));
  assert.equal(tracerRegistered(), true);
  trace.disable();
  assert.equal(tracerRegistered(), false);
});
