import { randomBytes } from "node:crypto";
import type { TraceContext } from "../domain/package.js";

const traceparentPattern = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;

export interface RequestTrace {
  traceId: string;
  /** Context to store with events and forward: the caller's, or a new root. */
  context: TraceContext;
}

/**
 * The request's W3C trace context: continues a valid incoming `traceparent`
 * (ignoring an all-zero or malformed one, as the spec asks) or starts a new
 * trace, so that every log line and event can be tied to a trace id.
 */
export function requestTrace(traceparent: string | null, tracestate: string | null): RequestTrace {
  const match = traceparent === null ? null : traceparentPattern.exec(traceparent.trim().toLowerCase());
  if (match && match[1] !== "ff" && !/^0+$/.test(match[2]!) && !/^0+$/.test(match[3]!)) {
    const context: TraceContext = { traceparent: match[0] };
    if (tracestate) context.tracestate = tracestate;
    return { traceId: match[2]!, context };
  }
  const traceId = randomBytes(16).toString("hex");
  return { traceId, context: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` } };
}
