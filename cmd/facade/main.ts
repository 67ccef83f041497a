import { runMain } from "../../internal/app/run-main.js";
import { startFacadeApp } from "../../internal/app/start-facade.js";

// `npm run facade`: the read model of packages, fed by the events on Kafka.
await runMain("facade", startFacadeApp);
