import type { KafkaMessage } from "kafkajs";
import { z } from "zod";
import { kafkaClient } from "../kafka/client.js";
import { RestartingConsumer, sideConsumerSettings } from "../kafka/restarting-consumer.js";
import type { KafkaClientSecurity } from "../kafka/security.js";
import type { Logger } from "../logger/logger.js";
import { DecodeError, decodePackageEvent } from "./decode.js";

export interface TopicsLoggerOptions {
  brokers: readonly string[];
  clientId: string;
  /** Consumer group of its own, so the read model's offsets are not shared with the log. */
  groupId: string;
  packageTopic: string;
  commandsTopic: string;
  cacheEventsTopic: string;
  security: KafkaClientSecurity;
  /** How long stop waits for the consumer to leave its group. */
  shutdownTimeoutMs: number;
}

// A message we cannot read is logged with at most this much of its value.
const maxRawChars = 200;

const commandSchema = z.object({
  UserId: z.number(),
  Username: z.string(),
  MessageText: z.string(),
  CallbackQueryData: z.string(),
  TimeStamp: z.string(),
});
const cacheEventSchema = z.object({
  id: z.union([z.number(), z.string()]),
  cacheEventType: z.string(),
  success: z.boolean(),
  timestamp: z.string(),
});

/** One log line's fields and message for a message of one of the three topics. */
export interface DescribedMessage {
  level: "info" | "warn";
  fields: Record<string, unknown>;
  msg: string;
}

/**
 * The human-readable form of a message: the package event decoded (protobuf and its
 * JSON payload), the bot's JSON records by their fields. A message that does not
 * decode is described as such, with the reason and the start of its value.
 */
export function describeMessage(
  options: Pick<TopicsLoggerOptions, "packageTopic" | "commandsTopic" | "cacheEventsTopic">,
  topic: string,
  message: Pick<KafkaMessage, "key" | "value">,
): DescribedMessage {
  const unreadable = (reason: string): DescribedMessage => ({
    level: "warn",
    fields: { reason, raw: message.value?.toString("utf8").slice(0, maxRawChars) ?? null },
    msg: `unreadable message on ${topic}`,
  });
  if (topic === options.packageTopic) {
    try {
      const change = decodePackageEvent(message.value);
      const s = change.state;
      return {
        level: "info",
        fields: {
          event: {
            id: change.eventId.toString(),
            type: change.type,
            packageId: change.packageId.toString(),
            package: {
              title: s.title,
              material: s.material,
              maximumVolume: s.maximumVolume,
              reusable: s.reusable,
              created: s.created,
              updated: s.updated,
              removed: s.removed,
            },
          },
        },
        msg: `package ${change.packageId} ${change.type.toLowerCase()} (event ${change.eventId}): "${s.title}", ${s.material}, ${s.maximumVolume} cm³, reusable ${s.reusable ? "yes" : "no"}`,
      };
    } catch (err) {
      if (err instanceof DecodeError) return unreadable(err.message);
      throw err;
    }
  }
  const json = parseJson(message.value);
  if (topic === options.commandsTopic) {
    const parsed = commandSchema.safeParse(json);
    if (!parsed.success) return unreadable(`not a bot command record: ${parsed.error.issues[0]?.message ?? "invalid"}`);
    const c = parsed.data;
    const who = c.Username === "" ? `user ${c.UserId}` : `@${c.Username} (${c.UserId})`;
    const what = c.CallbackQueryData !== "" ? `pressed button "${c.CallbackQueryData}"` : `wrote "${c.MessageText}"`;
    return { level: "info", fields: { command: c }, msg: `telegram: ${who} ${what} at ${c.TimeStamp}` };
  }
  if (topic === options.cacheEventsTopic) {
    const parsed = cacheEventSchema.safeParse(json);
    if (!parsed.success) return unreadable(`not a bot cache event: ${parsed.error.issues[0]?.message ?? "invalid"}`);
    const e = parsed.data;
    return {
      level: "info",
      fields: { cacheEvent: e },
      msg: `bot cache: ${e.cacheEventType} of package ${e.id} ${e.success ? "succeeded" : "did not succeed"} at ${e.timestamp}`,
    };
  }
  return unreadable("unexpected topic");
}

function parseJson(value: Buffer | null): unknown {
  if (value === null) return undefined;
  try {
    return JSON.parse(value.toString("utf8"));
  } catch {
    return undefined;
  }
}

/**
 * Writes every message of the package-events topic and the bot's two topics to the
 * log, one structured line each (`kafka message`), as the original facade did. A
 * consumer group of its own: instances share the work, each message is logged once
 * per group. Only logging: a failure here never touches the read model.
 */
export class TopicsLogger {
  private readonly group: RestartingConsumer;

  constructor(
    private readonly options: TopicsLoggerOptions,
    private readonly logger: Logger,
  ) {
    const kafka = kafkaClient(
      {
        ...options,
        clientId: `${options.clientId}-facade-log`,
        requestTimeoutMs: sideConsumerSettings.requestTimeoutMs,
      },
      logger,
    );
    this.group = new RestartingConsumer(
      kafka,
      {
        name: "message log consumer",
        consumer: {
          ...sideConsumerSettings.group,
          groupId: options.groupId,
          // As the read model's consumer: bounds the stop, which waits for the fetch in flight.
          maxWaitTimeInMs: 1000,
        },
        // Without committed offsets every start begins at the end: the log is of what happens from now on.
        subscription: {
          topics: [options.packageTopic, options.commandsTopic, options.cacheEventsTopic],
          fromBeginning: false,
        },
        run: {
          // No offset commits: a log needs none, and this consumer must not take the
          // OffsetCommit requests (and their failures) of the read model's consumer on the
          // same broker. So each start logs from the end of every topic: messages published
          // while no facade ran are not logged (the read model still applies them).
          autoCommit: false,
          eachMessage: async ({ topic, partition, message }) => {
            const d = describeMessage(this.options, topic, message);
            this.logger[d.level](
              { topic, partition, offset: message.offset, key: message.key?.toString("utf8") ?? null, ...d.fields },
              `kafka message: ${d.msg}`,
            );
          },
        },
        restartBackoffMinMs: sideConsumerSettings.restartBackoffMinMs,
        restartBackoffMaxMs: sideConsumerSettings.restartBackoffMaxMs,
        disconnectTimeoutMs: options.shutdownTimeoutMs,
        // Only logging: a failure here must never stop the facade.
        stopOnNonRetriable: false,
      },
      {},
      logger,
    );
  }

  /** Consumes until `signal` aborts; a consumer that fails is replaced after a backoff. The owner awaits it. */
  run(signal: AbortSignal): Promise<void> {
    return this.group.run(signal);
  }
}
