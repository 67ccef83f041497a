import { readFileSync } from "node:fs";
import { parse as parseYaml } from "yaml";
import { z } from "zod";
import { sendBudgetMs } from "../retranslator/sender/send-budget.js";

// Booleans from YAML arrive as booleans, from the environment as strings;
// z.coerce.boolean() would turn "false" into true, so accept both spellings.
const bool = z.preprocess((v) => {
  if (typeof v !== "string") return v;
  const s = v.trim().toLowerCase();
  if (["true", "1", "yes", "on"].includes(s)) return true;
  if (["false", "0", "no", "off"].includes(s)) return false;
  return v;
}, z.boolean());

const int = (min: number, max: number) =>
  z.preprocess((v) => (typeof v === "string" && v.trim() !== "" ? Number(v) : v), z.number().int().min(min).max(max));
const port = int(0, 65535);
const nonEmpty = z.string().trim().min(1);
const logLevel = z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]);

/** One key's problem, found by a check across keys; `key` is relative to the section checked. */
function problem(ctx: z.RefinementCtx, key: string | string[], message: string): void {
  ctx.addIssue({ code: "custom", path: Array.isArray(key) ? key : [key], message });
}

/**
 * A section of the file: an unknown key is an error (a typo must not pass as a
 * default), a missing section takes every default, and `check` looks at keys
 * that only make sense together.
 */
function section<Shape extends z.ZodRawShape>(
  shape: Shape,
  check: (value: z.output<z.ZodObject<Shape, z.core.$strict>>, ctx: z.RefinementCtx) => void = () => {},
) {
  return z
    .strictObject(shape)
    .superRefine(check)
    .prefault({} as z.input<z.ZodObject<Shape, z.core.$strict>>);
}

/**
 * A list as YAML writes it, or as an environment variable does: comma-separated,
 * each item trimmed and given to `item` (a number from digits) before `list` checks it.
 */
function listOrCommaSeparated<List extends z.ZodType>(list: List, item: (text: string) => unknown = (text) => text) {
  return z.preprocess(
    (v) =>
      typeof v === "string"
        ? v
            .split(",")
            .map((s) => s.trim())
            .filter((s) => s !== "")
            .map(item)
        : v,
    list,
  );
}

