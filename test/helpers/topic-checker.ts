import { fromBinary } from "@bufbuild/protobuf";
import { Kafka, logLevel } from "kafkajs";
import type { Database } from "../../internal/database/database.js";
import { type PackageEvent, PackageEventSchema } from "../../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";

/**
 * The delivery checker every retranslator test uses: what was committed
 * (recorded by a trigger in the test database) against what a Kafka consumer
 * reads from the topic, per package.
 */

/** Records every committed event (id, package) in `test_event_log`, which outlives the outbox rows. */
export async function installEventLog(db: Database): Promise<void> {
  await db.raw(`
    CREATE TABLE IF NOT EXISTS test_event_log (id bigint PRIMARY KEY, package_id bigint NOT NULL);
    CREATE OR REPLACE FUNCTION test_event_log() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      INSERT INTO test_event_log (id, package_id) VALUES (NEW.id, NEW.package_id) ON CONFLICT DO NOTHING;
      RETURN NULL;
    END $$;
    DROP TRIGGER IF EXISTS test_event_log ON package_event;
    CREATE TRIGGER test_event_log AFTER INSERT ON package_event FOR EACH ROW EXECUTE FUNCTION test_event_log();
  `);
}

/**
 * The keys of an event's payload, sorted (docs/design.md §2.2): one shape for
 * every type; `Updated` only from a package's first update on.
 */
export const payloadKeys = ["Created", "ID", "Material", "MaximumVolume", "Removed", "Reusable", "Title", "Updated"];

/** Committed event ids by package, each package's in commit (id) order. */
export async function committedEvents(db: Database): Promise<Map<string, string[]>> {
  // Ordered by the bigint column: a bare `ORDER BY id` would name the text output column ("11" < "7").
  const result = await db.raw(
    `SELECT id::text AS id, package_id::text AS package_id FROM test_event_log ORDER BY test_event_log.id`,
  );
  const byPackage = new Map<string, string[]>();
  for (const row of (result as { rows: { id: string; package_id: string }[] }).rows) {
    const list = byPackage.get(row.package_id) ?? [];
    list.push(row.id);
    byPackage.set(row.package_id, list);
  }
  return byPackage;
}

export interface TopicMessage {
  partition: number;
  offset: string;
  key: string;
  headers: Record<string, string>;
  event: PackageEvent;
}

/**
 * Reads the topic from the beginning with a fresh consumer group until
 * `until(messages)` holds (then a short settle, to catch trailing
 * duplicates) or `timeoutMs` passes; returns every message in partition order.
 */
