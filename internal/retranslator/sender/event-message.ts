import { EventType } from "../../../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import type { OutboxEvent } from "../../outbox/types.js";
import { encodePackageEvent } from "./package-event-encoding.js";

export interface EventMessage {
  key: string;
  value: Buffer;
  headers: Record<string, string>;
  /** The partition the relay routed it to (kafkajs then calls no partitioner). */
  partition?: number;
}

const eventTypes = { Created: EventType.Created, Updated: EventType.Updated, Removed: EventType.Removed } as const;

/**
 * The Kafka message of an outbox event (docs/design.md §2): key = package id, so a
 * package's events share a partition; value = hablof.proto.v1.PackageEvent;
 * headers let consumers route and deduplicate without decoding the value, and
 * carry the trace of the request that caused the change.
 */
export function toEventMessage(
  event: Omit<OutboxEvent, "lease" | "attempts"> & Partial<Pick<OutboxEvent, "lease" | "attempts">>,
  partition?: number,
): EventMessage {
  const value = encodePackageEvent({
    id: event.id,
    packageId: event.packageId,
    type: eventTypes[event.type],
    created: event.created,
    payload: event.payload,
  });
  const headers: Record<string, string> = {
    "event-id": event.id.toString(),
    "event-type": event.type,
    "package-id": event.packageId.toString(),
    "content-type": "application/x-protobuf",
  };
  if (event.traceparent !== null) headers.traceparent = event.traceparent;
  if (event.tracestate !== null) headers.tracestate = event.tracestate;
  // A republished state (an Updated event that is no edit): consumers may tell it from a change.
  if (event.reason != null) headers["event-reason"] = event.reason;
  return { key: event.packageId.toString(), value, headers, partition };
}
