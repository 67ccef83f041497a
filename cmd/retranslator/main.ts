import { startRetranslatorApp } from "../../internal/app/retranslator.js";
import { runMain } from "../../internal/app/run-main.js";

await runMain("retranslator", startRetranslatorApp);
