// TLS and API tokens as an operator sets them up from the README: certificate
// files and a tokens file, then stock clients (grpc-js from the .proto files,
// curl over HTTP/1.1 and HTTP/2) with and without a token. Certificates are
// real, made by openssl for each run.
// Run: bash scripts/test.sh test/api-tls-auth.test.ts

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import tls from "node:tls";
import { promisify } from "node:util";
import { createTestCa } from "./helpers/certs.js";
import { secureServerEnv, writeTokensFile } from "./helpers/config.js";
import { createTestDatabase } from "./helpers/database.js";
import { useFixture } from "./helpers/fixture.js";
import {
  grpc,
  healthClient,
  type PackageApiClient,
  packageApiClient,
  reflectionClient,
  rpcError,
} from "./helpers/grpc-client.js";
import { startTestServer } from "./helpers/server.js";

const run = promisify(execFile);
const tokens = {
  shop: "shop-token-7c2f0e9a41d84b3f",
  viewer: "viewer-token-5b1e8d2c9a7f4e60",
  ops: "ops-token-0d9c8b7a6f5e4d3c",
};

const ca = createTestCa("api");
const fx = useFixture({
  env: {
    server: secureServerEnv(ca, [
      { name: "shop", token: tokens.shop, role: "writer" },
      { name: "viewer", tokenSha256: createHash("sha256").update(tokens.viewer).digest("hex"), role: "reader" },
      { name: "ops", token: tokens.ops, role: "admin" },
    ]),
  },
});
const clients: { close(): void }[] = [];

