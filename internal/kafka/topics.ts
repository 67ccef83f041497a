import type { Kafka } from "kafkajs";
import type { Logger } from "../logger/logger.js";

export interface TopicSettings {
  partitions: number;
  replicationFactor: number;
  /** How long the cluster may take to create them and elect their leaders. */
  timeoutMs: number;
}

/**
 * Creates `topics` where the cluster allows it. An existing topic, or a cluster
 * that refuses (no rights, a test broker without a controller), is logged and
 * left to auto-creation or the operator: never a reason not to start.
 */
export async function ensureTopics(
  kafka: Kafka,
  topics: readonly string[],
  settings: TopicSettings,
  logger: Logger,
): Promise<void> {
  const admin = kafka.admin();
  try {
    await admin.connect();
    const created = await admin.createTopics({
      topics: topics.map((topic) => ({
        topic,
        numPartitions: settings.partitions,
        replicationFactor: settings.replicationFactor,
      })),
      waitForLeaders: true,
      timeout: settings.timeoutMs,
    });
    logger.info({ topics, created }, "topics ensured");
  } catch (err) {
    logger.warn({ err, topics }, "could not create the topics; relying on existing or auto-created ones");
  } finally {
    await admin.disconnect().catch((err: unknown) => logger.warn({ err }, "Kafka admin client disconnect failed"));
  }
}
