import { type GrpcServerApp, startGrpcServer } from "../../internal/app/grpc-server.js";
import { type Config, loadConfig } from "../../internal/config/config.js";
import { type CapturedLogs, captureLogs } from "./logs.js";

export interface TestServer extends GrpcServerApp {
  config: Readonly<Config>;
  logs: CapturedLogs;
  grpcAddress: string;
  gatewayUrl: string;
  statusUrl: string;
  grpcUrl: string;
}

/**
 * The real grpc-server wiring on ephemeral loopback ports, against `databaseUrl`.
 * `env` takes the same overrides as production (plus CONFIG_PATH).
 */
export async function startTestServer(databaseUrl: string, env: Record<string, string> = {}): Promise<TestServer> {
  const config = loadConfig({
    // CONFIG_PATH (when given) picks the YAML file, as in production.
    path: env.CONFIG_PATH ?? "config.yml",
    env: { DATABASE_URL: databaseUrl, GRPC_PORT: "0", GATEWAY_PORT: "0", STATUS_PORT: "0", METRICS_PORT: "0", ...env },
  });
  const hostConfig = { ...config, grpc: { ...config.grpc, host: "127.0.0.1" } };
  const logs = captureLogs("info");
  const app = await startGrpcServer(hostConfig, logs.logger);
  return {
    ...app,
    config: hostConfig,
    logs,
    grpcAddress: `127.0.0.1:${app.ports.grpc}`,
    grpcUrl: `http://127.0.0.1:${app.ports.grpc}`,
    gatewayUrl: `http://127.0.0.1:${app.ports.gateway}`,
    statusUrl: `http://127.0.0.1:${app.ports.status}`,
  };
}
