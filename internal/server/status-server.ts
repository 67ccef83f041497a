import http from "node:http";
import type { Registry } from "prom-client";

/** Serving, but a service objective is missed: /ready stays 200 and says why. */
export interface Degraded {
  status: "degraded";
  reason: string;
  [detail: string]: unknown;
}

/**
 * Resolves while the process can serve (the database answers), with a
 * Degraded when it serves but misses an objective; rejects when it cannot.
 */
// biome-ignore lint/suspicious/noConfusingVoidType: a probe that resolves with nothing means ready.
export type ReadyCheck = () => Promise<void | Degraded>;

export interface Probes {
  ready: ReadyCheck;
  /**
   * Why the process must be restarted (something it cannot recover from by
   * itself), or undefined while it runs: /live answers 503 with it.
   */
  live?: () => { status: string; reason: string } | undefined;
  version: { name: string; version: string; commitHash: string };
}

export interface StatusOptions {
  /** /live, /ready and /version; absent on a port that serves only /metrics. */
  probes?: Probes;
  /** /metrics in the Prometheus text format; absent on a port that serves only the probes. */
  metrics?: Registry;
}

/**
 * The one status server of every binary. /live: the process runs; /ready: it
 * can serve now (load balancers and Kubernetes readiness probes); /version:
 * what is deployed; /metrics: Prometheus. The grpc-server serves the probes and
 * the metrics on two ports (status.port, metrics.port), the other binaries both
 * on one (their metricsPort).
 */
export function createStatusServer(options: StatusOptions): http.Server {
  const { probes, metrics } = options;
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://status").pathname;
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, { error: "method not allowed" });
    if (path === "/metrics" && metrics !== undefined) {
      metrics.metrics().then(
        (text) => res.writeHead(200, { "content-type": metrics.contentType }).end(text),
        (err: unknown) =>
          res
            .writeHead(500, { "content-type": "text/plain" })
            .end(`metrics collection failed: ${(err as Error).message}`),
      );
      return;
    }
    if (probes === undefined) return send(res, 404, { error: "not found" });
    switch (path) {
      case "/live": {
        const dead = probes.live?.();
        return dead === undefined ? send(res, 200, { status: "ok" }) : send(res, 503, dead);
      }
      case "/ready":
        probes.ready().then(
          (degraded) => send(res, 200, degraded ?? { status: "ready" }),
          (err: unknown) => send(res, 503, { status: "not ready", reason: (err as Error).message }),
        );
        return;
      case "/version":
        return send(res, 200, probes.version);
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
