// Client trace headers with tracing off: the server's own W3C parser decides
// what reaches the outbox (cases in helpers/trace-header-cases.ts).
import { useFixture } from "./helpers/fixture.js";
import { traceHeaderCases } from "./helpers/trace-header-cases.js";

const fx = useFixture();

traceHeaderCases(fx);
