import { type DescMessage, toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import {
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  trace,
} from "@opentelemetry/api";
import { BadRequestSchema } from "../../pkg/google/rpc/error_details_pb.js";
import { DomainError, InvalidArgumentError } from "../domain/errors.js";
import type { Logger } from "../logger/logger.js";
import {
  type IncomingTraceHeaders,
  incomingTraceHeaders,
  type RequestTrace,
  requestTrace,
  validTracestate,
} from "../tracer/trace-context.js";
import type { ApiMetrics } from "./metrics.js";
import { requestCallerKey, requestTraceKey } from "./request-context.js";

const domainCodes: Record<DomainError["kind"], Code> = {
  not_found: Code.NotFound,
  invalid_argument: Code.InvalidArgument,
  already_exists: Code.AlreadyExists,
  unavailable: Code.Unavailable,
};

const tracer = trace.getTracer("logistic-package-api");
// The propagator reads only the validated trace headers: what a client sends
// ends up in the outbox and in Kafka headers, so it is checked and capped first.
const traceHeaderGetter: TextMapGetter<IncomingTraceHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => (key === "traceparent" || key === "tracestate" ? carrier[key] : undefined),
};

export interface RequestInterceptorOptions {
  logger: Logger;
  /** Counts and times each request by the code its client sees. */
  metrics: Pick<ApiMetrics, "observeRequest">;
  /** Honour `log_level: debug` request metadata (config project.allowRiseToDebug). */
  allowRiseToDebug: boolean;
}

/**
 * The one place where errors become gRPC codes and where each request is
 * traced, logged and counted: domain errors map to their code, ConnectErrors
 * pass through, and anything else becomes Internal with a generic message (the
 * cause, which may hold SQL, goes only to the log, under the request's trace
 * id). The metrics therefore count exactly the code that the client sees.
 * The auth interceptor runs inside it: its Unauthenticated and
 * PermissionDenied are logged and counted like any other code.
 */
export function requestInterceptor(options: RequestInterceptorOptions): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    // A server span per RPC on every protocol, continuing the caller's trace.
    const incoming = incomingTraceHeaders(req.header);
    const parent = propagation.extract(ROOT_CONTEXT, incoming, traceHeaderGetter);
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: { "rpc.system": "grpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name },
      },
      parent,
    );
    const spanContext = trace.setSpan(parent, span);
    const reqTrace = traceOf(spanContext, incoming);
    const debug = options.allowRiseToDebug && req.header.get("log_level")?.toLowerCase() === "debug";
    // A child logger only for a request that asked for debug (its own level); every
    // other request writes through the base logger, its fields in the line itself:
    // a child per request cost a bindings object and a serialised prefix per call.
    const logger = debug ? options.logger.child({}, { level: "debug" }) : options.logger;
    const traceId = reqTrace.traceId;
    req.contextValues.set(requestTraceKey, reqTrace);
    // The unary response, kept for its debug line (written in finish).
    let response: unknown;

    const finish = (err: unknown) => {
      const connectError = err === undefined ? undefined : toConnectError(err, traceId);
      const code = connectError === undefined ? "ok" : Code[connectError.code];
      const failed = connectError?.code === Code.Internal || connectError?.code === Code.Unknown;
      if (!req.stream) writeDebugLines(logger, traceId, req.method, req.message, response, connectError);
      span.setAttribute("rpc.grpc.status_code", connectError?.code ?? 0);
      if (failed) {
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: connectError.rawMessage });
      }
      span.end();
      const durationMs = performance.now() - started;
      options.metrics.observeRequest(req.method.name, connectError === undefined ? "OK" : code, durationMs / 1000);
      const fields = {
        method: req.method.name,
        traceId,
        code,
        durationMs: Math.round(durationMs * 1000) / 1000,
        // Raw header, logged before (or without) validation: capped like a valid key.
        requestId: truncate(req.header.get("x-request-id") ?? req.header.get("idempotency-key") ?? undefined, 255),
        caller: req.contextValues.get(requestCallerKey),
        // Only the unexpected failure's cause (it may hold SQL) goes to the log, as `err`.
        ...(failed ? { err } : { error: connectError?.rawMessage }),
      };
      if (failed) logger.error(fields, "request failed");
      else logger.info(fields, "request finished");
      return connectError;
    };

    let res: UnaryResponse | StreamResponse;
    try {
      res = await context.with(spanContext, () => next(req));
    } catch (err) {
      throw finish(err);
    }
    if (!res.stream) {
      response = res.message;
      finish(undefined);
      return res;
    }
    return { ...res, message: mapStreamErrors(res.message, finish) };
  };
}

