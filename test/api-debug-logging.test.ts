// `log_level: debug` request metadata (project.allowRiseToDebug): off by
// default, so a client cannot make the server log its bodies; when an operator
// turns it on, the debug lines are written after the call was handled, with
// strings and lists cut short, and never carry a header value (no token).

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { writeTokensFile } from "./helpers/config.js";
import { useFixture } from "./helpers/fixture.js";
import { grpc, type PackageApiClient, rpcError } from "./helpers/grpc-client.js";
import type { TestServer } from "./helpers/server.js";

const writerToken = `writer-${randomBytes(12).toString("hex")}`;
const readerToken = `reader-${randomBytes(12).toString("hex")}`;
const token = `Bearer tok-${randomBytes(12).toString("hex")}`;
const tokensDir = mkdtempSync(join(tmpdir(), "lpa-debug-"));
const tokensFile = writeTokensFile(tokensDir, [
  { name: "shop", token: writerToken, role: "writer" },
  { name: "viewer", token: readerToken, role: "reader" },
]);

// quiet: config.yml as committed (allowRiseToDebug off); verbose: allowRiseToDebug on; guarded: on, with API tokens.
const fx = useFixture();
let quiet: TestServer;
let quietClient: PackageApiClient;
let verbose: TestServer;
let verboseClient: PackageApiClient;
let guarded: TestServer;
let guardedClient: PackageApiClient;
fx.onSetUp(async () => {
  ({ server: quiet, client: quietClient } = fx);
  ({ server: verbose, client: verboseClient } = await fx.startServer({ project: { allowRiseToDebug: true } }));
  ({ server: guarded, client: guardedClient } = await fx.startServer({
    project: { allowRiseToDebug: true },
    auth: { tokensFile },
  }));
});
fx.onTearDown(() => rmSync(tokensDir, { recursive: true, force: true }));

const traceId = () => randomBytes(16).toString("hex");
const traceparent = (id: string) => `00-${id}-${randomBytes(8).toString("hex")}-01`;

