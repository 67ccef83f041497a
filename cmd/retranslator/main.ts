import { runMain } from "../../internal/app/run-main.js";
import { startRetranslatorApp } from "../../internal/app/start-retranslator.js";

// `npm run retranslator`: relays the outbox's events to Kafka.
await runMain("retranslator", startRetranslatorApp);
