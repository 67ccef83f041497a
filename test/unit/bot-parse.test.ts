// The bot's argument syntax (internal/bot/parse.ts), case by case: what a user types and what the
// bot makes of it. test/bot-commands.test.ts covers the commands' main forms; these are the edges.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  parseEdit,
  parseOffset,
  parsePackageId,
  parseVolume,
  parseYesNo,
  splitPairs,
  UserError,
  usage,
} from "../../internal/bot/parse.js";

const userError = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (err: unknown) => err instanceof UserError && pattern.test(err.message));

describe("bot parsing", () => {
  test("a missing or bad ID names the command's usage line", () => {
    userError(() => parsePackageId("  ", usage.get), /^Which package\? Usage: \/get ID/);
    userError(() => parsePackageId("abc", usage.delete), /"abc" is not a package ID.*Usage: \/delete ID/);
    userError(() => parsePackageId("0", usage.get), /"0" is not a package ID: IDs are between 1/);
    assert.equal(parsePackageId("0001", usage.get), 1n);
  });

  test("paging offsets: digits only, at most 19, within bigint", () => {
    assert.equal(parseOffset("9223372036854775807"), 2n ** 63n - 1n);
    assert.equal(parseOffset("9223372036854775808"), undefined);
    for (const bad of ["", " 1", "1 ", "+1", "1.0", "x"]) assert.equal(parseOffset(bad), undefined, bad);
  });

  test("volumes: a decimal point or comma, no sign, exponent or hex", () => {
    assert.equal(parseVolume("1200"), 1200);
    assert.equal(parseVolume(" 2,5 "), 2.5);
    assert.equal(parseVolume("3."), 3);
    assert.equal(parseVolume(",25"), 0.25);
    for (const bad of ["", "+1", "1e2", "0x10", "1.2.3", "1 000", "NaN"])
      userError(() => parseVolume(bad), /is not a number: volume is a number of cm³/);
    userError(() => parseVolume("0"), /greater than 0 \(got "0"\)/);
  });

  test("yes/no: the accepted words in any case, anything else names the field", () => {
    for (const word of ["yes", "Y", "TRUE", "1", "on"]) assert.equal(parseYesNo("reusable", word), true, word);
    for (const word of ["no", "N", "false", "0", "OFF"]) assert.equal(parseYesNo("reusable", word), false, word);
    userError(() => parseYesNo("reusable", " maybe "), /^"maybe" is not yes or no \(field reusable\)\.$/);
  });

  test("pairs: quotes of several kinds, escapes, empty values", () => {
    assert.deepEqual(splitPairs(""), []);
    assert.deepEqual(splitPairs("  a=1\tb=  "), [
      { key: "a", value: "1" },
      { key: "b", value: "" },
    ]);
    assert.deepEqual(splitPairs("t=„low-high“"), [{ key: "t", value: "low-high" }]);
    assert.deepEqual(splitPairs('t="back\\\\slash"'), [{ key: "t", value: "back\\slash" }]);
    userError(() => splitPairs("word"), /Expected field=value, got "word"/);
    userError(() => splitPairs("t=«open"), /no closing quote \(»\)/);
  });

  test("/edit: the ID comes first, a value of 0 or an empty one is refused", () => {
    assert.deepEqual(parseEdit("12 volume=0,5"), { id: 12n, changes: { maximumVolume: 0.5 } });
    userError(() => parseEdit("title=x"), /"title=x" is not a package ID/);
    userError(() => parseEdit("12 volume=0"), /Volume must be greater than 0/);
    userError(() => parseEdit("12 material="), /Field material needs a value, e.g. material=cardboard/);
  });
});
