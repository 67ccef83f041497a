import { execFile } from "node:child_process";
import { promisify } from "node:util";
import pg from "pg";
import { adminUrl, templateName } from "../../test/helpers/database.js";
import { type KafkaMock, startKafkaMock } from "../../test/helpers/kafka-mock.js";
import { root } from "./procs.js";
import type { Resources } from "./resources.js";

/**
 * What every bench suite starts before its first scenario: the migrated
 * template database the scenarios clone (dropped when the resources close)
 * and one mock broker.
 */
export async function startBenchBase(resources: Resources): Promise<{ kafka: KafkaMock }> {
  resources.add(`template ${templateName}`, () => dropDatabase(templateName));
  await promisify(execFile)(process.execPath, ["--import", "tsx", "test/setup/prepare-template.ts"], {
    cwd: root,
    env: process.env,
  });
  const kafka = await startKafkaMock();
  resources.add("kafka-mock", () => kafka.stop());
  return { kafka };
}

async function dropDatabase(name: string): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    await client.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
  } finally {
    await client.end();
  }
}
