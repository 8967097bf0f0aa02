/** The proxy's own config type (the agent translates NodeState into it) and its validation. */
// Units: every duration is in milliseconds (`*Ms`), every size in bytes, every percent in 0..100. Names are
// `namespace/name` as in Kubernetes so errors and stats point at the object the user wrote.
import { isIP } from 'node:net';
import type { ConfigIssue } from './errors.ts';
import { normalizePath } from './normalize.ts';
import { compileLinearRegex } from './regex.ts';

/** Everything the proxy needs, swapped atomically by `applyConfig`. */
export type ProxyConfig = {
  /** Opaque version for logs and stats (e.g. the NodeState resourceVersion). */
  version: string;
  limits?: ProxyLimits;
  /** Destinations the kernel may redirect here, found by the original destination address. */
  services: ServiceConfig[];
  /** Where requests go: named endpoint sets with their traffic policy. */
  backends: BackendConfig[];
  /** Authorization policies, each applying to the services it names (or to all). */
  authorization?: AuthorizationPolicyConfig[];
};

/** Downstream protection limits; defaults follow Envoy's edge recommendations. */
export type ProxyLimits = {
  /** Largest request head (request line + headers) in bytes; default 61440 (60 KiB), above it → 431. */
  maxHeaderBytes?: number;
  /** Most header fields in a request; default 100, above it → 431. */
  maxHeaderCount?: number;
  /** Request bodies up to this size are buffered so retries and mirrors can replay them; default 65536. */
  maxBufferedBodyBytes?: number;
  /** Header names with `_` (`x_user` next to `x-user`): rejected with 400 (default), dropped, or allowed. */
  headersWithUnderscores?: 'reject' | 'drop' | 'allow';
  /** HTTP/2 streams open at once per connection; default 100. */
  http2MaxConcurrentStreams?: number;
  /** HTTP/2 streams the client may reset within `http2ResetWindowMs` before the connection gets GOAWAY; default 200. */
  http2MaxResetsPerWindow?: number;
  /** Window for `http2MaxResetsPerWindow`; default 10000. */
  http2ResetWindowMs?: number;
  /** Idle downstream keep-alive connections are closed after this; default 60000. */
  downstreamIdleTimeoutMs?: number;
  /** Time to wait for a client's first bytes before treating an `auto` flow as opaque TCP; default 300. */
  sniffTimeoutMs?: number;
  /** A request head must arrive within this (slowloris); 408 and close after it; default 10000. */
  requestHeadersTimeoutMs?: number;
  /**
   * A request body that sends nothing for this long (slow body) is given up: 408 when nothing was answered yet,
   * else the stream is reset; default 30000.
   */
  requestBodyIdleTimeoutMs?: number;
  /**
   * Overload shedding per worker (overload.ts): when the event loop runs this late, new requests get 503 with
   * `x-nodemesh-overloaded: proxy` at once instead of queueing; default 500 (never reached in normal operation).
   */
  maxEventLoopLagMs?: number;
  /** The same when this many requests are in flight on one worker; default 10000. */
  maxInFlightRequests?: number;
};

/** A destination as the client dialled it: a ClusterIP service port, or a meshed pod address dialled directly. */
export type ServiceConfig = {
  /** `namespace/name` of the Service (or of the pod for direct dials). */
  name: string;
  /** Addresses that mean this service: ClusterIP:port and/or pod IP:port. Unique across services. */
  addresses: { ip: string; port: number }[];
  /** `http` parses requests, `tcp` pipes bytes (server-first protocols), `auto` sniffs the first bytes. */
  protocol: 'http' | 'tcp' | 'auto';
  /** Backend used when no route is attached, and for opaque TCP. */
  defaultBackend: string;
  /** HTTPRoutes whose parentRefs name this service (GAMMA). */
  routes?: RouteConfig[];
};

/** An HTTPRoute, already scoped to one parent service. */
export type RouteConfig = {
  /** `namespace/name`. */
  name: string;
  /** Creation time (ms since epoch) for Gateway API tie-breaking: older routes win. */
  createdAtMs: number;
  rules: RouteRuleConfig[];
};

