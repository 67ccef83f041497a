/** A package as stored. IDs are bigint: uint64 on the wire, bigint in Postgres. */
export interface PackageRecord {
  id: bigint;
  title: string;
  material: string;
  maximumVolume: number;
  reusable: boolean;
  created: Date;
  updated: Date | null;
}

export interface NewPackage {
  title: string;
  material: string;
  maximumVolume: number;
  reusable: boolean;
}

/** Fields left undefined stay unchanged. */
export interface PackageChanges {
  title?: string;
  material?: string;
  maximumVolume?: number;
  reusable?: boolean;
}

export type EventType = "Created" | "Updated" | "Removed";

/** W3C trace context of the request that caused a change, stored with its event. */
export interface TraceContext {
  traceparent: string;
  tracestate?: string;
}
