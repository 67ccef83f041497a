import { context, propagation, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { OutboxEvent } from "../../outbox/types.js";
import type { Sender, SendOutcome } from "./sender.js";

const tracer = trace.getTracer("logistic-package-api");

/**
 * A publish span per event that continues the trace of the request which made
 * the change (its traceparent is stored with the event), so one trace shows
 * request → commit → publish. The message then carries the publish span's
 * context, so consumers continue the same trace. With tracing off, spans are
 * no-ops and the stored context goes out unchanged.
 */
export function traceSender(sender: Sender, topic: string): Sender {
  return {
    route: (events) => sender.route(events),
    async send(events: readonly OutboxEvent[], partition?: number): Promise<SendOutcome> {
      const spans = new Map<bigint, Span>();
      const traced = events.map((event) => {
        const carrierIn: Record<string, string> = {};
        if (event.traceparent !== null) carrierIn.traceparent = event.traceparent;
        if (event.tracestate !== null) carrierIn.tracestate = event.tracestate;
        const parent = propagation.extract(ROOT_CONTEXT, carrierIn);
        const span = tracer.startSpan(
          `${topic} publish`,
          {
            kind: SpanKind.PRODUCER,
            attributes: {
              "messaging.system": "kafka",
              "messaging.destination.name": topic,
              "messaging.operation.type": "publish",
              "messaging.message.id": event.id.toString(),
              "messaging.kafka.message.key": event.packageId.toString(),
              "logistic_package_api.event.attempt": event.attempts,
            },
          },
          parent,
        );
        spans.set(event.id, span);
        const carrierOut: Record<string, string> = {};
        propagation.inject(trace.setSpan(context.active(), span), carrierOut);
        return carrierOut.traceparent === undefined
          ? event
          : {
              ...event,
              traceparent: carrierOut.traceparent,
              tracestate: carrierOut.tracestate ?? event.tracestate,
            };
      });
      try {
        const outcome = await sender.send(traced, partition);
        for (const { event, error } of outcome.failed) {
          spans.get(event.id)?.setStatus({ code: SpanStatusCode.ERROR, message: error });
        }
        for (const event of outcome.unsent)
          spans.get(event.id)?.setAttribute("logistic_package_api.event.unsent", true);
        // Hand the original events back: the traced copies differ only in headers.
        const original = new Map(events.map((e) => [e.id, e]));
        return {
          published: outcome.published.map((e) => original.get(e.id) ?? e),
          failed: outcome.failed.map((f) => ({ ...f, event: original.get(f.event.id) ?? f.event })),
          unsent: outcome.unsent.map((e) => original.get(e.id) ?? e),
        };
      } finally {
        for (const span of spans.values()) span.end();
      }
    },
    close: () => sender.close(),
  };
}
