// Client trace headers with tracing on: the OpenTelemetry propagator extracts
// the caller's context, and what it is given has been validated first (cases
// in helpers/trace-header-cases.ts). Its own process: the SDK is global.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { startTelemetry, type Telemetry } from "../internal/tracer/telemetry.js";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type PackageApiClient, packageApiClient } from "./helpers/grpc-client.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { traceHeaderCases } from "./helpers/trace-header-cases.js";

const exporter = new InMemorySpanExporter();
let telemetry: Telemetry;
let db: TestDatabase;
let server: TestServer;
let client: PackageApiClient;

before(async () => {
  // Before any database client exists, as in the binaries.
  telemetry = await startTelemetry({ serviceName: "test", serviceVersion: "0", otlpEndpoint: "", exporter });
  db = await createTestDatabase();
  server = await startTestServer(db.url);
  client = packageApiClient(server.grpcAddress);
});

after(async () => {
  client?.close();
  await server?.stop();
  await db?.drop();
  await telemetry?.shutdown();
});

test("tracing is on: the stored traceparent names the server span, a child of the caller's", async () => {
  assert.equal(telemetry.enabled, true);
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  const callerSpan = "00f067aa0ba902b7";
  const { ID } = await client.createPackageV1(
    { Title: "otel", Material: "tin", MaximumVolume: 1 },
    { traceparent: `00-${traceId}-${callerSpan}-01`, tracestate: "congo=t61rcWkgMzE" },
  );
  const result = await db.db.raw(`SELECT traceparent, tracestate FROM package_event WHERE package_id = ?`, [ID]);
  const row = (result as { rows: { traceparent: string; tracestate: string }[] }).rows[0]!;
  const [, storedTrace, storedSpan] = row.traceparent.split("-");
  assert.equal(storedTrace, traceId);
  assert.notEqual(storedSpan, callerSpan, "the server's span, not the caller's");
  const rpc = exporter.getFinishedSpans().find((s) => s.spanContext().spanId === storedSpan);
  assert.ok(rpc, "the stored span id is an exported server span");
  assert.equal(rpc.parentSpanContext?.spanId, callerSpan);
  assert.equal(row.tracestate, "congo=t61rcWkgMzE");
});

traceHeaderCases({ db: () => db, server: () => server, client: () => client });
