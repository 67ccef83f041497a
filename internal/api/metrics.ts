import { Counter, Gauge, Histogram, type Registry } from "prom-client";

/** The grpc-server's metrics (docs/design.md §5, docs/operations.md); the first two names are the original service's. */
export class ApiMetrics {
  readonly notFound: Counter<"method">;
  readonly cudEvents: Counter<"type">;
  readonly requests: Counter<"method" | "code">;
  readonly duration: Histogram<"method" | "code">;
  readonly authDecisions: Counter<"caller" | "decision">;
  readonly connectionsClosed: Counter<"listener" | "reason">;
  readonly readinessProbes: Counter;
  private readonly openConnections: Gauge<"listener">;
  private readonly openConnectionSources = new Map<string, () => number>();

  constructor(registry: Registry) {
    const registers = [registry];
    this.notFound = new Counter({
      name: "logistic_package_api_not_found_total",
      help: "Requests answered NotFound (unknown or removed package)",
      labelNames: ["method"],
      registers,
    });
    this.cudEvents = new Counter({
      name: "logistic_package_api_cud_event_total",
      help: "Outbox events written by Create, Update and Remove",
      labelNames: ["type"],
      registers,
    });
    this.requests = new Counter({
      name: "logistic_package_api_grpc_requests_total",
      help: "Requests by method and gRPC code, over every protocol (gRPC, gRPC-Web, Connect, REST)",
      labelNames: ["method", "code"],
      registers,
    });
    this.duration = new Histogram({
      name: "logistic_package_api_grpc_request_duration_seconds",
      help: "Request latency by method and gRPC code",
      labelNames: ["method", "code"],
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.authDecisions = new Counter({
      name: "logistic_package_api_auth_decisions_total",
      help: "Authenticated calls by caller (the token's name; anonymous or unknown when none matched) and decision",
      labelNames: ["caller", "decision"],
      registers,
    });
    this.connectionsClosed = new Counter({
      name: "logistic_package_api_connections_closed_total",
      help: "Connections the API listeners closed or refused themselves, by reason (limits, timeouts, TLS)",
      labelNames: ["listener", "reason"],
      registers,
    });
    const sources = this.openConnectionSources;
    this.openConnections = new Gauge({
      name: "logistic_package_api_open_connections",
      help: "Open connections per API listener",
      labelNames: ["listener"],
      registers,
      collect() {
        for (const [listener, count] of sources) this.set({ listener }, count());
      },
    });
    this.readinessProbes = new Counter({
      name: "logistic_package_api_readiness_probes_total",
      help: "Database pings of the shared readiness probe (/ready, gRPC health Check and Watch together)",
      registers,
    });
    // Every event type shows up with 0 from the start, so rate() works at once.
    for (const type of ["Created", "Updated", "Removed"]) this.cudEvents.inc({ type }, 0);
  }

  watchOpenConnections(listener: string, count: () => number): void {
    this.openConnectionSources.set(listener, count);
    this.openConnections.set({ listener }, 0);
  }

  /** One finished request, by the gRPC code its client sees (OK, NotFound, …). */
  observeRequest(method: string, code: string, seconds: number): void {
    this.requests.inc({ method, code });
    this.duration.observe({ method, code }, seconds);
    if (code === "NotFound") this.notFound.inc({ method });
  }
}
