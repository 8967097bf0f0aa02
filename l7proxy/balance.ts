/** Per-request endpoint choice (RoundRobin, LeastRequest, Random, ConsistentHash) and outlier ejection. */
import type { LoadBalancerConfig, TrafficPolicyConfig } from './config.ts';

/** Live state of one endpoint, kept across config swaps while the endpoint stays. */
export type EndpointState = {
  /** `ip:port` (IPv6 bracketed). */
  key: string;
  ip: string;
  port: number;
  ready: boolean;
  nodeName: string | undefined;
  /** Requests in flight to it (LeastRequest). */
  inflight: number;
  consecutive5xx: number;
  /** Ejected until this time (ms); 0 when not ejected. */
  ejectedUntilMs: number;
  /** How many times it was ejected; the ejection time grows with it. */
  ejections: number;
};

/** Longest ejection, whatever the count (Envoy's max_ejection_time default). */
const MAX_EJECTION_MS = 300_000;

/** Key of an endpoint address. */
export function endpointKey(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

/** What a pick may depend on besides the endpoints. */
export type PickContext = {
  /** Round-robin cursor, advanced by the caller. */
  cursor: number;
  /** Hash key for ConsistentHash (header value, cookie value or source address); absent → random. */
  hashKey: string | undefined;
  rand: () => number;
  nowMs: number;
  /** Endpoints already tried by this request; avoided while others remain. */
  avoid?: ReadonlySet<string>;
};

/**
 * Choose an endpoint. Candidates are ready and not ejected; when every ready endpoint is ejected the ejections
 * are ignored (Envoy's panic mode: better a suspect endpoint than none). Undefined when nothing is ready.
 */
export function pickEndpoint(endpoints: readonly EndpointState[], lb: LoadBalancerConfig | undefined, ctx: PickContext): EndpointState | undefined {
  // The usual case (every endpoint ready, none ejected, nothing to avoid) picks from the list itself, no copies.
  let allUsable = !ctx.avoid || ctx.avoid.size === 0;
  for (let i = 0; allUsable && i < endpoints.length; i++) {
    const e = endpoints[i]!;
    if (!e.ready || e.ejectedUntilMs > ctx.nowMs) allUsable = false;
  }
  if (allUsable) return endpoints.length === 0 ? undefined : pickFrom(endpoints, lb, ctx);
  const ready = endpoints.filter((e) => e.ready);
  if (ready.length === 0) return undefined;
  let healthy = ready.filter((e) => e.ejectedUntilMs <= ctx.nowMs);
  if (healthy.length === 0) healthy = ready;
  if (ctx.avoid && ctx.avoid.size > 0) {
    const fresh = healthy.filter((e) => !ctx.avoid!.has(e.key));
    if (fresh.length > 0) healthy = fresh;
  }
  return pickFrom(healthy, lb, ctx);
}

/** The balancer's choice among usable endpoints (non-empty). */
function pickFrom(healthy: readonly EndpointState[], lb: LoadBalancerConfig | undefined, ctx: PickContext): EndpointState | undefined {
  const type = lb?.type ?? 'RoundRobin';
  switch (type) {
    case 'Random': return healthy[Math.floor(ctx.rand() * healthy.length)];
    case 'LeastRequest': {
      // Power of two choices: near-optimal spread without scanning or herding onto one idle endpoint.
      const a = healthy[Math.floor(ctx.rand() * healthy.length)]!;
      const b = healthy[Math.floor(ctx.rand() * healthy.length)]!;
      return b.inflight < a.inflight ? b : a;
    }
    case 'ConsistentHash': {
      if (ctx.hashKey === undefined) return healthy[Math.floor(ctx.rand() * healthy.length)];
      // Rendezvous hashing: removing an endpoint moves only the keys that were on it.
      let best = healthy[0]!; let bestScore = -1;
      for (const e of healthy) {
        const score = hash32(`${ctx.hashKey}\u0000${e.key}`);
        if (score > bestScore) { bestScore = score; best = e; }
      }
      return best;
    }
    default: return healthy[ctx.cursor % healthy.length];
  }
}

/** FNV-1a 32-bit with a final avalanche, enough to spread keys evenly. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 0x01000193); }
  h ^= h >>> 16; h = Math.imul(h, 0x85ebca6b); h ^= h >>> 13; h = Math.imul(h, 0xc2b2ae35); h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Record an attempt's outcome on `ep` for outlier detection: 5xx and connection failures count, anything else
 * resets the streak. Ejects after `consecutive5xx` in a row, for baseEjectionTime × ejections (max 300 s), unless
 * that would eject more than maxEjectionPercent of the endpoints (at least one may always be ejected).
 * Returns true when this call ejected the endpoint.
 */
export function recordOutcome(
  ep: EndpointState,
  failed: boolean,
  all: readonly EndpointState[],
  od: TrafficPolicyConfig['outlierDetection'],
  nowMs: number,
): boolean {
  if (!failed) { ep.consecutive5xx = 0; return false; }
  ep.consecutive5xx++;
  if (!od || ep.consecutive5xx < od.consecutive5xx || ep.ejectedUntilMs > nowMs) return false;
  const ejected = all.filter((e) => e.ejectedUntilMs > nowMs).length;
  const allowed = od.maxEjectionPercent <= 0 ? 0 : Math.max(1, Math.floor((all.length * od.maxEjectionPercent) / 100));
  if (ejected >= allowed) return false;
  ep.ejections++;
  ep.ejectedUntilMs = nowMs + Math.min(od.baseEjectionTimeMs * ep.ejections, MAX_EJECTION_MS);
  ep.consecutive5xx = 0;
  return true;
}
