import http from "node:http";
import http2 from "node:http2";
import net from "node:net";

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/**
 * One cleartext port for gRPC (HTTP/2) and for Connect JSON / gRPC-Web over
 * HTTP/1.1 (curl, browsers). Node 20's `allowHTTP1` works only with TLS, so the
 * first bytes of each connection decide: the HTTP/2 preface starts with "PRI".
 */
export class DualProtocolServer {
  readonly listener: net.Server;
  private readonly h1: http.Server;
  private readonly h2: http2.Http2Server;
  private readonly sockets = new Set<net.Socket>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(handler: Handler) {
    this.h1 = http.createServer(handler as http.RequestListener);
    this.h2 = http2.createServer(handler as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void);
    this.h2.on("session", (session: http2.ServerHttp2Session) => {
      this.sessions.add(session);
      session.once("close", () => this.sessions.delete(session));
    });
    this.listener = net.createServer((socket) => {
      this.sockets.add(socket);
      socket.once("close", () => this.sockets.delete(socket));
      socket.once("data", (chunk: Buffer) => {
        // Put the bytes back and let the chosen server read them. http2 reads
        // the buffered bytes itself when the session starts (resuming would then
        // flow the socket away from the session: GOAWAY); http only adds a
        // 'data' listener, so a paused socket must be resumed or it never sees
        // the request (curl and fetch would hang).
        socket.pause();
        socket.unshift(chunk);
        const isHttp2 = chunk.subarray(0, 3).toString("latin1") === "PRI";
        (isHttp2 ? this.h2 : this.h1).emit("connection", socket);
        if (!isHttp2) socket.resume();
      });
    });
  }

  /**
   * Stops accepting, asks HTTP/2 clients to go away (GOAWAY lets in-flight
   * streams finish), closes idle HTTP/1.1 connections, and cuts whatever is
   * still open when `deadlineMs` passes.
   */
  async close(deadlineMs: number): Promise<void> {
    this.listener.close();
    for (const session of this.sessions) session.close();
    this.h1.closeIdleConnections();
    const allClosed = new Promise<void>((resolve) => {
      const check = () => (this.sockets.size === 0 ? resolve() : setTimeout(check, 20).unref());
      check();
    });
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<void>((resolve) => {
      timer = setTimeout(resolve, deadlineMs);
    });
    await Promise.race([allClosed, deadline]);
    clearTimeout(timer);
    for (const socket of this.sockets) socket.destroy();
  }
}
