// A small gRPC command-line client for operators and the README examples,
// built from the .proto files with @grpc/grpc-js like any third-party client.
//
//   npm run grpc-call -- [--addr host:port] [-H key:value]... [--token T]
//                        [--tls] [--cacert ca.pem] [--cert c.pem --key k.pem] Method ['{"json":"request"}']
//
// --token (or $GRPC_TOKEN) sends `authorization: Bearer T`. --tls speaks TLS
// trusting the system CAs; --cacert trusts that CA instead (and implies TLS);
// --cert/--key present a client certificate (mutual TLS).
//
// Method is a LogisticPackageApiService rpc (CreatePackageV1, …) or
// grpc.health.v1.Health/Check. Prints the response as JSON; on error prints
// the gRPC status and message and exits 1.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const root = fileURLToPath(new URL("..", import.meta.url));
const args = process.argv.slice(2);
let address = process.env.GRPC_ADDR ?? "127.0.0.1:8082";
const metadata = new grpc.Metadata();
const positional: string[] = [];
let token = process.env.GRPC_TOKEN;
let useTls = false;
let caFile: string | undefined;
let certFile: string | undefined;
let keyFile: string | undefined;
for (let i = 0; i < args.length; i++) {
  const arg = args[i]!;
  if (arg === "--addr") address = args[++i]!;
  else if (arg === "--token") token = args[++i];
  else if (arg === "--tls") useTls = true;
  else if (arg === "--cacert") caFile = args[++i];
  else if (arg === "--cert") certFile = args[++i];
  else if (arg === "--key") keyFile = args[++i];
  else if (arg === "-H") {
    const header = args[++i]!;
    const colon = header.indexOf(":");
    metadata.set(header.slice(0, colon).trim(), header.slice(colon + 1).trim());
  } else positional.push(arg);
}
const [methodArg, body = "{}"] = positional;
if (methodArg === undefined || (certFile === undefined) !== (keyFile === undefined)) {
  console.error(
    "usage: npm run grpc-call -- [--addr host:port] [-H key:value]... [--token T] [--tls] [--cacert ca.pem] [--cert c.pem --key k.pem] Method ['{json}']",
  );
  process.exit(2);
}
if (token !== undefined && token !== "") metadata.set("authorization", `Bearer ${token}`);
const readPem = (path: string | undefined) => (path === undefined ? null : readFileSync(path));
const credentials =
  useTls || caFile !== undefined || certFile !== undefined
    ? grpc.credentials.createSsl(readPem(caFile), readPem(keyFile), readPem(certFile))
    : grpc.credentials.createInsecure();

const [serviceName, methodName] = methodArg.includes("/")
  ? (methodArg.split("/") as [string, string])
  : ["hablof.logistic_package_api.v1.LogisticPackageApiService", methodArg];
const files = ["hablof/logistic_package_api/v1/logistic_package_api.proto", "grpc/health/v1/health.proto"];
const definition = protoLoader.loadSync(files, {
  includeDirs: [`${root}api`, `${root}third_party/proto`],
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const Service = serviceName
  .split(".")
  .reduce<unknown>(
    (node, part) => (node as Record<string, unknown> | undefined)?.[part],
    grpc.loadPackageDefinition(definition),
  );
if (typeof Service !== "function") {
  console.error(`unknown service ${serviceName}`);
  process.exit(2);
}
const client = new (Service as typeof grpc.Client)(address, credentials) as grpc.Client &
  Record<string, (...args: unknown[]) => unknown>;
if (typeof client[methodName] !== "function") {
  console.error(`unknown method ${methodName} of ${serviceName}`);
  process.exit(2);
}
client[methodName]!(
  JSON.parse(body),
  metadata,
  { deadline: Date.now() + 10_000 },
  (err: grpc.ServiceError | null, res: unknown) => {
    client.close();
    if (err) {
      let message = err.details;
      try {
        message = decodeURIComponent(message);
      } catch {
        // not percent-encoded
      }
      console.error(`ERROR ${grpc.status[err.code]}: ${message}`);
      process.exit(1);
    }
    console.log(JSON.stringify(res, null, 2));
  },
);
