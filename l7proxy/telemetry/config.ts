/** Tracing settings of a mesh (endpoint, headers, sampling, queue bounds) and their validation from flat key/value data. */
// Units: durations in milliseconds, sizes in spans, ratio in 0..1. Flat keys (`tracing.otlp.endpoint`) so the
// settings fit a ConfigMap's data or environment variables without a nested format to parse.
import { TelemetryError } from './errors.ts';

/** Which header formats the proxy writes on forwarded requests (it always reads W3C, B3 single and B3 multi). */
export type InjectFormat = 'tracecontext' | 'b3' | 'b3multi';

/** The mesh's tracing settings, resolved (every default filled in). */
export type TracingSettings = {
  /** False: no spans are recorded or exported; incoming trace headers still pass through untouched. */
  enabled: boolean;
  /** OTLP/HTTP traces endpoint, full URL including `/v1/traces`. */
  endpoint: string;
  /** Extra request headers for the collector (e.g. an API key); values are secrets, never logged. */
  headers: Record<string, string>;
  /** Root-span sampling probability 0..1; child spans follow their parent's decision (ParentBased). */
  samplingRatio: number;
  /** Finished spans waiting for export; beyond it spans are dropped and counted, requests never wait. */
  maxQueueSize: number;
  /** Spans per export request (≤ maxQueueSize). */
  maxExportBatchSize: number;
  /** Longest wait before a partial batch is exported. */
  scheduledDelayMs: number;
  /** One export request's deadline. */
  exportTimeoutMs: number;
  /** Compress export requests. */
  compression: 'none' | 'gzip';
  /** Formats written on forwarded requests; default W3C only. */
  inject: InjectFormat[];
};

/** Defaults: production-leaning (1% of root traces); the sandbox sets samplingRatio 1. */
export const DEFAULT_TRACING_SETTINGS: TracingSettings = {
  enabled: false,
  endpoint: 'http://localhost:4318/v1/traces',
  headers: {},
  samplingRatio: 0.01,
  maxQueueSize: 2048,
  maxExportBatchSize: 512,
  scheduledDelayMs: 1000,
  exportTimeoutMs: 10_000,
  compression: 'none',
  inject: ['tracecontext'],
};

/** Keys understood by `computeTracingSettings`, with what each holds. */
export const TRACING_KEYS = {
  'tracing.enabled': 'true | false',
  'tracing.otlp.endpoint': 'http(s) URL of the OTLP/HTTP traces endpoint, e.g. http://otel-collector.observability:4318/v1/traces',
  'tracing.otlp.headers': 'comma-separated key=value pairs (values URL-encoded), like OTEL_EXPORTER_OTLP_HEADERS',
  'tracing.otlp.compression': 'none | gzip',
  'tracing.otlp.timeoutMs': 'integer milliseconds',
  'tracing.samplingRatio': 'number between 0 and 1',
  'tracing.maxQueueSize': 'integer spans',
  'tracing.maxExportBatchSize': 'integer spans',
  'tracing.scheduledDelayMs': 'integer milliseconds',
  'tracing.inject': 'comma-separated: tracecontext, b3, b3multi',
} as const;

/** One problem found in tracing settings. */
export type TracingIssue = { key: string; message: string };

function parseHeaders(v: string, issues: TracingIssue[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of v.split(',')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (eq < 0 || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) {
      issues.push({ key: 'tracing.otlp.headers', message: `entry "${part.slice(0, eq < 0 ? part.length : eq).trim()}" is not key=value with a valid header name` });
      continue;
    }
    let value = part.slice(eq + 1).trim();
    try {
      value = decodeURIComponent(value);
    } catch {
      issues.push({ key: 'tracing.otlp.headers', message: `value of ${name} is not valid URL encoding` });
      continue;
    }
    if (/[\r\n\0]/.test(value)) {
      issues.push({ key: 'tracing.otlp.headers', message: `value of ${name} contains CR, LF or NUL` });
      continue;
    }
    out[name] = value;
  }
  return out;
}

function parseIntIn(key: string, v: string, min: number, max: number, issues: TracingIssue[]): number | undefined {
  const n = Number(v);
  if (!/^\d+$/.test(v.trim()) || n < min || n > max) {
    issues.push({ key, message: `"${v}" is not an integer from ${min} to ${max}` });
    return undefined;
  }
  return n;
}

/**
 * Resolves tracing settings from flat key/value data (see TRACING_KEYS). Pure: returns the settings with every
 * default filled and the problems found; a bad value keeps its default, so one typo never disables the rest.
 * Setting an endpoint enables tracing unless `tracing.enabled` says otherwise.
 */
