import http from "node:http";
import type { Registry } from "prom-client";

/** Serves `registry` on /metrics in the Prometheus text format. */
export function createMetricsServer(registry: Registry, extra?: http.RequestListener): http.Server {
  return http.createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://metrics").pathname;
    if (path !== "/metrics") {
      if (extra) return extra(req, res);
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => {
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(text);
      },
      (err: unknown) => {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(`metrics collection failed: ${(err as Error).message}`);
      },
    );
  });
}
