// A small gRPC command-line client for operators and the README examples,
// built from the .proto files with @grpc/grpc-js like any third-party client.
//
//   npm run grpc-call -- [--addr host:port] [-H key:value]... Method ['{"json":"request"}']
//
// Method is a LogisticPackageApiService rpc (CreatePackageV1, …) or
// grpc.health.v1.Health/Check. Prints the response as JSON; on error prints
// the gRPC status and message and exits 1.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

const root = fileURLToPath(new URL("..", import.meta.url));
const args = process.argv.slice(2);
let address = process.env["GRPC_ADDR"] ?? "127.0.0.1:8082";
const metadata = new grpc.Metadata();
const positional: string[] = [];
for (let i = 0; i < args.length; i++) {
  const arg = args[i]!;
  if (arg === "--addr") address = args[++i]!;
  else if (arg === "-H") {
    const header = args[++i]!;
    const colon = header.indexOf(":");
    metadata.set(header.slice(0, colon).trim(), header.slice(colon + 1).trim());
  } else positional.push(arg);
}
const [methodArg, body = "{}"] = positional;
if (methodArg === undefined) {
  console.error("usage: npm run grpc-call -- [--addr host:port] [-H key:value]... Method ['{json}']");
  process.exit(2);
}

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
const Service = serviceName.split(".").reduce<any>((node, part) => node?.[part], grpc.loadPackageDefinition(definition));
if (typeof Service !== "function") {
  console.error(`unknown service ${serviceName}`);
  process.exit(2);
}
const client = new Service(address, grpc.credentials.createInsecure()) as grpc.Client & Record<string, Function>;
if (typeof client[methodName] !== "function") {
  console.error(`unknown method ${methodName} of ${serviceName}`);
  process.exit(2);
}
client[methodName]!(JSON.parse(body), metadata, { deadline: Date.now() + 10_000 }, (err: grpc.ServiceError | null, res: unknown) => {
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
});
