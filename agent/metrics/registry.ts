/**
 * A small Prometheus registry: counters, gauges and fixed-bucket histograms with labels, rendered in the text
 * exposition format 0.0.4. Cardinality is bounded by design: label names known to explode are refused when a
 * metric is defined, and each metric holds at most `maxSeries` label sets; beyond that, observations fold into
 * one `__overflow__` series and are counted, so totals stay right and memory stays flat.
 */
// Why not prom-client: it is well kept, but it has no per-metric series bound, keeps a global default
// registry, and its cluster/default-metrics machinery is unused here. A bound is the one feature this agent
// must have (one node proxy sees every pod's traffic); with it built in, the rest is ~250 lines we test.
import { MetricsError } from './errors.ts';

/** Label values by label name; numbers are stringified, missing names become ''. */
export type Labels = Readonly<Record<string, string | number | undefined>>;

/** Label names refused outright: their values are per connection, per request or per pod, so series explode. */
export const FORBIDDEN_LABEL_NAMES: ReadonlySet<string> = new Set([
  'ip', 'pod_ip', 'host_ip', 'address', 'peer_address', 'client_address', 'remote_address',
  'path', 'url', 'url_path', 'uri', 'query', 'user_agent', 'trace_id', 'span_id', 'request_id',
  'source_port', 'client_port', 'peer_port', 'pod', 'pod_name', 'pod_uid', 'uid', 'connection_id',
]);

/** Suffixes refused for the same reason (`source_ip`, `destination_address`, `request_path`...). */
const FORBIDDEN_SUFFIXES = ['_ip', '_address', '_path', '_url', '_uri', '_uid'];

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** Value of every label of the series that collects observations past `maxSeries`. */
export const OVERFLOW_LABEL_VALUE = '__overflow__';

/** Options common to every metric. */
export type MetricOptions = {
  name: string;
  help: string;
  labelNames?: readonly string[];
  /** Most label sets kept; default the registry's (10000). */
  maxSeries?: number;
};

/** Histogram options: upper bounds, strictly increasing and finite (+Inf is added). */
export type HistogramOptions = MetricOptions & { buckets: readonly number[] };

/** Escapes a HELP text: backslash and line feed. */
export function escapeHelp(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

/** Escapes a label value: backslash, double quote and line feed. */
export function escapeLabelValue(s: string): string {
  return s.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** A sample value as the format writes it (+Inf, -Inf, NaN; Go-parsable floats otherwise). */
export function formatSampleValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

type Series<S> = { values: string[]; state: S };

/** What every metric family shares: label handling, the series bound, rendering of the header. */
abstract class Family<S> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  readonly maxSeries: number;
  abstract readonly type: 'counter' | 'gauge' | 'histogram';
  protected readonly series = new Map<string, Series<S>>();
  readonly #onOverflow: (metric: string) => void;

  constructor(opts: MetricOptions, defaults: { maxSeries: number; onOverflow: (metric: string) => void }, reserved: readonly string[] = []) {
    if (!METRIC_NAME.test(opts.name)) throw new MetricsError('NM_ERR_METRICS_BAD_NAME', `metric name "${opts.name}" must match ${METRIC_NAME.source}`);
    const labelNames = opts.labelNames ?? [];
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__')) throw new MetricsError('NM_ERR_METRICS_BAD_NAME', `${opts.name}: label name "${l}" must match ${LABEL_NAME.source} and not start with __`);
      if (reserved.includes(l)) throw new MetricsError('NM_ERR_METRICS_BAD_NAME', `${opts.name}: label name "${l}" is reserved for ${this.constructor.name.toLowerCase()}s`);
      if (FORBIDDEN_LABEL_NAMES.has(l) || FORBIDDEN_SUFFIXES.some((s) => l.endsWith(s))) {
        throw new MetricsError('NM_ERR_METRICS_FORBIDDEN_LABEL', `${opts.name}: label "${l}" would create a series per address, path, request or pod; use a bounded name (workload, service, route) and put the detail in the access log or a span`);
      }
    }
    if (new Set(labelNames).size !== labelNames.length) throw new MetricsError('NM_ERR_METRICS_BAD_NAME', `${opts.name}: label names repeat: ${labelNames.join(', ')}`);
    const max = opts.maxSeries ?? defaults.maxSeries;
    if (!Number.isInteger(max) || max < 1) throw new MetricsError('NM_ERR_METRICS_BAD_OPTION', `${opts.name}: maxSeries ${max} is not a positive integer`);
    this.name = opts.name;
    this.help = opts.help;
    this.labelNames = labelNames;
    this.maxSeries = max;
    this.#onOverflow = defaults.onOverflow;
  }

  protected abstract fresh(): S;

  /** The state of the series for `labels`, created on first use, or the overflow series past the bound. */
  protected stateFor(labels: Labels | undefined): S {
    const values = this.labelNames.map((n) => {
      const v = labels?.[n];
      return v === undefined ? '' : String(v);
    });
    const key = values.join('\u0000');
    let s = this.series.get(key);
    if (s) return s.state;
    if (this.series.size >= this.maxSeries) {
      this.#onOverflow(this.name);
      const okey = `\u0001overflow`;
      s = this.series.get(okey);
      if (!s) {
        s = { values: this.labelNames.map(() => OVERFLOW_LABEL_VALUE), state: this.fresh() };
        this.series.set(okey, s);
      }
      return s.state;
    }
    s = { values, state: this.fresh() };
    this.series.set(key, s);
    return s.state;
  }

  /** Forgets the series for `labels` (a certificate that went away, a map that was removed). */
  remove(labels: Labels): void {
    const key = this.labelNames.map((n) => (labels[n] === undefined ? '' : String(labels[n]))).join('\u0000');
    this.series.delete(key);
  }

  /** Forgets every series (before re-filling from a fresh snapshot). */
  clear(): void {
    this.series.clear();
  }

  /** Label sets currently held. */
  seriesCount(): number {
    return this.series.size;
  }

  protected labelText(values: readonly string[], extra?: [string, string]): string {
    const parts: string[] = [];
    for (let i = 0; i < this.labelNames.length; i++) parts.push(`${this.labelNames[i]}="${escapeLabelValue(values[i]!)}"`);
    if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
    return parts.length === 0 ? '' : `{${parts.join(',')}}`;
  }

  /** Appends this family's lines (HELP, TYPE, samples) to `out`. */
  render(out: string[]): void {
    out.push(`# HELP ${this.name} ${escapeHelp(this.help)}`);
    out.push(`# TYPE ${this.name} ${this.type}`);
    // A metric without labels always has its one series, so a fresh agent exposes zeros, not gaps.
    if (this.labelNames.length === 0 && this.series.size === 0) this.stateFor(undefined);
    for (const s of this.series.values()) this.renderSeries(out, s);
  }

  protected abstract renderSeries(out: string[], s: Series<S>): void;
}

