import http from "node:http";

/** Serving, but a service objective is missed: /ready stays 200 and says why. */
export interface Degraded {
  status: "degraded";
  reason: string;
  [detail: string]: unknown;
}

export interface StatusOptions {
  /**
   * Resolves while the process can serve (the database answers), with a
   * Degraded when it serves but misses an objective; rejects when it cannot.
   */
  // biome-ignore lint/suspicious/noConfusingVoidType: a probe that resolves with nothing means ready.
  ready: () => Promise<void | Degraded>;
  version: { name: string; version: string; commitHash: string };
}

/**
 * /live: the process runs; /ready: it can serve now (load balancers and
 * Kubernetes readiness probes); /version: what is deployed.
 */
export function createStatusServer(options: StatusOptions): http.Server {
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://status").pathname;
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, { error: "method not allowed" });
    switch (path) {
      case "/live":
        return send(res, 200, { status: "ok" });
      case "/ready":
        options.ready().then(
          (degraded) => send(res, 200, degraded ?? { status: "ready" }),
          (err: unknown) => send(res, 503, { status: "not ready", reason: (err as Error).message }),
        );
        return;
      case "/version":
        return send(res, 200, options.version);
      default:
        return send(res, 404, { error: "not found" });
    }
  });
}

function send(res: http.ServerResponse, status: number, body: unknown) {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
