// Every protocol the grpc-server speaks, seen from the client tools people use:
// REST (fetch), Connect JSON over HTTP/1.1, gRPC-Web, Connect over HTTP/2,
// stock grpc-js clients for health and reflection, and the request log lines.
// Run: bash scripts/test.sh test/api-protocols.test.ts

import assert from "node:assert/strict";
import { randomBytes, randomUUID } from "node:crypto";
import { describe, test } from "node:test";
import { fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { type Client, Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { LogisticPackageApiService } from "../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, healthClient, packageApiClient, reflectionClient, rpcError } from "./helpers/grpc-client.js";
import { startTestServer } from "./helpers/server.js";

const serviceName = "hablof.logistic_package_api.v1.LogisticPackageApiService";

const fx = useFixture();
let health: ReturnType<typeof healthClient>;
let reflection: grpc.Client;
let h2Sessions: Http2SessionManager;
fx.onSetUp(() => {
  health = healthClient(fx.server.grpcAddress);
  reflection = reflectionClient(fx.server.grpcAddress);
  h2Sessions = new Http2SessionManager(fx.server.grpcUrl);
});
fx.onTearDown(() => {
  health?.close();
  reflection?.close();
  h2Sessions?.abort();
});

interface HttpResult {
  status: number;
  headers: Headers;
  body: any;
}

async function call(
  method: string,
  url: string,
  body?: string,
  headers: Record<string, string> = {},
): Promise<HttpResult> {
  const res = await fetch(url, {
    method,
    // A hung server fails the test at once instead of at the runner's timeout.
    signal: AbortSignal.timeout(10_000),
    headers: body === undefined ? headers : { "content-type": "application/json", ...headers },
    ...(body === undefined ? {} : { body }),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {
    // keep the raw text: the assertion on it will show what came back
  }
  return { status: res.status, headers: res.headers, body: parsed };
}

const rest = (method: string, path: string, body?: unknown) =>
  call(
    method,
    `${fx.server.gatewayUrl}${path}`,
    body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  );

async function restCreate(title: string): Promise<string> {
  const res = await rest("POST", "/v1/packages", {
    Title: title,
    Material: "cardboard",
    MaximumVolume: 12.5,
    Reusable: true,
  });
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.match(res.body.ID, /^[1-9][0-9]*$/);
  return res.body.ID as string;
}

describe("REST gateway", () => {
  test("POST creates and GET describes with the PascalCase field names", async () => {
    const res = await rest("POST", "/v1/packages", {
      Title: "box",
      Material: "cardboard",
      MaximumVolume: 12.5,
      Reusable: true,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /application\/json/);
    assert.deepEqual(Object.keys(res.body), ["ID"]);
    assert.match(res.body.ID, /^[1-9][0-9]*$/, "uint64 is a decimal string in proto JSON");

    const got = await rest("GET", `/v1/packages/${res.body.ID}`);
    assert.equal(got.status, 200);
    const pkg = got.body.Value;
    assert.equal(pkg.ID, res.body.ID);
    assert.equal(pkg.Title, "box");
    assert.equal(pkg.Material, "cardboard");
    assert.equal(pkg.MaximumVolume, 12.5);
    assert.equal(pkg.Reusable, true);
    assert.ok(!Number.isNaN(Date.parse(pkg.Created)), `Created is an RFC 3339 time: ${pkg.Created}`);
    assert.equal(pkg.Updated, undefined, "Updated is absent until the first update");
  });

  test("GET /v1/packages pages with Offset and Limit, ordered by ID", async () => {
    const ids = [await restCreate("list-1"), await restCreate("list-2"), await restCreate("list-3")];
    const res = await rest("GET", "/v1/packages?Offset=0&Limit=2");
    assert.equal(res.status, 200);
    assert.ok(Array.isArray(res.body.Packages));
    assert.equal(res.body.Packages.length, 2);
    const listed = res.body.Packages.map((p: { ID: string }) => BigInt(p.ID));
    assert.ok(listed[0] < listed[1], "ordered by ID");
    assert.deepEqual(res.body.PackageTitle, [], "the unused field is still emitted, as grpc-gateway did");

    // The page after the first two holds the next ones, and the new packages are all reachable.
    const all = await rest("GET", "/v1/packages?Offset=0&Limit=500");
    const allIds = all.body.Packages.map((p: { ID: string }) => p.ID);
    for (const id of ids) assert.ok(allIds.includes(id), `package ${id} is listed`);
    const second = await rest("GET", "/v1/packages?Offset=2&Limit=2");
    assert.equal(second.body.Packages[0].ID, allIds[2]);
  });

  test("PUT with a JSON body updates, DELETE removes, then GET is 404", async () => {
    const id = await restCreate("before");
    const put = await rest("PUT", `/v1/packages/${id}`, { Title: "new" });
    assert.equal(put.status, 200);
    assert.deepEqual(put.body, { Suc: true });

    const got = await rest("GET", `/v1/packages/${id}`);
    assert.equal(got.body.Value.Title, "new");
    assert.equal(got.body.Value.Material, "cardboard", "fields not in the body are unchanged");
    assert.ok(!Number.isNaN(Date.parse(got.body.Value.Updated?.Time)), "Updated is set by the update");

    const del = await rest("DELETE", `/v1/packages/${id}`);
    assert.equal(del.status, 200);
    assert.deepEqual(del.body, { Suc: true });

    const gone = await rest("GET", `/v1/packages/${id}`);
    assert.equal(gone.status, 404);
    assert.equal(gone.body.code, 5);
    assert.equal(gone.body.message, "package not found");
  });

  test("a validation error is 400 with code 3 and names the field", async () => {
    const res = await rest("POST", "/v1/packages", { Title: "", Material: "steel", MaximumVolume: 1 });
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 3);
    assert.match(res.body.message, /Title/);

    const volume = await rest("POST", "/v1/packages", { Title: "t", Material: "steel", MaximumVolume: -1 });
    assert.equal(volume.status, 400);
    assert.equal(volume.body.code, 3);
    assert.match(volume.body.message, /MaximumVolume/);
  });

  test("a malformed JSON body is 400", async () => {
    const res = await rest("POST", "/v1/packages", '{"Title": "x",');
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 3);
    const before = await rest("GET", "/v1/packages?Limit=500");
    assert.ok(!before.body.Packages.some((p: { Title: string }) => p.Title === "x"), "nothing was created");
  });

  test("a non-numeric path id is 400", async () => {
    const res = await rest("GET", "/v1/packages/abc");
    assert.equal(res.status, 400);
    assert.equal(res.body.code, 3);
  });

  test("an unknown route is 404 and a wrong verb on a known path is 405", async () => {
    const unknown = await rest("GET", "/v1/nothing-here");
    assert.equal(unknown.status, 404);

    const patch = await rest("PATCH", "/v1/packages/1", { Title: "x" });
    assert.equal(patch.status, 405);
    const allowed = (patch.headers.get("allow") ?? "").split(/,\s*/).sort();
    assert.deepEqual(allowed, ["DELETE", "GET", "PUT"]);
  });
});

describe("Connect, gRPC-Web and Connect over HTTP/2 on the gRPC port", () => {
  const connectUrl = (method: string) => `${fx.server.grpcUrl}/${serviceName}/${method}`;

  test("Connect JSON over HTTP/1.1 (curl-style fetch)", async () => {
    const created = await call(
      "POST",
      connectUrl("CreatePackageV1"),
      JSON.stringify({ Title: "connect", Material: "wood", MaximumVolume: 3, Reusable: false }),
    );
    assert.equal(created.status, 200, JSON.stringify(created.body));
    assert.match(created.headers.get("content-type") ?? "", /application\/json/);
    assert.match(created.body.ID, /^[1-9][0-9]*$/);

    const described = await call(
      "POST",
      connectUrl("DescribePackageV1"),
      JSON.stringify({ PackageID: created.body.ID }),
    );
    assert.equal(described.status, 200);
    assert.equal(described.body.Value.Title, "connect");

    const missing = await call("POST", connectUrl("DescribePackageV1"), JSON.stringify({ PackageID: "999999999" }));
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, "not_found");
    assert.equal(missing.body.message, "package not found");
  });

  test("gRPC-Web over HTTP/1.1: create and describe round trip", async () => {
    const client: Client<typeof LogisticPackageApiService> = createClient(
      LogisticPackageApiService,
      createGrpcWebTransport({ baseUrl: fx.server.grpcUrl, httpVersion: "1.1" }),
    );
    const { ID } = await client.createPackageV1({
      Title: "web",
      Material: "paper",
      MaximumVolume: 2.5,
      Reusable: true,
    });
    assert.ok(ID > 0n);
    const { Value } = await client.describePackageV1({ PackageID: ID });
    assert.equal(Value?.ID, ID);
    assert.equal(Value?.Title, "web");
    assert.equal(Value?.Material, "paper");
    assert.equal(Value?.MaximumVolume, 2.5);
    assert.equal(Value?.Reusable, true);

    await assert.rejects(client.describePackageV1({ PackageID: ID + 1_000_000n }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.NotFound);
      assert.equal(err.rawMessage, "package not found");
      return true;
    });
  });

  test("Connect protocol over HTTP/2: create and describe round trip", async () => {
    const client = createClient(
      LogisticPackageApiService,
      createConnectTransport({ baseUrl: fx.server.grpcUrl, httpVersion: "2", sessionManager: h2Sessions }),
    );
    const { ID } = await client.createPackageV1({ Title: "h2", Material: "foam", MaximumVolume: 7, Reusable: false });
    const { Value } = await client.describePackageV1({ PackageID: ID });
    assert.equal(Value?.Title, "h2");
    assert.equal(Value?.Material, "foam");
    assert.notEqual(h2Sessions.state(), "closed", "the call went over an HTTP/2 session");

    await assert.rejects(client.createPackageV1({ Title: "", Material: "foam", MaximumVolume: 7 }), (err: unknown) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.InvalidArgument);
      assert.match(err.rawMessage, /Title/);
      return true;
    });
  });
});

