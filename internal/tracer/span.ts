import { SpanStatusCode, trace } from "@opentelemetry/api";

const tracer = trace.getTracer("logistic-package-api");

/**
 * Runs `fn` in a span named `name`, the active one for what `fn` starts (SQL
 * spans of the pg instrumentation nest under it); a failure is recorded on it.
 * With tracing off the API hands out no-op spans at next to no cost.
 */
export function inSpan<T>(name: string, fn: () => Promise<T>): Promise<T> {
  return tracer.startActiveSpan(name, async (span) => {
    try {
      return await fn();
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}