/** One HTTPRoute rule. */
export type RouteRuleConfig = {
  /** Any of these matches selects the rule; none given means PathPrefix `/`. */
  matches?: RouteMatchConfig[];
  filters?: FilterConfig[];
  /** Weighted backends; absent or all weights 0 → 500 as in Gateway API. */
  backendRefs?: BackendRefConfig[];
  timeouts?: {
    /** Whole request including retries; 504 at the deadline. */
    requestMs?: number;
    /** Each attempt to a backend. */
    backendRequestMs?: number;
  };
  retry?: {
    /** Retries after the first attempt. */
    attempts: number;
    /** Response codes that are retried (connect failures always are). */
    codes?: number[];
    /** Base backoff, doubled per retry with full jitter, capped at 10× base; default 25. */
    backoffMs?: number;
  };
};

/** A path match kind as in Gateway API; RegularExpression runs on the linear-time engine only. */
export type PathMatchType = 'Exact' | 'PathPrefix' | 'RegularExpression';

/** One HTTPRoute match: every given condition must hold. */
export type RouteMatchConfig = {
  path?: { type: PathMatchType; value: string };
  headers?: { type?: 'Exact' | 'RegularExpression'; name: string; value: string }[];
  queryParams?: { type?: 'Exact' | 'RegularExpression'; name: string; value: string }[];
  method?: string;
};

/** Header edits of RequestHeaderModifier / ResponseHeaderModifier. */
export type HeaderModifierConfig = {
  set?: { name: string; value: string }[];
  add?: { name: string; value: string }[];
  remove?: string[];
};

/** A path change of RequestRedirect / URLRewrite. */
export type PathModifierConfig =
  | { type: 'ReplaceFullPath'; replaceFullPath: string }
  | { type: 'ReplacePrefixMatch'; replacePrefixMatch: string };

/** HTTPRoute filters (Gateway API names). */
export type FilterConfig =
  | { type: 'RequestHeaderModifier'; requestHeaderModifier: HeaderModifierConfig }
  | { type: 'ResponseHeaderModifier'; responseHeaderModifier: HeaderModifierConfig }
  | {
      type: 'RequestRedirect';
      requestRedirect: {
        scheme?: 'http' | 'https';
        hostname?: string;
        port?: number;
        path?: PathModifierConfig;
        /** 301, 302 (default), 303, 307 or 308. */
        statusCode?: number;
      };
    }
  | { type: 'URLRewrite'; urlRewrite: { hostname?: string; path?: PathModifierConfig } }
  | { type: 'RequestMirror'; requestMirror: { backend: string; percent?: number } };

/** A weighted reference to a backend. */
export type BackendRefConfig = { backend: string; weight?: number };

/** A set of endpoints (one Service port) and how to talk to them. */
export type BackendConfig = {
  /** `namespace/name:port`. */
  name: string;
  endpoints: EndpointConfig[];
  trafficPolicy?: TrafficPolicyConfig;
  /**
   * How the proxy speaks to the endpoints: `http1` (default) or `h2c`, HTTP/2 with prior knowledge (gRPC needs it:
   * streaming both ways, trailers). The agent sets it from the Service port's `appProtocol` (`computeUpstreamProtocol`).
   */
  protocol?: UpstreamProtocol;
};

/** The upstream wire protocol of a backend. */
export type UpstreamProtocol = 'http1' | 'h2c';

/**
 * The upstream protocol a Service port's `appProtocol` asks for: `kubernetes.io/h2c` (the Kubernetes standard
 * name), `h2c`, `http2` and `grpc` (Istio's names) mean HTTP/2 with prior knowledge; anything else, or none, HTTP/1.1.
 * Names are compared case-insensitively, as Istio does.
 */
export function computeUpstreamProtocol(appProtocol: string | undefined): UpstreamProtocol {
  if (appProtocol === undefined) return 'http1';
  const v = appProtocol.toLowerCase();
  return v === 'kubernetes.io/h2c' || v === 'h2c' || v === 'http2' || v === 'grpc' ? 'h2c' : 'http1';
}