describe("gRPC health (stock grpc-js client)", () => {
  test("Check answers SERVING for the server and each of its services, NOT_FOUND for others", async () => {
    assert.equal((await health.check({ service: "" })).status, "SERVING");
    assert.equal((await health.check({ service: serviceName })).status, "SERVING");
    const err = await rpcError(health.check({ service: "no.such.Service" }), grpc.status.NOT_FOUND);
    assert.match(err.details, /no\.such\.Service/);
  });

  test("Watch streams SERVING first and can be cancelled", async () => {
    const watch = (
      health.raw as unknown as Record<string, (req: unknown) => grpc.ClientReadableStream<{ status: string }>>
    ).Watch!.bind(health.raw);
    const stream = watch({ service: serviceName });
    const ended = new Promise<grpc.ServiceError | undefined>((resolve) => {
      stream.on("error", (err: grpc.ServiceError) => resolve(err));
      stream.on("end", () => resolve(undefined));
    });
    const first = await new Promise<{ status: string }>((resolve, reject) => {
      stream.once("data", resolve);
      stream.once("error", reject);
    });
    assert.equal(first.status, "SERVING");
    stream.cancel();
    const err = await ended;
    assert.equal(err?.code, grpc.status.CANCELLED);
  });
});

describe("gRPC server reflection v1 (stock grpc-js client)", () => {
  function reflect(request: Record<string, unknown>): Promise<any> {
    const open = (
      reflection as unknown as Record<string, () => grpc.ClientDuplexStream<unknown, any>>
    ).ServerReflectionInfo!.bind(reflection);
    return new Promise((resolve, reject) => {
      const stream = open();
      const responses: unknown[] = [];
      stream.on("data", (res) => responses.push(res));
      stream.on("error", reject);
      stream.on("end", () => {
        if (responses.length === 1) resolve(responses[0]);
        else reject(new Error(`expected one reflection response, got ${responses.length}`));
      });
      stream.write(request);
      stream.end();
    });
  }

  test("list_services lists the API, health and reflection", async () => {
    const res = await reflect({ list_services: "" });
    assert.equal(res.message_response, "list_services_response");
    const names = res.list_services_response.service.map((s: { name: string }) => s.name).sort();
    assert.deepEqual(
      names,
      [
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        serviceName,
      ].sort(),
    );
  });

  test("file_containing_symbol returns the API file with its dependencies", async () => {
    const res = await reflect({ file_containing_symbol: serviceName });
    assert.equal(res.message_response, "file_descriptor_response", JSON.stringify(res.error_response));
    const files: FileDescriptorProto[] = res.file_descriptor_response.file_descriptor_proto.map((bytes: Uint8Array) =>
      fromBinary(FileDescriptorProtoSchema, new Uint8Array(bytes)),
    );
    const names = files.map((f) => f.name);
    assert.ok(names.includes("google/api/annotations.proto"), `files: ${names.join(", ")}`);
    assert.ok(names.includes("google/protobuf/timestamp.proto"), `files: ${names.join(", ")}`);

    const apiFile = files.find((f) => f.package === "hablof.logistic_package_api.v1" && f.service.length > 0);
    assert.ok(apiFile, `the API file is among ${names.join(", ")}`);
    const service = apiFile.service.find((s) => s.name === "LogisticPackageApiService");
    assert.ok(service);
    assert.deepEqual(service.method.map((m) => m.name).sort(), [
      "CreatePackageV1",
      "DescribePackageV1",
      "ListPackagesV1",
      "RemovePackageV1",
      "UpdatePackageV1",
    ]);
    // Every file a descriptor imports is sent along, so a client can build the types from one answer.
    for (const file of files) {
      for (const dep of file.dependency)
        assert.ok(names.includes(dep), `${file.name} imports ${dep}, which was not sent`);
    }
  });

  test("an unknown symbol is an error_response with NOT_FOUND (5)", async () => {
    const res = await reflect({ file_containing_symbol: "no.such.Symbol" });
    assert.equal(res.message_response, "error_response");
    assert.equal(res.error_response.error_code, 5);
  });
});

