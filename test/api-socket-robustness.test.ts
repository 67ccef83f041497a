// Hostile and broken connections against the real server on real sockets:
// resets before the first byte, idle and half-open sockets, random bytes, an
// HTTP/2 rapid-reset burst, oversized headers, a connection flood. After each,
// a well-behaved stock gRPC client still creates a package, and the server has
// let go of the bad connections (its open-connection count goes back down).
// Run: bash scripts/test.sh test/api-socket-robustness.test.ts

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http2 from "node:http2";
import net from "node:net";
import { describe, test } from "node:test";
import { useFixture } from "./helpers/fixture.js";
import { until } from "./helpers/poll.js";

const createPath = "/hablof.logistic_package_api.v1.LogisticPackageApiService/CreatePackageV1";

// Small limits so that each protection shows within a test's time; the
// defaults are the same mechanisms with production values.
const fx = useFixture({
  server: {
    grpc: {
      maxConnections: 300,
      firstByteTimeoutMs: 700,
      idleTimeoutMs: 1500,
      headersTimeoutMs: 800,
      maxResetStreamsPer10s: 200,
    },
  },
});

const port = () => fx.server.ports.grpc;

/** A well-behaved client still gets its package created (and it is really stored). */
async function assertStillServing(title: string) {
  const { ID } = await fx.client.createPackageV1({ Title: title, Material: "steel", MaximumVolume: 5, Reusable: true });
  const res = await fx.client.describePackageV1({ PackageID: ID });
  assert.equal(res.Value.Title, title);
}

