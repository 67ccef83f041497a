// The create batcher (internal/packages/create-batcher.ts) over a fake repository: a create goes alone
// when a slot is free, creates that wait go together, the queue is bounded, and a failed batch is
// retried call by call only when a row caused it, and under a steady stream a create that would go
// alone lingers for others to join it. The same against Postgres:
// test/api-create-batching.test.ts.

import assert from "node:assert/strict";
import { AsyncLocalStorage } from "node:async_hooks";
import { describe, type TestContext, test } from "node:test";
import { UnavailableError } from "../../internal/domain/errors.js";
import type { NewPackage } from "../../internal/domain/package.js";
import { CreateBatcher, type CreateBatchingOptions } from "../../internal/packages/create-batcher.js";
import type { CreateItem } from "../../internal/packages/package-repo.js";

const caller = new AsyncLocalStorage<string>();

/** A repository whose statements wait until the test opens the gate, recording what ran and for whom. */
class FakeRepository {
  readonly statements: { kind: "create" | "createMany"; titles: string[]; caller: string | undefined }[] = [];
  private nextId = 1n;
  private gate: Promise<void> = Promise.resolve();
  private openGate: () => void = () => undefined;
  /** A title whose row the database refuses, and with which error. */
  refuse: { title: string; error: Error } | undefined;
  /** An error every createMany fails with (the database's state, not a row). */
  batchError: Error | undefined;

  hold(): void {
    this.gate = new Promise((resolve) => {
      this.openGate = resolve;
    });
  }

  open(): void {
    this.openGate();
  }

  async create(input: NewPackage): Promise<bigint> {
    this.statements.push({ kind: "create", titles: [input.title], caller: caller.getStore() });
    await this.gate;
    if (this.refuse?.title === input.title) throw this.refuse.error;
    return this.nextId++;
  }

  async createMany(items: readonly CreateItem[]): Promise<bigint[]> {
    this.statements.push({ kind: "createMany", titles: items.map((i) => i.input.title), caller: caller.getStore() });
    await this.gate;
    if (this.batchError !== undefined) throw this.batchError;
    if (items.some((i) => i.input.title === this.refuse?.title)) throw this.refuse!.error;
    return items.map(() => this.nextId++);
  }
}

function batcher(repo: FakeRepository, options: Partial<CreateBatchingOptions> = {}) {
  return new CreateBatcher(repo, { maxBatch: 10, maxInFlight: 1, maxWaiting: 100, lingerMs: 0, ...options });
}

