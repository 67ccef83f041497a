// The framework alone: the API listener of the grpc-server with handlers that
// return at once (no database, no interceptors), so a bench row shows what
// each protocol's server stack costs per call. ENGINE=grpc-js serves native
// gRPC with grpc-js (as the grpc-server does), ENGINE=connect with connect-node.
// Env: GRPC_PORT, STATUS_PORT (GET /ready answers 200 once listening).
import http from "node:http";
import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { loadConfig } from "../../internal/config/config.js";
import { ApiListener } from "../../internal/server/api-listener.js";
import { listen } from "../../internal/server/listen.js";
import { NativeGrpcServer, serviceBinding } from "../../internal/server/native-grpc.js";
import {
  LogisticPackageApiService,
  PackageSchema,
} from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";

const config = loadConfig({ env: {} });
const trivial: ServiceImpl<typeof LogisticPackageApiService> = {
  createPackageV1: () => ({ ID: 1n }),
  describePackageV1: () => ({ Value: create(PackageSchema, { ID: 1n, Title: "t" }) }),
  listPackagesV1: () => ({ Packages: [] }),
  removePackageV1: () => ({ Suc: true }),
  updatePackageV1: () => ({ Suc: true }),
};
const shutdown = new AbortController();
const native =
  process.env.ENGINE === "grpc-js"
    ? new NativeGrpcServer([serviceBinding(LogisticPackageApiService, trivial)], {
        interceptors: [],
        maxRequestBytes: config.grpc.maxRequestBytes,
        shutdownSignal: shutdown.signal,
      })
    : undefined;
const listener = new ApiListener(
  connectNodeAdapter({
    routes: (router) => router.service(LogisticPackageApiService, trivial),
    shutdownSignal: shutdown.signal,
  }),
  {
    limits: config.grpc,
    ...(native === undefined
      ? {}
      : { streamRoute: { accepts: NativeGrpcServer.accepts, handleStream: (s, h) => native.handleStream(s, h) } }),
  },
);
await listen(listener.server, Number(process.env.GRPC_PORT), "127.0.0.1");
const status = http.createServer((_req, res) => res.end("ready"));
await listen(status, Number(process.env.STATUS_PORT), "127.0.0.1");
process.once("SIGTERM", () => {
  shutdown.abort();
  status.close();
  void listener.close(1000).then(() => process.exit(0));
});
