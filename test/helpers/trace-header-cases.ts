// What a client's traceparent/tracestate may put into the outbox (and so into
// every Kafka message of the change): run against a server with tracing off
// (test/trace-headers.test.ts) and on (test/trace-headers-otel.test.ts), since
// the two take different paths (own parser vs the OpenTelemetry propagator).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import type { Fixture } from "./fixture.js";

interface StoredTrace {
  traceparent: string | null;
  tracestate: string | null;
}

const w3c = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const hex = (bytes: number) => randomBytes(bytes).toString("hex");
const body = { Title: "traced", Material: "tin", MaximumVolume: 1 };

export function traceHeaderCases(fx: Pick<Fixture, "db" | "server" | "client">): void {
  async function stored(id: string): Promise<StoredTrace> {
    const result = await fx.db.db.raw(`SELECT traceparent, tracestate FROM package_event WHERE package_id = ?`, [id]);
    const rows = (result as { rows: StoredTrace[] }).rows;
    assert.equal(rows.length, 1, "one event");
    return rows[0]!;
  }

  async function create(headers: Record<string, string>): Promise<StoredTrace> {
    const { ID } = await fx.client.createPackageV1(body, headers);
    return stored(ID);
  }

  /** The stored traceparent is valid W3C; returns its trace id. */
  function validTrace(t: StoredTrace): string {
    const match = w3c.exec(t.traceparent ?? "");
    assert.ok(match, `stored traceparent is W3C version 00: ${t.traceparent}`);
    assert.doesNotMatch(match[1]!, /^0+$/);
    assert.doesNotMatch(match[2]!, /^0+$/);
    return match[1]!;
  }

  // 12 KB: as large as request headers get through (16 KiB is both Node's
  // HTTP/1.1 limit and grpc.maxHeaderBytes; larger header blocks are refused
  // by the transport before any of this code runs).
  test("a 12 KB tracestate with a malformed traceparent: the create succeeds, a fresh trace is stored, no tracestate", async () => {
    const huge = Array.from({ length: 1200 }, (_, i) => `k${i}=${"v".repeat(5)}`).join(",");
    assert.ok(huge.length > 12_000);
    const t = await create({ traceparent: "00-not-a-trace-01", tracestate: huge });
    validTrace(t);
    assert.equal(t.tracestate, null);
  });

  test("a valid traceparent is continued; an oversized tracestate beside it is dropped whole", async () => {
    const traceId = hex(16);
    const t = await create({ traceparent: `00-${traceId}-${hex(8)}-01`, tracestate: `vendor=${"x".repeat(600)}` });
    assert.equal(validTrace(t), traceId);
    assert.equal(t.tracestate, null);
  });

  test("a valid traceparent and tracestate are stored (tracestate without whitespace or empty members)", async () => {
    const traceId = hex(16);
    const t = await create({
      traceparent: `00-${traceId}-${hex(8)}-01`,
      tracestate: "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7,,tenant1@sys=a b",
    });
    assert.equal(validTrace(t), traceId);
    assert.equal(t.tracestate, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7,tenant1@sys=a b");
  });

  test("a tracestate of 32 members is kept; 33 members, a bad key or value, or a repeated key drop it whole", async () => {
    const parent = () => `00-${hex(16)}-${hex(8)}-01`;
    const members = (n: number) => Array.from({ length: n }, (_, i) => `m${i}=${i}`).join(",");
    assert.equal((await create({ traceparent: parent(), tracestate: members(32) })).tracestate, members(32));
    for (const bad of [members(33), "Upper=1", "a=1,a=2", "a=x,b", "a=with,=comma", "a=trailing ", "a=x=y"]) {
      const t = await create({ traceparent: parent(), tracestate: bad });
      assert.equal(t.tracestate, null, `tracestate ${JSON.stringify(bad.slice(0, 40))} dropped`);
    }
  });

  test("invalid traceparents are ignored (a fresh trace, and the tracestate with them)", async () => {
    const traceId = hex(16);
    const parentId = hex(8);
    for (const bad of [
      `00-${traceId.toUpperCase()}-${parentId}-01`,
      `00-${"0".repeat(32)}-${parentId}-01`,
      `00-${traceId}-${"0".repeat(16)}-01`,
      `ff-${traceId}-${parentId}-01`,
      `00-${traceId}-${parentId}-01-extra`,
      `00-${traceId}-${parentId}-1`,
      `0-${traceId}-${parentId}-01`,
    ]) {
      const t = await create({ traceparent: bad, tracestate: "congo=t61rcWkgMzE" });
      assert.notEqual(validTrace(t), traceId, `${bad} is not continued`);
      assert.equal(t.tracestate, null, `no tracestate beside the invalid ${bad}`);
    }
    // A higher version is read by its version-00 prefix and stored as 00.
    const future = await create({
      traceparent: `cc-${traceId}-${parentId}-01-what-the-future-adds`,
      tracestate: "congo=1",
    });
    assert.equal(validTrace(future), traceId);
    assert.equal(future.tracestate, "congo=1");
  });

  test("REST: the gateway's forwarded trace headers go through the same checks", async () => {
    const traceId = hex(16);
    const res = await fetch(`${fx.server.gatewayUrl}/v1/packages`, {
      method: "POST",
      headers: { traceparent: `00-${traceId}-${hex(8)}-01`, tracestate: `a=${"b".repeat(300)},c=${"d".repeat(300)}` },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200);
    const { ID } = (await res.json()) as { ID: string };
    const t = await stored(ID);
    assert.equal(validTrace(t), traceId);
    assert.equal(t.tracestate, null, "603 characters: over 512");
  });
}