describe("one port, two engines: native gRPC by grpc-js, Connect and gRPC-Web by connect-node", () => {
  // What a client sees of each engine: grpc-js announces the compressions it
  // accepts and sends "OK" as the status message; connect-node does neither.
  async function rawCall(contentType: string, body: Buffer, port = fx.server.ports.grpc) {
    const http2 = await import("node:http2");
    const session = http2.connect(`http://127.0.0.1:${port}`);
    try {
      const stream = session.request({
        ":method": "POST",
        ":path": `/${serviceName}/ListPackagesV1`,
        "content-type": contentType,
        te: "trailers",
      });
      stream.end(body);
      let headers: Record<string, unknown> = {};
      let trailers: Record<string, unknown> = {};
      stream.on("response", (h) => (headers = h));
      stream.on("trailers", (t) => (trailers = t));
      stream.resume();
      await new Promise((resolve) => stream.once("close", resolve));
      return { headers, trailers };
    } finally {
      session.close();
    }
  }
  const emptyFrame = Buffer.from([0, 0, 0, 0, 0]);

  test("application/grpc streams are answered by grpc-js", async () => {
    const { headers, trailers } = await rawCall("application/grpc", emptyFrame);
    assert.equal(headers["grpc-accept-encoding"], "identity,deflate,gzip");
    assert.deepEqual(
      { status: trailers["grpc-status"], message: trailers["grpc-message"] },
      { status: "0", message: "OK" },
    );
  });

  test("gRPC-Web over HTTP/2 on the same port is answered by connect-node", async () => {
    const { headers } = await rawCall("application/grpc-web+proto", emptyFrame);
    assert.equal(headers[":status"], 200);
    assert.equal(headers["content-type"], "application/grpc-web+proto");
    assert.equal(headers["grpc-accept-encoding"], undefined);
  });

  test("reflection v1alpha answers like v1 (older grpcurl)", async () => {
    const v1alpha = reflectionClient(fx.server.grpcAddress, undefined, "v1alpha");
    try {
      const res = await new Promise<any>((resolve, reject) => {
        const stream = (v1alpha as any).ServerReflectionInfo();
        stream.on("data", resolve);
        stream.on("error", reject);
        stream.write({ list_services: "" });
        stream.end();
      });
      const names = res.list_services_response.service.map((s: { name: string }) => s.name);
      assert.ok(names.includes(serviceName));
    } finally {
      v1alpha.close();
    }
  });

  test("with grpc.nativeGrpcJs false, connect-node serves native gRPC and stock clients still work", async () => {
    const fallback = await startTestServer(fx.db.url, {}, { grpc: { nativeGrpcJs: false } });
    const client = packageApiClient(fallback.grpcAddress);
    try {
      const { ID } = await client.createPackageV1({ Title: "fallback", Material: "tin", MaximumVolume: 2 });
      assert.equal((await client.describePackageV1({ PackageID: ID })).Value.Title, "fallback");
      const { headers } = await rawCall("application/grpc", emptyFrame, fallback.ports.grpc);
      assert.equal(headers["grpc-accept-encoding"], undefined, "answered by connect-node");
    } finally {
      client.close();
      await fallback.stop();
    }
  });
});

