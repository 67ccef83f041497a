// status.host and metrics.host: probes and metrics may listen on another
// interface than the API (Linux routes all of 127.0.0.0/8 to loopback, so
// 127.0.0.2 and 127.0.0.3 stand in for a private interface).

import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { useFixture } from "./helpers/fixture.js";

const fx = useFixture({
  kafka: { topic: "listen-hosts", partitions: 1 },
  relay: {},
  facade: {},
  env: {
    server: { STATUS_HOST: "127.0.0.2", METRICS_HOST: "127.0.0.3" },
    relay: { METRICS_HOST: "127.0.0.3" },
    facade: { METRICS_HOST: "127.0.0.3" },
  },
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
  assert.equal(fx.server.config.status.host, "127.0.0.2");
  assert.equal(fx.server.config.metrics.host, "127.0.0.3");
});

test("grpc-server: /live on status.host answers; the same port on the API's interface is refused", async () => {
  const port = fx.server.ports.status;
  const res = await fetch(`http://127.0.0.2:${port}/live`);
  assert.equal(res.status, 200);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});

test("grpc-server: /metrics on metrics.host answers; not on the API's interface", async () => {
  const port = fx.server.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /logistic_package_api_/);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});

test("the API itself stays on grpc.host", async () => {
  assert.equal(await connect("127.0.0.1", fx.server.ports.grpc), "open");
  assert.equal(await connect("127.0.0.2", fx.server.ports.grpc), "ECONNREFUSED");
});

test("retranslator: its metrics port (with /ready) listens on metrics.host", async () => {
  const port = fx.relay.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/ready`);
  assert.equal(res.status, 200);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});

test("facade: its metrics port (with /live) listens on metrics.host", async () => {
  const port = fx.facade.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/live`);
  assert.equal(res.status, 200);
  assert.equal(await connect("127.0.0.1", port), "ECONNREFUSED");
});
