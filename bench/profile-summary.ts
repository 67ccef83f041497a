// Summarises a V8 .cpuprofile (from `npm run bench -- --profile`, which starts
// the children with `node --cpu-prof`): where the time went by package or
// source file, and the hottest functions by self and by inclusive time.
//
//   node --import tsx bench/profile-summary.ts FILE.cpuprofile [--skip-ms=N] [--top=N]
//
// --skip-ms leaves out the first N ms of the profile (process start-up:
// module loading and the TypeScript transform), so what remains is the work
// being measured.
import { readFileSync } from "node:fs";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const args = process.argv.slice(2);
const file = args.find((a) => !a.startsWith("--"));
if (file === undefined) {
  process.stderr.write("usage: node --import tsx bench/profile-summary.ts FILE.cpuprofile [--skip-ms=N] [--top=N]\n");
  process.exit(2);
}
const option = (name: string, fallback: number) =>
  Number(args.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback);
const skipMs = option("skip-ms", 0);
const top = option("top", 25);

const profile = JSON.parse(readFileSync(file, "utf8")) as Profile;
const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

function where(url: string): string {
  if (url === "") return "(native/V8)";
  const nm = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (nm) return nm[1]!;
  if (url.startsWith("node:")) return "node core";
  const own = /\/(internal|pkg|cmd|db)\/(.*)$/.exec(url);
  return own ? `${own[1]}/${own[2]}` : url;
}
// A function's place: its file inside the package (node_modules) or the repository.
function fileOf(url: string): string {
  const nm = /node_modules\/(.*)$/.exec(url);
  if (nm) return nm[1]!;
  const own = /\/(internal|pkg|cmd|db|bench|test)\/(.*)$/.exec(url);
  return own ? `${own[1]}/${own[2]}` : url || "(native/V8)";
}
const fnKey = (n: ProfileNode) =>
  `${n.callFrame.functionName || "(anonymous)"}  ${fileOf(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;

const self = new Map<string, number>();
const inclusive = new Map<string, number>();
const byPlace = new Map<string, number>();
const byPlaceInclusive = new Map<string, number>();
let total = 0;
let elapsed = 0;
for (let i = 0; i < profile.samples.length; i++) {
  const delta = profile.timeDeltas[i] ?? 0;
  elapsed += delta / 1000;
  if (elapsed < skipMs) continue;
  const node = byId.get(profile.samples[i]!)!;
  const name = node.callFrame.functionName;
  if (name === "(idle)") continue;
  total += delta;
  const key = name.startsWith("(") ? name : fnKey(node);
  self.set(key, (self.get(key) ?? 0) + delta);
  const place = name.startsWith("(") ? name : where(node.callFrame.url);
  byPlace.set(place, (byPlace.get(place) ?? 0) + delta);
  const seen = new Set<string>();
  const places = new Set<string>();
  for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
    const n = byId.get(id)!;
    if (n.callFrame.functionName === "(root)") break;
    const k = fnKey(n);
    if (!seen.has(k)) {
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + delta);
    }
    if (n.callFrame.url !== "" && !n.callFrame.url.startsWith("node:")) places.add(where(n.callFrame.url));
  }
  for (const p of places) byPlaceInclusive.set(p, (byPlaceInclusive.get(p) ?? 0) + delta);
}

const print = (title: string, m: Map<string, number>) => {
  process.stdout.write(`\n${title}\n`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
    process.stdout.write(
      `${((v / total) * 100).toFixed(1).padStart(6)}%  ${(v / 1000).toFixed(0).padStart(7)} ms  ${k}\n`,
    );
  }
};
process.stdout.write(`${file}: ${(total / 1000).toFixed(0)} ms on CPU (idle excluded) after the first ${skipMs} ms\n`);
print("by package / source file (self time)", byPlace);
print("by package / source file (inclusive: on the stack)", byPlaceInclusive);
print("functions by self time", self);
print("functions by inclusive time", inclusive);
