import type { Config } from "./config.js";

// status.host and metrics.host default to "" = the API's grpc.host, so a
// single-interface setup needs one key, and an operator who wants probes and
// metrics elsewhere (a private interface, loopback behind a sidecar) sets them.

/** Interface of the grpc-server's /live, /ready, /version listener. */
export function statusHost(config: Pick<Config, "grpc" | "status">): string {
  return config.status.host === "" ? config.grpc.host : config.status.host;
}

/** Interface of every binary's metrics listener (and the retranslator's and facade's probes on it). */
export function metricsHost(config: Pick<Config, "grpc" | "metrics">): string {
  return config.metrics.host === "" ? config.grpc.host : config.metrics.host;
}
