// patches/kafkajs+2.2.4.patch (patches/README.md): kafkajs' protocol encoder takes its buffers
// from Node's pool instead of zero-filling a fresh 512-byte buffer per record and per header,
// writes varints in place, encodes small varlongs without Long objects, the producer groups a
// send's messages by partition without copying each list per message, and the default
// partitioner's murmur2 hashes in 32-bit arithmetic instead of Long objects (and the partitioner
// filters the partitions with a leader only for a message without partition or key). Checked here by decoding
// what kafkajs encodes (with the pool full of garbage: the encoder must never expose a byte it did
// not write) and against kafkajs' own decoder for any value. The same records also reach the broker
// mock in the integration tier.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, test } from "node:test";
import fc from "fast-check";

const require = createRequire(import.meta.url);
const Encoder = require("kafkajs/src/protocol/encoder.js");
const Decoder = require("kafkajs/src/protocol/decoder.js");
const { RecordBatch } = require("kafkajs/src/protocol/recordBatch/v0/index.js");
const decodeRecordBatch = require("kafkajs/src/protocol/recordBatch/v0/decoder.js");
const Record = require("kafkajs/src/protocol/recordBatch/record/v0/index.js");
const Long = require("kafkajs/src/utils/long.js");
const groupMessagesPerPartition = require("kafkajs/src/producer/groupMessagesPerPartition.js");
const murmur2 = require("kafkajs/src/producer/partitioners/default/murmur2.js");
const { DefaultPartitioner } = require("kafkajs/src/producer/partitioners/index.js");

interface DecodedRecord {
  key: Buffer;
  value: Buffer;
  headers: Record<string, Buffer>;
}

/** Fills the next chunks of Node's buffer pool with 0xEE, so an unwritten byte would show. */
function dirtyThePool(): void {
  for (let i = 0; i < 64; i++) Buffer.allocUnsafe(256).fill(0xee);
}

describe("kafkajs encoder patch", () => {
  test("is applied: an encoder's buffer comes from the shared pool, not a fresh zeroed allocation", () => {
    const encoder = new Encoder();
    assert.equal(
      encoder.buf.buffer.byteLength,
      Buffer.poolSize,
      "npm ci's postinstall (patch-package) did not patch kafkajs; see patches/README.md",
    );
  });

  test("records encoded over a dirty pool decode to exactly what was given", async () => {
    const messages = Array.from({ length: 300 }, (_, i) => ({
      key: Buffer.from(String(1000 + i)),
      // Sizes around the encoder's 512-byte start, so that some buffers grow.
      value: Buffer.alloc(i * 3, i % 251),
      headers: {
        "event-id": Buffer.from(String(5_000_000 + i)),
        "event-type": Buffer.from("Created"),
        "content-type": Buffer.from("application/x-protobuf"),
      },
    }));
    dirtyThePool();
    const records = messages.map((m, offsetDelta) => {
      dirtyThePool();
      return Record({ offsetDelta, key: m.key, value: m.value, headers: m.headers });
    });
    dirtyThePool();
    const batch = await RecordBatch({ records, lastOffsetDelta: records.length - 1 });
    const decoded = await decodeRecordBatch(new Decoder(batch.buffer));
    const got = decoded.records as DecodedRecord[];
    assert.equal(got.length, messages.length);
    messages.forEach((m, i) => {
      assert.deepEqual(got[i]!.key, m.key, `record ${i}: key`);
      assert.deepEqual(got[i]!.value, m.value, `record ${i}: value`);
      assert.deepEqual(got[i]!.headers, m.headers, `record ${i}: headers`);
    });
  });

  test("any 32-bit varint and any 64-bit varlong decodes to its value, in the size computed for it", () => {
    const edges32 = [
      0,
      1,
      -1,
      63,
      64,
      -64,
      -65,
      2 ** 30 - 1,
      -(2 ** 30),
      2 ** 30,
      -(2 ** 30) - 1,
      2 ** 31 - 1,
      -(2 ** 31),
    ];
    for (const value of edges32) checkVarInt(value);
    fc.assert(fc.property(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), checkVarInt), { numRuns: 2000 });
    // Numbers (a timestamp delta, small or not) and Longs take the same route as before the patch.
    for (const value of [...edges32, 2 ** 40, -(2 ** 40), Number.MAX_SAFE_INTEGER, 1.5e12]) checkVarLong(value);
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), (n) =>
        checkVarLong(Long.fromString(n.toString())),
      ),
      { numRuns: 2000 },
    );
    fc.assert(fc.property(fc.integer({ min: -(2 ** 40), max: 2 ** 40 }), checkVarLong), { numRuns: 2000 });
  });

  test("murmur2 gives Java Kafka's hashes for its test keys and the oracle's for any key", () => {
    // From Kafka's own UtilsTest.testMurmur2.
    const java: Array<[string, number]> = [
      ["21", -973932308],
      ["foobar", -790332482],
      ["a-little-bit-long-string", -985981536],
      ["a-little-bit-longer-string", -1486304829],
      ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
      ["abc", 479470107],
    ];
    for (const [key, hash] of java) {
      assert.equal(murmur2(key), hash, `murmur2(${key})`);
      assert.equal(javaMurmur2(Buffer.from(key)), hash, `oracle(${key})`);
    }
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => murmur2(Buffer.from(bytes)) === javaMurmur2(bytes)),
      { numRuns: 5000 },
    );
    // Keys as the relay gives them: package ids as decimal strings.
    fc.assert(
      fc.property(fc.bigInt({ min: 1n, max: 2n ** 63n - 1n }), (id) => {
        const key = id.toString();
        return murmur2(key) === javaMurmur2(Buffer.from(key));
      }),
      { numRuns: 5000 },
    );
  });

  test("a send's messages are grouped by partition, each partition's in the order given", () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 7 }), { maxLength: 300 }), (partitions) => {
        const messages = partitions.map((partition, i) => ({ partition, value: String(i) }));
        const grouped = groupMessagesPerPartition({
          topic: "t",
          partitionMetadata: [{ partitionId: 0 }],
          messages,
          partitioner: ({ message }: { message: { partition: number } }) => message.partition,
        }) as Record<string, typeof messages>;
        const expected: Record<string, typeof messages> = {};
        for (const m of messages) (expected[m.partition] ??= []).push(m);
        assert.deepEqual(grouped, expected);
      }),
    );
  });

  test("the default partitioner: a given partition is kept, a key hashes, no key goes round the partitions with a leader", () => {
    const partitioner = DefaultPartitioner();
    // Partition 1 has no leader (a broker restarting).
    const partitionMetadata = [0, 1, 2, 3].map((partitionId) => ({ partitionId, leader: partitionId === 1 ? -1 : 0 }));
    const partitionOf = (message: { key?: string; partition?: number }) =>
      partitioner({ topic: "t", partitionMetadata, message }) as number;
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 3 }), fc.string(), (partition, key) => {
        assert.equal(partitionOf({ key, partition }), partition);
        assert.equal(partitionOf({ key }), (javaMurmur2(Buffer.from(key)) & 0x7fffffff) % 4);
      }),
    );
    const unkeyed = Array.from({ length: 30 }, () => partitionOf({}));
    assert.deepEqual([...new Set(unkeyed)].sort(), [0, 2, 3]);
  });
});

