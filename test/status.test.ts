// The status port (/live, /ready, /version) and what clients see while the
// database is away: /ready 503, health NOT_SERVING, calls UNAVAILABLE, and all
// of it recovering when the database is back. The database "goes away" for
// this process only, through a TCP proxy (other test files share Postgres).
// Run: bash scripts/test.sh test/status.test.ts

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { grpc, healthClient, type PackageApiClient, packageApiClient, rpcError } from "./helpers/grpc-client.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { startTcpProxy, type TcpProxy } from "./helpers/tcp-proxy.js";

const repoRoot = new URL("..", import.meta.url);
const serviceName = "hablof.logistic_package_api.v1.LogisticPackageApiService";

let db: TestDatabase;
let proxy: TcpProxy;
let server: TestServer;
let api: PackageApiClient;
let health: ReturnType<typeof healthClient>;
let proxyCut = false;

before(async () => {
  db = await createTestDatabase();
  const direct = new URL(db.url);
  proxy = await startTcpProxy(direct.hostname, Number(direct.port || 5432));
  const viaProxy = new URL(db.url);
  viaProxy.port = String(proxy.port);

  // Short timeouts (no environment variable sets them) so that a dead database is noticed quickly.
  server = await startTestServer(
    viaProxy.toString(),
    {},
    { database: { acquireTimeoutMs: 1000 }, status: { readinessTimeoutMs: 500 } },
  );
  assert.equal(server.config.database.acquireTimeoutMs, 1000, "the override is the config in use");
  api = packageApiClient(server.grpcAddress);
  health = healthClient(server.grpcAddress);
});

after(async () => {
  api?.close();
  health?.close();
  if (proxyCut) await proxy.restore(); // a failed test may leave it cut; stop() needs the database
  await server?.stop();
  await proxy?.close();
  await db?.drop();
});

async function get(path: string): Promise<{ status: number; body: any }> {
  const res = await fetch(`${server.statusUrl}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: await res.json() };
}

/** Polls `path` until it answers `status` (bounded); returns the last answer. */
async function waitForStatus(path: string, status: number): Promise<{ status: number; body: any }> {
  const deadline = Date.now() + 15_000;
  let last = await get(path);
  while (last.status !== status && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    last = await get(path);
  }
  return last;
}

describe("status endpoints", () => {
  test("/live answers 200", async () => {
    const res = await get("/live");
    assert.equal(res.status, 200);
  });

  test("/version names the service, its version and the commit", async () => {
    const pkg = JSON.parse(readFileSync(new URL("package.json", repoRoot), "utf8")) as { version: string };
    let commit = "unknown";
    try {
      commit = execFileSync("git", ["rev-parse", "HEAD"], {
        cwd: repoRoot,
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
      }).trim();
    } catch {
      // not a checkout, or no commits yet
    }
    const res = await get("/version");
    assert.equal(res.status, 200);
    assert.equal(res.body.name, "logistic-package-api");
    assert.equal(res.body.version, pkg.version);
    assert.equal(res.body.commitHash, process.env.COMMIT_HASH ?? commit);
  });

  test("an unknown path is 404", async () => {
    assert.equal((await get("/nope")).status, 404);
  });
});

describe("readiness follows the database", () => {
  test("/ready, health and calls fail while the database is away and recover when it is back", async () => {
    const { ID } = await api.createPackageV1({
      Title: "survivor",
      Material: "steel",
      MaximumVolume: 3,
      Reusable: true,
    });
    assert.equal((await get("/ready")).status, 200);
    assert.equal((await health.check({ service: serviceName })).status, "SERVING");

    await proxy.cut();
    proxyCut = true;
    const down = await waitForStatus("/ready", 503);
    assert.equal(down.status, 503, "/ready turns 503 when the database is unreachable");
    assert.equal((await health.check({ service: "" })).status, "NOT_SERVING");
    assert.equal((await health.check({ service: serviceName })).status, "NOT_SERVING");
    const err = await rpcError(api.describePackageV1({ PackageID: ID }), grpc.status.UNAVAILABLE);
    assert.doesNotMatch(err.details, /select|from|where/i, "no SQL in the message");

    await proxy.restore();
    proxyCut = false;
    const up = await waitForStatus("/ready", 200);
    assert.equal(up.status, 200, "/ready is 200 again once the database is back");
    assert.equal((await health.check({ service: serviceName })).status, "SERVING");
    const { Value } = await api.describePackageV1({ PackageID: ID });
    assert.equal(Value.Title, "survivor");
  });
});
