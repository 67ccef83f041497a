// Hostile input at the HTTP edges: REST gateway paths, query strings and bodies,
// and Connect JSON bodies (HTTP/1.1), against the real server and Postgres.
// Named cases pin the known problems; fast-check properties throw generated
// input at every route: never a 5xx, never a crash, every error a JSON body with
// a gRPC code and a message.
// Run: bash scripts/test.sh test/api-hostile-input.test.ts
// A failing property prints its seed and path; replay exactly that input with
//   FC_SEED=<seed> FC_PATH=<path> bash scripts/test.sh test/api-hostile-input.test.ts

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import fc from "fast-check";
import { parseJsonFor } from "../internal/api/json-body.js";
import { UpdatePackageV1RequestSchema } from "../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { count } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, rpcError } from "./helpers/grpc-client.js";

const serviceName = "hablof.logistic_package_api.v1.LogisticPackageApiService";
const methods = [
  "CreatePackageV1",
  "DescribePackageV1",
  "ListPackagesV1",
  "RemovePackageV1",
  "UpdatePackageV1",
] as const;

// Two ids a double cannot tell apart: JSON.parse reads both as 9007199254740992.
const below = 9007199254740992n; // 2^53
const above = 9007199254740993n; // 2^53 + 1

const fx = useFixture();
fx.onSetUp(() =>
  fx.db.db.raw(
    `INSERT INTO package (id, title, material, maximum_volume) VALUES (?, 'two to the 53', 'steel', 1), (?, 'one more', 'steel', 1)`,
    [below.toString(), above.toString()],
  ),
);

interface HttpResult {
  status: number;
  contentType: string;
  text: string;
}

