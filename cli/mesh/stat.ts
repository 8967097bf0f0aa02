/**
 * `kubectl mesh stat [SERVICE]`: golden metrics per service and route, from the agents' /metrics (the source-side
 * proxies' view, `reporter="source"`, so a request counts once): requests, success rate (not 5xx, not a broken
 * connection), requests/s over a short window (two scrapes `--window` apart), and p50/p95/p99 latency from the
 * duration histograms. Requests, success and latency are since the agents started (no Prometheus needed).
 */
import { agentFetchFor, describeAgentHttpFailure, describeAgentNetworkFailure, discoverAgentEndpoints, type AgentEndpoint, type AgentFetch } from './agent-status.ts';
import type { ClusterReader } from './kube.ts';
import { formatJson, formatTable, type OutputFormat } from './output.ts';
import { computeHistogramQuantile, parsePrometheusText, type Sample } from './prom-text.ts';

/** One row: a service's route (route '' = requests that matched no HTTPRoute, sent to the service's default). */
export type StatRow = {
  namespace: string;
  service: string;
  route: string;
  requests: number;
  /** Fraction 0..1 of requests answered without a 5xx or a broken connection; undefined without requests. */
  successRate: number | undefined;
  /** Requests per second over the window; undefined with a single scrape. */
  rps: number | undefined;
  /** Seconds. */
  p50: number | undefined;
  p95: number | undefined;
  p99: number | undefined;
};

/** What `stat` shows. */
export type StatView = { rows: StatRow[]; windowSeconds: number | undefined; agents: { node: string; error?: string }[] };

type Acc = { requests: number; ok: number; buckets: Map<number, number> };

function keyOf(l: Record<string, string>): string {
  return JSON.stringify([l.destination_namespace ?? '', l.destination_service ?? '', l.route ?? '']);
}

/** Sums the source-side request counters and duration buckets of every agent by (namespace, service, route). */
export function aggregateRequests(scrapes: readonly (readonly Sample[])[]): Map<string, Acc> {
  const acc = new Map<string, Acc>();
  const get = (l: Record<string, string>): Acc => {
    const k = keyOf(l);
    let a = acc.get(k);
    if (!a) acc.set(k, (a = { requests: 0, ok: 0, buckets: new Map() }));
    return a;
  };
  for (const samples of scrapes) {
    for (const s of samples) {
      if (s.labels.reporter !== 'source') continue;
      if (s.name === 'nodemesh_requests_total') {
        const a = get(s.labels);
        a.requests += s.value;
        const code = Number(s.labels.code ?? '0');
        if (code > 0 && code < 500) a.ok += s.value;
      } else if (s.name === 'nodemesh_request_duration_seconds_bucket') {
        const le = s.labels.le === '+Inf' ? Infinity : Number(s.labels.le);
        const a = get(s.labels);
        a.buckets.set(le, (a.buckets.get(le) ?? 0) + s.value);
      }
    }
  }
  return acc;
}

/** Builds the rows (pure): `before` is the first scrape of a window, `after` the second (or the only one). */
export function computeStatView(input: { after: readonly (readonly Sample[])[]; before?: readonly (readonly Sample[])[]; windowSeconds?: number; namespace?: string; service?: string; agents: { node: string; error?: string }[] }): StatView {
  const now = aggregateRequests(input.after);
  const then = input.before ? aggregateRequests(input.before) : undefined;
  const rows: StatRow[] = [];
  for (const [k, a] of now) {
    const [namespace, service, route] = JSON.parse(k) as [string, string, string];
    if (input.namespace !== undefined && namespace !== input.namespace) continue;
    if (input.service !== undefined && service !== input.service) continue;
    if (a.requests === 0) continue;
    const buckets = [...a.buckets].map(([le, count]) => ({ le, count }));
    const prev = then?.get(k)?.requests ?? 0;
    rows.push({
      namespace, service, route, requests: a.requests,
      successRate: a.requests > 0 ? a.ok / a.requests : undefined,
      rps: then && input.windowSeconds ? Math.max(0, a.requests - prev) / input.windowSeconds : undefined,
      p50: computeHistogramQuantile(0.5, buckets), p95: computeHistogramQuantile(0.95, buckets), p99: computeHistogramQuantile(0.99, buckets),
    });
  }
  rows.sort((x, y) => (x.namespace + '/' + x.service + '/' + x.route).localeCompare(y.namespace + '/' + y.service + '/' + y.route));
  return { rows, windowSeconds: input.windowSeconds, agents: input.agents };
}

