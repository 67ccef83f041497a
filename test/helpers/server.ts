import { type GrpcServerApp, startGrpcServer } from "../../internal/app/start-grpc-server.js";
import type { Config } from "../../internal/config/config.js";
import { type ConfigOverrides, testConfig } from "./config.js";
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
 * `env` takes the same overrides as production (plus CONFIG_PATH); `overrides`
 * the keys that have no environment variable.
 */
export async function startTestServer(
  databaseUrl: string,
  env: Record<string, string> = {},
  overrides: ConfigOverrides = {},
): Promise<TestServer> {
  const config = testConfig(
    { DATABASE_URL: databaseUrl, GRPC_PORT: "0", GATEWAY_PORT: "0", STATUS_PORT: "0", METRICS_PORT: "0", ...env },
    overrides,
  );
  const logs = captureLogs("info");
  const app = await startGrpcServer(config, logs.logger);
  return {
    ...app,
    config,
    logs,
    grpcAddress: `127.0.0.1:${app.ports.grpc}`,
    grpcUrl: `http://127.0.0.1:${app.ports.grpc}`,
    gatewayUrl: `http://127.0.0.1:${app.ports.gateway}`,
    statusUrl: `http://127.0.0.1:${app.ports.status}`,
  };
}