/** One endpoint (a pod address). */
export type EndpointConfig = {
  ip: string;
  port: number;
  /** Not-ready endpoints are never chosen. */
  ready: boolean;
  /** Node hosting the pod; the tunnel layer uses it to pick the destination node proxy. */
  nodeName?: string;
};

/** How to load balance. ConsistentHash hashes a header, a cookie or the source address. */
export type LoadBalancerConfig =
  | { type: 'RoundRobin' | 'LeastRequest' | 'Random' }
  | { type: 'ConsistentHash'; hashOn: { header: string } | { cookie: string } | { sourceIP: true } };

/** TrafficPolicy, per backend. */
export type TrafficPolicyConfig = {
  /** Upstream TCP connect; default 5000. */
  connectTimeoutMs?: number;
  /** Idle upstream keep-alive connections are closed after this; default 30000. */
  idleTimeoutMs?: number;
  /** Retries allowed beyond the floor: `percent` of requests, plus `minRetriesPerSecond` at all times. */
  retryBudget?: { percent: number; minRetriesPerSecond: number };
  /** Limits across all endpoints of the backend; above them → 503 with `x-nodemesh-overloaded`. */
  circuitBreaker?: { maxConnections?: number; maxPendingRequests?: number; maxRequests?: number };
  outlierDetection?: { consecutive5xx: number; baseEjectionTimeMs: number; maxEjectionPercent: number };
  loadBalancer?: LoadBalancerConfig;
  /** Token bucket per backend, or per source identity when `perSourceIdentity`; above it → 429. */
  rateLimit?: { requestsPerSecond: number; burst: number; perSourceIdentity?: boolean };
  faultInjection?: {
    delay?: { percent: number; durationMs: number };
    abort?: { percent: number; httpStatus: number };
  };
};

/** An AuthorizationPolicy compiled by the agent to concrete identities. */
export type AuthorizationPolicyConfig = {
  /** `namespace/name`. */
  name: string;
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  /** Service names the policy applies to; absent or empty → every destination of this proxy. */
  targetServices?: string[];
  rules: {
    from?: { spiffeIds?: string[]; namespaces?: string[]; serviceAccounts?: string[] }[];
    to?: { ports?: number[]; methods?: string[]; paths?: ({ exact: string } | { prefix: string })[]; hosts?: string[] }[];
  }[];
};

/** Effective limits with defaults filled in. */
export type EffectiveLimits = Required<ProxyLimits>;

