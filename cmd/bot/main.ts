import { runMain } from "../../internal/app/run-main.js";
import { startBotApp } from "../../internal/app/start-bot.js";

// `npm run bot`: the Telegram bot, a client of the grpc-server.
await runMain("bot", startBotApp);
