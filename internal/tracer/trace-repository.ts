import { SpanStatusCode, trace } from "@opentelemetry/api";

const tracer = trace.getTracer("logistic-package-api");

/**
 * Wraps every method of `target` in a span named `<name>.<method>`, so a
 * trace shows RPC → repository method → SQL. A decorator, so repositories
 * stay free of tracing code.
 */
export function traceMethods<T extends object>(name: string, target: T): T {
  return new Proxy(target, {
    get(obj, property, receiver) {
      const value = Reflect.get(obj, property, receiver) as unknown;
      if (typeof value !== "function" || typeof property !== "string") return value;
      return (...args: unknown[]) =>
        tracer.startActiveSpan(`${name}.${property}`, async (span) => {
          try {
            return await (value as (...a: unknown[]) => Promise<unknown>).apply(obj, args);
          } catch (err) {
            span.recordException(err as Error);
            span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
            throw err;
          } finally {
            span.end();
          }
        });
    },
  });
}