export async function readTopic(
  brokers: string[],
  topic: string,
  until: (messages: TopicMessage[]) => boolean,
  timeoutMs = 60_000,
): Promise<TopicMessage[]> {
  const kafka = new Kafka({ clientId: "topic-checker", brokers, logLevel: logLevel.NOTHING });
  // A short fetch wait: the consumer disconnects only after its current poll returns.
  const consumer = kafka.consumer({
    groupId: `checker-${Date.now()}-${Math.random().toString(16).slice(2)}`,
    maxWaitTimeInMs: 100,
  });
  const messages: TopicMessage[] = [];
  await consumer.connect();
  try {
    await consumer.subscribe({ topic, fromBeginning: true });
    let satisfied: () => void = () => undefined;
    let failed: (err: unknown) => void = () => undefined;
    const done = new Promise<void>((resolve, reject) => {
      satisfied = resolve;
      failed = reject;
    });
    // Handled by the race below; this keeps a rejection before the race from counting as unhandled.
    done.catch(() => undefined);
    // A condition that throws (allDelivered's misuse, a failed check) ends the read with its error:
    // thrown inside eachMessage, kafkajs would take it for a processing error and retry the
    // message, and the read would end only at its timeout, without the reason.
    const check = () => {
      try {
        if (until(messages)) satisfied();
      } catch (err) {
        failed(err);
      }
    };
    await consumer.run({
      eachMessage: async ({ partition, message }) => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
        messages.push({
          partition,
          offset: message.offset,
          key: message.key?.toString() ?? "",
          headers,
          event: fromBinary(PackageEventSchema, message.value ?? new Uint8Array()),
        });
        check();
      },
    });
    check();
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        done,
        new Promise<void>((resolve) => {
          timer = setTimeout(resolve, timeoutMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
    await new Promise((r) => setTimeout(r, 300));
  } finally {
    await consumer.disconnect();
  }
  return messages;
}

export interface DeliveryReport {
  /** Committed event ids that never reached the topic. */
  lost: string[];
  /** Event ids seen more than once (allowed only after a crash or lease expiry). */
  duplicated: string[];
  /** Packages whose first deliveries are not in commit (event id) order. */
  reordered: { packageId: string; delivered: string[] }[];
  /** Messages whose key or headers disagree with the event they carry. */
  malformed: string[];
  /** Event ids on the topic that were never committed. */
  unexpected: string[];
}

export function checkDelivery(committed: Map<string, string[]>, messages: TopicMessage[]): DeliveryReport {
  const report: DeliveryReport = { lost: [], duplicated: [], reordered: [], malformed: [], unexpected: [] };
  const committedIds = new Set([...committed.values()].flat());
  const seen = new Set<string>();
  const deliveredByPackage = new Map<string, string[]>();
  // Messages of one package share a partition, so partition order is delivery order.
  const ordered = [...messages].sort(
    (a, b) => a.partition - b.partition || Number(BigInt(a.offset) - BigInt(b.offset)),
  );
  for (const m of ordered) {
    const id = m.event.ID.toString();
    const packageId = m.event.PackageID.toString();
    if (m.key !== packageId || m.headers["event-id"] !== id || m.headers["package-id"] !== packageId) {
      report.malformed.push(id);
    }
    if (!committedIds.has(id)) report.unexpected.push(id);
    if (seen.has(id)) {
      report.duplicated.push(id);
      continue;
    }
    seen.add(id);
    const list = deliveredByPackage.get(packageId) ?? [];
    list.push(id);
    deliveredByPackage.set(packageId, list);
  }
  for (const [packageId, ids] of committed) {
    for (const id of ids) if (!seen.has(id)) report.lost.push(id);
    const delivered = deliveredByPackage.get(packageId) ?? [];
    for (let i = 1; i < delivered.length; i++) {
      if (BigInt(delivered[i]!) < BigInt(delivered[i - 1]!)) {
        report.reordered.push({ packageId, delivered });
        break;
      }
    }
  }
  return report;
}

/**
 * Every committed id is on the topic (first copies counted). readTopic calls
 * this after each message with the same, growing array, so it looks only at
 * the messages added since its last call: rebuilding the whole set each time
 * made a 20,000-event read quadratic (42 s of CPU on an idle machine), long
 * enough under load for the reader to time out with messages still unread.
 */
export function allDelivered(committed: Map<string, string[]>): (messages: TopicMessage[]) => boolean {
  const missing = new Set([...committed.values()].flat());
  let checked = 0;
  return (messages) => {
    if (messages.length < checked)
      throw new Error("allDelivered: the message list shrank; it expects one growing list");
    for (; checked < messages.length; checked++) missing.delete(messages[checked]!.event.ID.toString());
    return missing.size === 0;
  };
}

export interface ReadBack {
  committed: Map<string, string[]>;
  messages: TopicMessage[];
  report: DeliveryReport;
}

/**
 * The topic read back until it holds every `committed` event (by default all
 * the event log holds) or `timeoutMs` passed, checked against what was committed.
 */
export async function readBack(
  db: Database,
  brokers: string[],
  topic: string,
  committed?: Map<string, string[]>,
  timeoutMs = 60_000,
): Promise<ReadBack> {
  const expected = committed ?? (await committedEvents(db));
  const messages = await readTopic(brokers, topic, allDelivered(expected), timeoutMs);
  return { committed: expected, messages, report: checkDelivery(expected, messages) };
}