/** The limits in force for `config`. */
export function computeLimits(config: Pick<ProxyConfig, 'limits'>): EffectiveLimits {
  const l = config.limits ?? {};
  return {
    maxHeaderBytes: l.maxHeaderBytes ?? 60 * 1024,
    maxHeaderCount: l.maxHeaderCount ?? 100,
    maxBufferedBodyBytes: l.maxBufferedBodyBytes ?? 64 * 1024,
    headersWithUnderscores: l.headersWithUnderscores ?? 'reject',
    http2MaxConcurrentStreams: l.http2MaxConcurrentStreams ?? 100,
    http2MaxResetsPerWindow: l.http2MaxResetsPerWindow ?? 200,
    http2ResetWindowMs: l.http2ResetWindowMs ?? 10_000,
    downstreamIdleTimeoutMs: l.downstreamIdleTimeoutMs ?? 60_000,
    sniffTimeoutMs: l.sniffTimeoutMs ?? 300,
    requestHeadersTimeoutMs: l.requestHeadersTimeoutMs ?? 10_000,
    requestBodyIdleTimeoutMs: l.requestBodyIdleTimeoutMs ?? 30_000,
    maxEventLoopLagMs: l.maxEventLoopLagMs ?? 500,
    maxInFlightRequests: l.maxInFlightRequests ?? 10_000,
  };
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const HEADER_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;
const MAX_DURATION_MS = 24 * 3600 * 1000;
const REDIRECT_CODES = new Set([301, 302, 303, 307, 308]);
/** Headers a route filter may not touch: framing, hop-by-hop and the identity the proxy vouches for. */
const PROTECTED_HEADERS = /^(host|content-length|transfer-encoding|connection|keep-alive|upgrade|te|trailer|proxy-.*|x-forwarded-.*|forwarded|x-nodemesh-.*|x-envoy-.*|x-spiffe-id|x-forwarded-client-cert|:.*)$/i;

/** Every problem in `config`; empty means it may be applied. Checks shapes, ranges, references and regexes. */
export function validateConfig(config: unknown): ConfigIssue[] {
  const issues: ConfigIssue[] = [];
  const add = (path: string, message: string): void => { issues.push({ path, message }); };
  if (typeof config !== 'object' || config === null) return [{ path: '', message: 'config must be an object' }];
  const c = config as ProxyConfig;
  if (typeof c.version !== 'string') add('version', 'must be a string');
  if (!Array.isArray(c.services)) add('services', 'must be an array');
  if (!Array.isArray(c.backends)) add('backends', 'must be an array');
  if (c.authorization !== undefined && !Array.isArray(c.authorization)) add('authorization', 'must be an array when given');
  if (issues.length > 0) return issues;

  const num = (path: string, v: unknown, min: number, max: number, integer = true): void => {
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max || (integer && !Number.isInteger(v))) {
      add(path, `must be ${integer ? 'an integer' : 'a number'} in ${min}..${max} (got ${JSON.stringify(v)})`);
    }
  };
  const optNum = (path: string, v: unknown, min: number, max: number, integer = true): void => { if (v !== undefined) num(path, v, min, max, integer); };
  const name = (path: string, v: unknown): void => {
    if (typeof v !== 'string' || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?\/[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9a-z-]+)?$/.test(v)) {
      add(path, `must be "namespace/name" (optionally ":port") in Kubernetes name syntax (got ${JSON.stringify(v)})`);
    }
  };
  const headerName = (path: string, v: unknown): void => {
    if (typeof v !== 'string' || !TOKEN.test(v)) add(path, `must be a valid header name (got ${JSON.stringify(v)})`);
    else if (PROTECTED_HEADERS.test(v)) add(path, `header ${v} is managed by the proxy and cannot be matched or modified here`);
  };
  const headerValue = (path: string, v: unknown): void => {
    if (typeof v !== 'string' || !HEADER_VALUE.test(v)) add(path, 'must be a header value without CR, LF, NUL or control characters');
  };
  const normPath = (path: string, v: unknown): void => {
    if (typeof v !== 'string') { add(path, 'must be a string'); return; }
    const n = normalizePath(v);
    if (!n.ok) add(path, `invalid path: ${n.reason}`);
    else if (n.value !== v) add(path, `must be in normalized form ${JSON.stringify(n.value)} (the proxy matches normalized paths only)`);
  };
  const regex = (path: string, v: unknown): void => {
    if (typeof v !== 'string') { add(path, 'must be a string'); return; }
    try { compileLinearRegex(v); } catch (e) { add(path, (e as Error).message); }
  };
  const ipPort = (path: string, ip: unknown, port: unknown): void => {
    if (typeof ip !== 'string' || isIP(ip) === 0) add(`${path}.ip`, `must be an IPv4 or IPv6 address (got ${JSON.stringify(ip)})`);
    num(`${path}.port`, port, 1, 65535);
  };
  const modifier = (path: string, m: HeaderModifierConfig | undefined): void => {
    if (typeof m !== 'object' || m === null) { add(path, 'must be an object'); return; }
    for (const [k, list] of [['set', m.set], ['add', m.add]] as const) {
      (list ?? []).forEach((h, i) => { headerName(`${path}.${k}[${i}].name`, h?.name); headerValue(`${path}.${k}[${i}].value`, h?.value); });
    }
    (m.remove ?? []).forEach((h, i) => headerName(`${path}.remove[${i}]`, h));
  };

  const backendNames = new Set<string>();
  c.backends.forEach((b, bi) => {
    const p = `backends[${bi}]`;
    name(`${p}.name`, b?.name);
    if (backendNames.has(b?.name)) add(`${p}.name`, `duplicate backend ${b.name}`);
    backendNames.add(b?.name);
    if (!Array.isArray(b?.endpoints)) { add(`${p}.endpoints`, 'must be an array'); return; }
    b.endpoints.forEach((e, ei) => {
      ipPort(`${p}.endpoints[${ei}]`, e?.ip, e?.port);
      if (typeof e?.ready !== 'boolean') add(`${p}.endpoints[${ei}].ready`, 'must be a boolean');
    });
    if (b.protocol !== undefined && b.protocol !== 'http1' && b.protocol !== 'h2c') add(`${p}.protocol`, `must be http1 or h2c (got ${JSON.stringify(b.protocol)}); set it from the Service port's appProtocol`);
    const tp = b.trafficPolicy;
    if (tp === undefined) return;
    const tpp = `${p}.trafficPolicy`;
    optNum(`${tpp}.connectTimeoutMs`, tp.connectTimeoutMs, 1, MAX_DURATION_MS);
    optNum(`${tpp}.idleTimeoutMs`, tp.idleTimeoutMs, 1, MAX_DURATION_MS);
    if (tp.retryBudget) {
      num(`${tpp}.retryBudget.percent`, tp.retryBudget.percent, 0, 100, false);
      num(`${tpp}.retryBudget.minRetriesPerSecond`, tp.retryBudget.minRetriesPerSecond, 0, 1e6, false);
    }
    if (tp.circuitBreaker) {
      optNum(`${tpp}.circuitBreaker.maxConnections`, tp.circuitBreaker.maxConnections, 1, 1e6);
      optNum(`${tpp}.circuitBreaker.maxPendingRequests`, tp.circuitBreaker.maxPendingRequests, 0, 1e6);
      optNum(`${tpp}.circuitBreaker.maxRequests`, tp.circuitBreaker.maxRequests, 1, 1e6);
    }
    if (tp.outlierDetection) {
      num(`${tpp}.outlierDetection.consecutive5xx`, tp.outlierDetection.consecutive5xx, 1, 1000);
      num(`${tpp}.outlierDetection.baseEjectionTimeMs`, tp.outlierDetection.baseEjectionTimeMs, 1, MAX_DURATION_MS);
      num(`${tpp}.outlierDetection.maxEjectionPercent`, tp.outlierDetection.maxEjectionPercent, 0, 100, false);
    }
    if (tp.loadBalancer) {
      const lb = tp.loadBalancer;
      if (!['RoundRobin', 'LeastRequest', 'Random', 'ConsistentHash'].includes(lb.type)) add(`${tpp}.loadBalancer.type`, `unknown algorithm ${JSON.stringify(lb.type)}`);
      if (lb.type === 'ConsistentHash') {
        const h = (lb as { hashOn?: Record<string, unknown> }).hashOn;
        const keys = h ? Object.keys(h) : [];
        if (keys.length !== 1 || !['header', 'cookie', 'sourceIP'].includes(keys[0]!)) add(`${tpp}.loadBalancer.hashOn`, 'must name exactly one of header, cookie, sourceIP');
        else if (keys[0] === 'header') headerName(`${tpp}.loadBalancer.hashOn.header`, h!.header);
        else if (keys[0] === 'cookie' && (typeof h!.cookie !== 'string' || !TOKEN.test(h!.cookie))) add(`${tpp}.loadBalancer.hashOn.cookie`, 'must be a cookie name');
      }
    }
    if (tp.rateLimit) {
      num(`${tpp}.rateLimit.requestsPerSecond`, tp.rateLimit.requestsPerSecond, 0.001, 1e7, false);
      num(`${tpp}.rateLimit.burst`, tp.rateLimit.burst, 1, 1e7);
    }
    if (tp.faultInjection?.delay) {
      num(`${tpp}.faultInjection.delay.percent`, tp.faultInjection.delay.percent, 0, 100, false);
      num(`${tpp}.faultInjection.delay.durationMs`, tp.faultInjection.delay.durationMs, 0, MAX_DURATION_MS);
    }
    if (tp.faultInjection?.abort) {
      num(`${tpp}.faultInjection.abort.percent`, tp.faultInjection.abort.percent, 0, 100, false);
      num(`${tpp}.faultInjection.abort.httpStatus`, tp.faultInjection.abort.httpStatus, 200, 599);
    }
  });
  const backendRef = (path: string, v: unknown): void => {
    if (typeof v !== 'string' || !backendNames.has(v)) add(path, `names backend ${JSON.stringify(v)} which is not in backends (dangling reference)`);
  };

  const serviceNames = new Set<string>();
  const addrs = new Map<string, string>();
  c.services.forEach((s, si) => {
    const p = `services[${si}]`;
    name(`${p}.name`, s?.name);
    if (serviceNames.has(s?.name)) add(`${p}.name`, `duplicate service ${s.name}`);
    serviceNames.add(s?.name);
    if (!['http', 'tcp', 'auto'].includes(s?.protocol)) add(`${p}.protocol`, 'must be http, tcp or auto');
    backendRef(`${p}.defaultBackend`, s?.defaultBackend);
    if (!Array.isArray(s?.addresses) || s.addresses.length === 0) add(`${p}.addresses`, 'must list at least one ip:port');
    (s?.addresses ?? []).forEach((a, ai) => {
      ipPort(`${p}.addresses[${ai}]`, a?.ip, a?.port);
      const key = `${a?.ip}:${a?.port}`;
      if (addrs.has(key)) add(`${p}.addresses[${ai}]`, `address ${key} already belongs to ${addrs.get(key)}`);
      addrs.set(key, s.name);
    });
    (s?.routes ?? []).forEach((r, ri) => {
      const rp = `${p}.routes[${ri}]`;
      name(`${rp}.name`, r?.name);
      num(`${rp}.createdAtMs`, r?.createdAtMs, 0, Number.MAX_SAFE_INTEGER);
      if (!Array.isArray(r?.rules)) { add(`${rp}.rules`, 'must be an array'); return; }
      r.rules.forEach((rule, ki) => {
        const kp = `${rp}.rules[${ki}]`;
        let hasPrefixMatch = false; let hasOtherPath = false;
        (rule.matches ?? []).forEach((m, mi) => {
          const mp = `${kp}.matches[${mi}]`;
          if (m.path) {
            if (m.path.type === 'Exact' || m.path.type === 'PathPrefix') normPath(`${mp}.path.value`, m.path.value);
            else if (m.path.type === 'RegularExpression') regex(`${mp}.path.value`, m.path.value);
            else add(`${mp}.path.type`, `unknown path match type ${JSON.stringify(m.path.type)}`);
            if (m.path.type === 'PathPrefix') hasPrefixMatch = true; else hasOtherPath = true;
          } else hasPrefixMatch = true;
          if (m.method !== undefined && (typeof m.method !== 'string' || !/^[A-Z]+$/.test(m.method))) add(`${mp}.method`, 'must be an upper-case method token');
          for (const [k, list] of [['headers', m.headers], ['queryParams', m.queryParams]] as const) {
            (list ?? []).forEach((h, hi) => {
              if (k === 'headers') headerName(`${mp}.${k}[${hi}].name`, h?.name);
              else if (typeof h?.name !== 'string' || h.name === '') add(`${mp}.${k}[${hi}].name`, 'must be a non-empty string');
              if (h?.type === 'RegularExpression') regex(`${mp}.${k}[${hi}].value`, h.value);
              else if (h?.type !== undefined && h.type !== 'Exact') add(`${mp}.${k}[${hi}].type`, 'must be Exact or RegularExpression');
              else headerValue(`${mp}.${k}[${hi}].value`, h?.value);
            });
          }
        });
        if (!rule.matches || rule.matches.length === 0) hasPrefixMatch = true;
        (rule.backendRefs ?? []).forEach((b, bi) => {
          backendRef(`${kp}.backendRefs[${bi}].backend`, b?.backend);
          optNum(`${kp}.backendRefs[${bi}].weight`, b?.weight, 0, 1_000_000);
        });
        if (rule.timeouts) {
          optNum(`${kp}.timeouts.requestMs`, rule.timeouts.requestMs, 1, MAX_DURATION_MS);
          optNum(`${kp}.timeouts.backendRequestMs`, rule.timeouts.backendRequestMs, 1, MAX_DURATION_MS);
          if (rule.timeouts.requestMs !== undefined && rule.timeouts.backendRequestMs !== undefined && rule.timeouts.backendRequestMs > rule.timeouts.requestMs) {
            add(`${kp}.timeouts.backendRequestMs`, 'must not exceed timeouts.requestMs (GEP-1742)');
          }
        }
        if (rule.retry) {
          num(`${kp}.retry.attempts`, rule.retry.attempts, 0, 10);
          (rule.retry.codes ?? []).forEach((code, ci) => num(`${kp}.retry.codes[${ci}]`, code, 400, 599));
          optNum(`${kp}.retry.backoffMs`, rule.retry.backoffMs, 0, 60_000);
        }
        let redirect = false; let rewrite = false;
        (rule.filters ?? []).forEach((f, fi) => {
          const fp = `${kp}.filters[${fi}]`;
          const pathMod = (pp: string, pm: PathModifierConfig | undefined): void => {
            if (pm === undefined) return;
            if (pm.type === 'ReplaceFullPath') normPath(`${pp}.replaceFullPath`, pm.replaceFullPath);
            else if (pm.type === 'ReplacePrefixMatch') {
              normPath(`${pp}.replacePrefixMatch`, pm.replacePrefixMatch);
              if (!hasPrefixMatch || hasOtherPath) add(`${pp}.type`, 'ReplacePrefixMatch needs every match of the rule to be a PathPrefix match');
            } else add(`${pp}.type`, 'must be ReplaceFullPath or ReplacePrefixMatch');
          };
          switch (f?.type) {
            case 'RequestHeaderModifier': modifier(`${fp}.requestHeaderModifier`, f.requestHeaderModifier); break;
            case 'ResponseHeaderModifier': modifier(`${fp}.responseHeaderModifier`, f.responseHeaderModifier); break;
            case 'RequestRedirect': {
              redirect = true;
              const rr = f.requestRedirect ?? {};
              if (rr.scheme !== undefined && rr.scheme !== 'http' && rr.scheme !== 'https') add(`${fp}.requestRedirect.scheme`, 'must be http or https');
              if (rr.hostname !== undefined && !normalizeHostname(rr.hostname)) add(`${fp}.requestRedirect.hostname`, 'must be a lower-case DNS name');
              optNum(`${fp}.requestRedirect.port`, rr.port, 1, 65535);
              if (rr.statusCode !== undefined && !REDIRECT_CODES.has(rr.statusCode)) add(`${fp}.requestRedirect.statusCode`, 'must be 301, 302, 303, 307 or 308');
              pathMod(`${fp}.requestRedirect.path`, rr.path);
              break;
            }
            case 'URLRewrite': {
              rewrite = true;
              const uw = f.urlRewrite ?? {};
              if (uw.hostname !== undefined && !normalizeHostname(uw.hostname)) add(`${fp}.urlRewrite.hostname`, 'must be a lower-case DNS name');
              pathMod(`${fp}.urlRewrite.path`, uw.path);
              break;
            }
            case 'RequestMirror':
              backendRef(`${fp}.requestMirror.backend`, f.requestMirror?.backend);
              optNum(`${fp}.requestMirror.percent`, f.requestMirror?.percent, 0, 100, false);
              break;
            default: add(`${fp}.type`, `unknown filter type ${JSON.stringify((f as { type?: unknown })?.type)}`);
          }
        });
        if (redirect && rewrite) add(`${kp}.filters`, 'RequestRedirect and URLRewrite cannot be used together (Gateway API)');
        if (redirect && (rule.backendRefs?.length ?? 0) > 0) add(`${kp}.backendRefs`, 'a rule with RequestRedirect must not have backendRefs');
      });
    });
  });

  (c.authorization ?? []).forEach((a, ai) => {
    const p = `authorization[${ai}]`;
    name(`${p}.name`, a?.name);
    if (!['ALLOW', 'DENY', 'AUDIT'].includes(a?.action)) add(`${p}.action`, 'must be ALLOW, DENY or AUDIT');
    (a?.targetServices ?? []).forEach((t, ti) => { if (!serviceNames.has(t)) add(`${p}.targetServices[${ti}]`, `names service ${JSON.stringify(t)} which is not in services`); });
    if (!Array.isArray(a?.rules)) { add(`${p}.rules`, 'must be an array'); return; }
    a.rules.forEach((r, ri) => {
      (r.from ?? []).forEach((f, fi) => {
        (f.spiffeIds ?? []).forEach((id, ii) => { if (typeof id !== 'string' || !/^spiffe:\/\/[a-z0-9.\-_]+\/[\x21-\x7e]+$/.test(id)) add(`${p}.rules[${ri}].from[${fi}].spiffeIds[${ii}]`, 'must be a spiffe://trust-domain/path ID'); });
        (f.serviceAccounts ?? []).forEach((sa, ii) => { if (typeof sa !== 'string' || !/^[^/]+\/[^/]+$/.test(sa)) add(`${p}.rules[${ri}].from[${fi}].serviceAccounts[${ii}]`, 'must be "namespace/name"'); });
      });
      (r.to ?? []).forEach((t, ti) => {
        (t.ports ?? []).forEach((port, pi) => num(`${p}.rules[${ri}].to[${ti}].ports[${pi}]`, port, 1, 65535));
        (t.methods ?? []).forEach((m, mi) => { if (typeof m !== 'string' || !/^[A-Z]+$/.test(m)) add(`${p}.rules[${ri}].to[${ti}].methods[${mi}]`, 'must be an upper-case method'); });
        (t.paths ?? []).forEach((pm, pi) => {
          const pp = `${p}.rules[${ri}].to[${ti}].paths[${pi}]`;
          if (pm && 'exact' in pm) normPath(`${pp}.exact`, pm.exact);
          else if (pm && 'prefix' in pm) normPath(`${pp}.prefix`, pm.prefix);
          else add(pp, 'must be {exact} or {prefix}');
        });
        (t.hosts ?? []).forEach((h, hi) => { if (!normalizeHostname(h)) add(`${p}.rules[${ri}].to[${ti}].hosts[${hi}]`, 'must be a lower-case host without port'); });
      });
    });
  });
  const lim = c.limits ?? {};
  optNum('limits.maxHeaderBytes', lim.maxHeaderBytes, 1024, 1024 * 1024);
  optNum('limits.maxHeaderCount', lim.maxHeaderCount, 8, 10_000);
  optNum('limits.maxBufferedBodyBytes', lim.maxBufferedBodyBytes, 0, 64 * 1024 * 1024);
  if (lim.headersWithUnderscores !== undefined && !['reject', 'drop', 'allow'].includes(lim.headersWithUnderscores)) add('limits.headersWithUnderscores', 'must be reject, drop or allow');
  optNum('limits.http2MaxConcurrentStreams', lim.http2MaxConcurrentStreams, 1, 10_000);
  optNum('limits.http2MaxResetsPerWindow', lim.http2MaxResetsPerWindow, 1, 1e6);
  optNum('limits.http2ResetWindowMs', lim.http2ResetWindowMs, 1, MAX_DURATION_MS);
  optNum('limits.downstreamIdleTimeoutMs', lim.downstreamIdleTimeoutMs, 1, MAX_DURATION_MS);
  optNum('limits.sniffTimeoutMs', lim.sniffTimeoutMs, 1, 60_000);
  optNum('limits.requestHeadersTimeoutMs', lim.requestHeadersTimeoutMs, 100, 600_000);
  optNum('limits.requestBodyIdleTimeoutMs', lim.requestBodyIdleTimeoutMs, 100, 3_600_000);
  optNum('limits.maxEventLoopLagMs', lim.maxEventLoopLagMs, 10, 60_000);
  optNum('limits.maxInFlightRequests', lim.maxInFlightRequests, 1, 1_000_000);
  return issues;
}

/** Whether `h` is a lower-case DNS name or IP literal usable as a host. */
function normalizeHostname(h: unknown): boolean {
  return typeof h === 'string' && h.length <= 253 && (isIP(h) !== 0 || /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/.test(h));
}