async function send(
  url: string,
  method: string,
  body?: string | Uint8Array,
  contentType?: string,
): Promise<HttpResult> {
  const res = await fetch(url, {
    method,
    headers: contentType === undefined ? {} : { "content-type": contentType },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, contentType: res.headers.get("content-type") ?? "", text: await res.text() };
}

const rest = (method: string, path: string, body?: string | Uint8Array) =>
  send(`${fx.server.gatewayUrl}${path}`, method, body, body === undefined ? undefined : "application/json");
const connect = (method: string, body: string | Uint8Array) =>
  send(`${fx.server.grpcUrl}/${serviceName}/${method}`, "POST", body, "application/json");

function describeCall(res: HttpResult): string {
  return `${res.status} ${res.contentType} ${res.text.slice(0, 300)}`;
}

/** REST: below 500; an error is JSON {code, message} with a client-side gRPC code. */
function assertRestAnswer(res: HttpResult, method: string): void {
  assert.ok(res.status < 500, `no server error: ${describeCall(res)}`);
  if (method === "HEAD") return;
  assert.match(res.contentType, /^application\/json/, describeCall(res));
  const body = JSON.parse(res.text) as { code?: unknown; message?: unknown };
  if (res.status < 400) return;
  assert.equal(typeof body.code, "number", describeCall(res));
  assert.ok(![0, 2, 13, 14, 15].includes(body.code as number), `a client error code: ${describeCall(res)}`);
  assert.equal(typeof body.message, "string", describeCall(res));
  assert.ok((body.message as string).length > 0, describeCall(res));
}

/** Connect: below 500; an error is JSON {code, message} with a client-side code name. */
function assertConnectAnswer(res: HttpResult): void {
  assert.ok(res.status < 500, `no server error: ${describeCall(res)}`);
  assert.match(res.contentType, /^application\/json/, describeCall(res));
  const body = JSON.parse(res.text) as { code?: unknown; message?: unknown };
  if (res.status === 200) return;
  assert.equal(typeof body.code, "string", describeCall(res));
  assert.ok(!["internal", "unknown", "unavailable", "data_loss"].includes(body.code as string), describeCall(res));
  assert.equal(typeof body.message, "string", describeCall(res));
  assert.ok((body.message as string).length > 0, describeCall(res));
}

function errorOf(res: HttpResult): { code: number | string; message: string } {
  return JSON.parse(res.text) as { code: number | string; message: string };
}

describe("known hostile inputs, each answered 4xx with a message that names the problem", () => {
  test("GET /v1/packages/%ZZ is 400 InvalidArgument naming PackageID", async () => {
    const res = await rest("GET", "/v1/packages/%ZZ");
    assert.equal(res.status, 400, describeCall(res));
    assert.equal(errorOf(res).code, 3);
    assert.match(errorOf(res).message, /PackageID.*percent-encoding/);
  });

  test("a uint64 given as a JSON number above 2^53 is read exactly (Connect JSON)", async () => {
    for (const id of [below, above]) {
      const res = await connect("DescribePackageV1", `{"PackageID": ${id}}`);
      assert.equal(res.status, 200, describeCall(res));
      assert.equal(JSON.parse(res.text).Value.ID, id.toString(), "the package asked for, not its rounded neighbour");
    }
    const removed = await connect("RemovePackageV1", `{"PackageID": ${above}}`);
    assert.equal(removed.status, 200, describeCall(removed));
    // The neighbour is untouched: only 2^53 + 1 was removed.
    const neighbour = await rest("GET", `/v1/packages/${below}`);
    assert.equal(neighbour.status, 200, describeCall(neighbour));
    const gone = await rest("GET", `/v1/packages/${above}`);
    assert.equal(gone.status, 404, describeCall(gone));
    // Exponent and fraction forms of an integer are exact too; a fraction is refused.
    const exponent = await connect("DescribePackageV1", `{"PackageID": 9.007199254740992e15}`);
    assert.equal(JSON.parse(exponent.text).Value.ID, below.toString(), describeCall(exponent));
    const fraction = await connect("DescribePackageV1", `{"PackageID": 9007199254740992.5}`);
    assert.equal(fraction.status, 400, describeCall(fraction));
    assert.match(errorOf(fraction).message, /PackageID/);
  });

  test("gRPC-Web JSON reads a uint64 above 2^53 exactly too", async () => {
    const json = Buffer.from(`{"PackageID": ${below}}`);
    const frame = Buffer.alloc(5);
    frame.writeUInt32BE(json.length, 1);
    const res = await fetch(`${fx.server.grpcUrl}/${serviceName}/DescribePackageV1`, {
      method: "POST",
      headers: { "content-type": "application/grpc-web+json" },
      body: Buffer.concat([frame, json]),
      signal: AbortSignal.timeout(10_000),
    });
    const bytes = Buffer.from(await res.arrayBuffer());
    const message = JSON.parse(bytes.subarray(5, 5 + bytes.readUInt32BE(1)).toString("utf8"));
    assert.equal(message.Value.ID, below.toString());
  });

  test("the REST body parser keeps a uint64 above 2^53 exact (the path's PackageID wins on the wire)", () => {
    const { value } = parseJsonFor(UpdatePackageV1RequestSchema, `{"PackageID": ${above}, "Title": "x"}`);
    assert.deepEqual(value, { PackageID: above.toString(), Title: "x" });
  });

  test("Offset is capped at fx.client.maxListOffset (100,000), as string or as number, on every protocol", async () => {
    const ok = await rest("GET", "/v1/packages?Offset=100000");
    assert.equal(ok.status, 200, describeCall(ok));
    for (const res of [
      await rest("GET", "/v1/packages?Offset=100001"),
      await rest("GET", "/v1/packages?Offset=18446744073709551615"),
    ]) {
      assert.equal(res.status, 400, describeCall(res));
      assert.match(errorOf(res).message, /Offset must be at most 100000/);
    }
    for (const offset of ["100001", "9223372036854775807", "18446744073709551615", '"18446744073709551615"']) {
      const res = await connect("ListPackagesV1", `{"Offset": ${offset}}`);
      assert.equal(res.status, 400, describeCall(res));
      assert.equal(errorOf(res).code, "invalid_argument");
      assert.match(
        errorOf(res).message,
        /Offset must be at most 100000/,
        `Offset ${offset} is read exactly, then capped`,
      );
    }
    const err = await rpcError(fx.client.listPackagesV1({ Offset: "100001", Limit: 1 }), grpc.status.INVALID_ARGUMENT);
    assert.match(err.details, /Offset must be at most 100000/);
  });

  test("invalid UTF-8 in a body is refused, not stored as U+FFFD", async () => {
    const before = await count(fx.db.db, "package");
    const body = Buffer.concat([
      Buffer.from('{"Title":"bad'),
      Buffer.from([0xff, 0xfe]),
      Buffer.from('","Material":"wood","MaximumVolume":1}'),
    ]);
    for (const res of [await rest("POST", "/v1/packages", body), await connect("CreatePackageV1", body)]) {
      assert.equal(res.status, 400, describeCall(res));
      assert.match(errorOf(res).message, /not valid UTF-8/);
    }
    // A lone surrogate escape has no UTF-8 form either (protobuf-es refuses it).
    const surrogate = await rest("POST", "/v1/packages", '{"Title":"a\\ud800","Material":"wood","MaximumVolume":1}');
    assert.equal(surrogate.status, 400, describeCall(surrogate));
    assert.match(errorOf(surrogate).message, /Title.*invalid UTF8/);
    assert.equal(await count(fx.db.db, "package"), before, "nothing was created");
  });

  test("duplicate keys, deep nesting, wrong types and huge floats are refused, naming the problem", async () => {
    const cases: [string, RegExp][] = [
      ['{"Title":"a","Title":"b","Material":"wood","MaximumVolume":1}', /duplicate key "Title"/],
      ['{"Title":"a","\\u0054itle":"b","Material":"wood","MaximumVolume":1}', /duplicate key "Title"/],
      [`{"Title":${"[".repeat(100)}${"]".repeat(100)}}`, /nested deeper than 32 levels/],
      ['{"Title":5,"Material":"wood","MaximumVolume":1}', /Title/],
      ['{"Title":"a","Material":"wood","MaximumVolume":"lots"}', /MaximumVolume/],
      ['{"Title":"a","Material":"wood","MaximumVolume":1e300}', /MaximumVolume.*out of range/],
      ['{"Title":"a","Material":"wood","MaximumVolume":1,"Reusable":"yes"}', /Reusable/],
      ["[1,2]", /expected an object|from JSON: Array/],
      ['{"Title":"a"', /JSON/],
    ];
    for (const [body, problem] of cases) {
      for (const res of [await rest("POST", "/v1/packages", body), await connect("CreatePackageV1", body)]) {
        assert.equal(res.status, 400, `${body}: ${describeCall(res)}`);
        assert.match(errorOf(res).message, problem, body);
      }
    }
  });

  test("unknown fields: REST refuses them (grpc-gateway's rule), Connect ignores them (connect's rule)", async () => {
    const body = '{"Title":"a","Material":"wood","MaximumVolume":1,"Colour":"red"}';
    const viaRest = await rest("POST", "/v1/packages", body);
    assert.equal(viaRest.status, 400, describeCall(viaRest));
    assert.match(errorOf(viaRest).message, /"Colour" is unknown/);
    const proto = await rest("POST", "/v1/packages", '{"__proto__":{"Title":"a"},"Material":"wood","MaximumVolume":1}');
    assert.equal(proto.status, 400, describeCall(proto));
    assert.match(errorOf(proto).message, /"__proto__" is unknown/);
    const viaConnect = await connect("CreatePackageV1", body);
    assert.equal(viaConnect.status, 200, describeCall(viaConnect));
  });

  test("a repeated query parameter, an extra path segment and a wrong verb name the problem", async () => {
    const repeated = await rest("GET", "/v1/packages?Offset=1&Offset=2");
    assert.equal(repeated.status, 400, describeCall(repeated));
    assert.match(errorOf(repeated).message, /"Offset" given more than once/);
    const extra = await rest("GET", "/v1/packages/1/extra");
    assert.equal(extra.status, 404, describeCall(extra));
    assert.match(errorOf(extra).message, /no route for this path; routes: .*GET \/v1\/packages\/\{PackageID\}/);
    const verb = await rest("PATCH", "/v1/packages");
    assert.equal(verb.status, 405, describeCall(verb));
    assert.match(errorOf(verb).message, /allowed: POST, GET/);
  });
});

// ---- generated input ----

const replay = {
  seed: process.env.FC_SEED === undefined ? undefined : Number(process.env.FC_SEED),
  path: process.env.FC_PATH,
};
const runs = (numRuns: number) => ({ numRuns, ...replay });

const fieldNames = ["Title", "Material", "MaximumVolume", "Reusable", "PackageID", "Offset", "Limit", "ID"];
const key = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...fieldNames) },
  fc.constantFrom("title", "maximum_volume", "__proto__", "constructor", "toString", "", "Reusable.Reusable"),
  fc.string({ maxLength: 12 }),
);
/** Number literals as written: beyond 2^53 and 2^64, exponents, fractions, negative zero. */
const numberLiteral = fc.oneof(
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.integer({ min: -5, max: 200_000 }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
  fc.constantFrom(
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775808",
    "-0",
    "0.0",
    "1e19",
    "1e400",
    "-1e400",
    "1e-400",
    "9007199254740993.5",
    "3.4028235e38",
    "3.5e38",
    "1E2",
    "0e0",
  ),
);
const stringLiteral = fc.oneof(
  fc.string({ unit: "binary", maxLength: 40 }).map((s) => JSON.stringify(s)),
  fc.string({ unit: "grapheme", maxLength: 40 }).map((s) => JSON.stringify(s)),
  fc.constantFrom('"\\ud800"', '"a\\udc00"', '"\\u0000"', '"\\"', `"${"a".repeat(33)}"`),
);
const { value: jsonValue } = fc.letrec<{ value: string; array: string; object: string }>((tie) => ({
  value: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    numberLiteral,
    stringLiteral,
    fc.constantFrom("true", "false", "null"),
    tie("array"),
    tie("object"),
  ),
  array: fc.array(tie("value"), { maxLength: 4 }).map((items) => `[${items.join(",")}]`),
  object: fc
    .array(fc.tuple(key, tie("value")), { maxLength: 6 })
    .map((members) => `{${members.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`),
}));
/** An object shaped like a request: mostly real field names, sometimes a Reusable wrapper. */
const requestLike = fc
  .array(
    fc.tuple(
      key,
      fc.oneof(jsonValue, fc.constantFrom('{"Reusable":true}', '{"Reusable":false}', '{"Reusable":"1"}', "{}")),
    ),
    { maxLength: 7 },
  )
  .map((members) => `{${members.map(([k, v]) => `${JSON.stringify(k)}:${v}`).join(",")}}`);
