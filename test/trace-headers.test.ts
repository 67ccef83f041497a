// Client trace headers with tracing off: the server's own W3C parser decides
// what reaches the outbox (cases in helpers/trace-header-cases.ts).
import { after, before } from "node:test";
import { createTestDatabase, type TestDatabase } from "./helpers/database.js";
import { type PackageApiClient, packageApiClient } from "./helpers/grpc-client.js";
import { startTestServer, type TestServer } from "./helpers/server.js";
import { traceHeaderCases } from "./helpers/trace-header-cases.js";

let db: TestDatabase;
let server: TestServer;
let client: PackageApiClient;

before(async () => {
  db = await createTestDatabase();
  server = await startTestServer(db.url);
  client = packageApiClient(server.grpcAddress);
});

after(async () => {
  client?.close();
  await server?.stop();
  await db?.drop();
});

traceHeaderCases({ db: () => db, server: () => server, client: () => client });