function tlsClient(address: string, creds = grpc.credentials.createSsl(ca.ca)): PackageApiClient {
  const client = packageApiClient(address, creds);
  clients.push(client);
  return client;
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

fx.onTearDown(() => {
  for (const c of clients) c.close();
  ca.remove();
});

const grpcAddress = () => `127.0.0.1:${fx.server.ports.grpc}`;

async function curl(args: string[]): Promise<{ status: number; body: string }> {
  // -w prints the status after the body; curl exits 0 for HTTP errors without -f.
  const { stdout } = await run("curl", ["-sS", "--max-time", "10", "-w", "\n%{http_code}", ...args]);
  const cut = stdout.lastIndexOf("\n");
  return { body: stdout.slice(0, cut), status: Number(stdout.slice(cut + 1)) };
}

describe("roles over gRPC with TLS", () => {
  test("a writer creates and updates, a reader reads, only an admin removes", async () => {
    const api = tlsClient(grpcAddress());
    const { ID } = await api.createPackageV1(
      { Title: "Crate", Material: "pine", MaximumVolume: 40 },
      bearer(tokens.shop),
    );
    assert.deepEqual(await api.updatePackageV1({ PackageID: ID, Title: "Big crate" }, bearer(tokens.shop)), {
      Suc: true,
    });
    const seen = await api.describePackageV1({ PackageID: ID }, bearer(tokens.viewer));
    assert.equal(seen.Value.Title, "Big crate");
    const list = await api.listPackagesV1({ Limit: 10 }, bearer(tokens.viewer));
    assert.equal(list.Packages.length, 1);

    const readerCreate = await rpcError(
      api.createPackageV1({ Title: "no", Material: "no", MaximumVolume: 1 }, bearer(tokens.viewer)),
      grpc.status.PERMISSION_DENIED,
    );
    assert.match(readerCreate.details, /"viewer" has role reader; CreatePackageV1 needs writer/);
    const writerRemove = await rpcError(
      api.removePackageV1({ PackageID: ID }, bearer(tokens.shop)),
      grpc.status.PERMISSION_DENIED,
    );
    assert.match(writerRemove.details, /RemovePackageV1 needs admin/);
    assert.deepEqual(await api.removePackageV1({ PackageID: ID }, bearer(tokens.ops)), { Suc: true });

    // Refused calls changed nothing: one package, removed by the admin; three events.
    const rows = await fx.db.db.raw("SELECT count(*)::int AS n, bool_and(removed) AS removed FROM package");
    assert.deepEqual(rows.rows[0], { n: 1, removed: true });
    const events = await fx.db.db.raw("SELECT count(*)::int AS n FROM package_event");
    assert.equal(events.rows[0].n, 3);
  });

  test("no token and an unknown token are UNAUTHENTICATED with a message that says what to send", async () => {
    const api = tlsClient(grpcAddress());
    const missing = await rpcError(api.listPackagesV1({}), grpc.status.UNAUTHENTICATED);
    assert.match(missing.details, /missing bearer token: send the header authorization: Bearer <token>/);
    const unknown = await rpcError(
      api.listPackagesV1({}, bearer("not-a-token-of-ours-1234")),
      grpc.status.UNAUTHENTICATED,
    );
    assert.match(unknown.details, /unknown or revoked token/);
    const wrongScheme = await rpcError(
      api.listPackagesV1({}, { authorization: `Basic ${tokens.ops}` }),
      grpc.status.UNAUTHENTICATED,
    );
    assert.match(wrongScheme.details, /missing bearer token/);
  });

  test("health answers without a token; reflection needs one", async () => {
    const health = healthClient(grpcAddress(), grpc.credentials.createSsl(ca.ca));
    clients.push(health);
    assert.deepEqual(await health.check({ service: "" }), { status: "SERVING" });

    const reflection = reflectionClient(grpcAddress(), grpc.credentials.createSsl(ca.ca));
    clients.push(reflection);
    const listServices = (metadata: Record<string, string>) =>
      new Promise<unknown>((resolve, reject) => {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(metadata)) md.set(k, v);
        const stream = (reflection as any).ServerReflectionInfo(md);
        stream.on("data", resolve);
        stream.on("error", reject);
        stream.write({ list_services: "" });
        stream.end();
      });
    const refused = await listServices({}).catch((err: grpc.ServiceError) => err);
    assert.equal((refused as grpc.ServiceError).code, grpc.status.UNAUTHENTICATED);
    const answer = (await listServices(bearer(tokens.viewer))) as {
      list_services_response: { service: { name: string }[] };
    };
    assert.ok(
      answer.list_services_response.service.some(
        (s) => s.name === "hablof.logistic_package_api.v1.LogisticPackageApiService",
      ),
    );
  });

  test("a cleartext gRPC client is told the port requires TLS", async () => {
    const plain = packageApiClient(grpcAddress());
    clients.push(plain);
    const err = await rpcError(plain.listPackagesV1({}, bearer(tokens.ops)), grpc.status.UNAVAILABLE);
    assert.match(err.details, /this port requires TLS/);
  });

  test("tokens never reach the logs; the caller's name does", async () => {
    const text = JSON.stringify(fx.server.logs.lines);
    for (const token of Object.values(tokens)) assert.ok(!text.includes(token), "a token was logged");
    assert.ok(
      fx.server.logs.lines.some((l) => l.caller === "shop" && l.method === "CreatePackageV1" && l.code === "ok"),
      "the request line names the caller",
    );
    const metrics = await (await fetch(`http://127.0.0.1:${fx.server.ports.metrics}/metrics`)).text();
    assert.match(
      metrics,
      /logistic_package_api_auth_decisions_total\{caller="viewer",decision="permission_denied"\} 1/,
    );
    assert.match(
      metrics,
      /logistic_package_api_auth_decisions_total\{caller="anonymous",decision="unauthenticated"\} [1-9]/,
    );
  });
});

describe("npm run grpc-call with TLS and a token", () => {
  const grpcCall = (args: string[]) =>
    run(
      process.execPath,
      ["--import", "tsx", "scripts/grpc-call.ts", "--addr", `localhost:${fx.server.ports.grpc}`, ...args],
      { env: { ...process.env, GRPC_TOKEN: "" } },
    ).then(
      ({ stdout }) => ({ ok: true, out: stdout }),
      (err: { stderr: string }) => ({ ok: false, out: err.stderr }),
    );

  test("works with --cacert and --token, and says what is missing without them", async () => {
    const created = await grpcCall([
      "--cacert",
      ca.caFile,
      "--token",
      tokens.shop,
      "CreatePackageV1",
      '{"Title":"Sack","Material":"jute","MaximumVolume":9}',
    ]);
    assert.equal(created.ok, true, created.out);
    assert.match(created.out, /"ID": "\d+"/);
    const anonymous = await grpcCall(["--cacert", ca.caFile, "ListPackagesV1"]);
    assert.deepEqual(anonymous, {
      ok: false,
      out: "ERROR UNAUTHENTICATED: missing bearer token: send the header authorization: Bearer <token>\n",
    });
    const cleartext = await grpcCall(["--token", tokens.shop, "ListPackagesV1"]);
    assert.equal(cleartext.ok, false);
    assert.match(cleartext.out, /UNAVAILABLE: this port requires TLS/);
  });
});

