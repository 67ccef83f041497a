// status.host and metrics.host: probes and metrics may listen on another
// interface than the API (Linux routes all of 127.0.0.0/8 to loopback, so
// 127.0.0.2 and 127.0.0.3 stand in for a private interface).

import assert from "node:assert/strict";
import { readdirSync, readFileSync, readlinkSync } from "node:fs";
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

/**
 * The local addresses of this process' listening TCP sockets on `port` (the binaries under
 * test run in this process), read from /proc. A connection refused on another address
 * would not show the same: another test file running alongside may listen on that address
 * with the same port number, or on every address.
 */
function ownListeners(port: number): string[] {
  const mine = new Set(
    readdirSync("/proc/self/fd").flatMap((fd) => {
      try {
        const inode = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`));
        return inode ? [inode[1]!] : [];
      } catch {
        return []; // Closed while we looked.
      }
    }),
  );
  const addresses: string[] = [];
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    for (const line of readFileSync(table, "utf8").trim().split("\n").slice(1)) {
      // sl local_address rem_address st … inode: the address in hex, its 32-bit words little-endian.
      const [, local, , state, , , , , , inode] = line.trim().split(/\s+/);
      const [hex, portHex] = local!.split(":");
      if (state !== "0A" || Number.parseInt(portHex!, 16) !== port || !mine.has(inode!)) continue;
      const bytes = Buffer.from(hex!, "hex");
      for (let i = 0; i < bytes.length; i += 4) bytes.subarray(i, i + 4).reverse();
      addresses.push(
        bytes.length === 4 ? [...bytes].join(".") : (bytes.toString("hex").match(/.{4}/g) ?? []).join(":"),
      );
    }
  }
  return addresses.sort();
}

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

test("grpc-server: /live on status.host answers; its port listens on that address alone", async () => {
  const port = fx.server.ports.status;
  const res = await fetch(`http://127.0.0.2:${port}/live`);
  assert.equal(res.status, 200);
  assert.deepEqual(ownListeners(port), ["127.0.0.2"]);
});

test("grpc-server: /metrics on metrics.host answers; its port listens on that address alone", async () => {
  const port = fx.server.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/metrics`);
  assert.equal(res.status, 200);
  assert.match(await res.text(), /logistic_package_api_/);
  assert.deepEqual(ownListeners(port), ["127.0.0.3"]);
});

test("the API itself stays on grpc.host", async () => {
  assert.equal(await connect("127.0.0.1", fx.server.ports.grpc), "open");
  assert.deepEqual(ownListeners(fx.server.ports.grpc), ["127.0.0.1"]);
});

test("retranslator: its metrics port (with /ready) listens on metrics.host", async () => {
  const port = fx.relay.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/ready`);
  assert.equal(res.status, 200);
  assert.deepEqual(ownListeners(port), ["127.0.0.3"]);
});

test("facade: its metrics port (with /live) listens on metrics.host", async () => {
  const port = fx.facade.ports.metrics;
  const res = await fetch(`http://127.0.0.3:${port}/live`);
  assert.equal(res.status, 200);
  assert.deepEqual(ownListeners(port), ["127.0.0.3"]);
});
