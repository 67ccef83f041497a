import { startGrpcServer } from "../../internal/app/grpc-server.js";
import { runMain } from "../../internal/app/run-main.js";

await runMain("grpc-server", startGrpcServer);