describe("REST and Connect over TLS with curl", () => {
  const gateway = () => `https://127.0.0.1:${fx.server.ports.gateway}/v1/packages`;

  for (const version of ["--http1.1", "--http2"]) {
    test(`REST ${version}: 200 with a token, 401 without, 403 for a role too low`, async () => {
      const created = await curl([
        version,
        "--cacert",
        ca.caFile,
        "-H",
        `authorization: Bearer ${tokens.shop}`,
        "-d",
        '{"Title":"Box","Material":"card","MaximumVolume":3}',
        gateway(),
      ]);
      assert.equal(created.status, 200, created.body);
      assert.match(created.body, /^\{"ID":"\d+"\}$/);

      const anonymous = await curl([version, "--cacert", ca.caFile, gateway()]);
      assert.equal(anonymous.status, 401);
      assert.deepEqual(JSON.parse(anonymous.body), {
        code: 16,
        message: "missing bearer token: send the header authorization: Bearer <token>",
        details: [],
      });

      const reader = await curl([
        version,
        "--cacert",
        ca.caFile,
        "-H",
        `authorization: Bearer ${tokens.viewer}`,
        "-X",
        "DELETE",
        `${gateway()}/1`,
      ]);
      assert.equal(reader.status, 403);
      assert.match(JSON.parse(reader.body).message, /needs admin/);
    });
  }

  test("Connect JSON on the gRPC port over TLS (HTTP/1.1 by ALPN) with a token", async () => {
    const url = `https://127.0.0.1:${fx.server.ports.grpc}/hablof.logistic_package_api.v1.LogisticPackageApiService/ListPackagesV1`;
    const res = await curl([
      "--http1.1",
      "--cacert",
      ca.caFile,
      "-H",
      "content-type: application/json",
      "-H",
      `authorization: Bearer ${tokens.viewer}`,
      "-d",
      "{}",
      url,
    ]);
    assert.equal(res.status, 200, res.body);
    assert.ok(Array.isArray(JSON.parse(res.body).Packages));
    const anonymous = await curl([
      "--http1.1",
      "--cacert",
      ca.caFile,
      "-H",
      "content-type: application/json",
      "-d",
      "{}",
      url,
    ]);
    assert.equal(anonymous.status, 401);
    assert.equal(JSON.parse(anonymous.body).code, "unauthenticated");
  });

  test("plain http:// to a TLS port gets 400 saying TLS is required; an untrusted CA fails the handshake", async () => {
    const plain = await curl([`http://127.0.0.1:${fx.server.ports.gateway}/v1/packages`]);
    assert.equal(plain.status, 400);
    assert.match(plain.body, /this port requires TLS/);
    const untrusted = await run("curl", ["-sS", "--max-time", "10", gateway()]).catch(
      (err: { code: number; stderr: string }) => err,
    );
    assert.equal((untrusted as { code: number }).code, 60, "curl: peer certificate cannot be authenticated");
  });
});