/**
 * Java Kafka's murmur2 (Utils.murmur2), written independently in BigInt arithmetic: the oracle
 * for the patched one. A key's partition is this hash, so a different result would move packages
 * to other partitions than Java producers (and earlier versions of the relay) chose.
 */
function javaMurmur2(data: Uint8Array): number {
  const m = 0x5bd1e995n;
  const mul = (a: bigint, b: bigint) => (a * b) & 0xffffffffn;
  let h = 0x9747b28cn ^ BigInt(data.length);
  const at = (i: number) => BigInt(data[i]!);
  const whole = data.length - (data.length % 4);
  for (let i = 0; i < whole; i += 4) {
    let k = at(i) | (at(i + 1) << 8n) | (at(i + 2) << 16n) | (at(i + 3) << 24n);
    k = mul(k, m);
    k ^= k >> 24n;
    k = mul(k, m);
    h = mul(h, m) ^ k;
  }
  const rest = data.length % 4;
  if (rest >= 3) h ^= at(whole + 2) << 16n;
  if (rest >= 2) h ^= at(whole + 1) << 8n;
  if (rest >= 1) h = mul(h ^ at(whole), m);
  h ^= h >> 13n;
  h = mul(h, m);
  h ^= h >> 15n;
  return Number(BigInt.asIntN(32, h));
}

function checkVarInt(value: number): void {
  // From a 2-byte buffer: every varint of 2 bytes or more makes the encoder grow.
  const encoded = new Encoder(1).writeVarInt(value);
  assert.equal(encoded.size(), Encoder.sizeOfVarInt(value), `size of ${value}`);
  assert.equal(new Decoder(encoded.buffer).readVarInt(), value, `varint ${value}`);
}

function checkVarLong(value: number | typeof Long): void {
  const encoded = new Encoder(1).writeVarLong(value);
  assert.equal(encoded.size(), Encoder.sizeOfVarLong(value), `size of ${value}`);
  assert.equal(new Decoder(encoded.buffer).readVarLong().toString(), value.toString(), `varlong ${value}`);
}
