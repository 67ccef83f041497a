import { toJson } from "@bufbuild/protobuf";
import {
  context,
  isSpanContextValid,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type TextMapGetter,
} from "@opentelemetry/api";
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { DomainError } from "../domain/errors.js";
import type { Logger } from "../logger/logger.js";
import { requestTrace, type RequestTrace } from "../tracer/trace-context.js";
import { requestLoggerKey, requestTraceKey } from "./request-context.js";

const domainCodes: Record<DomainError["kind"], Code> = {
  not_found: Code.NotFound,
  invalid_argument: Code.InvalidArgument,
  already_exists: Code.AlreadyExists,
  unavailable: Code.Unavailable,
};

const tracer = trace.getTracer("logistic-package-api");
const headerGetter: TextMapGetter<Headers> = {
  keys: (headers) => [...headers.keys()],
  get: (headers, key) => headers.get(key) ?? undefined,
};

export interface RequestInterceptorOptions {
  logger: Logger;
  /** Honour `log_level: debug` request metadata (config project.allowRiseToDebug). */
  allowRiseToDebug: boolean;
}

/**
 * The one place where errors become gRPC codes and where each request is
 * logged: domain errors map to their code, ConnectErrors pass through, and
 * anything else becomes Internal with a generic message (the cause, which may
 * hold SQL, goes only to the log, under the request's trace id).
 */
export function requestInterceptor(options: RequestInterceptorOptions): Interceptor {
  return (next) => async (req) => {
    const started = performance.now();
    // A server span per RPC on every protocol, continuing the caller's trace.
    const parent = propagation.extract(ROOT_CONTEXT, req.header, headerGetter);
    const span = tracer.startSpan(
      `${req.service.typeName}/${req.method.name}`,
      {
        kind: SpanKind.SERVER,
        attributes: { "rpc.system": "grpc", "rpc.service": req.service.typeName, "rpc.method": req.method.name },
      },
      parent,
    );
    const spanContext = trace.setSpan(parent, span);
    const reqTrace = traceOf(spanContext, req.header);
    const debug = options.allowRiseToDebug && req.header.get("log_level")?.toLowerCase() === "debug";
    const logger = options.logger.child(
      { method: req.method.name, traceId: reqTrace.traceId },
      debug ? { level: "debug" } : undefined,
    );
    req.contextValues.set(requestTraceKey, reqTrace);
    req.contextValues.set(requestLoggerKey, logger);
    if (!req.stream) {
      logger.debug({ request: safeJson(() => toJson(req.method.input, req.message)) }, "request received");
    }

    const finish = (err: unknown) => {
      const connectError = err === undefined ? undefined : toConnectError(err, reqTrace.traceId);
      const code = connectError === undefined ? "ok" : Code[connectError.code];
      span.setAttribute("rpc.grpc.status_code", connectError?.code ?? 0);
      if (connectError?.code === Code.Internal || connectError?.code === Code.Unknown) {
        span.recordException(err as Error);
        span.setStatus({ code: SpanStatusCode.ERROR, message: connectError.rawMessage });
      }
      span.end();
      const fields = {
        code,
        durationMs: Math.round((performance.now() - started) * 1000) / 1000,
        requestId: req.header.get("x-request-id") ?? undefined,
      };
      if (connectError?.code === Code.Internal || connectError?.code === Code.Unknown) {
        logger.error({ ...fields, err }, "request failed");
      } else {
        logger.info({ ...fields, error: connectError?.rawMessage }, "request finished");
      }
      return connectError;
    };

    let res: UnaryResponse | StreamResponse;
    try {
      res = await context.with(spanContext, () => next(req));
    } catch (err) {
      throw finish(err);
    }
    if (!res.stream) {
      logger.debug({ response: safeJson(() => toJson(req.method.output, res.message)) }, "response sent");
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
function traceOf(ctx: ReturnType<typeof trace.setSpan>, header: Headers): RequestTrace {
  const spanContext = trace.getSpanContext(ctx);
  if (spanContext !== undefined && isSpanContextValid(spanContext)) {
    const carrier: Record<string, string> = {};
    propagation.inject(ctx, carrier);
    if (carrier["traceparent"] !== undefined) {
      const context: RequestTrace["context"] = { traceparent: carrier["traceparent"] };
      if (carrier["tracestate"]) context.tracestate = carrier["tracestate"];
      return { traceId: spanContext.traceId, context };
    }
  }
  return requestTrace(header.get("traceparent"), header.get("tracestate"));
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
  if (err instanceof DomainError) return new ConnectError(err.message, domainCodes[err.kind], undefined, undefined, err);
  if (err instanceof ConnectError) return err;
  return new ConnectError(`internal error (trace id ${traceId})`, Code.Internal, undefined, undefined, err);
}

function safeJson(fn: () => unknown): unknown {
  try {
    return fn();
  } catch {
    return "<unserialisable>";
  }
}
