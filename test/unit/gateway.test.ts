// The REST gateway (internal/api/gateway.ts) in memory: the google.api.http routes of the service
// reach their methods with path, query and body fields, %-escapes decoded, bad input answered 400,
// and domain errors (mapped by toConnectError, as the request interceptor does) answered with their
// HTTP status. A fake request and response stand in for node:http; the methods are fakes behind
// connect's in-memory router.

import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { beforeEach, describe, test } from "node:test";
import { type ConnectRouter, createRouterTransport, type HandlerContext, type Interceptor } from "@connectrpc/connect";
import { createGatewayHandler } from "../../internal/api/gateway.js";
import { toConnectError } from "../../internal/api/interceptors.js";
import { AlreadyExistsError, NotFoundError, UnavailableError } from "../../internal/domain/errors.js";
import { LogisticPackageApiService } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";

interface Call {
  method: string;
  input: Record<string, unknown>;
  header: Headers;
}

const calls: Call[] = [];
/** Thrown by the next method called, when set. */
let failWith: Error | undefined;

/** Records the call, then fails it (failWith) or answers `reply`. */
function record<Reply>(method: string, input: object, ctx: HandlerContext, reply: Reply): Reply {
  calls.push({ method, input: { ...input } as Record<string, unknown>, header: ctx.requestHeader });
  if (failWith !== undefined) throw failWith;
  return reply;
}

const routes = (router: ConnectRouter) =>
  router.service(LogisticPackageApiService, {
    createPackageV1: (req, ctx) => record("create", req, ctx, { ID: 42n }),
    describePackageV1: (req, ctx) => record("describe", req, ctx, { Value: { ID: req.PackageID, Title: "box" } }),
    listPackagesV1: (req, ctx) => record("list", req, ctx, {}),
    removePackageV1: (req, ctx) => record("remove", req, ctx, { Suc: true }),
    updatePackageV1: (req, ctx) => record("update", req, ctx, { Suc: true }),
  });

const traceId = "0af7651916cd43dd8448eb211c80319c";
/** The request interceptor's error mapping, without its logging, tracing and metrics. */
const mapErrors: Interceptor = (next) => async (req) => {
  try {
    return await next(req);
  } catch (err) {
    throw toConnectError(err, traceId);
  }
};

const handler = createGatewayHandler({
  services: [LogisticPackageApiService],
  transport: createRouterTransport(routes, {
    router: { interceptors: [mapErrors] },
  }),
  maxRequestBytes: 1000,
});

interface Answer {
  status: number;
  headers: Record<string, string | number>;
  body: { code?: number; message?: string; [field: string]: unknown };
}

