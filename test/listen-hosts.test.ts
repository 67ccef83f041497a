// status.host and metrics.host: probes and metrics may listen on another
// interface than the API (Linux routes all of 127.0.0.0/8 to loopback, so
// 127.0.0.2 and 127.0.0.3 stand in for a private interface).

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { facadeEnv, migrateFacadeDatabase, startTestFacade, type TestFacade } from "./helpers/facade.js";
import { type KafkaMock, startKafkaMock } from "./helpers/kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./helpers/retranslator.js";
import { startTestServer, type TestServer } from "./helpers/server.js";

let db: TestDatabase;
let kafka: KafkaMock;
let server: TestServer;
let relay: TestRetranslator;
let facadeDb: TestDatabase;
let facade: TestFacade;

before(async () => {
  db = await createTestDatabase();
  kafka = await startKafkaMock();
  await kafka.createTopic("listen-hosts", 1);
  server = await startTestServer(db.url, { STATUS_HOST: "127.0.0.2", METRICS_HOST: "127.0.0.3" });
  relay = await startTestRetranslator({
    ...fastRetranslatorEnv(db.url, kafka.brokers, "listen-hosts"),
    METRICS_HOST: "127.0.0.3",
  });
  facadeDb = await createTestDatabase();
  await migrateFacadeDatabase(facadeDb.url);
  facade = await startTestFacade({
    ...facadeEnv(facadeDb.url, kafka.brokers, "listen-hosts"),
    METRICS_HOST: "127.0.0.3",
  });
});

after(async () => {
  await facade?.stop();
  await facadeDb?.drop();
  await relay?.stop();
  await server?.stop();
  await kafka?.stop();
  await db?.drop();
});

/** Resolves "open" or the connection error code (ECONNREFUSED when nothing listens there). */
function connect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(5000, () => socket.destroy(new Error("timeout")));
    socket.once("connect", () => {
      socket.destroy();
      resolve("open");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

test("the config keys and their environment variables", () => {
  assert.equal(server.config.status.host, "127.0.0.2");
  assert.equal(server.config.metrics.host, "127.0.0.3");
});

test("grpc-server: /live on status.host answers; the same port on the API's interface is refused", async () => {
  const port = server.ports.status;
  const res = await fetch(`http://127.0.0.2:${port}/live`);
  assert.equal(res.status, 200);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});

test("grpc-server: /metrics on metrics.host answers; not on the API's interface", async () => {
  const port = server.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /logistic_package_api_/);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});

test("the API itself stays on grpc.host", async () => {
  assert.equal(await connect("127.0.0.1", server.ports.grpc), "open");
  assert.equal(await connect("127.0.0.2", server.ports.grpc), "ECONNREFUSED");
});

test("retranslator: its metrics port (with /ready) listens on metrics.host", async () => {
  const port = relay.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/ready`);
  assert.equal(res.status, 200);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});

test("facade: its metrics port (with /live) listens on metrics.host", async () => {
  const port = facade.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/live`);
  assert.equal(res.status, 200);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});