const schema = z
  .strictObject({
    project: section({
      name: nonEmpty.default("logistic-package-api"),
      // Lets a client raise one request's log level with `log_level: debug` metadata.
      // Off by default: it lets any caller write request bodies into the logs
      // (bounded and without headers, but still the caller's choice, not the operator's).
      allowRiseToDebug: bool.default(false),
      // Read by nothing (removed 2026-11-30). Still accepted, and ignored, so that a
      // config file or ConfigMap written for an earlier release starts unchanged.
      environment: z.string().optional(),
    }),
    log: section({
      level: logLevel.default("info"),
    }),
    database: section({
      url: nonEmpty.default("postgres://postgres:postgres@127.0.0.1:5432/logistic_package_api"),
      // Pool size per process: 2 cores here, so 10 keeps Postgres busy without queueing in it.
      maxConnections: int(1, 1000).default(10),
      // Bounds every statement so that a stuck query cannot hold a request forever.
      statementTimeoutMs: int(0, 3_600_000).default(5000),
      // How long a request waits for a free pooled connection before failing.
      acquireTimeoutMs: int(100, 600_000).default(5000),
      migrateOnStart: bool.default(true),
      // Migrations (migrateOnStart, `npm run migrate`) connect with this URL: the schema
      // owner's, so that url can be a role that may only read and write the tables
      // (db/roles.sql). Empty = url. Never logged. env: DATABASE_MIGRATION_URL
      migrationUrl: z.string().trim().default(""),
      // Group commit of CreatePackageV1 without x-request-id: while createConcurrency
      // create statements run, new creates wait and then share one statement, up to
      // createBatchSize (1 = off). Idle, a create goes at once and alone.
      createBatchSize: int(1, 1000).default(50),
      createConcurrency: int(1, 1000).default(2),
      // Creates waiting for a statement; more fail at once with Unavailable (retry).
      createMaxWaiting: int(1, 1_000_000).default(1000),
      // Under a steady stream (creates less than this long apart on average, over about the last
      // ten), a create that would go alone waits up to this long for others to join its
      // statement. 0 = never waits.
      createLingerMs: int(0, 100).default(2),
    }),
    grpc: section(
      {
        host: nonEmpty.default("0.0.0.0"),
        port: port.default(8082),
        // Requests larger than this are rejected before they are parsed.
        maxRequestBytes: int(1024, 64 * 1024 * 1024).default(4 * 1024 * 1024),
        // On SIGTERM: time given to in-flight requests before connections are cut.
        shutdownTimeoutMs: int(0, 600_000).default(10_000),
        // Native gRPC (application/grpc) on this port is served by @grpc/grpc-js, the rest
        // (Connect, gRPC-Web) by connect-node. false: connect-node serves native gRPC too
        // (slower: measured ~3x the CPU per trivial call; kept for comparison and fallback).
        nativeGrpcJs: bool.default(true),
        // Limits of every API listener (this port and the gateway's), so that hostile or
        // broken clients cost a connection, never the process. Open connections per
        // listener; more are closed at once (a few KiB of memory each while idle).
        maxConnections: int(1, 1_000_000).default(10_000),
        // A connection that sends no byte (or no TLS handshake) within this is closed:
        // port scanners, half-open sockets, TCP health checks.
        firstByteTimeoutMs: int(100, 600_000).default(10_000),
        // A connection with no request in progress is closed after this (HTTP/2 with a
        // GOAWAY). A connection with a silent open stream is pinged instead, and
        // closed when the ping is not answered within firstByteTimeoutMs (half-open peers).
        idleTimeoutMs: int(1000, 3_600_000).default(120_000),
        // HTTP/1.1: the request headers, and the whole request, must arrive within these.
        headersTimeoutMs: int(100, 600_000).default(10_000),
        requestTimeoutMs: int(100, 3_600_000).default(30_000),
        // Request headers (HTTP/1.1 bytes, HTTP/2 header list size); larger ones get 431.
        maxHeaderBytes: int(1024, 1024 * 1024).default(16 * 1024),
        // HTTP/2: streams (calls) one connection may have open at once.
        maxConcurrentStreams: int(1, 10_000).default(100),
        // HTTP/2 rapid reset (CVE-2023-44487): a connection whose client cancels more
        // streams than this within 10 s is sent GOAWAY (ENHANCE_YOUR_CALM) and closed.
        maxResetStreamsPer10s: int(10, 1_000_000).default(500),
      },
      (g, ctx) => {
        // Node refuses an HTTP/1.1 server whose headers may take longer than the whole request.
        if (g.headersTimeoutMs > g.requestTimeoutMs)
          problem(ctx, "headersTimeoutMs", "must not exceed grpc.requestTimeoutMs");
      },
    ),
    tls: section(
      {
        // PEM certificate chain and key: when both are set, the gRPC port and the REST
        // gateway speak only TLS (HTTP/2 and HTTP/1.1 by ALPN). Both files are re-read
        // on SIGHUP and when they change. env: TLS_CERT_FILE, TLS_KEY_FILE
        certFile: z.string().trim().default(""),
        keyFile: z.string().trim().default(""),
        // PEM CA bundle: when set, clients must present a certificate it signed (mutual
        // TLS). env: TLS_CLIENT_CA_FILE
        clientCaFile: z.string().trim().default(""),
      },
      (t, ctx) => {
        if ((t.certFile === "") !== (t.keyFile === "")) {
          problem(ctx, "certFile", "tls.certFile and tls.keyFile must be set together");
        }
        if (t.clientCaFile !== "" && t.certFile === "") {
          problem(ctx, "clientCaFile", "mutual TLS needs tls.certFile and tls.keyFile too");
        }
      },
    ),
    auth: section({
      // YAML file of API tokens with a name and a role (reader | writer | admin).
      // Empty = no authentication (a warning at start). Re-read on SIGHUP.
      // env: AUTH_TOKENS_FILE
      tokensFile: z.string().trim().default(""),
    }),
    gateway: section({
      enabled: bool.default(true),
      port: port.default(8080),
    }),
    status: section({
      // Interface of /live, /ready, /version; empty = grpc.host. A probe port can then stay
      // on a private interface while the API is public. env: STATUS_HOST
      host: z.string().trim().default(""),
      port: port.default(8000),
      // /ready fails when the database does not answer `select 1` within this time.
      readinessTimeoutMs: int(50, 60_000).default(1000),
      // /ready, gRPC health Check and every Watch share one probe, on a pool of its own
      // (one connection): its result is reused this long, so a probe flood or many
      // watchers cost at most one database ping per interval in total.
      readinessCacheMs: int(100, 60_000).default(1000),
    }),
    health: section({
      // gRPC health Watch streams open at once; each holds a stream for as long as its
      // client likes, so more are refused with ResourceExhausted.
      maxWatchers: int(1, 100_000).default(100),
    }),
    metrics: section({
      // Interface of every binary's metrics listener (grpc-server metrics.port, and the
      // retranslator's, facade's and bot's metricsPort with their /live, /ready); empty = grpc.host.
      // env: METRICS_HOST
      host: z.string().trim().default(""),
      port: port.default(9100),
    }),
    api: section({
      defaultListLimit: int(1, 500).default(50),
      maxListLimit: int(1, 10_000).default(500),
      // A larger List Offset is rejected (InvalidArgument): Postgres reads and
      // discards every skipped row, so without a cap one request could scan the table.
      maxListOffset: int(0, 100_000_000).default(100_000),
    }),
    idempotency: section({
      // How long an x-request-id is remembered (docs/design.md §1.3: 24 h by default).
      retentionSeconds: int(1, 365 * 24 * 3600).default(24 * 3600),
      // Expired keys are deleted in batches of this size at this interval.
      cleanupIntervalSeconds: int(1, 86_400).default(60),
      cleanupBatchSize: int(1, 100_000).default(1000),
    }),
    tracing: section({
      // OTLP/HTTP endpoint of the trace collector (Jaeger: http://jaeger:4318).
      // Empty = tracing off. env: OTEL_EXPORTER_OTLP_ENDPOINT
      otlpEndpoint: z.string().trim().default(""),
    }),
    kafka: section(
      {
        // Comma-separated host:port list (env KAFKA_BROKERS) or a YAML list.
        brokers: listOrCommaSeparated(
          z.array(z.string().regex(/^[^\s:]+:\d{1,5}$/, "expected host:port")).min(1),
        ).default(["127.0.0.1:9092"]),
        topic: nonEmpty.default("omp-package-events"),
        clientId: nonEmpty.default("logistic-package-api"),
        // Used when the retranslator creates the topic at start (where the cluster allows it).
        partitions: int(1, 10_000).default(12),
        replicationFactor: int(1, 10).default(1),
        // One broker request; a send that exceeds it fails and is retried with backoff.
        requestTimeoutMs: int(100, 600_000).default(10_000),
        // kafkajs' own quick retries of retriable errors inside one send, before ours.
        sendRetries: int(0, 20).default(2),
        // Largest request the retranslator sends to one partition, in bytes: the broker
        // refuses a record batch above its message.max.bytes (1 MB by default), so a
        // package's backlog above it goes out as several requests, in order. Keep it at or
        // below the topic's max.message.bytes. An event larger than this alone is dead-lettered.
        maxRequestBytes: int(1024, 100 * 1024 * 1024).default(1_000_000),
        // The idempotent producer: the broker drops kafkajs' own retries of a request it
        // had written (after a failure the relay retries, the next send goes through a new
        // producer: sender/idempotent-producer.ts).
        idempotent: bool.default(false),
        // The retranslator's producing client. platformatic (@platformatic/kafka) is there to be
        // measured against kafkajs (npm run bench -- --only=kafka-clients): plaintext only and not
        // idempotent; a development dependency, absent from the image.
        producerClient: z
          .enum(["kafkajs", "platformatic"], { error: "expected kafkajs or platformatic" })
          .default("kafkajs"),
        // TLS to the brokers (managed clusters require it). Off = plaintext, only on a
        // private network: events and SASL credentials would travel in clear. env: KAFKA_SSL
        ssl: bool.default(false),
        // PEM CA bundle the brokers' certificates must chain to; empty = Node's public CAs
        // (enough for Confluent Cloud, MSK). Read at start. env: KAFKA_SSL_CA_FILE
        sslCaFile: z.string().trim().default(""),
        // SASL authentication: plain | scram-sha-256 | scram-sha-512; empty = none.
        // env: KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD
        saslMechanism: z
          .preprocess(
            (v) => (typeof v === "string" ? v.trim().toLowerCase() : v),
            z.enum(["", "plain", "scram-sha-256", "scram-sha-512"], {
              error: "expected plain, scram-sha-256, scram-sha-512 or empty (no SASL)",
            }),
          )
          .default(""),
        saslUsername: z.string().default(""),
        // Never logged, never part of an error message.
        saslPassword: z.string().default(""),
      },
      (k, ctx) => {
        // A CA without TLS would be silently ignored and the cluster reached in clear.
        if (!k.ssl && k.sslCaFile !== "") {
          problem(ctx, "sslCaFile", "is set but kafka.ssl (KAFKA_SSL) is false");
        }
        if (k.saslMechanism !== "") {
          for (const key of ["saslUsername", "saslPassword"] as const) {
            if (k[key] === "") problem(ctx, key, `is required with kafka.saslMechanism ${k.saslMechanism}`);
          }
        }
        // kafkajs refuses to make an idempotent producer without retries; the retranslator
        // makes one at start and again after failures, so this is caught here, at start.
        if (k.idempotent && k.sendRetries < 1) {
          problem(ctx, "sendRetries", "must be at least 1 with kafka.idempotent (kafkajs requires retries)");
        }
        if (k.producerClient === "platformatic") {
          for (const key of ["ssl", "idempotent"] as const) {
            if (k[key]) problem(ctx, key, "is not supported with kafka.producerClient platformatic");
          }
          if (k.saslMechanism !== "") {
            problem(ctx, "saslMechanism", "is not supported with kafka.producerClient platformatic");
          }
        }
      },
    ),
    retranslator: section({
      // Events per claim; a full batch is followed by the next claim at once.
      batchSize: int(1, 10_000).default(500),
      // The in-flight pool holds at most maxInFlightBatches × batchSize claimed events
      // (one partition at most 2 × batchSize): a slow broker cannot make the relay
      // claim without limit, nor one slow partition take the whole pool.
      maxInFlightBatches: int(1, 64).default(4),
      // How long a claim is ours; a crashed relay's events are taken over after it. A send
      // starts only while a whole send's time (kafka: (connect + requestTimeoutMs) ×
      // (sendRetries + 1) + retry backoff) is left; a shorter lease is rejected at start.
      leaseSeconds: int(1, 3600).default(60),
      // Poll interval when idle; LISTEN/NOTIFY wakes the relay sooner.
      pollIntervalMs: int(10, 600_000).default(1000),
      listenNotify: bool.default(true),
      // After a claim that found only a few events, wait at least this long before the
      // next: steady traffic is claimed several commits at a time (adds up to this latency).
      claimLingerMs: int(0, 1000).default(5),
      // Partitions led by the same broker share one produce request (one per broker
      // instead of one per partition). A shared request that fails (a partition losing
      // its leader) may have appended the other partitions' events: they are sent again,
      // duplicates recognisable by event-id, and requests then go one partition at a time
      // for 30 s. false: always one partition per request, never such a duplicate.
      // Ignored (off) with kafka.idempotent.
      sharedRequests: bool.default(true),
      // After this many attempts an event moves to the dead-letter table. Only
      // non-retriable failures and crashes count; outages retry indefinitely.
      maxAttempts: int(1, 1000).default(10),
      retryBackoffMinMs: int(1, 3_600_000).default(500),
      retryBackoffMaxMs: int(1, 86_400_000).default(60_000),
      // Published events are deleted in sets of up to cleanerBatchSize, one set right
      // after another while outcomes keep coming (sets grow with the load); an idle
      // cleaner lingers cleanerFlushIntervalMs after the first outcome. Short, because
      // a package's next event is claimable only after its predecessor's delete.
      cleanerBatchSize: int(1, 100_000).default(1000),
      cleanerFlushIntervalMs: int(0, 60_000).default(2),
      // SIGTERM: time to finish in-flight sends before releasing what is left.
      shutdownTimeoutMs: int(0, 600_000).default(10_000),
      // How often the outbox gauges are refreshed (claims take over expired leases themselves).
      maintenanceIntervalMs: int(100, 600_000).default(5000),
      // Objective for commit → broker ack. Exported as a gauge (alerts and the dashboard
      // compare against it), events are counted within/over it, and /ready answers
      // "degraded" (still 200) while the oldest unpublished event is older.
      sloSeconds: int(1, 3600).default(5),
      // /metrics, /live, /ready of the retranslator. env: RETRANSLATOR_METRICS_PORT
      metricsPort: port.default(9101),
    }),
    facade: section(
      {
        // The read model's own database, created at start when missing (through the
        // server's `postgres` database). env: FACADE_DATABASE_URL
        databaseUrl: nonEmpty.default("postgres://postgres:postgres@127.0.0.1:5432/logistic_package_api_facade"),
        // The facade's migrations (and the database's creation) connect with this URL, the
        // owner's, as database.migrationUrl does for the API. Empty = databaseUrl.
        // env: FACADE_DATABASE_MIGRATION_URL
        migrationUrl: z.string().trim().default(""),
        // Consumer group on kafka.topic: instances share the partitions, offsets are per group.
        groupId: nonEmpty.default("logistic-package-api-facade"),
        // Largest fetch per partition, hence the bound of one batch, which is one transaction.
        maxBytesPerPartition: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
        // Partitions applied at once, each batch in its own transaction (and pooled connection).
        partitionsConsumedConcurrently: int(1, 64).default(4),
        // A member silent for this long is dropped from the group and its partitions move
        // on: a killed facade's partitions wait this long (and a restarted one about as long
        // again to rejoin). Short enough to recover in seconds, long enough for a slow batch
        // (the consumer heartbeats between batches); brokers refuse less than 6 s by default.
        sessionTimeoutMs: int(1000, 3_600_000).default(10_000),
        // At most a third of sessionTimeoutMs, so that one late heartbeat does not cost the
        // partitions; a heartbeat is also how a member learns of a rebalance.
        heartbeatIntervalMs: int(100, 600_000).default(1000),
        // How long the coordinator waits for every member to rejoin in a rebalance (a
        // member busy with a batch rejoins after it). kafkajs gives JoinGroup this + 5 s.
        rebalanceTimeoutMs: int(1000, 3_600_000).default(30_000),
        // Every other broker request of the facade. SyncGroup gets no more than this, and
        // the coordinator may hold it until a dead leader's session expires: it must
        // exceed sessionTimeoutMs by 5 s, or a restarted facade times out rejoining.
        requestTimeoutMs: int(100, 3_600_000).default(15_000),
        // After the consumer failed (broker gone, repeated request errors), it is restarted
        // after a jittered backoff doubling from min to max (reset once it has rejoined).
        restartBackoffMinMs: int(10, 3_600_000).default(1000),
        restartBackoffMaxMs: int(10, 3_600_000).default(30_000),
        // /ready fails once the facade has held no partition for this long: longer than a
        // rebalance can take (a dead member's session, then every member's rejoin).
        maxUnassignedMs: int(1000, 86_400_000).default(45_000),
        // Inbox rows (event ids taken in) older than this are deleted. A copy older than
        // that is still recognised by the package's last_event_id and changes nothing.
        inboxRetentionHours: int(1, 10 * 365 * 24).default(7 * 24),
        // Old inbox rows are deleted in batches of this size, every interval.
        inboxCleanupIntervalMs: int(100, 86_400_000).default(60_000),
        inboxCleanupBatchSize: int(1, 100_000).default(1000),
        // SIGTERM: time for the batch in hand (transaction, offset commit) and leaving the
        // group; a join the coordinator holds would otherwise delay the stop by up to
        // rebalanceTimeoutMs + 5 s. Past it the facade closes anyway (an unfinished batch is
        // delivered again and skipped as copies).
        shutdownTimeoutMs: int(0, 600_000).default(10_000),
        // /metrics, /live, /ready of the facade. env: FACADE_METRICS_PORT
        metricsPort: port.default(9102),
      },
      (f, ctx) => {
        // Checked together: each pair below, if wrong, leaves a restarted facade outside
        // its group (a request times out while the coordinator legitimately waits).
        const issue = (key: string, message: string) => problem(ctx, key, message);
        if (f.heartbeatIntervalMs * 3 > f.sessionTimeoutMs) {
          issue("heartbeatIntervalMs", `must be at most a third of facade.sessionTimeoutMs (${f.sessionTimeoutMs})`);
        }
        if (f.requestTimeoutMs < f.sessionTimeoutMs + 5000) {
          issue(
            "requestTimeoutMs",
            `must be at least facade.sessionTimeoutMs + 5000 (${f.sessionTimeoutMs + 5000}): the coordinator may hold SyncGroup for a session`,
          );
        }
        if (f.rebalanceTimeoutMs < f.sessionTimeoutMs) {
          issue("rebalanceTimeoutMs", `must be at least facade.sessionTimeoutMs (${f.sessionTimeoutMs})`);
        }
        if (f.restartBackoffMaxMs < f.restartBackoffMinMs) {
          issue("restartBackoffMaxMs", `must be at least facade.restartBackoffMinMs (${f.restartBackoffMinMs})`);
        }
        if (f.maxUnassignedMs < f.sessionTimeoutMs + f.rebalanceTimeoutMs) {
          issue(
            "maxUnassignedMs",
            `must be at least facade.sessionTimeoutMs + facade.rebalanceTimeoutMs (${f.sessionTimeoutMs + f.rebalanceTimeoutMs}), the longest rebalance`,
          );
        }
      },
    ),
    bot: section(
      {
        // Bot API token from @BotFather. Only the bot binary needs it, and it refuses
        // to start while it is empty. env: TELEGRAM_BOT_TOKEN
        token: z.string().trim().default(""),
        // Chats that may use the bot (a private chat's id is the user's id; groups are
        // negative). Empty = nobody: every chat is told it is not allowed.
        // env: TELEGRAM_ALLOWED_CHAT_IDS (comma-separated) or a YAML list.
        allowedChatIds: listOrCommaSeparated(z.array(z.number({ error: "expected an integer chat id" }).int()), (s) =>
          /^-?\d+$/.test(s) ? Number(s) : s,
        ).default([]),
        // Bot API server: Telegram's, a local Bot API server, or a test fake.
        apiRoot: z
          .url({ protocol: /^https?$/ })
          .transform((u) => u.replace(/\/+$/, ""))
          .default("https://api.telegram.org"),
        // Telegram users who may use the bot, each with a role: reader (/get, /list),
        // writer (+ /new, /edit), admin (+ /delete). A message needs an allowed chat AND
        // a listed user. Empty = nobody (fail closed). env: TELEGRAM_USERS as
        // "123:writer,456:admin", or a YAML list of {id, role}.
        users: listOrCommaSeparated(
          z
            .array(
              z.strictObject(
                {
                  id: z.number({ error: "expected a Telegram user id" }).int().positive(),
                  role: z.enum(["reader", "writer", "admin"]),
                },
                { error: 'expected {id, role}, or "id:role" in TELEGRAM_USERS' },
              ),
            )
            .refine((users) => new Set(users.map((u) => u.id)).size === users.length, "a user id is listed twice"),
          (s) => {
            const m = /^(-?\d+):(\w+)$/.exec(s);
            return m === null ? s : { id: Number(m[1]), role: m[2] };
          },
        ).default([]),
        // The grpc-server the bot calls. env: BOT_GRPC_ADDRESS
        grpcAddress: z
          .string()
          .regex(/^[^\s/]+:\d{1,5}$/, "expected host:port")
          .default("127.0.0.1:8082"),
        // The bot's own API token, sent as `authorization: Bearer …` on every call (the
        // server's AUTH_TOKENS_FILE gives it a role; admin lets admins /delete). Empty =
        // no header, for a server without tokens. Never logged. env: BOT_API_TOKEN
        apiToken: z.string().trim().default(""),
        // Call the grpc-server over TLS (HTTP/2 by ALPN). Off = cleartext HTTP/2, which
        // only suits a private network: the token would travel in clear. env: BOT_API_TLS
        apiTls: bool.default(false),
        // PEM CA bundle the server's certificate must chain to; empty = the system CAs.
        // env: BOT_API_CA_FILE
        apiCaFile: z.string().trim().default(""),
        // Client certificate and key (PEM) for a server with mutual TLS (TLS_CLIENT_CA_FILE).
        // Both or neither. env: BOT_API_CERT_FILE, BOT_API_KEY_FILE
        apiCertFile: z.string().trim().default(""),
        apiKeyFile: z.string().trim().default(""),
        // Deadline of each API call; past it the user is told to try again later.
        requestTimeoutMs: int(100, 60_000).default(3000),
        // Packages per /list page.
        pageSize: int(1, 50).default(5),
        // How long /delete's Yes/No buttons stay valid; a later press deletes nothing.
        deleteConfirmTimeoutMs: int(1000, 3_600_000).default(60_000),
        // The bot's /metrics (cache, Kafka publishing) with /live, /ready. env: BOT_METRICS_PORT
        metricsPort: port.default(9103),
        cache: section({
          // Redis holding the Describe cache (/get, /edit, /delete), e.g.
          // redis://127.0.0.1:6379/0. Empty = no cache: every command calls the API.
          // env: REDIS_URL
          redisUrl: z
            .string()
            .trim()
            .refine(
              (u) => u === "" || /^rediss?:\/\/[^\s]+$/.test(u),
              "expected redis://host:port[/db] or rediss://…, or empty",
            )
            .default(""),
          // Every key starts with this, so several deployments can share one Redis.
          keyPrefix: nonEmpty.default("logistic-package-api:bot:"),
          // Lifetime of a cached package: the bound on staleness if the package events
          // stop arriving (bot.kafka.enabled off, the consumer down).
          ttlSeconds: int(1, 30 * 86_400).default(300),
          // How long each package's newest event id is remembered, so that a late copy of
          // an older event cannot put an older state back. Keep it above the topic's retention.
          versionTtlSeconds: int(60, 365 * 86_400).default(7 * 86_400),
          // Deadline of one Redis command; past it (or with Redis down) the command is
          // answered from the API and counted as a cache error.
          timeoutMs: int(10, 10_000).default(200),
        }),
        kafka: section({
          // Publish every update and cache operation, and consume kafka.topic (package
          // events) to keep the cache coherent. Uses kafka.brokers and the kafka.ssl*,
          // kafka.sasl* keys. env: BOT_KAFKA_ENABLED
          enabled: bool.default(true),
          // Every Telegram update as JSON (UserId, Username, MessageText, CallbackQueryData, TimeStamp).
          commandsTopic: nonEmpty.default("omp-tgbot-commands"),
          // Every cache operation as JSON (id, cacheEventType, success, timestamp).
          cacheEventsTopic: nonEmpty.default("omp-tgbot-cache-events"),
          // Consumer group on kafka.topic that applies package events to the cache: one per
          // Redis (instances sharing a Redis share the group).
          groupId: nonEmpty.default("logistic-package-api-bot-cache"),
          // Messages waiting to be published; when full the oldest is dropped (and counted),
          // so a broker outage never holds a command or grows memory.
          queueSize: int(1, 1_000_000).default(1000),
          // Attempts after the first for one message, with backoff, before it is dropped.
          sendRetries: int(0, 20).default(3),
        }),
      },
      (b, ctx) => {
        // A CA or client certificate without TLS would be silently ignored: say so instead.
        for (const key of ["apiCaFile", "apiCertFile", "apiKeyFile"] as const) {
          if (!b.apiTls && b[key] !== "") {
            problem(ctx, key, "is set but bot.apiTls (BOT_API_TLS) is false");
          }
        }
        if ((b.apiCertFile === "") !== (b.apiKeyFile === "")) {
          const missing = b.apiCertFile === "" ? "apiCertFile" : "apiKeyFile";
          problem(ctx, missing, "bot.apiCertFile and bot.apiKeyFile go together: set both");
        }
      },
    ),
  })
  .superRefine((c, ctx) => {
    // Fencing: the relay starts a send only while the events' lease has a whole
    // send's time left. A lease shorter than one send could never be honoured.
    // A second on top is the least slack for the claim and the wait in a partition's queue.
    const budget = sendBudgetMs(c.kafka);
    if (c.retranslator.leaseSeconds * 1000 < budget + 1000) {
      problem(
        ctx,
        ["retranslator", "leaseSeconds"],
        `must exceed one send's time by a second at least: a send may take ${budget} ms (kafka.requestTimeoutMs and its connect, times kafka.sendRetries + 1, plus retry backoff)`,
      );
    }
  });

