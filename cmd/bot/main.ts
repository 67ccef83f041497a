import { runMain } from "../../internal/app/run-main.js";
import { startBotApp } from "../../internal/bot/app.js";
import { ConfigError } from "../../internal/config/config.js";

await runMain("bot", async (config, logger) => {
  try {
    return await startBotApp(config, logger);
  } catch (err) {
    // A missing or rejected token is a configuration error like any other:
    // the same one-line message on stderr and exit code 2 as runMain gives.
    if (err instanceof ConfigError) {
      logger.flush();
      process.stderr.write(`bot: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
});
