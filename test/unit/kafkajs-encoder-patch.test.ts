// patches/kafkajs+2.2.4.patch: kafkajs' protocol encoder takes its buffers from Node's pool
// (Buffer.allocUnsafe) instead of zero-filling a fresh 512-byte buffer per record and per header.
// The patch is safe only because the encoder never exposes a byte it did not write: checked here
// with the pool full of garbage, by decoding what kafkajs encoded. The same records also reach the
// broker mock in the integration tier.

import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { describe, test } from "node:test";

const require = createRequire(import.meta.url);
const Encoder = require("kafkajs/src/protocol/encoder.js");
const Decoder = require("kafkajs/src/protocol/decoder.js");
const { RecordBatch } = require("kafkajs/src/protocol/recordBatch/v0/index.js");
const decodeRecordBatch = require("kafkajs/src/protocol/recordBatch/v0/decoder.js");
const Record = require("kafkajs/src/protocol/recordBatch/record/v0/index.js");

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
});