export type Config = z.infer<typeof schema>;

/** Environment variables that override a config key (docs/design.md §6). */
export const envOverrides: Readonly<Record<string, string>> = {
  DATABASE_URL: "database.url",
  DATABASE_MIGRATION_URL: "database.migrationUrl",
  GRPC_PORT: "grpc.port",
  GATEWAY_PORT: "gateway.port",
  STATUS_PORT: "status.port",
  STATUS_HOST: "status.host",
  METRICS_PORT: "metrics.port",
  METRICS_HOST: "metrics.host",
  LOG_LEVEL: "log.level",
  OTEL_EXPORTER_OTLP_ENDPOINT: "tracing.otlpEndpoint",
  KAFKA_BROKERS: "kafka.brokers",
  KAFKA_TOPIC: "kafka.topic",
  KAFKA_SSL: "kafka.ssl",
  KAFKA_SSL_CA_FILE: "kafka.sslCaFile",
  KAFKA_SASL_MECHANISM: "kafka.saslMechanism",
  KAFKA_SASL_USERNAME: "kafka.saslUsername",
  KAFKA_SASL_PASSWORD: "kafka.saslPassword",
  RETRANSLATOR_METRICS_PORT: "retranslator.metricsPort",
  FACADE_DATABASE_URL: "facade.databaseUrl",
  FACADE_DATABASE_MIGRATION_URL: "facade.migrationUrl",
  FACADE_METRICS_PORT: "facade.metricsPort",
  TELEGRAM_BOT_TOKEN: "bot.token",
  TELEGRAM_ALLOWED_CHAT_IDS: "bot.allowedChatIds",
  BOT_GRPC_ADDRESS: "bot.grpcAddress",
  TLS_CERT_FILE: "tls.certFile",
  TLS_KEY_FILE: "tls.keyFile",
  TLS_CLIENT_CA_FILE: "tls.clientCaFile",
  AUTH_TOKENS_FILE: "auth.tokensFile",
  TELEGRAM_USERS: "bot.users",
  BOT_API_TOKEN: "bot.apiToken",
  BOT_API_TLS: "bot.apiTls",
  BOT_API_CA_FILE: "bot.apiCaFile",
  BOT_API_CERT_FILE: "bot.apiCertFile",
  BOT_API_KEY_FILE: "bot.apiKeyFile",
  BOT_METRICS_PORT: "bot.metricsPort",
  REDIS_URL: "bot.cache.redisUrl",
  BOT_KAFKA_ENABLED: "bot.kafka.enabled",
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

export interface LoadConfigOptions {
  /** YAML file; defaults to $CONFIG_PATH or ./config.yml. A missing default file means "all defaults". */
  path?: string;
  env?: NodeJS.ProcessEnv;
}

export function loadConfig(options: LoadConfigOptions = {}): Readonly<Config> {
  const env = options.env ?? process.env;
  const explicitPath = options.path ?? env.CONFIG_PATH;
  const path = explicitPath ?? "config.yml";
  let raw: unknown = {};
  try {
    raw = parseYaml(readFileSync(path, "utf8")) ?? {};
  } catch (err) {
    const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
    if (!missing || explicitPath !== undefined) {
      throw new ConfigError(`config file ${path}: ${(err as Error).message}`);
    }
  }
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError(`config file ${path}: expected a mapping at the top level`);
  }
  const fromEnv = new Map<string, string>();
  for (const [name, key] of Object.entries(envOverrides)) {
    const value = env[name];
    if (value !== undefined) {
      setPath(raw as Record<string, unknown>, key, value);
      fromEnv.set(key, name);
    }
  }
  const result = schema.safeParse(raw);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const key = issue.path.join(".");
      // A list key's problem sits below it (kafka.brokers.0): name its variable too.
      const envName = [...fromEnv].find(([k]) => key === k || key.startsWith(`${k}.`))?.[1];
      const source = envName === undefined ? "" : ` (from ${envName})`;
      return `config key "${key}"${source}: ${issue.message}`;
    });
    throw new ConfigError(problems.join("; "));
  }
  return deepFreeze(result.data);
}

function setPath(target: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split(".");
  let node = target;
  for (const part of parts.slice(0, -1)) {
    const next = node[part];
    if (typeof next !== "object" || next === null) node[part] = {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]!] = value;
}

function deepFreeze<T>(value: T): Readonly<T> {
  if (typeof value === "object" && value !== null) {
    for (const child of Object.values(value)) deepFreeze(child);
    Object.freeze(value);
  }
  return value;
}