const hostileBytes = [0xff, 0xfe, 0xc0, 0x80, 0xed, 0x00, 0x22, 0x5c, 0x7b, 0x7d];
/** Body bytes: JSON-ish text, the same with a byte inserted or cut short, raw bytes, deep nesting. */
const body: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 4, arbitrary: requestLike.map((s) => Buffer.from(s)) },
  { weight: 2, arbitrary: jsonValue.map((s) => Buffer.from(s)) },
  fc.tuple(requestLike, fc.nat(), fc.constantFrom(...hostileBytes)).map(([s, at, byte]) => {
    const b = Buffer.from(s);
    const i = b.length === 0 ? 0 : at % b.length;
    return Buffer.concat([b.subarray(0, i), Buffer.from([byte]), b.subarray(i)]);
  }),
  fc.tuple(requestLike, fc.nat()).map(([s, at]) => Buffer.from(s).subarray(0, at % (s.length + 1))),
  fc.uint8Array({ maxLength: 64 }),
  fc
    .tuple(fc.integer({ min: 1, max: 3000 }), fc.constantFrom("[", '{"Title":'))
    .map(([depth, open]) =>
      Buffer.from(open.repeat(depth) + (open === "[" ? "]".repeat(depth) : `1${"}".repeat(depth)}`)),
    ),
);