async function metric(name: string, labels: Record<string, string>): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${fx.server.ports.metrics}/metrics`)).text();
  const selector = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(",");
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) && l.includes(selector));
  return line === undefined ? 0 : Number(line.split(" ").at(-1));
}

function connect(): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port(), "127.0.0.1");
    socket.once("connect", () => resolve(socket));
    socket.once("error", reject);
  });
}

/** Resolves when the server closes the socket (or it errors): what the peer sees. */
function closedByServer(socket: net.Socket): Promise<void> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve();
    socket.once("close", () => resolve());
    socket.on("error", () => {});
    socket.resume();
  });
}

const openConnections = () => metric("logistic_package_api_open_connections", { listener: "grpc" });

describe("API listener under hostile connections", () => {
  test("100 connections reset before their first byte (SO_LINGER 0) cost nothing but themselves", async () => {
    for (let i = 0; i < 100; i++) {
      const socket = await connect();
      socket.resetAndDestroy();
    }
    // And resets in the middle of a request, once the socket is handed over.
    for (let i = 0; i < 20; i++) {
      const socket = await connect();
      socket.write(i % 2 === 0 ? "POST /v1/packages HTTP/1.1\r\nHost: x\r\n" : "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
      await new Promise((r) => setTimeout(r, 5));
      socket.resetAndDestroy();
    }
    await assertStillServing("after resets");
    await until("the reset sockets to be gone", async () => (await openConnections()) <= 1, 20_000, 50);
  });

  test("500 idle sockets are closed after firstByteTimeoutMs while requests go on", async () => {
    const heapBefore = process.memoryUsage().heapUsed;
    const sockets = await Promise.all(Array.from({ length: 250 }, connect));
    sockets.push(...(await Promise.all(Array.from({ length: 250 }, connect))));
    // The limit is 300 per listener: the rest were dropped at once.
    const closed = sockets.map(closedByServer);
    await assertStillServing("beside idle sockets");
    await Promise.all(closed);
    assert.ok(
      (await metric("logistic_package_api_connections_closed_total", {
        listener: "grpc",
        reason: "first_byte_timeout",
      })) >= 200,
    );
    assert.ok(
      (await metric("logistic_package_api_connections_closed_total", { listener: "grpc", reason: "over_limit" })) >=
        150,
    );
    await until("the idle sockets to be released", async () => (await openConnections()) <= 1, 20_000, 50);
    const heapGrowth = process.memoryUsage().heapUsed - heapBefore;
    assert.ok(heapGrowth < 64 * 1024 * 1024, `heap grew by ${Math.round(heapGrowth / 1024 / 1024)} MiB`);
    await assertStillServing("after idle sockets");
  });

  test("random bytes, and garbage after an HTTP/2 preface, are answered or dropped per connection", async () => {
    const attempts: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      attempts.push(
        (async () => {
          const socket = await connect();
          const garbage = randomBytes(16 + ((i * 97) % 4000));
          socket.write(
            i % 3 === 0 ? Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), garbage]) : garbage,
          );
          await closedByServer(socket);
        })(),
      );
    }
    await Promise.all(attempts);
    await assertStillServing("after garbage");
  });

  test("a half-open HTTP/1.1 request (headers never finished) gets 408 and is closed", async () => {
    const socket = await connect();
    let answer = "";
    socket.setEncoding("utf8").on("data", (s: string) => (answer += s));
    socket.write(
      "POST /hablof.logistic_package_api.v1.LogisticPackageApiService/CreatePackageV1 HTTP/1.1\r\nHost: x\r\n",
    );
    await closedByServer(socket);
    assert.match(answer, /^HTTP\/1\.1 408/);
    await assertStillServing("after a slow header");
  });

  test("oversized headers get 431 over HTTP/1.1 and a refused stream over HTTP/2", async () => {
    const big = "x".repeat(64 * 1024);
    // A raw socket, so that what the server answers is read whatever it does next.
    const socket = await connect();
    let answer = "";
    socket.setEncoding("utf8").on("data", (s: string) => (answer += s));
    socket.write(
      `POST ${createPath} HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\nx-padding: ${big}\r\ncontent-length: 2\r\n\r\n{}`,
    );
    await closedByServer(socket);
    assert.match(answer, /^HTTP\/1\.1 431 /);

    const session = http2.connect(`http://127.0.0.1:${port()}`);
    session.on("error", () => {});
    const status = await new Promise<string>((resolve) => {
      const stream = session.request({
        ":method": "POST",
        ":path": createPath,
        "content-type": "application/json",
        "x-padding": big,
      });
      stream.on("response", (h) => resolve(String(h[":status"])));
      stream.on("error", (err: Error) => resolve(`error: ${err.message}`));
      stream.on("close", () => resolve(`closed: ${stream.rstCode}`));
      stream.end("{}");
    });
    session.destroy();
    assert.doesNotMatch(status, /^2/, `an oversized header list is not served: ${status}`);
    await assertStillServing("after oversized headers");
  });

  test("HTTP/2 limits: maxConcurrentStreams is advertised, an idle session is sent GOAWAY", async () => {
    const session = http2.connect(`http://127.0.0.1:${port()}`);
    session.on("error", () => {});
    await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
    assert.equal(session.remoteSettings.maxConcurrentStreams, 100);
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code: number) => resolve(code)));
    await until("the idle session to be closed", () => session.closed || session.destroyed, 10_000, 50);
    assert.equal(await goaway, http2.constants.NGHTTP2_NO_ERROR);
  });

  test("an HTTP/2 rapid-reset burst closes that connection with ENHANCE_YOUR_CALM; others are served", async () => {
    const session = http2.connect(`http://127.0.0.1:${port()}`);
    session.on("error", () => {});
    const goaway = new Promise<number>((resolve) => session.once("goaway", (code: number) => resolve(code)));
    await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
    const body = JSON.stringify({ Title: "reset", Material: "m", MaximumVolume: 1 });
    for (let i = 0; i < 1000 && !session.destroyed && !session.closed; i++) {
      const stream = session.request({ ":method": "POST", ":path": createPath, "content-type": "application/json" });
      stream.on("error", () => {});
      stream.write(body);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      if (i % 50 === 0) await new Promise((r) => setImmediate(r));
    }
    assert.equal(await goaway, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    session.destroy();
    assert.ok(
      (await metric("logistic_package_api_connections_closed_total", { listener: "grpc", reason: "rapid_reset" })) >= 1,
    );
    await assertStillServing("after a rapid-reset burst");
  });
});
