import type { IncomingMessage, ServerResponse } from "node:http";
import {
  type DescMethodUnary,
  type DescService,
  fromJson,
  getOption,
  hasOption,
  type JsonValue,
  ScalarType,
  toJson,
} from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import { http as httpRule } from "../../pkg/google/api/annotations_pb.js";
import type { ApiDocs } from "./api-docs.js";
import { decodeUtf8, parseJsonFor } from "./json-body.js";

/**
 * REST gateway: transcodes the `google.api.http` annotations of the services'
 * methods into routes, like grpc-gateway does for the original service. Each
 * call goes through `transport` (an in-memory router with the same
 * interceptors), so REST gets the same validation, error mapping, logging and
 * idempotency as gRPC.
 */
export interface GatewayOptions {
  services: readonly DescService[];
  transport: Transport;
  maxRequestBytes: number;
  /** Told of a failure that is not a ConnectError (a bug): the client sees only Internal. */
  onInternalError?: (err: unknown) => void;
  /** GET /openapi.json and /docs, answered before the API routes (and without a token). */
  docs?: ApiDocs;
}

interface Route {
  verb: string;
  /** The annotation's path template, for error messages. */
  template: string;
  pattern: RegExp;
  pathParams: string[];
  body: string;
  method: DescMethodUnary;
}

// Request headers passed on as metadata; grpc-gateway also forwards any
// `Grpc-Metadata-*` header, which we keep for clients written against it.
const forwardedHeaders = ["authorization", "x-request-id", "idempotency-key", "traceparent", "tracestate", "log_level"];
const metadataPrefix = "grpc-metadata-";

// HTTP status per gRPC code, as grpc-gateway maps them. Exported for the
// OpenAPI generator (tools/protoc-gen-openapi), which documents the same table.
export const httpStatus: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

export function createGatewayHandler(options: GatewayOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const routes = options.services.flatMap(routesOf);
  return (req, res) => {
    if (options.docs?.handle(req, res) === true) return;
    handle(req, res, routes, options).catch((err: unknown) => {
      if (!(err instanceof ConnectError)) options.onInternalError?.(err);
      sendError(res, err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal));
    });
  };
}

function routesOf(service: DescService): Route[] {
  const routes: Route[] = [];
  for (const method of service.methods) {
    if (method.methodKind !== "unary" || !hasOption(method, httpRule)) continue;
    const rule = getOption(method, httpRule);
    const { case: verb, value } = rule.pattern;
    if (verb === undefined || verb === "custom") continue;
    const pathParams: string[] = [];
    const source = value
      .split("/")
      .map((segment) => {
        const param = /^\{([A-Za-z_][A-Za-z0-9_.]*)\}$/.exec(segment);
        if (param) {
          pathParams.push(param[1]!);
          return "([^/]+)";
        }
        return segment.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      })
      .join("/");
    routes.push({
      verb: verb.toUpperCase(),
      template: value,
      pattern: new RegExp(`^${source}/?$`),
      pathParams,
      body: rule.body,
      method: method as DescMethodUnary,
    });
  }
  return routes;
}

async function handle(req: IncomingMessage, res: ServerResponse, routes: Route[], options: GatewayOptions) {
  let url: URL;
  try {
    url = new URL(req.url ?? "/", "http://gateway");
  } catch {
    throw new ConnectError("invalid request target", Code.InvalidArgument);
  }
  const matching = routes.filter((r) => r.pattern.test(url.pathname));
  if (matching.length === 0) {
    const known = routes.map((r) => `${r.verb} ${r.template}`).join(", ");
    return sendError(res, new ConnectError(`no route for this path; routes: ${known}`, Code.NotFound));
  }
  const route = matching.find((r) => r.verb === req.method);
  if (route === undefined) {
    const allowed = matching.map((r) => r.verb).join(", ");
    res.setHeader("allow", allowed);
    return sendJson(res, 405, {
      code: Code.Unimplemented,
      message: `method not allowed on this path; allowed: ${allowed}`,
      details: [],
    });
  }

  // No prototype: a "__proto__" key is then an unknown field like any other,
  // not a change of this object's prototype.
  const fields = Object.create(null) as Record<string, JsonValue>;
  if (route.body === "*") {
    const body = await readBody(req, options.maxRequestBytes);
    if (body.length > 0) {
      // Strict: exact 64-bit numbers, valid UTF-8, no duplicate keys, bounded depth.
      const parsed = parseJsonFor(route.method.input, decodeUtf8(body)).value;
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
        throw new ConnectError("invalid JSON body: expected an object", Code.InvalidArgument);
      }
      Object.assign(fields, parsed);
    }
  } else {
    for (const [name, value] of url.searchParams) {
      // No field of these requests is repeated: a second value is a client
      // mistake, not something to pick the first or last of silently.
      if (Object.hasOwn(fields, name)) {
        throw new ConnectError(`query parameter ${JSON.stringify(name)} given more than once`, Code.InvalidArgument);
      }
      fields[name] = queryValue(route.method, name, value);
    }
  }
  const match = route.pattern.exec(url.pathname)!;
  route.pathParams.forEach((name, i) => {
    fields[name] = pathValue(name, match[i + 1]!);
  });

  let input: ReturnType<typeof fromJson>;
  try {
    input = fromJson(route.method.input, fields);
  } catch (err) {
    throw new ConnectError(`invalid request: ${(err as Error).message}`, Code.InvalidArgument);
  }

  const header = new Headers();
  for (const [name, value] of Object.entries(req.headers)) {
    if (typeof value !== "string") continue;
    if (forwardedHeaders.includes(name)) header.set(name, value);
    else if (name.startsWith(metadataPrefix)) header.set(name.slice(metadataPrefix.length), value);
  }
  const abort = new AbortController();
  res.once("close", () => abort.abort());
  const response = await options.transport.unary(route.method, abort.signal, undefined, header, input);
  // grpc-gateway v2 emits unpopulated fields; clients of the original rely on
  // seeing `"Reusable": false` and `"Packages": []`.
  sendJson(res, 200, toJson(route.method.output, response.message, { alwaysEmitImplicit: true }));
}

function pathValue(name: string, segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    // `new URL` leaves a malformed escape such as %ZZ as it is.
    throw new ConnectError(`${name} in the path is not valid percent-encoding`, Code.InvalidArgument);
  }
}

/** Query values arrive as strings; proto JSON wants booleans and numbers typed. */
function queryValue(method: DescMethodUnary, name: string, value: string): JsonValue {
  const field = method.input.fields.find((f) => f.name === name || f.jsonName === name);
  if (field?.fieldKind === "scalar" && field.scalar === ScalarType.BOOL) {
    if (value === "true") return true;
    if (value === "false") return false;
  }
  return value;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        // Drain the rest instead of cutting the socket, so the 429 can be sent.
        req.removeAllListeners("data");
        req.resume();
        reject(new ConnectError(`request body larger than ${limit} bytes`, Code.ResourceExhausted));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

function sendError(res: ServerResponse, err: ConnectError) {
  sendJson(res, httpStatus[err.code] ?? 500, { code: err.code, message: err.rawMessage, details: [] });
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