describe("certificates: mutual TLS, reload, start-up errors", () => {
  test("with TLS_CLIENT_CA_FILE a client needs a certificate that CA signed", async () => {
    const clientCa = createTestCa("clients");
    const mtlsDb = await createTestDatabase();
    const cert = ca.issue("server-mtls");
    const mtls = await startTestServer(mtlsDb.url, {
      TLS_CERT_FILE: cert.certFile,
      TLS_KEY_FILE: cert.keyFile,
      TLS_CLIENT_CA_FILE: clientCa.caFile,
    });
    try {
      const address = `127.0.0.1:${mtls.ports.grpc}`;
      const noCert = tlsClient(address);
      await rpcError(noCert.listPackagesV1({}), grpc.status.UNAVAILABLE);
      const alien = ca.issue("alien-client", { client: true });
      await rpcError(
        tlsClient(address, grpc.credentials.createSsl(ca.ca, alien.key, alien.cert)).listPackagesV1({}),
        grpc.status.UNAVAILABLE,
      );
      const good = clientCa.issue("shop-client", { client: true });
      const withCert = tlsClient(address, grpc.credentials.createSsl(ca.ca, good.key, good.cert));
      assert.deepEqual((await withCert.listPackagesV1({})).Packages, []);
    } finally {
      await mtls.stop();
      await mtlsDb.drop();
      clientCa.remove();
    }
  });

  test("replaced certificate files are served to new connections without a restart", async () => {
    const reloadDb = await createTestDatabase();
    const first = ca.issue("server-reload");
    const certFile = join(ca.dir, "live.pem");
    const keyFile = join(ca.dir, "live.key");
    copyFileSync(first.certFile, certFile);
    copyFileSync(first.keyFile, keyFile);
    const live = await startTestServer(reloadDb.url, { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile });
    const rotatedCa = createTestCa("rotated");
    try {
      const fingerprint = () =>
        new Promise<string>((resolve, reject) => {
          const socket = tls.connect(
            { host: "127.0.0.1", port: live.ports.gateway, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] },
            () => {
              resolve(socket.getPeerCertificate().fingerprint256);
              socket.destroy();
            },
          );
          socket.once("error", reject);
        });
      const before = await fingerprint();
      const next = rotatedCa.issue("server-rotated");
      copyFileSync(next.keyFile, keyFile);
      copyFileSync(next.certFile, certFile);
      const deadline = Date.now() + 15_000;
      while ((await fingerprint()) === before) {
        assert.ok(Date.now() < deadline, "the new certificate was not picked up within 15 s");
        await new Promise((r) => setTimeout(r, 200));
      }
      const api = tlsClient(`127.0.0.1:${live.ports.grpc}`, grpc.credentials.createSsl(rotatedCa.ca));
      assert.deepEqual((await api.listPackagesV1({})).Packages, []);
      assert.ok(live.logs.lines.some((l) => l.msg === "TLS certificates reloaded"));

      // A broken file on reload is logged; the server keeps the certificate it had.
      writeFileSync(keyFile, "not a key");
      live.reload();
      assert.ok(live.logs.lines.some((l) => l.msg === "TLS reload failed: keeping the certificates in use"));
      assert.deepEqual((await api.listPackagesV1({})).Packages, []);
    } finally {
      await live.stop();
      await reloadDb.drop();
      rotatedCa.remove();
    }
  });

  test("bad files stop start-up with a message naming the key", async () => {
    const cert = ca.issue("server-bad");
    const other = ca.issue("server-other");
    await assert.rejects(
      startTestServer(fx.db.url, { TLS_CERT_FILE: cert.certFile, TLS_KEY_FILE: join(ca.dir, "missing.key") }),
      /tls\.keyFile .*missing\.key/,
    );
    await assert.rejects(
      startTestServer(fx.db.url, { TLS_CERT_FILE: cert.certFile, TLS_KEY_FILE: other.keyFile }),
      /tls\.certFile .*key values mismatch/,
    );
    await assert.rejects(
      startTestServer(fx.db.url, { TLS_CERT_FILE: cert.certFile }),
      /tls\.certFile and tls\.keyFile must be set together/,
    );
    const weak = writeTokensFile(ca.dir, [{ name: "shop", token: "short", role: "writer" }], "weak.yml");
    await assert.rejects(
      startTestServer(fx.db.url, { AUTH_TOKENS_FILE: weak }),
      /auth\.tokensFile .*tokens\.0\.token: at least 16 characters/,
    );
    writeTokensFile(ca.dir, [{ name: "shop", token: tokens.shop, role: "owner" }], "weak.yml");
    await assert.rejects(startTestServer(fx.db.url, { AUTH_TOKENS_FILE: weak }), /auth\.tokensFile .*tokens\.0\.role/);
  });

  test("without a tokens file the server starts and warns that the API is unauthenticated", async () => {
    const open = await startTestServer(fx.db.url, { GATEWAY_PORT: "0" });
    try {
      assert.ok(
        open.logs.lines.some((l) => l.level === "warn" && String(l.msg).includes("the API is unauthenticated")),
      );
    } finally {
      await open.stop();
    }
  });
});
