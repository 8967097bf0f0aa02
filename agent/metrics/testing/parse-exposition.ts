/** A strict parser of the Prometheus text format 0.0.4 for tests: fails on any line the format does not allow. */

/** One sample: metric name, labels, value. */
export type Sample = { name: string; labels: Record<string, string>; value: number };

/** Parsed exposition: HELP and TYPE per family, samples in order. */
export type Exposition = { help: Map<string, string>; type: Map<string, string>; samples: Sample[] };

const NAME = '[a-zA-Z_:][a-zA-Z0-9_:]*';
const SAMPLE = new RegExp(`^(${NAME})(\\{(.*)\\})? (\\S+)$`);

function unescape(s: string): string {
  return s.replace(/\\(\\|"|n)/g, (_m, c: string) => (c === 'n' ? '\n' : c));
}

function parseLabels(text: string, line: string): Record<string, string> {
  const out: Record<string, string> = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)/y;
  let pos = 0;
  while (pos < text.length) {
    re.lastIndex = pos;
    const m = re.exec(text);
    if (!m) throw new Error(`bad label set at ${pos} in: ${line}`);
    if (m[1]! in out) throw new Error(`repeated label ${m[1]} in: ${line}`);
    out[m[1]!] = unescape(m[2]!);
    pos = re.lastIndex;
  }
  return out;
}

function parseValue(v: string, line: string): number {
  if (v === '+Inf') return Infinity;
  if (v === '-Inf') return -Infinity;
  if (v === 'NaN') return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) throw new Error(`bad value "${v}" in: ${line}`);
  return Number(v);
}

/** Parses and checks: TYPE before samples, histogram buckets cumulative with +Inf = _count. */
export function parseExposition(text: string): Exposition {
  if (!text.endsWith('\n')) throw new Error('exposition must end with a line feed');
  const exp: Exposition = { help: new Map(), type: new Map(), samples: [] };
  for (const line of text.slice(0, -1).split('\n')) {
    if (line.startsWith('# HELP ')) {
      const m = new RegExp(`^# HELP (${NAME}) (.*)$`).exec(line);
      if (!m) throw new Error(`bad HELP: ${line}`);
      exp.help.set(m[1]!, m[2]!.replace(/\\(\\|n)/g, (_x, c: string) => (c === 'n' ? '\n' : c)));
      continue;
    }
    if (line.startsWith('# TYPE ')) {
      const m = new RegExp(`^# TYPE (${NAME}) (counter|gauge|histogram|summary|untyped)$`).exec(line);
      if (!m) throw new Error(`bad TYPE: ${line}`);
      if (exp.type.has(m[1]!)) throw new Error(`TYPE repeated: ${line}`);
      exp.type.set(m[1]!, m[2]!);
      continue;
    }
    if (line.startsWith('#') || line === '') throw new Error(`unexpected line: "${line}"`);
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`bad sample: ${line}`);
    const name = m[1]!;
    const family = name.replace(/_(bucket|sum|count)$/, '');
    if (!exp.type.has(name) && !exp.type.has(family)) throw new Error(`sample before its TYPE: ${line}`);
    exp.samples.push({ name, labels: m[3] ? parseLabels(m[3], line) : {}, value: parseValue(m[4]!, line) });
  }
  // Histogram invariants.
  for (const [fam, t] of exp.type) {
    if (t !== 'histogram') continue;
    const groups = new Map<string, Sample[]>();
    for (const s of exp.samples.filter((x) => x.name === `${fam}_bucket`)) {
      const { le: _le, ...rest } = s.labels;
      const k = JSON.stringify(rest);
      groups.set(k, [...(groups.get(k) ?? []), s]);
    }
    for (const [k, buckets] of groups) {
      let prev = -Infinity;
      let prevCount = 0;
      for (const b of buckets) {
        const le = parseValue(b.labels.le ?? '', 'le');
        if (!(le > prev)) throw new Error(`${fam}${k}: le not increasing`);
        if (b.value < prevCount) throw new Error(`${fam}${k}: buckets not cumulative`);
        prev = le;
        prevCount = b.value;
      }
      if (prev !== Infinity) throw new Error(`${fam}${k}: no +Inf bucket`);
      const count = exp.samples.find((s) => s.name === `${fam}_count` && JSON.stringify(s.labels) === k);
      if (!count || count.value !== prevCount) throw new Error(`${fam}${k}: _count missing or not equal to the +Inf bucket`);
      if (!exp.samples.some((s) => s.name === `${fam}_sum` && JSON.stringify(s.labels) === k)) throw new Error(`${fam}${k}: _sum missing`);
    }
  }
  return exp;
}

/** The value of the sample with exactly these name and labels (subset match on labels), summed over matches. */
export function sumSamples(exp: Exposition, name: string, labels: Record<string, string> = {}): number {
  return exp.samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
}