function ms(v: number | undefined): string {
  if (v === undefined) return '-';
  const m = v * 1000;
  return m < 10 ? `${m.toFixed(2)}ms` : m < 100 ? `${m.toFixed(1)}ms` : `${Math.round(m)}ms`;
}

/** Renders the view. */
export function formatStatView(v: StatView, format: OutputFormat): string {
  if (format === 'json') return formatJson(v);
  const failed = v.agents.filter((a) => a.error);
  let out = '';
  if (v.rows.length === 0) out += 'No mesh requests recorded yet (traffic through the node proxies shows up here).\n';
  else {
    out += formatTable(['namespace', 'service', 'route', 'requests', 'success', 'rps', 'p50', 'p95', 'p99'], v.rows.map((r) => [
      r.namespace, r.service, r.route || '(default)', String(r.requests),
      r.successRate === undefined ? '-' : `${(r.successRate * 100).toFixed(2)}%`,
      r.rps === undefined ? '-' : r.rps.toFixed(1), ms(r.p50), ms(r.p95), ms(r.p99),
    ]));
    out += `\nrequests, success and latency: since the agents started (source-side proxies); rps: ${v.windowSeconds ? `over the last ${v.windowSeconds}s` : 'needs --window above 0'}\n`;
  }
  if (failed.length) out += `${failed.length} agent(s) not scraped: ${failed.map((a) => `${a.node}: ${a.error}`).join('; ')}\n`;
  return out;
}

/** `/statusz` URL → the same agent's `/metrics`. */
export function metricsUrlOf(statusUrl: string): string {
  return statusUrl.replace(/\/statusz(\?.*)?$/, '/metrics');
}

async function scrape(endpoints: ReadonlyMap<string, AgentEndpoint>, timeoutMs: number, fetchOf: (ep: AgentEndpoint) => AgentFetch): Promise<{ samples: Sample[][]; agents: { node: string; error?: string }[] }> {
  const results = await Promise.all([...endpoints.values()].map(async (ep) => {
    const { node } = ep;
    if (!ep.url) return { node, error: ep.error ?? 'no status endpoint known' };
    const url = metricsUrlOf(ep.url);
    try {
      const res = await fetchOf(ep)(url, { signal: AbortSignal.timeout(timeoutMs) });
      if (!res.ok) return { node, error: describeAgentHttpFailure(ep, url, res.status, await res.text().catch(() => '')) };
      return { node, samples: parsePrometheusText(await res.text()) };
    } catch (e) {
      return { node, error: describeAgentNetworkFailure(ep, url, e, timeoutMs) };
    }
  }));
  return { samples: results.flatMap((r) => ('samples' in r && r.samples ? [r.samples] : [])), agents: results.map((r) => ({ node: r.node, ...('error' in r && r.error ? { error: r.error } : {}) })) };
}

/** Scrapes every agent twice, `windowMs` apart, and renders the rows. */
export async function runStat(reader: ClusterReader, opts: { format: OutputFormat; agentEndpoints: ReadonlyMap<string, string>; namespace?: string; service?: string; windowMs?: number; fetchImpl?: AgentFetch; sleep?: (ms: number) => Promise<void> }): Promise<string> {
  const nodes = await reader.listNodes();
  const endpoints = await discoverAgentEndpoints(reader, nodes, opts.agentEndpoints);
  const fetchOf = (ep: AgentEndpoint): AgentFetch => agentFetchFor(ep, reader, opts.fetchImpl);
  const windowMs = opts.windowMs ?? 1000;
  const first = await scrape(endpoints, 3000, fetchOf);
  if (windowMs > 0) await (opts.sleep ?? ((ms) => new Promise<void>((r) => setTimeout(r, ms))))(windowMs);
  const second = windowMs > 0 ? await scrape(endpoints, 3000, fetchOf) : first;
  const view = computeStatView({
    after: second.samples, ...(windowMs > 0 ? { before: first.samples, windowSeconds: windowMs / 1000 } : {}),
    ...(opts.namespace !== undefined ? { namespace: opts.namespace } : {}), ...(opts.service !== undefined ? { service: opts.service } : {}),
    agents: second.agents,
  });
  return formatStatView(view, opts.format);
}

