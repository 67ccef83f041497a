import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

// A stock gRPC client built from the .proto files (the wire contract), the way
// an existing client of the original Go service talks to us: no generated
// TypeScript from this repository is involved.

const root = fileURLToPath(new URL("../..", import.meta.url));
const includeDirs = [`${root}api`, `${root}third_party/proto`];

const loaderOptions: protoLoader.Options = {
  includeDirs,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  keepCase: true,
};

function load(file: string): grpc.GrpcObject {
  return grpc.loadPackageDefinition(protoLoader.loadSync(file, loaderOptions));
}

type Callback = (err: grpc.ServiceError | null, res: unknown) => void;
type RawMethod = (req: unknown, metadata: grpc.Metadata, options: grpc.CallOptions, cb: Callback) => void;

export interface RpcError extends Error {
  code: grpc.status;
  /** The status message as sent (grpc-js shows connect's percent-encoded form: decoded here). */
  details: string;
}

export type Unary = (req: Record<string, unknown>, metadata?: Record<string, string>) => Promise<any>;

function promisify(client: grpc.Client, name: string): Unary {
  const method = (client as unknown as Record<string, RawMethod>)[name]!.bind(client);
  return (req, metadata = {}) =>
    new Promise((resolve, reject) => {
      const md = new grpc.Metadata();
      for (const [k, v] of Object.entries(metadata)) md.set(k, v);
      method(req, md, { deadline: Date.now() + 15_000 }, (err, res) => {
        if (err) {
          const e = err as unknown as RpcError;
          e.details = safeDecode(err.details);
          reject(e);
        } else resolve(res);
      });
    });
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

export interface PackageApiClient {
  createPackageV1: Unary;
  describePackageV1: Unary;
  listPackagesV1: Unary;
  removePackageV1: Unary;
  updatePackageV1: Unary;
  close(): void;
}

/** A valid CreatePackageV1 request: a test spells out only the fields it is about. */
export const validPackage = { Title: "box", Material: "cardboard", MaximumVolume: 2.5, Reusable: false } as const;

/** Creates `validPackage` with `fields` over it; returns the new package's id. */
export async function createPackage(client: PackageApiClient, fields: Record<string, unknown> = {}): Promise<string> {
  const res = await client.createPackageV1({ ...validPackage, ...fields });
  return res.ID as string;
}

/** `credentials`: cleartext by default; `grpc.credentials.createSsl(ca, key, cert)` for TLS. */
export function packageApiClient(address: string, credentials = grpc.credentials.createInsecure()): PackageApiClient {
  const pkg = load("hablof/logistic_package_api/v1/logistic_package_api.proto") as any;
  const Ctor = pkg.hablof.logistic_package_api.v1.LogisticPackageApiService as grpc.ServiceClientConstructor;
  const client = new Ctor(address, credentials);
  return {
    createPackageV1: promisify(client, "CreatePackageV1"),
    describePackageV1: promisify(client, "DescribePackageV1"),
    listPackagesV1: promisify(client, "ListPackagesV1"),
    removePackageV1: promisify(client, "RemovePackageV1"),
    updatePackageV1: promisify(client, "UpdatePackageV1"),
    close: () => client.close(),
  };
}

export function healthClient(
  address: string,
  credentials = grpc.credentials.createInsecure(),
): { check: Unary; raw: grpc.Client; close(): void } {
  const pkg = load("grpc/health/v1/health.proto") as any;
  const Ctor = pkg.grpc.health.v1.Health as grpc.ServiceClientConstructor;
  const client = new Ctor(address, credentials);
  return { check: promisify(client, "Check"), raw: client, close: () => client.close() };
}

export function reflectionClient(
  address: string,
  credentials = grpc.credentials.createInsecure(),
  version: "v1" | "v1alpha" = "v1",
): grpc.Client {
  const pkg = load(`grpc/reflection/${version}/reflection.proto`) as any;
  const Ctor = pkg.grpc.reflection[version].ServerReflection as grpc.ServiceClientConstructor;
  return new Ctor(address, credentials);
}

/** Asserts that `promise` fails with `code`; returns the error for further checks. */
export async function rpcError(promise: Promise<unknown>, code: grpc.status): Promise<RpcError> {
  try {
    await promise;
  } catch (err) {
    const e = err as RpcError;
    if (e.code !== code) {
      throw new Error(`expected gRPC code ${grpc.status[code]}, got ${grpc.status[e.code]}: ${e.details}`);
    }
    return e;
  }
  throw new Error(`expected gRPC code ${grpc.status[code]}, but the call succeeded`);
}

export { grpc };