// Weighted towards the routes' own shape (/v1/packages/{PackageID}), so that
// most runs reach the path parameter's decoding rather than a 404.
const pathSegment = fc.oneof(
  fc.bigInt({ min: -1n, max: 2n ** 65n }).map(String),
  fc.string({ unit: "binary", maxLength: 12 }).map(encodeURIComponent),
  {
    weight: 3,
    arbitrary: fc.constantFrom(
      "%",
      "%Z",
      "%ZZ",
      "%00",
      "%FF",
      "%C0%80",
      "%ED%A0%80",
      "%2F",
      "..",
      ".",
      "",
      "%20",
      "1%201",
      "+1",
      "0x10",
      "1e3",
    ),
  },
);
const queryPart = fc.oneof(
  fc.constantFrom("Offset", "Limit", "PackageID", "Title", "offset", "%ZZ", ""),
  fc.string({ maxLength: 8 }).map(encodeURIComponent),
);
const queryValue = fc.oneof(
  numberLiteral.map(encodeURIComponent),
  fc.string({ unit: "binary", maxLength: 12 }).map(encodeURIComponent),
  fc.constantFrom("", "%", "%ZZ", "%FF", "true", "false", "-1", "+1", " 1"),
);
const restRequest = fc.record({
  method: fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom("GET", "PUT", "DELETE") },
    fc.constantFrom("POST", "PATCH", "OPTIONS", "HEAD"),
  ),
  base: fc.oneof(
    { weight: 6, arbitrary: fc.constant("/v1/packages") },
    fc.constantFrom("/v1/packages/", "/v1", "/", "/v1/packages//", "/V1/packages"),
  ),
  segments: fc.oneof(
    { weight: 5, arbitrary: pathSegment.map((segment) => [segment]) },
    fc.array(pathSegment, { maxLength: 3 }),
  ),
  query: fc.array(fc.tuple(queryPart, queryValue), { maxLength: 4 }),
});