/** One HTTP exchange with the gateway, without a socket. */
function call(method: string, url: string, body?: string, headers: Record<string, string> = {}): Promise<Answer> {
  const req = Object.assign(Readable.from(body === undefined ? [] : [Buffer.from(body)]), {
    method,
    url,
    headers: { ...headers },
  });
  return new Promise((resolve) => {
    const answer: Answer = { status: 0, headers: {}, body: {} };
    const res = Object.assign(new EventEmitter(), {
      headersSent: false,
      setHeader: (name: string, value: string) => {
        answer.headers[name] = value;
      },
      writeHead(status: number, head: Record<string, string | number>) {
        answer.status = status;
        Object.assign(answer.headers, head);
        res.headersSent = true;
      },
      end(text: string) {
        answer.body = JSON.parse(text) as Answer["body"];
        resolve(answer);
      },
      destroy: () => resolve(answer),
    });
    handler(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  });
}

beforeEach(() => {
  calls.length = 0;
  failWith = undefined;
});

describe("REST gateway routing", () => {
  test("POST /v1/packages: the JSON body becomes CreatePackageV1's request", async () => {
    const answer = await call(
      "POST",
      "/v1/packages",
      '{"Title":"Big box","Material":"wood","MaximumVolume":2.5,"Reusable":true}',
    );
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { ID: "42" });
    assert.equal(calls[0]!.method, "create");
    assert.deepEqual(
      [calls[0]!.input.Title, calls[0]!.input.Material, calls[0]!.input.MaximumVolume, calls[0]!.input.Reusable],
      ["Big box", "wood", 2.5, true],
    );
  });

  test("GET /v1/packages/{PackageID}: the path names the package, with or without a trailing slash", async () => {
    for (const url of ["/v1/packages/7", "/v1/packages/7/"]) {
      const answer = await call("GET", url);
      assert.equal(answer.status, 200);
      assert.equal((answer.body.Value as { ID: string }).ID, "7");
    }
    assert.deepEqual(
      calls.map((c) => [c.method, c.input.PackageID]),
      [
        ["describe", 7n],
        ["describe", 7n],
      ],
    );
  });

  test("GET /v1/packages: query parameters are the fields; unpopulated fields are emitted", async () => {
    const answer = await call("GET", "/v1/packages?Offset=5&Limit=2");
    assert.equal(answer.status, 200);
    assert.deepEqual(answer.body, { PackageTitle: [], Packages: [] });
    assert.deepEqual([calls[0]!.input.Offset, calls[0]!.input.Limit], [5n, 2n]);
  });

  test("DELETE and PUT on /v1/packages/{PackageID}: the path's id wins over the body's", async () => {
    assert.deepEqual((await call("DELETE", "/v1/packages/9")).body, { Suc: true });
    const answer = await call(
      "PUT",
      "/v1/packages/10",
      '{"PackageID":"11","Title":"new","Reusable":{"Reusable":true}}',
    );
    assert.deepEqual(answer.body, { Suc: true });
    assert.deepEqual(
      calls.map((c) => [c.method, c.input.PackageID]),
      [
        ["remove", 9n],
        ["update", 10n],
      ],
    );
    assert.equal(calls[1]!.input.Title, "new");
  });

  test("path segments are %-decoded; a malformed escape is InvalidArgument", async () => {
    assert.equal((await call("GET", "/v1/packages/%31%32")).status, 200);
    assert.equal(calls[0]!.input.PackageID, 12n);
    const bad = await call("GET", "/v1/packages/%ZZ");
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, 3);
    assert.match(bad.body.message!, /PackageID in the path is not valid percent-encoding/);
  });

  test("an unknown path is 404 naming the routes; a known path with another verb is 405 with Allow", async () => {
    const unknown = await call("GET", "/v2/boxes");
    assert.equal(unknown.status, 404);
    assert.match(
      unknown.body.message!,
      /no route for this path; routes: POST \/v1\/packages, GET \/v1\/packages\/\{PackageID\}/,
    );
    const wrongVerb = await call("PATCH", "/v1/packages/1");
    assert.equal(wrongVerb.status, 405);
    assert.equal(wrongVerb.headers.allow, "GET, DELETE, PUT");
    assert.equal(calls.length, 0);
  });

  test("bad input is InvalidArgument (400) before any method runs", async () => {
    const cases: [string, string, string | undefined, RegExp][] = [
      ["GET", "/v1/packages/abc", undefined, /invalid request/],
      ["GET", "/v1/packages?Limit=1&Limit=2", undefined, /query parameter "Limit" given more than once/],
      ["GET", "/v1/packages?Nope=1", undefined, /invalid request/],
      ["POST", "/v1/packages", "[1]", /expected an object/],
      ["POST", "/v1/packages", '{"Title":"a","Title":"b"}', /invalid JSON body/],
      ["POST", "/v1/packages", "{not json", /invalid JSON body/],
    ];
    for (const [verb, url, body, message] of cases) {
      const answer = await call(verb, url, body);
      assert.equal(answer.status, 400, `${verb} ${url} ${body ?? ""}`);
      assert.equal(answer.body.code, 3);
      assert.match(answer.body.message!, message);
    }
    assert.equal(calls.length, 0);
  });

  test("a body above maxRequestBytes is ResourceExhausted (429)", async () => {
    const answer = await call("POST", "/v1/packages", JSON.stringify({ Title: "x".repeat(2000) }));
    assert.equal(answer.status, 429);
    assert.match(answer.body.message!, /request body larger than 1000 bytes/);
  });

  test("request ids, trace and Grpc-Metadata-* headers reach the method as metadata; others do not", async () => {
    await call("GET", "/v1/packages/1", undefined, {
      "x-request-id": "req-1",
      "grpc-metadata-tenant": "acme",
      cookie: "secret=1",
    });
    const header = calls[0]!.header;
    assert.equal(header.get("x-request-id"), "req-1");
    assert.equal(header.get("tenant"), "acme");
    assert.equal(header.get("cookie"), null);
  });
});

describe("REST gateway error mapping", () => {
  test("domain errors reach REST clients as their code and HTTP status, with their message", async () => {
    const cases: [Error, number, number][] = [
      [new NotFoundError("package not found"), 404, 5],
      [new AlreadyExistsError("idempotency key reused"), 409, 6],
      [new UnavailableError("database unavailable; retry"), 503, 14],
    ];
    for (const [error, status, code] of cases) {
      failWith = error;
      const answer = await call("GET", "/v1/packages/1");
      assert.deepEqual([answer.status, answer.body.code, answer.body.message], [status, code, error.message]);
    }
  });

  test("any other error is Internal (500) with a generic message naming the trace, not the cause", async () => {
    failWith = new Error('relation "package" does not exist: SELECT secret FROM package');
    const answer = await call("GET", "/v1/packages/1");
    assert.equal(answer.status, 500);
    assert.equal(answer.body.code, 13);
    assert.equal(answer.body.message, `internal error (trace id ${traceId})`);
  });
});
