import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import tls from "node:tls";
import { settleWithin } from "../lifecycle/deadline.js";

type Handler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** Bounds that keep a hostile or broken client's cost to its own connection. */
export interface ListenerLimits {
  maxConnections: number;
  firstByteTimeoutMs: number;
  idleTimeoutMs: number;
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  maxHeaderBytes: number;
  maxConcurrentStreams: number;
  maxResetStreamsPer10s: number;
}

/** PEM material of a TLS listener; `clientCa` turns on mutual TLS. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  clientCa?: Buffer;
}

/** Why the listener itself closed (or refused) a connection; for metrics. */
export type ConnectionCloseReason =
  | "over_limit"
  | "first_byte_timeout"
  | "idle"
  | "ping_timeout"
  | "rapid_reset"
  | "tls_handshake_failed"
  | "plaintext_to_tls";

/** Takes some HTTP/2 streams before the request handler sees them (native gRPC for grpc-js). */
export interface StreamRoute {
  accepts(headers: http2.IncomingHttpHeaders): boolean;
  handleStream(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void;
}

export interface ApiListenerOptions {
  limits: ListenerLimits;
  /** HTTP/2 streams that this route accepts go to it; the rest to the handler. */
  streamRoute?: StreamRoute;
  /** Serve TLS only (HTTP/2 or HTTP/1.1 by ALPN); plaintext requests are answered with an error. */
  tls?: TlsMaterial;
  onClose?: (reason: ConnectionCloseReason) => void;
}

const resetWindowMs = 10_000;
const tlsRequired = "this port requires TLS: connect with https:// (or a TLS channel)";

/**
 * One port for gRPC (HTTP/2) and for Connect JSON / gRPC-Web / REST over
 * HTTP/1.1 and HTTP/2, in cleartext or TLS.
 *
 * Cleartext: Node 20's `allowHTTP1` works only with TLS, so the first bytes of
 * each connection decide (the HTTP/2 preface starts with "PRI"). TLS: ALPN
 * decides, and a connection whose first byte is not a TLS handshake is answered
 * in plaintext that the port requires TLS, then closed.
 *
 * Every accepted socket has an error listener and a first-byte timeout from
 * the moment it is accepted: a reset before the first byte (port scanners,
 * TCP health checks) costs that socket, never the process.
 */
export class ApiListener {
  /** What `listen()` binds. */
  readonly server: net.Server;
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly tlsServer: tls.Server | undefined;
  private readonly plaintextRefusal: { h1: http.Server; h2: http2.Http2Server } | undefined;
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly limits: ListenerLimits;
  private readonly onClose: (reason: ConnectionCloseReason) => void;

  constructor(handler: Handler, options: ApiListenerOptions) {
    this.limits = options.limits;
    this.onClose = options.onClose ?? (() => {});
    this.h1 = this.createHttp1(handler as http.RequestListener);
    this.h2 = this.createHttp2(
      handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
      options.streamRoute,
    );

    if (options.tls !== undefined) {
      this.tlsServer = tls.createServer({
        ...secureContextOptions(options.tls),
        requestCert: options.tls.clientCa !== undefined,
        rejectUnauthorized: options.tls.clientCa !== undefined,
        ALPNProtocols: ["h2", "http/1.1"],
        handshakeTimeout: this.limits.firstByteTimeoutMs,
        minVersion: "TLSv1.2",
      });
      this.tlsServer.on("secureConnection", (socket: tls.TLSSocket) => {
        socket.on("error", () => socket.destroy());
        (socket.alpnProtocol === "h2" ? this.h2 : this.h1).emit("connection", socket);
      });
      this.tlsServer.on("tlsClientError", () => this.onClose("tls_handshake_failed"));
      this.plaintextRefusal = {
        h1: this.createHttp1((_req, res) => refuseHttp1(res)),
        h2: this.createHttp2((req, res) => refuseHttp2(req, res)),
      };
    }

    this.server = net.createServer({ noDelay: true }, (socket) => this.accept(socket));
    this.server.maxConnections = this.limits.maxConnections;
    this.server.on("drop", () => this.onClose("over_limit"));
  }

