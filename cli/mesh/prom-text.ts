/** A small reader of the Prometheus text format (0.0.4): what `kubectl mesh stat` needs from the agents' /metrics. */

/** One sample: metric name, labels, value. */
export type Sample = { name: string; labels: Record<string, string>; value: number };

/** Parses exposition text into samples; comment lines and malformed lines are skipped (a scrape is best effort). */
export function parsePrometheusText(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const brace = line.indexOf('{');
    const space = line.indexOf(' ');
    let name: string;
    let labels: Record<string, string> = {};
    let rest: string;
    if (brace >= 0 && (space < 0 || brace < space)) {
      name = line.slice(0, brace);
      const end = findLabelsEnd(line, brace + 1);
      if (end < 0) continue;
      labels = parseLabels(line.slice(brace + 1, end));
      rest = line.slice(end + 1).trim();
    } else {
      if (space < 0) continue;
      name = line.slice(0, space);
      rest = line.slice(space + 1).trim();
    }
    const v = rest.split(/\s+/)[0] ?? '';
    const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
    if (Number.isNaN(value) && v !== 'NaN') continue;
    out.push({ name, labels, value });
  }
  return out;
}

function findLabelsEnd(line: string, from: number): number {
  let inStr = false;
  for (let i = from; i < line.length; i++) {
    const c = line[i];
    if (inStr) {
      if (c === '\\') i++;
      else if (c === '"') inStr = false;
    } else if (c === '"') inStr = true;
    else if (c === '}') return i;
  }
  return -1;
}

function parseLabels(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(text)) !== null) {
    out[m[1]!] = m[2]!.replace(/\\(["\\n])/g, (_, ch: string) => (ch === 'n' ? '\n' : ch));
  }
  return out;
}

/**
 * The q-quantile of a cumulative histogram (`le` upper bounds with counts), interpolated linearly inside the
 * bucket as PromQL's histogram_quantile does; undefined without observations. Above the last finite bound: that bound.
 */
export function computeHistogramQuantile(q: number, buckets: readonly { le: number; count: number }[]): number | undefined {
  const b = [...buckets].sort((x, y) => x.le - y.le);
  const total = b.at(-1)?.count ?? 0;
  if (total <= 0) return undefined;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const { le, count } of b) {
    if (count >= rank) {
      if (!Number.isFinite(le)) return prevLe;
      const inBucket = count - prevCount;
      return inBucket <= 0 ? le : prevLe + (le - prevLe) * ((rank - prevCount) / inBucket);
    }
    prevLe = le;
    prevCount = count;
  }
  return prevLe;
}
