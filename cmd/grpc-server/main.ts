import { runMain } from "../../internal/app/run-main.js";
import { startGrpcServer } from "../../internal/app/start-grpc-server.js";

// `npm run grpc-server`: the API (gRPC, Connect, gRPC-Web, REST) over PostgreSQL.
await runMain("grpc-server", startGrpcServer);
