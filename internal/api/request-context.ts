import { createContextKey } from "@connectrpc/connect";
import type { RequestTrace } from "../tracer/trace-context.js";

/** Per-request values set by the interceptors and read by handlers and the request log. */
export const requestTraceKey = createContextKey<RequestTrace | undefined>(undefined, { description: "request trace" });
/** The authenticated caller's name from the tokens file (never the token); unset without auth. */
export const requestCallerKey = createContextKey<string | undefined>(undefined, { description: "request caller" });