/** Lines may be written just after the response: poll (bounded) until the request's info line is there. */
async function linesOf(server: TestServer, id: string): Promise<Record<string, unknown>[]> {
  const mine = () => server.logs.lines.filter((l) => l.traceId === id);
  const deadline = Date.now() + 5000;
  while (!mine().some((l) => l.level === "info" || l.level === "error") && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  return mine();
}

const debugLines = (lines: Record<string, unknown>[]) => lines.filter((l) => l.level === "debug");

describe("allowRiseToDebug off (the default)", () => {
  test("config.yml and the code default it to false", () => {
    assert.equal(quiet.config.project.allowRiseToDebug, false);
  });

  test("a request with log_level: debug is logged at info only: no body in any line", async () => {
    const id = traceId();
    const title = `quiet-${randomBytes(4).toString("hex")}`;
    await quietClient.createPackageV1(
      { Title: title, Material: "paper", MaximumVolume: 1 },
      { traceparent: traceparent(id), log_level: "debug", authorization: token },
    );
    await quietClient.listPackagesV1({ Limit: "1" }, { traceparent: traceparent(id), log_level: "debug" });
    const lines = await linesOf(quiet, id);
    assert.equal(lines.filter((l) => l.msg === "request finished").length, 2, JSON.stringify(lines));
    assert.deepEqual(debugLines(lines), [], "no debug line");
    assert.ok(!JSON.stringify(quiet.logs.lines).includes(title), "the body is not logged");
  });
});

describe("allowRiseToDebug on", () => {
  test("log_level: debug logs the request and response bodies of that request only", async () => {
    const id = traceId();
    const other = traceId();
    const { ID } = await verboseClient.createPackageV1(
      { Title: "debugged", Material: "paper", MaximumVolume: 1 },
      { traceparent: traceparent(id), log_level: "debug" },
    );
    await verboseClient.createPackageV1(
      { Title: "plain", Material: "paper", MaximumVolume: 1 },
      { traceparent: traceparent(other) },
    );
    const lines = debugLines(await linesOf(verbose, id));
    assert.deepEqual(
      lines.map((l) => l.msg),
      ["request received", "response sent"],
    );
    assert.deepEqual(lines[0]!.request, { Title: "debugged", Material: "paper", MaximumVolume: 1 });
    assert.deepEqual(lines[1]!.response, { ID });
    assert.deepEqual(debugLines(await linesOf(verbose, other)), [], "a request without log_level stays at info");
  });

  test("strings are cut at 64 characters in the debug line, lists at 10 items", async () => {
    const id = traceId();
    // An invalid request (Title > 32 characters) is logged after validation failed, cut short.
    const longTitle = "T".repeat(100_000);
    await rpcError(
      verboseClient.createPackageV1(
        { Title: longTitle, Material: "paper", MaximumVolume: 1 },
        { traceparent: traceparent(id), log_level: "debug" },
      ),
      grpc.status.INVALID_ARGUMENT,
    );
    const lines = debugLines(await linesOf(verbose, id));
    assert.deepEqual(
      lines.map((l) => l.msg),
      ["request received"],
      "no response line for a failed call",
    );
    const logged = (lines[0]!.request as { Title: string }).Title;
    assert.equal(logged, `${"T".repeat(64)}…(100000 chars)`);
    assert.ok(JSON.stringify(lines[0]).length < 1000, "the line stays small");

    for (let i = 0; i < 12; i++)
      await verboseClient.createPackageV1({ Title: `list ${i}`, Material: "paper", MaximumVolume: 1 });
    const listId = traceId();
    await verboseClient.listPackagesV1({ Limit: "12" }, { traceparent: traceparent(listId), log_level: "debug" });
    const response = debugLines(await linesOf(verbose, listId)).find((l) => l.msg === "response sent")!.response as {
      Packages: unknown[];
    };
    assert.equal(response.Packages.length, 11, "10 packages and a marker");
    assert.equal(response.Packages[10], "…(2 more)");
  });

  test("header values never reach the log: the authorization token is in no line", async () => {
    const id = traceId();
    await verboseClient.createPackageV1(
      { Title: "with token", Material: "paper", MaximumVolume: 1 },
      { traceparent: traceparent(id), log_level: "debug", authorization: token, "x-api-key": token },
    );
    await rpcError(
      verboseClient.describePackageV1(
        { PackageID: "999999999" },
        { traceparent: traceparent(id), log_level: "debug", authorization: token },
      ),
      grpc.status.NOT_FOUND,
    );
    const rest = await fetch(`${verbose.gatewayUrl}/v1/packages`, {
      method: "POST",
      headers: {
        authorization: token,
        log_level: "debug",
        traceparent: traceparent(id),
        "grpc-metadata-authorization": token,
      },
      body: JSON.stringify({ Title: "rest token", Material: "paper", MaximumVolume: 1 }),
    });
    assert.equal(rest.status, 200);
    const lines = await linesOf(verbose, id);
    assert.ok(debugLines(lines).length >= 4, `the debug lines were written (${debugLines(lines).length})`);
    const secret = token.slice("Bearer ".length);
    for (const server of [verbose, quiet]) {
      for (const line of server.logs.lines)
        assert.ok(!JSON.stringify(line).includes(secret), `token in ${JSON.stringify(line)}`);
    }
  });
});

describe("allowRiseToDebug on, with API tokens", () => {
  test("a caller with a token gets its debug lines, and its token is in no line", async () => {
    const id = traceId();
    await guardedClient.createPackageV1(
      { Title: "authorized", Material: "paper", MaximumVolume: 1 },
      { traceparent: traceparent(id), log_level: "debug", authorization: `Bearer ${writerToken}` },
    );
    const lines = await linesOf(guarded, id);
    assert.deepEqual(
      debugLines(lines).map((l) => l.msg),
      ["request received", "response sent"],
    );
    for (const line of guarded.logs.lines)
      assert.ok(!JSON.stringify(line).includes(writerToken), `token in ${JSON.stringify(line)}`);
  });

  test("a call refused for a missing token or too low a role writes no debug line and no body", async () => {
    const unauthenticated = traceId();
    const title = `refused-${randomBytes(4).toString("hex")}`;
    await rpcError(
      guardedClient.createPackageV1(
        { Title: title, Material: "paper", MaximumVolume: 1 },
        { traceparent: traceparent(unauthenticated), log_level: "debug" },
      ),
      grpc.status.UNAUTHENTICATED,
    );
    const denied = traceId();
    await rpcError(
      guardedClient.createPackageV1(
        { Title: title, Material: "paper", MaximumVolume: 1 },
        { traceparent: traceparent(denied), log_level: "debug", authorization: `Bearer ${readerToken}` },
      ),
      grpc.status.PERMISSION_DENIED,
    );
    for (const id of [unauthenticated, denied]) {
      const lines = await linesOf(guarded, id);
      assert.equal(lines.filter((l) => l.msg === "request finished").length, 1, JSON.stringify(lines));
      assert.deepEqual(debugLines(lines), []);
    }
    assert.ok(!JSON.stringify(guarded.logs.lines).includes(title), "the refused body is not logged");
    for (const line of guarded.logs.lines) assert.ok(!JSON.stringify(line).includes(readerToken));
  });
});
