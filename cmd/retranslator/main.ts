import { setFlagsFromString } from "node:v8";
import { runMain } from "../../internal/app/run-main.js";
import { startRetranslatorApp } from "../../internal/app/start-retranslator.js";

// A drain allocates fast and keeps little: with a heap limit (--max-old-space-size, which the
// image sets), V8 lets the old generation grow only a little past what survived the last full
// collection, and collects again and again. Letting it double between collections gave the
// relay's drain 16-20% more events per second and less CPU per event (docs/performance.md,
// Memory; measured on Node 20); the limit still bounds the heap. NODE_OPTIONS cannot carry this
// V8 flag, hence here, before the relay starts (V8 reads it at each collection). A value given
// on node's command line wins (e.g. the bench's BENCH_NODE_ARGS, to compare).
if (!process.execArgv.some((arg) => arg.startsWith("--heap-growing-percent"))) {
  setFlagsFromString("--heap-growing-percent=100");
}

// `npm run retranslator`: relays the outbox's events to Kafka.
await runMain("retranslator", startRetranslatorApp);
