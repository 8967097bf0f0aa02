/** Pure helpers for benchmarks: seeded shuffling, percentiles, medians and paired ratios. */

/** A seeded PRNG (mulberry32): the same seed gives the same variant order, so a run can be replayed. */
export function createRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Fisher-Yates shuffle of a copy with the given random source. */
export function computeShuffled<T>(items: readonly T[], rand: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** The p-th percentile (0..100) of ascending-sorted values, nearest-rank; NaN for none. */
export function computePercentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  // The epsilon keeps 99.9 % of 1000 at rank 999 (0.999 * 1000 is 999.0000000000001 in floating point).
  const rank = Math.ceil((p / 100) * sorted.length - 1e-9);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

/** Median, minimum and maximum of the finite values (NaN when there are none). */
export function computeSpread(values: readonly number[]): { median: number; min: number; max: number; n: number } {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
  return { median, min: v[0]!, max: v[v.length - 1]!, n: v.length };
}

/** Coefficient of variation (stddev / mean) of the finite values; NaN for fewer than two. */
export function computeCv(values: readonly number[]): number {
  const v = values.filter((x) => Number.isFinite(x));
  if (v.length < 2) return NaN;
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const variance = v.reduce((a, b) => a + (b - mean) ** 2, 0) / (v.length - 1);
  return Math.sqrt(variance) / mean;
}

/**
 * Paired ratios: for every repetition where both a value of `subject` and of `baseline` exist, subject ÷ baseline;
 * then their spread. Pairing inside a repetition cancels slow drifts of a shared, noisy machine.
 */
export function computePairedRatios(subject: ReadonlyMap<number, number>, baseline: ReadonlyMap<number, number>): { median: number; min: number; max: number; n: number } {
  const ratios: number[] = [];
  for (const [rep, s] of subject) {
    const b = baseline.get(rep);
    if (b !== undefined && b > 0 && Number.isFinite(s)) ratios.push(s / b);
  }
  return computeSpread(ratios);
}
