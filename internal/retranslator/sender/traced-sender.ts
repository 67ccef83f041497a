import { context, propagation, ROOT_CONTEXT, type Span, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { OutboxEvent } from "../../outbox/types.js";
import type { Sender, SentOutcome } from "./sender.js";

const tracer = trace.getTracer("logistic-package-api");

/**
 * A publish span per event that continues the trace of the request which made
 * the change (its traceparent is stored with the event), so one trace shows
 * request → commit → publish. The message then carries the publish span's
 * context, so consumers continue the same trace. Used only with tracing on
 * (start-retranslator.ts): without it the stored context goes out unchanged.
 */
export function traceSender(sender: Sender, topic: string): Sender {
  const together = sender.sendTogether?.bind(sender);
  return {
    route: (events) => sender.route(events),
    async send(events: readonly OutboxEvent[], partition?: number): Promise<SentOutcome> {
      const publish = startPublish(events, topic);
      try {
        const outcome = await sender.send(publish.traced, partition);
        for (const { event, error } of outcome.failed) {
          publish.spans.get(event.id)?.setStatus({ code: SpanStatusCode.ERROR, message: error });
        }
        for (const event of outcome.unsent)
          publish.spans.get(event.id)?.setAttribute("logistic_package_api.event.unsent", true);
        return {
          ...outcome,
          published: outcome.published.map(publish.original),
          failed: outcome.failed.map((f) => ({ ...f, event: publish.original(f.event) })),
          unsent: outcome.unsent.map(publish.original),
        };
      } finally {
        publish.end();
      }
    },
    ...(together === undefined
      ? {}
      : {
          async sendTogether(groups: ReadonlyMap<number, readonly OutboxEvent[]>) {
            const publish = startPublish([...groups.values()].flat(), topic);
            try {
              const traced = new Map(
                [...groups].map(([p, events]) => [p, events.map((e) => publish.traced[publish.index(e)]!)]),
              );
              const outcome = await together(traced);
              // The others are sent again alone, each under a span of its own.
              for (const [p, events] of groups)
                if (!outcome.published.has(p))
                  for (const e of events)
                    publish.spans.get(e.id)?.setAttribute("logistic_package_api.event.sent_again_alone", true);
              return {
                ...outcome,
                published: new Map([...outcome.published].map(([p, events]) => [p, events.map(publish.original)])),
              };
            } finally {
              publish.end();
            }
          },
        }),
    close: () => sender.close(),
  };
}

/** Spans started for `events`, and copies of the events that carry them. */
function startPublish(events: readonly OutboxEvent[], topic: string) {
  const spans = new Map<bigint, Span>();
  const positions = new Map<bigint, number>();
  const traced = events.map((event, i) => {
    positions.set(event.id, i);
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
      : { ...event, traceparent: carrierOut.traceparent, tracestate: carrierOut.tracestate ?? event.tracestate };
  });
  return {
    spans,
    traced,
    index: (event: OutboxEvent) => positions.get(event.id)!,
    /** Hands the original event back: the traced copy differs only in its headers. */
    original: (event: OutboxEvent) => events[positions.get(event.id) ?? -1] ?? event,
    end: () => {
      for (const span of spans.values()) span.end();
    },
  };
}
