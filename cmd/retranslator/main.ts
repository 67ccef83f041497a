import { setFlagsFromString } from "node:v8";
import { runMain } from "../../internal/app/run-main.js";
import { startRetranslatorApp } from "../../internal/app/start-retranslator.js";

// A drain allocates fast and keeps little: with a heap limit (--max-old-space-size, which the
// image sets), V8 lets the old generation grow only a little past what survived the last full
// collection, and collects again and again. Doubling it between collections gave the relay's
// drain about 20% more events per second for the same CPU (docs/performance.md, Memory); the
// limit still bounds the heap. NODE_OPTIONS cannot carry this V8 flag, hence here: V8 reads it
// at each collection, so setting it at start applies to every one.
setFlagsFromString("--heap-growing-percent=100");

// `npm run retranslator`: relays the outbox's events to Kafka.
await runMain("retranslator", startRetranslatorApp);
