// The native gRPC server (internal/server/native-grpc.ts) in process: an HTTP/2 server on
// loopback hands its streams to NativeGrpcServer, which serves a test implementation of the
// health service to connect-node's gRPC client. What its handlers and interceptors see of a
// call: the request headers, a deadline (timeoutMs), a signal that aborts when the client
// cancels, when the deadline passes, when the server shuts down and when the call has ended;
// and the response headers and trailers they set reach the client.

import assert from "node:assert/strict";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import {
  type Client,
  Code,
  ConnectError,
  createClient,
  type HandlerContext,
  type Interceptor,
} from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NativeGrpcServer, serviceBinding } from "../../internal/server/native-grpc.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../../pkg/grpc/health/v1/health_pb.js";
import { poll } from "../helpers/poll.js";

/** What the handler saw of one call. */
interface Seen {
  header: Headers;
  /** Read as the call started. */
  timeoutMs: number | undefined;
  /** The context's signal, once the handler has read it ("late" calls: only once released). */
  signal: Promise<AbortSignal>;
  /** Lets a "late" call read its signal and answer. */
  release(): void;
}

/** A server on loopback, its client, and what its handler and interceptor saw. */
interface Running {
  client: Client<typeof Health>;
  shutdown: AbortController;
  /** The handler's calls, in order. */
  seen: Seen[];
  /** The request header `x-request-id` as the interceptor read it, per call. */
  interceptorSaw: (string | null)[];
  /** Resolves when the handler has started its nth call (from 1). */
  started(n: number): Promise<Seen>;
  /** Resolves once the HTTP/2 stream that arrived last has closed and grpc-js has told the call. */
  lastStreamClosed(): Promise<void>;
  /** Watch handlers whose generator has finished (its finally ran). */
  watchesEnded(): number;
  /** The server's calls in progress. */
  callsInProgress(): number;
  close(): Promise<void>;
}

/** Resolves with the signal's reason once it aborts. */
function abortedWith(signal: AbortSignal): Promise<unknown> {
  if (signal.aborted) return Promise.resolve(signal.reason);
  return new Promise((resolve) => signal.addEventListener("abort", () => resolve(signal.reason), { once: true }));
}

