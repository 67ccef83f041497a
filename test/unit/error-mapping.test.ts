// Errors are mapped once at each edge: domain errors to Connect/gRPC codes (toConnectError, used by
// the request interceptor), codes to HTTP statuses for REST (httpStatus), and codes to what a
// Telegram user is told (the bot's explain). Unknown errors never show their cause to a client.

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { httpStatus } from "../../internal/api/gateway.js";
import { toConnectError } from "../../internal/api/interceptors.js";
import { explain, safeTelegramError } from "../../internal/bot/bot.js";
import { UserError } from "../../internal/bot/parse.js";
import { classifyDatabaseError, describeDatabaseError } from "../../internal/database/pg-errors.js";
import {
  AlreadyExistsError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
} from "../../internal/domain/errors.js";

const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";

describe("domain errors → Connect codes", () => {
  test("each domain error becomes its code, keeping its message and its cause", () => {
    const cases: [Error, Code][] = [
      [new NotFoundError("package not found"), Code.NotFound],
      [new InvalidArgumentError("Title", "Title must be 1 to 32 characters long (got 40)"), Code.InvalidArgument],
      [new AlreadyExistsError("idempotency key used for another request"), Code.AlreadyExists],
      [new UnavailableError("database unavailable; retry"), Code.Unavailable],
    ];
    for (const [error, code] of cases) {
      const mapped = toConnectError(error, traceId);
      assert.equal(mapped.code, code, error.name);
      assert.equal(mapped.rawMessage, error.message);
      assert.equal(mapped.cause, error);
    }
  });

  test("a ConnectError (validation, auth) passes through as it is", () => {
    const error = new ConnectError("missing bearer token", Code.Unauthenticated);
    assert.equal(toConnectError(error, traceId), error);
  });

  test("anything else is Internal with a generic message naming the trace; the cause stays for the log", () => {
    for (const thrown of [new Error('duplicate key value violates "secret_idx" (id)=(42)'), "a string", null]) {
      const mapped = toConnectError(thrown, traceId);
      assert.equal(mapped.code, Code.Internal);
      assert.equal(mapped.rawMessage, `internal error (trace id ${traceId})`);
      assert.equal(mapped.cause, thrown);
    }
  });
});

describe("Connect codes → HTTP statuses (REST gateway)", () => {
  test("the domain's codes map as grpc-gateway maps them", () => {
    assert.deepEqual(
      [Code.NotFound, Code.InvalidArgument, Code.AlreadyExists, Code.Unavailable, Code.Internal].map(
        (c) => httpStatus[c],
      ),
      [404, 400, 409, 503, 500],
    );
    assert.deepEqual(
      [Code.Unauthenticated, Code.PermissionDenied, Code.ResourceExhausted, Code.DeadlineExceeded].map(
        (c) => httpStatus[c],
      ),
      [401, 403, 429, 504],
    );
  });

  test("every code has a status", () => {
    const codes = Object.values(Code).filter((c): c is Code => typeof c === "number");
    assert.equal(codes.length, 16);
    for (const code of codes) assert.ok(httpStatus[code] >= 400, Code[code]);
  });
});

describe("bot: errors → what the user is told", () => {
  test("the bot's own input errors and the API's InvalidArgument reach the user as written", () => {
    assert.deepEqual(explain(new UserError("Package 7 not found.")), {
      text: "Package 7 not found.",
      outcome: "rejected",
    });
    assert.deepEqual(explain(new ConnectError("Title must not be empty", Code.InvalidArgument)), {
      text: "Not accepted: Title must not be empty",
      outcome: "invalid_argument",
    });
  });

  test("outages ask to retry, credentials go to the operator, anything else is generic", () => {
    for (const code of [Code.Unavailable, Code.DeadlineExceeded, Code.ResourceExhausted, Code.Aborted]) {
      assert.equal(explain(new ConnectError("x", code)).outcome, "unavailable", Code[code]);
    }
    for (const code of [Code.Unauthenticated, Code.PermissionDenied]) {
      const failure = explain(new ConnectError("x", code));
      assert.equal(failure.outcome, "unauthorised");
      assert.match(failure.text, /Tell the bot's operator/);
    }
    const internal = explain(
      new ConnectError("internal error (trace id 1)", Code.Internal, undefined, undefined, "SQL"),
    );
    assert.equal(internal.outcome, "failed");
    assert.doesNotMatch(internal.text, /trace id|SQL/);
    assert.equal(explain(new TypeError("bug")).text, internal.text);
  });

  test("a Telegram error is logged without the bot token", () => {
    const token = "123456:ABC-secret";
    const logged = safeTelegramError(new Error(`fetch https://api.telegram.org/bot${token}/getMe failed`), token);
    assert.equal(logged.type, "Error");
    assert.doesNotMatch(JSON.stringify(logged), /ABC-secret/);
    assert.match(String(logged.message), /bot<token>\/getMe/);
  });
});

describe("database errors → UnavailableError, with the driver's detail for the logs only", () => {
  test("a refused connect keeps its code and every address's message; the client sees neither", () => {
    // What pg's connect gives for a host name with an IPv6 and an IPv4 address (Node 20).
    const refused = (address: string) =>
      Object.assign(new Error(`connect ECONNREFUSED ${address}`), { code: "ECONNREFUSED", syscall: "connect" });
    const aggregate = Object.assign(new AggregateError([refused("::1:5432"), refused("127.0.0.1:5432")], ""), {
      code: "ECONNREFUSED",
    });
    const wrapped = classifyDatabaseError(aggregate);
    assert.ok(wrapped instanceof UnavailableError);
    assert.equal((wrapped as UnavailableError & { code?: string }).code, "ECONNREFUSED");
    assert.match(
      (wrapped as UnavailableError & { detail?: string }).detail ?? "",
      /::1:5432.*127\.0\.0\.1:5432/,
      "both addresses, although the AggregateError's own message is empty",
    );
    const mapped = toConnectError(wrapped, traceId);
    assert.equal(mapped.code, Code.Unavailable);
    assert.equal(mapped.rawMessage, "database unavailable");
  });

  test("a server going away keeps its SQLSTATE; a constraint violation is left as it is", () => {
    const adminShutdown = Object.assign(new Error("terminating connection due to administrator command"), {
      code: "57P01",
    });
    const wrapped = classifyDatabaseError(adminShutdown);
    assert.ok(wrapped instanceof UnavailableError);
    assert.equal((wrapped as UnavailableError & { code?: string }).code, "57P01");
    const unique = Object.assign(new Error("duplicate key value violates unique constraint"), { code: "23505" });
    assert.equal(classifyDatabaseError(unique), unique);
    assert.deepEqual(describeDatabaseError(unique), {
      code: "23505",
      message: "duplicate key value violates unique constraint",
    });
  });
});
