import { type Client, Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import {
  LogisticPackageApiService,
  type Package,
} from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import type { NewPackageInput, PackageChangesInput } from "./parse.js";

/** What the bot needs from the package service. Every call reads fresh: no cache. */
export interface PackageApi {
  /**
   * `requestId` (x-request-id) makes a repeat safe: the API returns the first
   * package's ID instead of creating a second one.
   */
  create(input: NewPackageInput, requestId?: string): Promise<bigint>;
  /** Rejects with NotFound (a ConnectError) for unknown or removed IDs. */
  describe(id: bigint): Promise<Package>;
  list(offset: bigint, limit: number): Promise<Package[]>;
  update(id: bigint, changes: PackageChangesInput): Promise<void>;
  remove(id: bigint): Promise<void>;
  /** Closes the HTTP/2 connection. */
  close(): void;
}

export interface GrpcPackageApiOptions {
  /** host:port of the grpc-server. */
  address: string;
  /** Deadline of each call; past it the call fails with DeadlineExceeded. */
  timeoutMs: number;
  /** Sent as `authorization: Bearer <token>` on every call; empty or absent = no header. */
  token?: string;
  /** HTTPS (HTTP/2 by ALPN) instead of cleartext HTTP/2. */
  tls?: {
    /** PEM CAs to trust instead of the system ones. */
    ca?: string | Buffer;
    /** Client certificate and key (PEM) for a server that asks for one (mutual TLS). */
    cert?: string | Buffer;
    key?: string | Buffer;
  };
}

/** The v1 API over gRPC (connect-node's gRPC transport, HTTP/2 only). */
export function grpcPackageApi(options: GrpcPackageApiOptions): PackageApi {
  const baseUrl = `${options.tls === undefined ? "http" : "https"}://${options.address}`;
  const tlsOptions =
    options.tls === undefined
      ? {}
      : {
          // node:http2 offers ALPN "h2" by itself; the server picks HTTP/2 from it.
          ...(options.tls.ca !== undefined && { ca: options.tls.ca }),
          ...(options.tls.cert !== undefined && { cert: options.tls.cert }),
          ...(options.tls.key !== undefined && { key: options.tls.key }),
        };
  // Our own session manager so that close() can end the connection on shutdown.
  const sessions = new Http2SessionManager(baseUrl, undefined, tlsOptions);
  const token = options.token ?? "";
  // One interceptor sets the header on every call; the token stays out of call options,
  // which error paths may log.
  const bearer: Interceptor = (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
  const client: Client<typeof LogisticPackageApiService> = createClient(
    LogisticPackageApiService,
    createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: token === "" ? [] : [bearer] }),
  );
  const call = { timeoutMs: options.timeoutMs };
  return {
    async create(input, requestId) {
      const res = await client.createPackageV1(
        { Title: input.title, Material: input.material, MaximumVolume: input.maximumVolume, Reusable: input.reusable },
        requestId === undefined ? call : { ...call, headers: { "x-request-id": requestId } },
      );
      return res.ID;
    },
    async describe(id) {
      const res = await client.describePackageV1({ PackageID: id }, call);
      // The server always sets Value; an empty answer would be a server bug.
      if (res.Value === undefined) throw new ConnectError("DescribePackageV1 returned no Value", Code.Internal);
      return res.Value;
    },
    async list(offset, limit) {
      const res = await client.listPackagesV1({ Offset: offset, Limit: BigInt(limit) }, call);
      return res.Packages;
    },
    async update(id, changes) {
      // v1 contract: "" and 0 mean unchanged; Reusable changes only inside its wrapper.
      await client.updatePackageV1(
        {
          PackageID: id,
          Title: changes.title ?? "",
          Material: changes.material ?? "",
          MaximumVolume: changes.maximumVolume ?? 0,
          ...(changes.reusable === undefined ? {} : { Reusable: { Reusable: changes.reusable } }),
        },
        call,
      );
    },
    async remove(id) {
      await client.removePackageV1({ PackageID: id }, call);
    },
    close() {
      sessions.abort();
    },
  };
}
