import { ProxyTracerProvider, trace } from "@opentelemetry/api";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";

export interface TelemetryOptions {
  serviceName: string;
  serviceVersion: string;
  /** OTLP/HTTP endpoint (e.g. http://jaeger:4318); empty = tracing off. */
  otlpEndpoint: string;
  /** Tests pass an in-memory exporter (spans are exported one by one, synchronously). */
  exporter?: SpanExporter;
}

/**
 * A tracer provider is registered in this process: by startTelemetry, or from
 * outside (an SDK loaded with `--require`/`--import` before the binary starts).
 * Parts whose only job is spans (the relay's publish spans) are left out when
 * none is, rather than run against the no-op API. Read once at start-up,
 * after startTelemetry. With another copy of the API registered first, the
 * answer is yes (the parts are kept: the safe side).
 */
export function tracerRegistered(): boolean {
  const provider = trace.getTracerProvider();
  const delegate = provider instanceof ProxyTracerProvider ? provider.getDelegate() : provider;
  // An unset proxy delegates to the API's one no-op provider.
  return delegate !== noopTracerProvider;
}

const noopTracerProvider = new ProxyTracerProvider().getDelegate();

export interface Telemetry {
  enabled: boolean;
  shutdown(): Promise<void>;
}

/**
 * OpenTelemetry tracing: a span per RPC (api/interceptors.ts), per repository
 * method (packages/observed-repository.ts), per SQL query (pg and knex instrumentations)
 * and per published event (retranslator). Must start before the database
 * client is created: the pg instrumentation patches the driver when knex
 * loads it. Off unless an endpoint (or exporter) is given; the API then
 * hands out no-op spans at next to no cost, and the SDK is not even loaded
 * (its modules hold ~40 MiB of a process that does not trace).
 */
export async function startTelemetry(options: TelemetryOptions): Promise<Telemetry> {
  if (options.exporter === undefined && options.otlpEndpoint === "")
    return { enabled: false, shutdown: async () => undefined };
  const [
    { KnexInstrumentation },
    { PgInstrumentation },
    { OTLPTraceExporter },
    { resourceFromAttributes },
    { NodeSDK },
    { BatchSpanProcessor, SimpleSpanProcessor },
  ] = await Promise.all([
    import("@opentelemetry/instrumentation-knex"),
    import("@opentelemetry/instrumentation-pg"),
    import("@opentelemetry/exporter-trace-otlp-http"),
    import("@opentelemetry/resources"),
    import("@opentelemetry/sdk-node"),
    import("@opentelemetry/sdk-trace-base"),
  ]);
  const exporter =
    options.exporter ?? new OTLPTraceExporter({ url: `${options.otlpEndpoint.replace(/\/$/, "")}/v1/traces` });
  // Metrics are Prometheus' job (prom-client) and logs go to stdout: without
  // these the SDK would start OTLP exporters of its own for both.
  process.env.OTEL_METRICS_EXPORTER ??= "none";
  process.env.OTEL_LOGS_EXPORTER ??= "none";
  const sdk = new NodeSDK({
    resource: resourceFromAttributes({
      "service.name": options.serviceName,
      "service.version": options.serviceVersion,
    }),
    spanProcessors: [options.exporter ? new SimpleSpanProcessor(exporter) : new BatchSpanProcessor(exporter)],
    instrumentations: [
      new PgInstrumentation({ requireParentSpan: true }),
      new KnexInstrumentation({ requireParentSpan: true }),
    ],
  });
  sdk.start();
  return { enabled: true, shutdown: () => sdk.shutdown() };
}