/** A monotonically increasing count. */
export class Counter extends Family<{ v: number }> {
  readonly type = 'counter';
  protected fresh(): { v: number } {
    return { v: 0 };
  }
  /** Adds `by` (default 1); negative or non-finite amounts are ignored (a counter never goes down). */
  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0) || by === Infinity) return;
    this.stateFor(labels).v += by;
  }
  /** Sets the total from a source that already counts (BPF maps, the proxy's counters); a drop reads as a reset. */
  setTo(labels: Labels | undefined, total: number): void {
    if (!(total >= 0)) return;
    this.stateFor(labels).v = total;
  }
  /** Current value (tests, `kubectl mesh stat`). */
  get(labels?: Labels): number {
    return this.stateFor(labels).v;
  }
  protected renderSeries(out: string[], s: Series<{ v: number }>): void {
    out.push(`${this.name}${this.labelText(s.values)} ${formatSampleValue(s.state.v)}`);
  }
}

/** A value that goes up and down. */
export class Gauge extends Family<{ v: number }> {
  readonly type = 'gauge';
  protected fresh(): { v: number } {
    return { v: 0 };
  }
  set(labels: Labels | undefined, v: number): void {
    this.stateFor(labels).v = v;
  }
  inc(labels?: Labels, by = 1): void {
    this.stateFor(labels).v += by;
  }
  dec(labels?: Labels, by = 1): void {
    this.stateFor(labels).v -= by;
  }
  get(labels?: Labels): number {
    return this.stateFor(labels).v;
  }
  protected renderSeries(out: string[], s: Series<{ v: number }>): void {
    out.push(`${this.name}${this.labelText(s.values)} ${formatSampleValue(s.state.v)}`);
  }
}

type HistogramState = { counts: Float64Array; sum: number; count: number };

/** Observations counted into fixed buckets, plus their sum and count. */
export class Histogram extends Family<HistogramState> {
  readonly type = 'histogram';
  readonly buckets: readonly number[];

