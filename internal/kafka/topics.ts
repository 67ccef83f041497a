import type { Kafka } from "kafkajs";
import type { Logger } from "../logger/logger.js";

export interface TopicSettings {
  partitions: number;
  replicationFactor: number;
  /** How long the cluster may take to create them and elect their leaders. */
  timeoutMs: number;
}

/**
 * Creates those of `topics` the cluster does not have, where it allows it. The
 * topics are looked up first (a metadata request, which any broker answers and
 * any client may send), so that a cluster whose topics an operator created, the
 * usual production case, needs no create rights and logs no refusal at every
 * start. A cluster that refuses to create a missing one (no rights, a test broker
 * without a controller) is logged and left to auto-creation or the operator:
 * never a reason not to start.
 */
export async function ensureTopics(
  kafka: Kafka,
  topics: readonly string[],
  settings: TopicSettings,
  logger: Logger,
): Promise<void> {
  const admin = kafka.admin();
  // All of them until the lookup says which are missing.
  let missing: readonly string[] = topics;
  try {
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    missing = topics.filter((topic) => !existing.has(topic));
    if (missing.length === 0) {
      logger.info({ topics }, "topics exist");
      return;
    }
    const created = await admin.createTopics({
      topics: missing.map((topic) => ({
        topic,
        numPartitions: settings.partitions,
        replicationFactor: settings.replicationFactor,
      })),
      waitForLeaders: true,
      timeout: settings.timeoutMs,
    });
    // false: every topic the cluster refused was refused as existing: another client (an
    // instance starting beside this one) created it between the lookup and the create. With
    // several topics (the bot's two) kafkajs says false even if it created the others, and
    // then has not waited for their leaders: the bot's first sends may fail and be retried
    // (bot.kafka.sendRetries, with backoff).
    if (created) logger.info({ topics: missing }, "topics created");
    else logger.info({ topics: missing }, "topics exist: another client created them meanwhile");
  } catch (err) {
    logger.warn({ err, topics: missing }, "could not create the topics; relying on existing or auto-created ones");
  } finally {
    await admin.disconnect().catch((err: unknown) => logger.warn({ err }, "Kafka admin client disconnect failed"));
  }
}
