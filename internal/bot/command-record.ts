import type { Context } from "grammy";

/** The original's commands-topic record of one update. */
export function commandJson(ctx: Context, at = new Date()): string {
  return JSON.stringify({
    UserId: ctx.from?.id ?? 0,
    Username: ctx.from?.username ?? "",
    MessageText: ctx.message?.text ?? "",
    CallbackQueryData: ctx.callbackQuery?.data ?? "",
    TimeStamp: at.toISOString(),
  });
}