  constructor(opts: HistogramOptions, defaults: { maxSeries: number; onOverflow: (metric: string) => void }) {
    super(opts, defaults, ['le']);
    const b = opts.buckets;
    if (b.length === 0) throw new MetricsError('NM_ERR_METRICS_BAD_BUCKETS', `${opts.name}: no buckets`);
    for (let i = 0; i < b.length; i++) {
      if (!Number.isFinite(b[i]!)) throw new MetricsError('NM_ERR_METRICS_BAD_BUCKETS', `${opts.name}: bucket ${b[i]} is not finite (+Inf is implicit)`);
      if (i > 0 && !(b[i]! > b[i - 1]!)) throw new MetricsError('NM_ERR_METRICS_BAD_BUCKETS', `${opts.name}: buckets must increase strictly; ${b[i]} follows ${b[i - 1]}`);
    }
    this.buckets = [...b];
  }

  protected fresh(): HistogramState {
    return { counts: new Float64Array(this.buckets.length + 1), sum: 0, count: 0 };
  }

  /** Records one observation; NaN is ignored. */
  observe(labels: Labels | undefined, v: number): void {
    if (Number.isNaN(v)) return;
    const st = this.stateFor(labels);
    let i = 0;
    while (i < this.buckets.length && v > this.buckets[i]!) i++;
    st.counts[i]!++;
    st.sum += v;
    st.count++;
  }

  /** Count and sum of a series (tests, `kubectl mesh stat`). */
  get(labels?: Labels): { count: number; sum: number; buckets: number[] } {
    const st = this.stateFor(labels);
    let acc = 0;
    return { count: st.count, sum: st.sum, buckets: Array.from(st.counts, (c) => (acc += c)) };
  }

  protected renderSeries(out: string[], s: Series<HistogramState>): void {
    let acc = 0;
    for (let i = 0; i < this.buckets.length; i++) {
      acc += s.state.counts[i]!;
      out.push(`${this.name}_bucket${this.labelText(s.values, ['le', formatSampleValue(this.buckets[i]!)])} ${formatSampleValue(acc)}`);
    }
    out.push(`${this.name}_bucket${this.labelText(s.values, ['le', '+Inf'])} ${formatSampleValue(s.state.count)}`);
    out.push(`${this.name}_sum${this.labelText(s.values)} ${formatSampleValue(s.state.sum)}`);
    out.push(`${this.name}_count${this.labelText(s.values)} ${formatSampleValue(s.state.count)}`);
  }
}

/** The Content-Type of the text format this registry renders. */
export const TEXT_FORMAT_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** A set of metrics rendered together; collectors refresh pulled values (BPF maps...) before each render. */
export class Registry {
  readonly #families = new Map<string, Family<unknown>>();
  readonly #collectors: (() => void)[] = [];
  readonly #defaults: { maxSeries: number; onOverflow: (metric: string) => void };
  readonly #overflow: Counter;

  constructor(opts: { maxSeriesPerMetric?: number } = {}) {
    const maxSeries = opts.maxSeriesPerMetric ?? 10_000;
    this.#defaults = { maxSeries, onOverflow: (m) => this.#overflow.inc({ metric: m }) };
    // Registered first so it always exists; its own bound is the number of metrics, which is small and fixed.
    this.#overflow = this.counter({ name: 'nodemesh_metrics_series_overflow_total', help: 'Observations folded into the __overflow__ series because a metric reached its label-set limit.', labelNames: ['metric'], maxSeries: 1000 });
  }

  #add<F extends Family<unknown>>(f: F): F {
    if (this.#families.has(f.name)) throw new MetricsError('NM_ERR_METRICS_DUPLICATE', `metric ${f.name} is already registered; define each metric once and share it`);
    this.#families.set(f.name, f);
    return f;
  }

  counter(opts: MetricOptions): Counter {
    return this.#add(new Counter(opts, this.#defaults));
  }

  gauge(opts: MetricOptions): Gauge {
    return this.#add(new Gauge(opts, this.#defaults));
  }

  histogram(opts: HistogramOptions): Histogram {
    return this.#add(new Histogram(opts, this.#defaults));
  }

  /** Runs before every render; must be synchronous and cheap (read snapshots taken elsewhere). */
  addCollector(fn: () => void): void {
    this.#collectors.push(fn);
  }

  /** The text exposition of every metric, in registration order. A failing collector leaves its metrics stale. */
  render(onCollectorError?: (err: unknown) => void): string {
    for (const c of this.#collectors) {
      try {
        c();
      } catch (e) {
        onCollectorError?.(e);
      }
    }
    const out: string[] = [];
    for (const f of this.#families.values()) f.render(out);
    return out.join('\n') + '\n';
  }
}