/**
 * The request's trace: the server span's when tracing is on (so stored events
 * point at it), else the caller's traceparent or a fresh trace id for logs.
 */
function traceOf(ctx: ReturnType<typeof trace.setSpan>, incoming: IncomingTraceHeaders): RequestTrace {
  const spanContext = trace.getSpanContext(ctx);
  if (spanContext !== undefined && isSpanContextValid(spanContext)) {
    const carrier: Record<string, string> = {};
    propagation.inject(ctx, carrier);
    if (carrier.traceparent !== undefined) {
      const context: RequestTrace["context"] = { traceparent: carrier.traceparent };
      const tracestate = validTracestate(carrier.tracestate);
      if (tracestate !== undefined) context.tracestate = tracestate;
      return { traceId: spanContext.traceId, context };
    }
  }
  return requestTrace(incoming);
}

async function* mapStreamErrors<T>(
  messages: AsyncIterable<T>,
  finish: (err: unknown) => ConnectError | undefined,
): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (err) {
    throw finish(err);
  }
  finish(undefined);
}

export function toConnectError(err: unknown, traceId: string): ConnectError {
  if (err instanceof InvalidArgumentError) {
    // The field too, for clients that point at it: the standard detail, which every
    // protocol carries (gRPC's grpc-status-details-bin, Connect's JSON "details").
    const violation = { field: err.field, description: err.message };
    const details = [{ desc: BadRequestSchema, value: { fieldViolations: [violation] } }];
    return new ConnectError(err.message, Code.InvalidArgument, undefined, details, err);
  }
  if (err instanceof DomainError)
    return new ConnectError(err.message, domainCodes[err.kind], undefined, undefined, err);
  if (err instanceof ConnectError) return err;
  return new ConnectError(`internal error (trace id ${traceId})`, Code.Internal, undefined, undefined, err);
}

// Codes of requests turned away before any handler used them (no valid token,
// no permission): a caller that may not call the API may not fill its debug log.
const notDebugged = new Set([Code.Unauthenticated, Code.PermissionDenied]);
/** Longest string (characters) and array (items) shown in a debug line. */
export const debugMaxString = 64;
export const debugMaxItems = 10;

/**
 * The debug lines of one unary call (`log_level: debug` with
 * project.allowRiseToDebug on), written once the call has been handled, so its
 * outcome is known: request body, then response body. Bodies only, never
 * headers (no token, no cookie). Strings are cut at debugMaxString characters
 * and arrays at debugMaxItems items, so a client cannot turn its 4 MiB body
 * into a 4 MiB log line, nor a List into 500 packages' worth of one.
 */
function writeDebugLines(
  logger: Logger,
  traceId: string,
  method: { name: string; input: DescMessage; output: DescMessage },
  request: unknown,
  response: unknown,
  connectError: ConnectError | undefined,
): void {
  if (!logger.isLevelEnabled("debug")) return;
  if (connectError !== undefined && notDebugged.has(connectError.code)) return;
  const line = { method: method.name, traceId };
  logger.debug(
    { ...line, request: safeJson(() => bounded(toJson(method.input, request as never))) },
    "request received",
  );
  if (response !== undefined) {
    logger.debug(
      { ...line, response: safeJson(() => bounded(toJson(method.output, response as never))) },
      "response sent",
    );
  }
}

function bounded(value: unknown): unknown {
  if (typeof value === "string") return truncate(value, debugMaxString);
  if (Array.isArray(value)) {
    const items = value.slice(0, debugMaxItems).map(bounded);
    if (value.length > debugMaxItems) items.push(`…(${value.length - debugMaxItems} more)`);
    return items;
  }
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, bounded(v)]));
  }
  return value;
}

function truncate(value: string, max: number): string;
function truncate(value: string | undefined, max: number): string | undefined;
function truncate(value: string | undefined, max: number): string | undefined {
  if (value === undefined || value.length <= max) return value;
  // Whole code points: a cut emoji would be an invalid surrogate in the JSON line.
  const kept = Array.from(value.slice(0, max * 2))
    .slice(0, max)
    .join("");
  return `${kept}…(${value.length} chars)`;
}

function safeJson(fn: () => unknown): unknown {
  try {
    return fn();
  } catch {
    return "<unserialisable>";
  }
}