const box = (title: string): NewPackage => ({ title, material: "cardboard", maximumVolume: 1, reusable: false });
const sqlError = (code: string, message: string) => Object.assign(new Error(message), { code });
/** Lets queued callbacks and promise chains run. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe("create batcher", () => {
  test("with a free slot a create goes at once, alone", async () => {
    const repo = new FakeRepository();
    const id = await batcher(repo).create(box("a"), undefined);
    assert.equal(id, 1n);
    assert.deepEqual(repo.statements, [{ kind: "create", titles: ["a"], caller: undefined }]);
  });

  test("maxBatch 1 turns batching off: every create is its own statement", async () => {
    const repo = new FakeRepository();
    repo.hold();
    const b = batcher(repo, { maxBatch: 1, maxInFlight: 1 });
    const ids = Promise.all(["a", "b", "c"].map((t) => b.create(box(t), undefined)));
    await settle();
    assert.equal(repo.statements.length, 3, "none waited for a slot");
    repo.open();
    assert.deepEqual(await ids, [1n, 2n, 3n]);
    assert.ok(repo.statements.every((s) => s.kind === "create"));
  });

  test("creates that wait for a slot go together in one statement, each with its own id", async () => {
    const repo = new FakeRepository();
    repo.hold();
    const b = batcher(repo);
    const first = b.create(box("first"), undefined);
    const waiting = ["w1", "w2", "w3", "w4"].map((t) => b.create(box(t), undefined));
    await settle();
    assert.equal(repo.statements.length, 1, "the others wait while the slot is taken");
    repo.open();
    assert.equal(await first, 1n);
    assert.deepEqual(await Promise.all(waiting), [2n, 3n, 4n, 5n]);
    assert.deepEqual(repo.statements[1], { kind: "createMany", titles: ["w1", "w2", "w3", "w4"], caller: undefined });
  });

  test("a statement takes at most maxBatch creates", async () => {
    const repo = new FakeRepository();
    repo.hold();
    const b = batcher(repo, { maxBatch: 4 });
    const all = Array.from({ length: 10 }, (_, i) => b.create(box(`p${i}`), undefined));
    await settle();
    repo.open();
    await Promise.all(all);
    assert.deepEqual(
      repo.statements.map((s) => s.titles.length),
      [1, 4, 4, 1],
    );
  });

  describe("linger", () => {
    const lingerMs = 2;

    /** performance.now() and setTimeout under the test's hand: arrivals at chosen times, the linger's end ticked. */
    function clock(t: TestContext): { advance(ms: number): void } {
      let now = 1_000_000;
      t.mock.method(performance, "now", () => now);
      t.mock.timers.enable({ apis: ["setTimeout"] });
      return {
        advance(ms) {
          now += ms;
          t.mock.timers.tick(ms);
        },
      };
    }

    /**
     * Creates one after another, `gapMs` apart, each answered before the next. The mean gap
     * starts at 10 lingers and moves a fifth of the way to each new gap: 1 ms apart it falls
     * under 2 ms at the 15th create (the first counts as a quiet spell), so 14 of them leave
     * the next one lingering.
     */
    async function stream(b: CreateBatcher, time: { advance(ms: number): void }, n: number, gapMs: number) {
      for (let i = 0; i < n; i++) {
        time.advance(gapMs);
        await b.create(box(`warm${i}`), undefined);
        await settle(); // its slot is given back
      }
    }

    /**
     * A batcher whose next create lingers: 14 creates 1 ms apart (each went at once), then 1 ms
     * more on the clock.
     */
    async function streaming(t: TestContext, options: Partial<CreateBatchingOptions> = {}) {
      const time = clock(t);
      const repo = new FakeRepository();
      const b = batcher(repo, { lingerMs, ...options });
      await stream(b, time, 14, 1);
      assert.equal(repo.statements.length, 14, "each went at once while the mean gap came down");
      time.advance(1);
      return { time, repo, b };
    }

    test("once creates arrive less than lingerMs apart, one that would go alone waits lingerMs, and those arriving meanwhile share its statement", async (t) => {
      const { time, repo, b } = await streaming(t);
      const joined = ["s1", "s2", "s3"].map((t) => b.create(box(t), undefined));
      await settle();
      assert.equal(repo.statements.length, 14, "the slot is free, yet s1 waits for company");
      time.advance(lingerMs);
      assert.deepEqual(await Promise.all(joined), [15n, 16n, 17n]);
      assert.deepEqual(repo.statements[14], { kind: "createMany", titles: ["s1", "s2", "s3"], caller: undefined });
    });

    test("creates further apart than lingerMs never wait", async (t) => {
      const time = clock(t);
      const repo = new FakeRepository();
      const b = batcher(repo, { lingerMs });
      await stream(b, time, 30, 3);
      assert.equal(repo.statements.length, 30, "each went at once, without a tick of the clock");
    });

    test("one quiet spell ends the linger: the next create goes at once", async (t) => {
      const { time, repo, b } = await streaming(t);
      const lingering = b.create(box("lingering"), undefined);
      await settle();
      assert.equal(repo.statements.length, 14, "streaming: it lingers");
      time.advance(lingerMs);
      await lingering;
      time.advance(10 * lingerMs);
      await b.create(box("after"), undefined);
      assert.deepEqual(repo.statements.at(-1), { kind: "create", titles: ["after"], caller: undefined });
    });

    test("a lingering statement goes as soon as it holds maxBatch creates", async (t) => {
      const { repo, b } = await streaming(t, { maxBatch: 3 });
      const full = ["f1", "f2", "f3"].map((t) => b.create(box(t), undefined));
      assert.deepEqual(await Promise.all(full), [15n, 16n, 17n], "went without the linger's end");
      assert.deepEqual(repo.statements[14], { kind: "createMany", titles: ["f1", "f2", "f3"], caller: undefined });
    });

    test("a running statement that finishes ends a linger early: the lingering create goes then", async (t) => {
      const { time, repo, b } = await streaming(t, { maxInFlight: 2 });
      repo.hold();
      const a = b.create(box("a"), undefined);
      time.advance(lingerMs);
      await settle();
      assert.equal(repo.statements.length, 15, "a lingered its full time (nothing was running), then went");
      const lingering = b.create(box("b"), undefined);
      await settle();
      assert.equal(repo.statements.length, 15, "b lingers beside a's running statement");
      repo.open();
      for (let i = 0; i < 5; i++) await settle();
      assert.deepEqual(repo.statements.at(-1), { kind: "create", titles: ["b"], caller: undefined }, "no tick needed");
      assert.deepEqual(await Promise.all([a, lingering]), [15n, 16n]);
    });

    test("with createMaxWaiting below createBatchSize a lingering statement goes at maxWaiting: no create is refused beside a free slot", async (t) => {
      const { time, repo, b } = await streaming(t, { maxBatch: 10, maxWaiting: 2 });
      const calls = ["x1", "x2", "x3"].map((t) => b.create(box(t), undefined));
      time.advance(lingerMs);
      assert.deepEqual(await Promise.all(calls), [15n, 16n, 17n]);
      assert.deepEqual(
        repo.statements.slice(14).map((s) => s.titles),
        [["x1", "x2"], ["x3"]],
      );
    });

    test("with createMaxWaiting 1 nothing lingers: the queue could hold no second create", async (t) => {
      const { repo, b } = await streaming(t, { maxWaiting: 1 });
      const alone = b.create(box("alone"), undefined);
      await settle();
      assert.equal(repo.statements.length, 15, "went without a tick");
      assert.equal(await alone, 15n);
    });

    test("creates that waited for a slot go as soon as it frees", async (t) => {
      const { time, repo, b } = await streaming(t);
      repo.hold();
      const first = b.create(box("first"), undefined);
      time.advance(lingerMs);
      await settle();
      assert.equal(repo.statements.length, 15, "first lingered, then took the slot");
      const waiting = ["w1", "w2"].map((t) => b.create(box(t), undefined));
      await settle();
      repo.open();
      assert.deepEqual(await Promise.all([first, ...waiting]), [15n, 16n, 17n]);
      assert.deepEqual(repo.statements.at(-1)!.titles, ["w1", "w2"]);
    });
  });

  test("beyond maxWaiting a create fails at once with Unavailable", async () => {
    const repo = new FakeRepository();
    repo.hold();
    const b = batcher(repo, { maxWaiting: 2 });
    const accepted = ["a", "b", "c"].map((t) => b.create(box(t), undefined));
    await assert.rejects(b.create(box("d"), undefined), (err: unknown) => {
      assert.ok(err instanceof UnavailableError);
      assert.match(err.message, /too many creates waiting; retry/);
      return true;
    });
    repo.open();
    assert.deepEqual(await Promise.all(accepted), [1n, 2n, 3n], "the creates already waiting still go");
  });

  for (const [what, code] of [
    ["a constraint (23xxx)", "23514"],
    ["a value (22xxx)", "22001"],
    ["a trigger's RAISE (P0xxx)", "P0001"],
  ] as const) {
    test(`a batch refused because of ${what} is retried call by call: only that call fails`, async () => {
      const repo = new FakeRepository();
      repo.hold();
      repo.refuse = { title: "bad", error: sqlError(code, "row refused") };
      const b = batcher(repo);
      const first = b.create(box("first"), undefined);
      const results = ["ok1", "bad", "ok2"].map((t) => b.create(box(t), undefined));
      await settle();
      repo.open();
      await first;
      const [ok1, bad, ok2] = await Promise.allSettled(results);
      assert.equal(ok1.status, "fulfilled");
      assert.equal(ok2.status, "fulfilled");
      assert.equal(bad!.status, "rejected");
      assert.equal((bad as PromiseRejectedResult).reason, repo.refuse.error);
      assert.deepEqual(
        repo.statements.map((s) => s.kind),
        ["create", "createMany", "create", "create", "create"],
      );
    });
  }

  for (const [what, error] of [
    ["a statement timeout", sqlError("57014", "canceling statement due to statement timeout")],
    [
      "a lost connection",
      Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED", syscall: "connect" }),
    ],
  ] as const) {
    test(`a batch that fails for ${what} fails every call in it, without retries`, async () => {
      const repo = new FakeRepository();
      repo.hold();
      repo.batchError = error;
      const b = batcher(repo);
      const first = b.create(box("first"), undefined);
      const results = ["a", "b", "c"].map((t) => b.create(box(t), undefined));
      await settle();
      repo.open();
      await first;
      for (const r of await Promise.allSettled(results)) {
        assert.equal(r.status, "rejected");
        assert.equal((r as PromiseRejectedResult).reason, error);
      }
      assert.equal(repo.statements.length, 2, "no create alone after the batch");
    });
  }

  test("a statement runs in its caller's async context (trace spans, log fields)", async () => {
    const repo = new FakeRepository();
    repo.hold();
    const b = batcher(repo);
    const calls = ["r1", "r2", "r3"].map((request) => caller.run(request, () => b.create(box(request), undefined)));
    await settle();
    repo.open();
    await Promise.all(calls);
    assert.deepEqual(
      repo.statements.map((s) => [s.kind, s.caller]),
      [
        ["create", "r1"],
        ["createMany", "r2"],
      ],
    );
  });
});
