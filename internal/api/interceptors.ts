import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { DomainError } from "../domain/errors.js";
import type { Logger } from "../logger/logger.js";
import { requestTrace } from "../tracer/trace-context.js";
import { requestLoggerKey, requestTraceKey } from "./request-context.js";

const domainCodes: Record<DomainError["kind"], Code> = {
  not_found: Code.NotFound,
  invalid_argument: Code.InvalidArgument,
  already_exists: Code.AlreadyExists,
  unavailable: Code.Unavailable,
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
    const trace = requestTrace(req.header.get("traceparent"), req.header.get("tracestate"));
    const debug = options.allowRiseToDebug && req.header.get("log_level")?.toLowerCase() === "debug";
    const logger = options.logger.child(
      { method: req.method.name, traceId: trace.traceId },
      debug ? { level: "debug" } : undefined,
    );
    req.contextValues.set(requestTraceKey, trace);
    req.contextValues.set(requestLoggerKey, logger);
    if (!req.stream) {
      logger.debug({ request: safeJson(() => toJson(req.method.input, req.message)) }, "request received");
    }

    const finish = (err: unknown) => {
      const connectError = err === undefined ? undefined : toConnectError(err, trace.traceId);
      const code = connectError === undefined ? "ok" : Code[connectError.code];
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
      res = await next(req);
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
