/** Durations as the workloads accept them on the command line and in requests: `250ms`, `1.5s`, `2m`, or bare milliseconds. */

/** Milliseconds in a duration text, or undefined when it is not one. */
export function parseDurationMs(text: string | undefined | null): number | undefined {
  if (text === undefined || text === null) return undefined;
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(text);
  if (!m?.[1]) return undefined;
  const n = Number(m[1]);
  const unit = m[2] ?? 'ms';
  return Math.round(unit === 'ms' ? n : unit === 's' ? n * 1000 : n * 60_000);
}
