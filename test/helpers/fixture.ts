import { after, before } from "node:test";
import type { SpanExporter } from "@opentelemetry/sdk-trace-base";
import { startTelemetry, type Telemetry } from "../../internal/tracer/telemetry.js";
import type { ConfigOverrides } from "./config.js";
import { createTestDatabase, type TestDatabase } from "./database.js";
import { facadeEnv, migrateFacadeDatabase, startTestFacade, type TestFacade } from "./facade.js";
import { type PackageApiClient, packageApiClient } from "./grpc-client.js";
import { type KafkaMock, startKafkaMock } from "./kafka-mock.js";
import { fastRetranslatorEnv, startTestRetranslator, type TestRetranslator } from "./retranslator.js";
import { startTestServer, type TestServer } from "./server.js";
import { TearDown } from "./tear-down.js";
import { installEventLog } from "./topic-checker.js";

// The set-up most test files share: a fresh database, the grpc-server in this
// process with a gRPC client, and when asked a Kafka mock with the file's topic
// and a retranslator. One before/after pair per file; what started is stopped
// in reverse order, also when the set-up failed half-way.

export interface FixtureOptions {
  /** Tracing on with this exporter, started first: the pg instrumentation must patch the driver before any client exists. */
  spans?: SpanExporter;
  /** Records every committed event for the topic checker (test/helpers/topic-checker.ts). */
  eventLog?: boolean;
  /** A second database with the facade's migrations, for a facade's read model. */
  facadeDb?: boolean;
  /** The grpc-server's config keys; `false`: no server (nor client). */
  server?: ConfigOverrides | false;
  /** A Kafka mock, with this topic when one is named (tests may create their own). */
  kafka?: { topic?: string; partitions?: number };
  /** A retranslator relaying to the Kafka mock's topic, with these config keys. */
  relay?: ConfigOverrides;
  /** A facade reading the Kafka mock's topic into facadeDb (implied), with these config keys. */
  facade?: ConfigOverrides;
  /** Environment variables per app, for tests of the variables themselves (config keys go above). */
  env?: { server?: Record<string, string>; relay?: Record<string, string>; facade?: Record<string, string> };
}

export interface Fixture {
  readonly telemetry: Telemetry;
  readonly db: TestDatabase;
  readonly facadeDb: TestDatabase;
  readonly server: TestServer;
  readonly client: PackageApiClient;
  readonly kafka: KafkaMock;
  readonly topic: string;
  readonly relay: TestRetranslator;
  readonly facade: TestFacade;
  /** Another grpc-server on the fixture's database, with its own client; both stopped at tear-down. */
  startServer(overrides?: ConfigOverrides, env?: Record<string, string>): Promise<ServerAndClient>;
  /**
   * Adds a set-up step of the file's own, run once the fixture has started, in
   * the fixture's before hook: Node 20 runs a file's top-level before hooks at
   * the same time, so a second one would not wait for the fixture.
   */
  onSetUp(step: () => Promise<unknown> | unknown): void;
  /** Adds a tear-down step of the file's own (a facade, a producer): these run first, last added first. */
  onTearDown(step: () => Promise<unknown> | unknown): void;
}

export interface ServerAndClient {
  server: TestServer;
  client: PackageApiClient;
}

/** Registers the file's one before and one after hook; the parts are there inside tests (and later hooks). */
export function useFixture(options: FixtureOptions = {}): Fixture {
  const parts: Partial<Record<keyof Fixture, unknown>> = {};
  // The file's own steps run before what the fixture started: a facade stops while its broker is up.
  const started = new TearDown();
  const own = new TearDown();
  const setUpSteps: (() => Promise<unknown> | unknown)[] = [];
  const brokerTopic = (who: string) => {
    if (parts.kafka === undefined || parts.topic === undefined) {
      throw new Error(`fixture: ${who} needs the kafka option with a topic`);
    }
    return { kafka: parts.kafka as KafkaMock, topic: parts.topic as string };
  };

  before(async () => {
    if (options.spans !== undefined) {
      const telemetry = await startTelemetry({
        serviceName: "test",
        serviceVersion: "0",
        otlpEndpoint: "",
        exporter: options.spans,
      });
      parts.telemetry = telemetry;
      started.defer(() => telemetry.shutdown());
    }
    const db = await createTestDatabase();
    parts.db = db;
    started.defer(() => db.drop());
    if (options.eventLog) await installEventLog(db.db);
    if (options.facadeDb || options.facade !== undefined) {
      const facadeDb = await createTestDatabase();
      parts.facadeDb = facadeDb;
      started.defer(() => facadeDb.drop());
      await migrateFacadeDatabase(facadeDb.url);
    }
    if (options.kafka !== undefined) {
      const kafka = await startKafkaMock();
      parts.kafka = kafka;
      started.defer(() => kafka.stop());
      const { topic, partitions = 1 } = options.kafka;
      if (topic !== undefined) {
        await kafka.createTopic(topic, partitions);
        parts.topic = topic;
      }
    }
    if (options.server !== false) {
      const server = await startTestServer(db.url, options.env?.server, options.server);
      parts.server = server;
      started.defer(() => server.stop());
    }
    if (options.relay !== undefined) {
      const { kafka, topic } = brokerTopic("a relay");
      const env = { ...fastRetranslatorEnv(db.url, kafka.brokers, topic), ...options.env?.relay };
      const relay = await startTestRetranslator(env, options.relay);
      parts.relay = relay;
      started.defer(() => relay.stop());
    }
    if (options.facade !== undefined) {
      const { kafka, topic } = brokerTopic("a facade");
      const env = {
        ...facadeEnv((parts.facadeDb as TestDatabase).url, kafka.brokers, topic),
        ...options.env?.facade,
      };
      const facade = await startTestFacade(env, options.facade);
      parts.facade = facade;
      started.defer(() => facade.stop());
    }
    if (parts.server !== undefined) {
      const client = packageApiClient((parts.server as TestServer).grpcAddress);
      parts.client = client;
      started.defer(() => client.close());
    }
    for (const step of setUpSteps) await step();
  });

  after(async () => {
    const failures = [...(await own.run()), ...(await started.run())];
    if (failures.length > 0) throw new AggregateError(failures, "fixture: tear-down failed");
  });

  const part = <K extends keyof Fixture>(key: K): Fixture[K] => {
    const value = parts[key];
    if (value === undefined) throw new Error(`fixture: no ${key} (not started yet, or not asked for)`);
    return value as Fixture[K];
  };
  return {
    get telemetry() {
      return part("telemetry");
    },
    get db() {
      return part("db");
    },
    get facadeDb() {
      return part("facadeDb");
    },
    get server() {
      return part("server");
    },
    get client() {
      return part("client");
    },
    get kafka() {
      return part("kafka");
    },
    get topic() {
      return part("topic");
    },
    get relay() {
      return part("relay");
    },
    get facade() {
      return part("facade");
    },
    async startServer(overrides = {}, env = {}) {
      const server = await startTestServer(part("db").url, env, overrides);
      own.defer(() => server.stop());
      const client = packageApiClient(server.grpcAddress);
      own.defer(() => client.close());
      return { server, client };
    },
    onSetUp(step) {
      setUpSteps.push(step);
    },
    onTearDown(step) {
      own.defer(step);
    },
  };
}