describe("request logs", () => {
  const newTraceId = () => randomBytes(16).toString("hex");
  const traceparent = (traceId: string) => `00-${traceId}-${randomBytes(8).toString("hex")}-01`;
  const linesWhere = (pred: (line: Record<string, unknown>) => boolean) => fx.server.logs.lines.filter(pred);

  /** Lines can be written just after the response is sent: poll (bounded) for the expected one. */
  async function waitForLines(pred: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>[]> {
    const deadline = Date.now() + 5000;
    while (linesWhere(pred).length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    return linesWhere(pred);
  }

  test("one line per gRPC call with method, code, duration and a trace id", async () => {
    const requestId = randomUUID();
    await rpcError(
      fx.client.describePackageV1({ PackageID: "987654321" }, { "x-request-id": requestId }),
      grpc.status.NOT_FOUND,
    );
    const lines = await waitForLines((l) => l.requestId === requestId);
    assert.equal(lines.length, 1, JSON.stringify(lines));
    const line = lines[0]!;
    assert.equal(line.level, "info");
    assert.equal(line.method, "DescribePackageV1");
    assert.equal(line.code, "NotFound");
    assert.equal(typeof line.durationMs, "number");
    assert.ok((line.durationMs as number) >= 0);
    assert.match(String(line.traceId), /^[0-9a-f]{32}$/);
  });

  test("a traceparent in the metadata gives the logged trace id", async () => {
    const traceId = newTraceId();
    const { ID } = await fx.client.createPackageV1(
      { Title: "traced", Material: "tin", MaximumVolume: 1, Reusable: false },
      { traceparent: traceparent(traceId) },
    );
    assert.match(ID, /^[1-9][0-9]*$/);
    const lines = await waitForLines((l) => l.traceId === traceId);
    assert.equal(lines.length, 1, JSON.stringify(lines));
    assert.equal(lines[0]!.method, "CreatePackageV1");
    assert.equal(lines[0]!.code, "ok");
  });
  // log_level: debug (project.allowRiseToDebug, off by default): test/api-debug-logging.test.ts.
});
