import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { spawnRetranslator } from "./helpers/retranslator.js";

// A binary that receives SIGTERM while it is still starting (here: the
// retranslator waiting on a Kafka broker that accepts connections and never
// answers) must stop gracefully once started, not die from the signal.

let db: TestDatabase;
let silentBroker: net.Server;
const sockets = new Set<net.Socket>();

before(async () => {
  db = await createTestDatabase();
  silentBroker = net.createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => undefined);
  });
  await new Promise<void>((resolve) => silentBroker.listen(0, "127.0.0.1", resolve));
});

after(async () => {
  for (const s of sockets) s.destroy();
  await new Promise((r) => silentBroker.close(r));
  await db.drop();
});

test("SIGTERM during start-up leads to a graceful stop (exit 0), not death by signal", async () => {
  const port = (silentBroker.address() as net.AddressInfo).port;
  const child = spawnRetranslator({
    DATABASE_URL: db.url,
    KAFKA_BROKERS: `127.0.0.1:${port}`,
    KAFKA_TOPIC: "never-reached",
    RETRANSLATOR_METRICS_PORT: "0",
  });
  const lines: string[] = [];
  child.stdout!.on("data", (chunk: Buffer) => lines.push(...chunk.toString().split("\n").filter(Boolean)));
  child.stderr!.on("data", (chunk: Buffer) => lines.push(chunk.toString()));

  // Wait until it is inside start (it has connected to the silent broker).
  const deadline = Date.now() + 20_000;
  while (sockets.size === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(sockets.size > 0, `the retranslator never reached the broker; output:\n${lines.join("\n")}`);
  child.kill("SIGTERM");

  // "close", not "exit": the last lines may still be in the pipe when the process exits.
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once("close", (c, s) => resolve([c, s])),
  );
  const output = lines.join("\n");
  assert.equal(signal, null, `killed by ${signal}; output:\n${output}`);
  assert.equal(code, 0, output);
  assert.match(output, /signal during start/);
  assert.match(output, /"msg":"stopped"/);
  const leased = await db.db.raw(`SELECT count(*)::int AS n FROM package_event WHERE locked_by IS NOT NULL`);
  assert.equal((leased as { rows: { n: number }[] }).rows[0]!.n, 0);
});
