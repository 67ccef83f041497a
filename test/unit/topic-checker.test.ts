// The delivery checker's stop condition (test/helpers/topic-checker.ts): the
// reader stops as soon as it holds true, so holding true early hides a loss and
// never holding true turns a delivered topic into a timeout.

import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PackageEventSchema } from "../../pkg/hablof/logistic_package_api/v1/kafka_proto_pb.js";
import { allDelivered, type TopicMessage } from "../helpers/topic-checker.js";

const message = (id: number, packageId: number): TopicMessage => ({
  partition: 0,
  offset: "0",
  key: String(packageId),
  headers: {},
  event: create(PackageEventSchema, { ID: BigInt(id), PackageID: BigInt(packageId) }),
});

test("allDelivered holds once every committed id has been read, in any order, with duplicates and strangers in between", () => {
  const done = allDelivered(
    new Map([
      ["1", ["10", "11"]],
      ["2", ["12"]],
    ]),
  );
  const read: TopicMessage[] = [];
  assert.equal(done(read), false);
  for (const m of [message(12, 2), message(12, 2), message(99, 3), message(10, 1)]) {
    read.push(m);
    assert.equal(done(read), false, `holds early, after ${read.length} messages`);
  }
  read.push(message(11, 1));
  assert.equal(done(read), true);
  assert.equal(done(read), true, "asked again with nothing new");
});

test("allDelivered over 20,000 messages, asked after each one as the reader does, holds only after the last", () => {
  const ids = Array.from({ length: 20_000 }, (_, i) => String(i + 1));
  const done = allDelivered(new Map([["1", ids]]));
  const read: TopicMessage[] = [];
  let heldAt = -1;
  for (let i = ids.length; i >= 1; i--) {
    read.push(message(i, 1));
    if (done(read) && heldAt < 0) heldAt = read.length;
  }
  assert.equal(heldAt, 20_000);
});

test("allDelivered refuses a list that shrank: it counts only what was added since its last call", () => {
  const done = allDelivered(new Map([["1", ["1", "2"]]]));
  done([message(1, 1)]);
  assert.throws(() => done([]), /shrank/);
});