describe("generated input (fast-check) never makes a 5xx", () => {
  test("REST: paths, query strings and verbs", async () => {
    await fc.assert(
      fc.asyncProperty(restRequest, async ({ method, base, segments, query }) => {
        const path = [base, ...segments].join("/").replace(/^\/\//, "/");
        const search = query.length === 0 ? "" : `?${query.map(([k, v]) => `${k}=${v}`).join("&")}`;
        const withBody = method === "POST" || method === "PUT" || method === "PATCH";
        assertRestAnswer(await rest(method, path + search, withBody ? '{"Title":"t"}' : undefined), method);
      }),
      runs(600),
    );
  });

  test("REST: bodies of Create and Update", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom("POST /v1/packages", `PUT /v1/packages/${below}`, "PUT /v1/packages/1"),
        body,
        async (route, bytes) => {
          const [method, path] = route.split(" ") as [string, string];
          assertRestAnswer(await rest(method, path, bytes), method);
        },
      ),
      runs(400),
    );
  });

  test("Connect JSON: bodies of every method", async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...methods), body, async (method, bytes) => {
        assertConnectAnswer(await connect(method, bytes));
      }),
      runs(600),
    );
  });

  test("afterwards the server still creates and describes as before", async () => {
    const created = await rest(
      "POST",
      "/v1/packages",
      '{"Title":"after the storm","Material":"oak","MaximumVolume":2.5}',
    );
    assert.equal(created.status, 200, describeCall(created));
    const id = JSON.parse(created.text).ID as string;
    const described = await connect("DescribePackageV1", `{"PackageID": ${id}}`);
    assert.equal(JSON.parse(described.text).Value.Title, "after the storm");
    const internal = fx.server.logs.lines.filter(
      (l) => l.code === "Internal" || l.code === "Unknown" || l.msg === "REST gateway failed a request",
    );
    assert.deepEqual(internal, [], "no request ended as an internal error");
  });
});
