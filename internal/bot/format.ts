import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { Package } from "../../pkg/hablof/logistic_package_api/v1/logistic_package_api_pb.js";
import type { NewPackageInput } from "./parse.js";

// Replies are Telegram HTML: only <, > and & must be escaped in text.

export function escapeHtml(text: string): string {
  return text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/**
 * MaximumVolume is a protobuf float (32 bits): 2.2 comes back as 2.2000000476837.
 * Seven significant digits is what a float32 holds, so print that many.
 */
export function formatVolume(volume: number): string {
  return String(Number(Math.fround(volume).toPrecision(7)));
}

const yesNo = (b: boolean) => (b ? "yes" : "no");

function formatTime(date: Date): string {
  return `${date.toISOString().slice(0, 19).replace("T", " ")} UTC`;
}

export function formatPackage(pkg: Package, heading: string): string {
  const lines = [
    `<b>${escapeHtml(heading)}</b>`,
    `Title: ${escapeHtml(pkg.Title)}`,
    `Material: ${escapeHtml(pkg.Material)}`,
    `Volume: ${formatVolume(pkg.MaximumVolume)} cm³`,
    `Reusable: ${yesNo(pkg.Reusable)}`,
  ];
  if (pkg.Created !== undefined) lines.push(`Created: ${formatTime(timestampDate(pkg.Created))}`);
  if (pkg.Updated?.Time !== undefined) lines.push(`Updated: ${formatTime(timestampDate(pkg.Updated.Time))}`);
  return lines.join("\n");
}

export function formatCreated(id: bigint, input: NewPackageInput): string {
  return [
    `<b>Created package ${id}</b>`,
    `Title: ${escapeHtml(input.title)}`,
    `Material: ${escapeHtml(input.material)}`,
    `Volume: ${formatVolume(input.maximumVolume)} cm³`,
    `Reusable: ${yesNo(input.reusable)}`,
  ].join("\n");
}

export function formatListPage(packages: readonly Package[], offset: bigint): string {
  if (packages.length === 0) {
    return offset === 0n ? "No packages yet. Create one with /new." : "No more packages.";
  }
  const first = offset + 1n;
  const last = offset + BigInt(packages.length);
  const lines = packages.map(
    (p) =>
      `<b>${p.ID}</b> · ${escapeHtml(p.Title)} · ${escapeHtml(p.Material)} · ${formatVolume(p.MaximumVolume)} cm³` +
      (p.Reusable ? " · reusable" : ""),
  );
  return [`<b>Packages ${first}–${last}</b>`, ...lines, "", "Details: /get ID"].join("\n");
}

export function helpText(pageSize: number, role: "reader" | "writer" | "admin"): string {
  return [
    "<b>Logistic packages bot</b>",
    "",
    `/list — all packages, ${pageSize} per page, with ◀ Prev / Next ▶ buttons`,
    "/get ID — one package, e.g. <code>/get 42</code>",
    "/new title | material | volume | reusable — create one (writer), e.g.",
    "<code>/new Big box | cardboard | 1200 | yes</code>",
    "(volume in cm³; reusable is yes or no, and may be left out = no)",
    "/edit ID field=value … — change fields title, material, volume, reusable (writer); quote values with spaces, e.g.",
    '<code>/edit 42 title="Big box" volume=2.5 reusable=no</code>',
    "/delete ID — remove a package (admin), after a Yes/No question, e.g. <code>/delete 42</code>",
    "/help — this message",
    "",
    "Roles: a reader may /list and /get; a writer also /new and /edit; an admin also /delete.",
    `Your role: <b>${role}</b>.`,
  ].join("\n");
}