  /** New certificates for new connections (SIGHUP, or the files changed). */
  reloadTls(material: TlsMaterial): void {
    if (this.tlsServer === undefined) throw new Error("this listener was started without TLS");
    this.tlsServer.setSecureContext(secureContextOptions(material));
  }

  get openConnections(): number {
    return this.sockets.size;
  }

  private accept(socket: net.Socket): void {
    this.sockets.add(socket);
    socket.once("close", () => this.sockets.delete(socket));
    // The servers we hand the socket to add their own listeners; this one
    // covers the time before, and anything they leave unhandled.
    socket.on("error", () => socket.destroy());
    const firstByteTimeout = () => {
      this.onClose("first_byte_timeout");
      socket.destroy();
    };
    socket.setTimeout(this.limits.firstByteTimeoutMs, firstByteTimeout);
    socket.once("data", (chunk: Buffer) => {
      // Put the bytes back and let the chosen server read them: http2 and tls
      // read the buffered bytes themselves when they take the socket over; http
      // only adds a 'data' listener, so a paused socket must be resumed.
      socket.pause();
      socket.unshift(chunk);
      socket.setTimeout(0);
      socket.off("timeout", firstByteTimeout);
      const isHttp2 = chunk.subarray(0, 3).toString("latin1") === "PRI";
      if (this.tlsServer !== undefined && this.plaintextRefusal !== undefined) {
        if (chunk[0] === 0x16) {
          // A TLS handshake record; tls' handshakeTimeout bounds the rest.
          this.tlsServer.emit("connection", socket);
          return;
        }
        this.onClose("plaintext_to_tls");
        this.handOver(socket, isHttp2, this.plaintextRefusal);
        return;
      }
      this.handOver(socket, isHttp2, { h1: this.h1, h2: this.h2 });
    });
  }

  private handOver(socket: net.Socket, isHttp2: boolean, to: { h1: http.Server; h2: http2.Http2Server }): void {
    if (isHttp2) {
      to.h2.emit("connection", socket);
    } else {
      to.h1.emit("connection", socket);
      socket.resume();
    }
  }

  private createHttp1(handler: http.RequestListener): http.Server {
    const server = http.createServer(
      {
        maxHeaderSize: this.limits.maxHeaderBytes,
        headersTimeout: this.limits.headersTimeoutMs,
        requestTimeout: this.limits.requestTimeoutMs,
        // Keep-alive connections between requests; load balancers keep theirs
        // open for up to a minute or so, and should be the ones to close first.
        keepAliveTimeout: this.limits.idleTimeoutMs,
        connectionsCheckingInterval: Math.min(1000, this.limits.headersTimeoutMs),
      },
      handler,
    );
    // The headers and request timeouts are enforced by connection tracking,
    // which http starts on 'listening'. These servers never listen themselves
    // (sockets are handed to them), so start it here.
    server.emit("listening");
    return server;
  }

  private createHttp2(
    handler: (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void,
    route?: StreamRoute,
  ): http2.Http2Server {
    const server = http2.createServer(
      {
        settings: {
          maxConcurrentStreams: this.limits.maxConcurrentStreams,
          maxHeaderListSize: this.limits.maxHeaderBytes,
        },
        maxSessionRejectedStreams: 100,
      },
      handler,
    );
    if (route !== undefined) {
      // The request handler is served by http2's compatibility layer, which is
      // a 'stream' listener of its own; take it out and call it only for the
      // streams that the route does not accept.
      const compat = server.listeners("stream");
      if (compat.length !== 1) throw new Error(`expected one compatibility 'stream' listener, found ${compat.length}`);
      server.removeAllListeners("stream");
      server.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, ...rest: unknown[]) => {
        if (route.accepts(headers)) route.handleStream(stream, headers);
        else (compat[0] as (...args: unknown[]) => void).call(server, stream, headers, ...rest);
      });
    }
    // A session error (a protocol violation, a reset) ends that session only.
    server.on("sessionError", () => {});
    server.on("session", (session: http2.ServerHttp2Session) => this.watchSession(session));
    return server;
  }

