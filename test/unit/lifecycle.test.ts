import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { settleWithin, withDeadline } from "../../internal/lifecycle/deadline.js";
import { Wakeup } from "../../internal/lifecycle/wakeup.js";

const after = <T>(ms: number, value: T) => new Promise<T>((resolve) => setTimeout(() => resolve(value), ms));
const never = new Promise<never>(() => {});

describe("settleWithin", () => {
  it("is true when the promise fulfils in time", async () => {
    assert.equal(await settleWithin(after(5, "x"), 1000), true);
  });

  it("is false when the deadline passes first, without waiting for the promise", async () => {
    const started = Date.now();
    assert.equal(await settleWithin(never, 30), false);
    assert.ok(Date.now() - started < 10_000);
  });

  it("rejects with the promise's error when it rejects in time", async () => {
    await assert.rejects(settleWithin(Promise.reject(new Error("boom")), 1000), /boom/);
  });

  it("leaves no timer behind: the process is not held for the deadline", async () => {
    // node:test waits for the event loop only through the test's promise, so a
    // leaked timer is measured directly: a 60 s deadline must not stay active.
    const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    await settleWithin(Promise.resolve(), 60_000);
    const left = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    assert.equal(left, before);
  });
});

describe("withDeadline", () => {
  it("passes the value through when in time", async () => {
    assert.equal(await withDeadline(after(5, 42), 1000, () => new Error("late")), 42);
  });

  it("rejects with onTimeout's error when the deadline passes first", async () => {
    await assert.rejects(
      withDeadline(never, 20, () => new Error("database did not answer within 20 ms")),
      /did not answer within 20 ms/,
    );
  });

  it("passes the promise's own error through", async () => {
    await assert.rejects(
      withDeadline(Promise.reject(new TypeError("bad")), 1000, () => new Error("late")),
      TypeError,
    );
  });

  it("leaves no timer behind", async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    await withDeadline(Promise.resolve(1), 60_000, () => new Error("late"));
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, before);
  });
});

describe("Wakeup", () => {
  it("sleeps the interval when nobody wakes it", async () => {
    const started = Date.now();
    await new Wakeup().sleep(40, new AbortController().signal);
    assert.ok(Date.now() - started >= 35, `slept ${Date.now() - started} ms`);
  });

  it("wake() ends a sleep early", async () => {
    const wakeup = new Wakeup();
    const started = Date.now();
    const slept = wakeup.sleep(60_000, new AbortController().signal);
    setTimeout(() => wakeup.wake(), 10);
    await slept;
    assert.ok(Date.now() - started < 10_000);
  });

  it("wake() ends a sleep without an interval", async () => {
    const wakeup = new Wakeup();
    const slept = wakeup.sleep(undefined, new AbortController().signal);
    wakeup.wake();
    assert.equal(await settleWithin(slept, 1000), true);
  });

  it("remembers a wake() that came while nobody slept, once", async () => {
    const wakeup = new Wakeup();
    const signal = new AbortController().signal;
    wakeup.wake();
    wakeup.wake();
    assert.equal(await settleWithin(wakeup.sleep(60_000, signal), 100), true);
    // Both wake() calls were consumed by that sleep: the next one waits.
    assert.equal(await settleWithin(wakeup.sleep(30, signal), 10), false);
  });

  it("an abort ends a sleep, and a sleep after the abort returns at once", async () => {
    const wakeup = new Wakeup();
    const controller = new AbortController();
    const slept = wakeup.sleep(undefined, controller.signal);
    controller.abort();
    assert.equal(await settleWithin(slept, 1000), true);
    assert.equal(await settleWithin(wakeup.sleep(undefined, controller.signal), 100), true);
  });

  it("leaves no timer or abort listener behind after a wake", async () => {
    const wakeup = new Wakeup();
    const controller = new AbortController();
    const before = process.getActiveResourcesInfo().filter((r) => r === "Timeout").length;
    const slept = wakeup.sleep(60_000, controller.signal);
    wakeup.wake();
    await slept;
    assert.equal(process.getActiveResourcesInfo().filter((r) => r === "Timeout").length, before);
    // A listener left on the signal would run done() again and clear a later sleep.
    const next = wakeup.sleep(undefined, controller.signal);
    controller.abort();
    assert.equal(await settleWithin(next, 1000), true);
  });

  it("refuses a second sleeper (one loop owns a Wakeup)", async () => {
    const wakeup = new Wakeup();
    const signal = new AbortController().signal;
    const first = wakeup.sleep(undefined, signal);
    assert.throws(() => wakeup.sleep(10, signal), /another sleep is in progress/);
    wakeup.wake();
    await first;
  });
});
