/** The median of `xs` (the mean of the middle two when their count is even). */
export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/** Exact percentile (nearest rank) of latencies in ms; `sorted` ascending. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export interface HistogramBucket {
  /** Upper bound in seconds (Infinity for +Inf). */
  le: number;
  /** Cumulative count. */
  count: number;
}

/** The buckets of one unlabelled Prometheus histogram from /metrics text. */
export function parseHistogram(text: string, name: string): { buckets: HistogramBucket[]; count: number; sum: number } {
  const buckets: HistogramBucket[] = [];
  const re = new RegExp(`^${name}_bucket\\{le="([^"]+)"\\} (\\S+)$`, "gm");
  for (const m of text.matchAll(re)) {
    buckets.push({ le: m[1] === "+Inf" ? Infinity : Number(m[1]), count: Number(m[2]) });
  }
  buckets.sort((a, b) => a.le - b.le);
  const count = Number(new RegExp(`^${name}_count (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  const sum = Number(new RegExp(`^${name}_sum (\\S+)$`, "m").exec(text)?.[1] ?? 0);
  return { buckets, count, sum };
}

/**
 * A percentile from cumulative buckets, as Prometheus' histogram_quantile
 * does it (linear within the bucket), in ms, with the bucket it falls in:
 * the buckets are coarse (…, 10, 25, 50, 100 ms), so the bucket is the honest
 * figure and the interpolation a reading aid.
 */
export function histogramPercentile(
  buckets: readonly HistogramBucket[],
  p: number,
): { ms: number; bucketMs: [number, number] } | undefined {
  const total = buckets.at(-1)?.count ?? 0;
  if (total === 0) return undefined;
  const target = (p / 100) * total;
  let lower = 0;
  let below = 0;
  for (const b of buckets) {
    if (b.count >= target) {
      if (b.le === Infinity) return { ms: lower * 1000, bucketMs: [lower * 1000, Infinity] };
      const inBucket = b.count - below;
      const frac = inBucket === 0 ? 1 : (target - below) / inBucket;
      return { ms: (lower + (b.le - lower) * frac) * 1000, bucketMs: [lower * 1000, b.le * 1000] };
    }
    lower = b.le;
    below = b.count;
  }
  return undefined;
}

export const fmtInt = (n: number) => (Number.isFinite(n) ? Math.round(n).toLocaleString("en-US") : "n/a");
export const fmtMs = (n: number) => (Number.isFinite(n) ? (n < 10 ? n.toFixed(2) : n.toFixed(1)) : "n/a");