  /**
   * Idle sessions are closed; a session whose open streams went silent is
   * pinged and closed if the peer does not answer (half-open); a session that
   * cancels streams faster than the limit (rapid reset) is closed.
   */
  private watchSession(session: http2.ServerHttp2Session): void {
    this.sessions.add(session);
    session.once("close", () => this.sessions.delete(session));
    let openStreams = 0;
    let resetWindowStart = Date.now();
    let resetsInWindow = 0;
    session.on("stream", (stream: http2.ServerHttp2Stream) => {
      openStreams += 1;
      stream.once("close", () => {
        openStreams -= 1;
      });
      // 'aborted': the stream ended before our response did (a client's RST_STREAM).
      stream.once("aborted", () => {
        const now = Date.now();
        if (now - resetWindowStart > resetWindowMs) {
          resetWindowStart = now;
          resetsInWindow = 0;
        }
        resetsInWindow += 1;
        if (resetsInWindow > this.limits.maxResetStreamsPer10s && !session.destroyed) {
          this.onClose("rapid_reset");
          session.goaway(http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
          session.destroy();
        }
      });
    });
    session.setTimeout(this.limits.idleTimeoutMs, () => {
      if (session.destroyed || session.closed) return;
      if (openStreams === 0) {
        this.onClose("idle");
        session.close();
        return;
      }
      // Open streams (a health Watch, a slow call) but no frame for a while:
      // a live peer answers a PING at once.
      const deadline = setTimeout(() => {
        this.onClose("ping_timeout");
        session.destroy();
      }, this.limits.firstByteTimeoutMs);
      deadline.unref();
      const sent = session.ping((err) => {
        clearTimeout(deadline);
        if (err !== null && !session.destroyed) session.destroy();
      });
      if (!sent) clearTimeout(deadline);
    });
  }

  /**
   * Stops accepting, asks HTTP/2 clients to go away (GOAWAY lets in-flight
   * streams finish), closes idle HTTP/1.1 connections, and cuts whatever is
   * still open when `deadlineMs` passes.
   */
  async close(deadlineMs: number): Promise<void> {
    this.server.close();
    for (const session of this.sessions) session.close();
    this.h1.closeIdleConnections();
    const allClosed = new Promise<void>((resolve) => {
      const check = () => (this.sockets.size === 0 ? resolve() : setTimeout(check, 20).unref());
      check();
    });
    await settleWithin(allClosed, deadlineMs);
    for (const socket of this.sockets) socket.destroy();
    // Ends the connection tracking interval that the constructor started.
    for (const server of [this.h1, this.plaintextRefusal?.h1]) server?.close(() => {});
  }
}

function secureContextOptions(material: TlsMaterial): tls.SecureContextOptions {
  return {
    cert: material.cert,
    key: material.key,
    ...(material.clientCa === undefined ? {} : { ca: material.clientCa }),
  };
}

function refuseHttp1(res: http.ServerResponse): void {
  const body = `${tlsRequired}\n`;
  res.writeHead(400, { "content-type": "text/plain", "content-length": Buffer.byteLength(body), connection: "close" });
  res.end(body);
}

function refuseHttp2(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse): void {
  if (req.headers["content-type"]?.startsWith("application/grpc")) {
    // Trailers-only gRPC response (headers with END_STREAM): stock clients
    // show "UNAVAILABLE: this port requires TLS…".
    req.stream.respond(
      {
        ":status": 200,
        "content-type": "application/grpc",
        "grpc-status": "14",
        "grpc-message": encodeURIComponent(tlsRequired),
      },
      { endStream: true },
    );
  } else {
    res.writeHead(400, { "content-type": "text/plain" });
    res.end(`${tlsRequired}\n`);
  }
  req.stream.session?.close();
}