async function start(): Promise<Running> {
  const seen: Seen[] = [];
  const interceptorSaw: (string | null)[] = [];
  const waiters: { n: number; resolve: (s: Seen) => void }[] = [];
  /** Records the call at once; its signal is read at once, or for a late call once released. */
  const record = (ctx: HandlerContext, late: boolean): Seen => {
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const s: Seen = {
      header: ctx.requestHeader,
      timeoutMs: ctx.timeoutMs(),
      signal: late ? released.then(() => ctx.signal) : Promise.resolve(ctx.signal),
      release,
    };
    seen.push(s);
    for (const w of waiters.filter((w) => w.n === seen.length)) w.resolve(s);
    return s;
  };
  const interceptor: Interceptor = (next) => async (req) => {
    interceptorSaw.push(req.header.get("x-request-id"));
    // A request of the interceptor's own: the handler must see its header.
    const replace = req.header.get("x-replace-header");
    const res = await next(replace === null ? req : { ...req, header: new Headers({ "x-request-id": replace }) });
    res.header.set("x-interceptor", "seen");
    return res;
  };
  let watchesEnded = 0;
  const shutdown = new AbortController();
  const server = new NativeGrpcServer(
    [
      serviceBinding(Health, {
        // "wait": answers once its signal aborts; "late": reads its signal only once the test
        // releases it, then answers; anything else at once.
        async check(req, ctx) {
          const s = record(ctx, req.service === "late");
          const signal = await s.signal;
          if (req.service === "wait") await abortedWith(signal);
          ctx.responseHeader.set("x-handler-header", "h");
          // "bad-trailer": a value Headers takes and gRPC metadata cannot carry (not ASCII).
          ctx.responseTrailer.set("x-handler-trailer", req.service === "bad-trailer" ? "café" : "t");
          return { status: ServingStatus.SERVING };
        },
        // "more": one more message after the call was aborted, as a health watch whose
        // status changed after its client had gone.
        async *watch(req, ctx) {
          const s = record(ctx, false);
          try {
            yield { status: ServingStatus.SERVING };
            await abortedWith(await s.signal);
            if (req.service === "more") yield { status: ServingStatus.NOT_SERVING };
          } finally {
            watchesEnded += 1;
          }
        },
        list() {
          return { statuses: {} };
        },
      }),
    ],
    { interceptors: [interceptor], maxRequestBytes: 1 << 20, shutdownSignal: shutdown.signal },
  );
  const http = http2.createServer();
  let lastStreamClosed = Promise.resolve();
  http.on("stream", (stream, headers) => {
    // grpc-js tells the call of its end on the next tick after the stream's close.
    lastStreamClosed = new Promise((resolve) => stream.once("close", () => setImmediate(resolve)));
    server.handleStream(stream, headers);
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  http.on("session", (session) => {
    sessions.add(session);
    session.on("close", () => sessions.delete(session));
  });
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const { port } = http.address() as AddressInfo;
  const client = createClient(Health, createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}` }));
  return {
    client,
    shutdown,
    seen,
    interceptorSaw,
    started: (n) =>
      seen.length >= n ? Promise.resolve(seen[n - 1]!) : new Promise((resolve) => waiters.push({ n, resolve })),
    lastStreamClosed: () => lastStreamClosed,
    watchesEnded: () => watchesEnded,
    callsInProgress: () => server.callsInProgress,
    close: async () => {
      shutdown.abort(new ConnectError("test server stopping", Code.Unavailable));
      for (const session of sessions) session.destroy();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}

/** The reason the call's signal aborted with, once it has. */
async function abortReason(seen: Seen): Promise<unknown> {
  return abortedWith(await seen.signal);
}

function reasonCode(reason: unknown): Code | undefined {
  return reason instanceof ConnectError ? reason.code : undefined;
}

describe("native gRPC: what a handler sees of its call", () => {
  let server: Running;
  before(async () => {
    server = await start();
  });
  after(() => server.close());

  test("request headers reach interceptors and handler; response headers and trailers reach the client", async () => {
    const headers: Headers[] = [];
    const trailers: Headers[] = [];
    const res = await server.client.check(
      { service: "" },
      {
        headers: { "x-request-id": "key-1", traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01" },
        onHeader: (h) => headers.push(h),
        onTrailer: (t) => trailers.push(t),
      },
    );
    assert.equal(res.status, ServingStatus.SERVING);
    assert.equal(server.interceptorSaw.at(-1), "key-1");
    const seen = server.seen.at(-1)!;
    assert.equal(seen.header.get("x-request-id"), "key-1");
    assert.equal(seen.header.get("traceparent"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    assert.equal(headers[0]?.get("x-handler-header"), "h");
    assert.equal(headers[0]?.get("x-interceptor"), "seen");
    assert.equal(trailers[0]?.get("x-handler-trailer"), "t");
  });

  test("binary metadata reaches the handler base64-encoded, as on the wire", async () => {
    await server.client.check(
      { service: "" },
      { headers: { "x-blob-bin": Buffer.from([0, 1, 2, 255]).toString("base64") } },
    );
    const value = server.seen.at(-1)!.header.get("x-blob-bin");
    assert.ok(value !== null, "the -bin header is there");
    assert.deepEqual([...Buffer.from(value, "base64")], [0, 1, 2, 255]);
  });

  test("an interceptor's own request reaches the handler in its place", async () => {
    await server.client.check({ service: "" }, { headers: { "x-request-id": "key-2", "x-replace-header": "key-3" } });
    assert.equal(server.interceptorSaw.at(-1), "key-2");
    assert.equal(server.seen.at(-1)!.header.get("x-request-id"), "key-3");
  });

  test("timeoutMs: what is left of the client's deadline, undefined without one", async () => {
    await server.client.check({ service: "" }, { timeoutMs: 60_000 });
    const withDeadline = server.seen.at(-1)!.timeoutMs;
    assert.ok(withDeadline !== undefined && withDeadline > 0 && withDeadline <= 60_000, `timeoutMs ${withDeadline}`);
    await server.client.check({ service: "" });
    assert.equal(server.seen.at(-1)!.timeoutMs, undefined);
  });

  test("the signal aborts once the call has ended", async () => {
    await server.client.check({ service: "" });
    assert.equal(reasonCode(await abortReason(server.seen.at(-1)!)), Code.Canceled);
  });

  test("the signal aborts when the client cancels a unary call", async () => {
    const n = server.seen.length + 1;
    const cancel = new AbortController();
    const call = server.client.check({ service: "wait" }, { signal: cancel.signal });
    const seen = await server.started(n);
    assert.equal((await seen.signal).aborted, false, "not aborted while the client waits");
    cancel.abort();
    await assert.rejects(call, (err: unknown) => ConnectError.from(err).code === Code.Canceled);
    assert.equal(reasonCode(await abortReason(seen)), Code.Canceled);
  });

  test("the signal aborts when the client cancels a stream", async () => {
    const n = server.seen.length + 1;
    const cancel = new AbortController();
    const stream = server.client.watch({ service: "" }, { signal: cancel.signal });
    const first = await stream[Symbol.asyncIterator]().next();
    assert.equal(first.value?.status, ServingStatus.SERVING);
    const seen = await server.started(n);
    assert.equal((await seen.signal).aborted, false, "not aborted while the stream is open");
    cancel.abort();
    assert.equal(reasonCode(await abortReason(seen)), Code.Canceled);
  });

  test("a stream whose handler yields after the client cancelled ends: the handler's generator finishes", async () => {
    const n = server.seen.length + 1;
    const ended = server.watchesEnded();
    const cancel = new AbortController();
    const stream = server.client.watch({ service: "more" }, { signal: cancel.signal });
    assert.equal((await stream[Symbol.asyncIterator]().next()).value?.status, ServingStatus.SERVING);
    const seen = await server.started(n);
    cancel.abort();
    await abortReason(seen);
    await poll(
      "the watch handler's generator finished",
      () => server.watchesEnded(),
      (count) => count === ended + 1,
      5000,
      5,
    );
  });

  test("a response trailer gRPC metadata cannot carry gives the client Internal, not silence", async () => {
    await assert.rejects(
      server.client.check({ service: "bad-trailer" }, { timeoutMs: 5000 }),
      (err: unknown) => ConnectError.from(err).code === Code.Internal,
    );
  });

  test("a signal first read after the client cancelled is aborted", async () => {
    const n = server.seen.length + 1;
    const cancel = new AbortController();
    const call = server.client.check({ service: "late" }, { signal: cancel.signal });
    const seen = await server.started(n);
    cancel.abort();
    await assert.rejects(call, (err: unknown) => ConnectError.from(err).code === Code.Canceled);
    await server.lastStreamClosed();
    seen.release();
    const signal = await seen.signal;
    assert.equal(signal.aborted, true);
    assert.equal(reasonCode(signal.reason), Code.Canceled);
  });

  test("a signal first read after the deadline passed is aborted", async () => {
    const n = server.seen.length + 1;
    const call = server.client.check({ service: "late" }, { timeoutMs: 200 });
    const seen = await server.started(n);
    await assert.rejects(call, (err: unknown) => ConnectError.from(err).code === Code.DeadlineExceeded);
    await server.lastStreamClosed();
    seen.release();
    const signal = await seen.signal;
    assert.equal(signal.aborted, true);
    // grpc-js ends the call at the deadline (its own timer): the call's end (Canceled) may be
    // told before the deadline's own reason (DeadlineExceeded).
    const code = reasonCode(signal.reason);
    assert.ok(code === Code.DeadlineExceeded || code === Code.Canceled, `reason code ${code}`);
  });

  test("the signal aborts when the deadline passes", async () => {
    const n = server.seen.length + 1;
    const call = server.client.check({ service: "wait" }, { timeoutMs: 300 });
    const seen = await server.started(n);
    await assert.rejects(call, (err: unknown) => ConnectError.from(err).code === Code.DeadlineExceeded);
    // grpc-js ends the call at the deadline too (its own timer): whichever of the two fires
    // first gives the reason, DeadlineExceeded from the context's timer or Canceled from the
    // call's end.
    const code = reasonCode(await abortReason(seen));
    assert.ok(code === Code.DeadlineExceeded || code === Code.Canceled, `reason code ${code}`);
  });

  // Last of this server's tests: every call above has ended, answered, failed, cancelled
  // (unary and stream) or past its deadline, and none may stay in the set that shutdown aborts.
  test("every call above has left the calls in progress, however it ended", async () => {
    assert.ok(server.seen.length >= 10, `calls made above: ${server.seen.length}`);
    await poll(
      "no call in progress",
      () => server.callsInProgress(),
      (n) => n === 0,
      5000,
      5,
    );
  });
});

describe("native gRPC: shutdown", () => {
  test("aborts the signal of every call in progress with the shutdown's reason, and of calls after it", async () => {
    const server = await start();
    try {
      const calls = [server.client.check({ service: "wait" }), server.client.check({ service: "wait" })];
      const stream = server.client.watch({ service: "" });
      await stream[Symbol.asyncIterator]().next();
      const seen = await Promise.all([server.started(1), server.started(2), server.started(3)]);
      const signals = await Promise.all(seen.map((s) => s.signal));
      assert.deepEqual(
        signals.map((s) => s.aborted),
        [false, false, false],
      );
      // A late call: its signal, read only after the shutdown, is aborted too.
      const late = server.client.check({ service: "late" });
      const lateSeen = await server.started(4);
      const reason = new ConnectError("server stopping", Code.Unavailable);
      server.shutdown.abort(reason);
      for (const s of seen) assert.equal(await abortReason(s), reason);
      lateSeen.release();
      assert.equal((await lateSeen.signal).reason, reason);
      // The unary handlers answer once aborted: the calls complete.
      for (const res of await Promise.all([...calls, late])) assert.equal(res.status, ServingStatus.SERVING);
      // A call that starts after the shutdown began has its signal aborted from the start.
      await server.client.check({ service: "" });
      assert.equal(await abortReason(server.seen.at(-1)!), reason);
    } finally {
      await server.close();
    }
  });
});