export function computeTracingSettings(data: Readonly<Record<string, string | undefined>>): { settings: TracingSettings; issues: TracingIssue[] } {
  const issues: TracingIssue[] = [];
  const s: TracingSettings = { ...DEFAULT_TRACING_SETTINGS, headers: {}, inject: [...DEFAULT_TRACING_SETTINGS.inject] };
  for (const key of Object.keys(data)) {
    if (key.startsWith('tracing.') && !(key in TRACING_KEYS)) issues.push({ key, message: `unknown key; known: ${Object.keys(TRACING_KEYS).join(', ')}` });
  }
  const get = (k: keyof typeof TRACING_KEYS): string | undefined => {
    const v = data[k];
    return v === undefined || v.trim() === '' ? undefined : v.trim();
  };
  const endpoint = get('tracing.otlp.endpoint');
  if (endpoint !== undefined) {
    let ok = false;
    try {
      const u = new URL(endpoint);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '';
    } catch {
      ok = false;
    }
    if (ok) {
      s.endpoint = endpoint;
      s.enabled = true;
    } else {
      issues.push({ key: 'tracing.otlp.endpoint', message: `"${endpoint}" is not an http(s) URL; expected e.g. http://otel-collector.observability:4318/v1/traces` });
    }
  }
  const enabled = get('tracing.enabled');
  if (enabled !== undefined) {
    if (enabled === 'true' || enabled === 'false') s.enabled = enabled === 'true';
    else issues.push({ key: 'tracing.enabled', message: `"${enabled}" is not true or false` });
  }
  const headers = get('tracing.otlp.headers');
  if (headers !== undefined) s.headers = parseHeaders(headers, issues);
  const compression = get('tracing.otlp.compression');
  if (compression !== undefined) {
    if (compression === 'none' || compression === 'gzip') s.compression = compression;
    else issues.push({ key: 'tracing.otlp.compression', message: `"${compression}" is not none or gzip` });
  }
  const ratio = get('tracing.samplingRatio');
  if (ratio !== undefined) {
    const r = Number(ratio);
    if (Number.isFinite(r) && r >= 0 && r <= 1) s.samplingRatio = r;
    else issues.push({ key: 'tracing.samplingRatio', message: `"${ratio}" is not a number from 0 to 1 (0.01 samples 1% of new traces)` });
  }
  const timeout = get('tracing.otlp.timeoutMs');
  if (timeout !== undefined) s.exportTimeoutMs = parseIntIn('tracing.otlp.timeoutMs', timeout, 100, 120_000, issues) ?? s.exportTimeoutMs;
  const q = get('tracing.maxQueueSize');
  if (q !== undefined) s.maxQueueSize = parseIntIn('tracing.maxQueueSize', q, 1, 1_000_000, issues) ?? s.maxQueueSize;
  const b = get('tracing.maxExportBatchSize');
  if (b !== undefined) s.maxExportBatchSize = parseIntIn('tracing.maxExportBatchSize', b, 1, 100_000, issues) ?? s.maxExportBatchSize;
  if (s.maxExportBatchSize > s.maxQueueSize) {
    issues.push({ key: 'tracing.maxExportBatchSize', message: `${s.maxExportBatchSize} is larger than tracing.maxQueueSize ${s.maxQueueSize}; using ${s.maxQueueSize}` });
    s.maxExportBatchSize = s.maxQueueSize;
  }
  const d = get('tracing.scheduledDelayMs');
  if (d !== undefined) s.scheduledDelayMs = parseIntIn('tracing.scheduledDelayMs', d, 1, 600_000, issues) ?? s.scheduledDelayMs;
  const inject = get('tracing.inject');
  if (inject !== undefined) {
    const formats = inject.split(',').map((x) => x.trim()).filter((x) => x !== '');
    const bad = formats.filter((f) => f !== 'tracecontext' && f !== 'b3' && f !== 'b3multi');
    if (bad.length > 0 || formats.length === 0) issues.push({ key: 'tracing.inject', message: `"${inject}": each entry must be tracecontext, b3 or b3multi` });
    else s.inject = [...new Set(formats as InjectFormat[])];
  }
  return { settings: s, issues };
}

/** Throws a TelemetryError listing every issue; for callers that must refuse a bad config outright. */
export function assertNoTracingIssues(issues: readonly TracingIssue[]): void {
  if (issues.length === 0) return;
  throw new TelemetryError('NM_ERR_TELEMETRY_BAD_CONFIG', `tracing settings: ${issues.map((i) => `${i.key}: ${i.message}`).join('; ')}`);
}
