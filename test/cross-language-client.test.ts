// A stock client in another language: Python's grpcio (Debian's package), its
// stubs compiled from api/ by grpc_tools in this run, against the real server
// with TLS and API tokens. It sees the wire contract only: package, service,
// field names and numbers. scripts/ensure-python-grpc.sh installs it.
// Run: bash scripts/test.sh test/cross-language-client.test.ts

import assert from "node:assert/strict";
import { test } from "node:test";
import { createTestCa } from "./helpers/certs.js";
import { secureServerEnv } from "./helpers/config.js";
import { useFixture } from "./helpers/fixture.js";
import { clientScript, compilePythonStubs, jsonLines, python, run } from "./helpers/python.js";

const tokens = { ops: "python-ops-token-1f2e3d4c5b6a", viewer: "python-viewer-token-9a8b7c6d5e" };

const ca = createTestCa("python");
const fx = useFixture({
  env: {
    server: secureServerEnv(ca, [
      { name: "ops", token: tokens.ops, role: "admin" },
      { name: "viewer", token: tokens.viewer, role: "reader" },
    ]),
  },
});
let stubs: Awaited<ReturnType<typeof compilePythonStubs>> | undefined;
fx.onSetUp(async () => {
  stubs = await compilePythonStubs(
    [
      "hablof/logistic_package_api/v1/logistic_package_api.proto",
      "google/api/annotations.proto",
      "google/api/http.proto",
    ],
    { grpc: true },
  );
});
fx.onTearDown(() => {
  ca.remove();
  stubs?.remove();
});

test("a Python grpcio client creates, reads, updates, lists and removes over TLS with a token; refusals carry their codes", async () => {
  const { stdout } = await run(python, [
    clientScript("python_client.py"),
    stubs!.dir,
    `localhost:${fx.server.ports.grpc}`,
    ca.caFile,
    tokens.ops,
    tokens.viewer,
  ]);
  const steps: Record<string, Record<string, any>> = Object.fromEntries(
    jsonLines<{ step: string } & Record<string, unknown>>(stdout).map(({ step, ...rest }) => [step, rest]),
  );
  assert.ok(Number(steps.create.id) > 0);
  assert.deepEqual(steps.describe, {
    title: "Kiste",
    material: "Holz",
    volume: 12.5,
    reusable: true,
    hasUpdated: false,
  });
  assert.deepEqual(steps.update, { suc: true });
  assert.deepEqual(steps.list, { titles: ["Große Kiste"], reusable: [false], hasUpdated: [true] });
  assert.deepEqual(steps.remove, { suc: true });
  assert.equal(steps["no token"].code, "UNAUTHENTICATED");
  assert.match(steps["no token"].details, /missing bearer token/);
  assert.equal(steps["reader removes"].code, "PERMISSION_DENIED");
  assert.match(steps["reader removes"].details, /"viewer" has role reader; RemovePackageV1 needs admin/);
  assert.deepEqual(steps["describe removed"], { code: "NOT_FOUND", details: "package not found" });
});
