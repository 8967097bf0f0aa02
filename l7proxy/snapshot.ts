/** A validated config compiled into lookup tables (the immutable snapshot requests read), plus live backend state. */
import type { AuthzPolicy } from './authz.ts';
import { endpointKey, type EndpointState } from './balance.ts';
import { computeLimits, validateConfig, type BackendConfig, type EffectiveLimits, type ProxyConfig, type ServiceConfig } from './config.ts';
import { ProxyConfigError } from './errors.ts';
import { DEFAULT_RETRY_BUDGET, LocalRateLimiter, RetryBudget } from './resilience.ts';
import { computeRouteTable, type RouteCandidate } from './route.ts';

/** A destination with its route table and the authorization policies that apply to it. */
export type CompiledService = {
  config: ServiceConfig;
  /** Routes in precedence order; empty means "everything to defaultBackend". */
  routes: RouteCandidate[];
  policies: AuthzPolicy[];
};

/** What one request reads: never mutated, replaced whole by `applyConfig`. */
export type ProxySnapshot = {
  version: string;
  limits: EffectiveLimits;
  /** Keyed by `ip:port` of the original destination. */
  services: Map<string, CompiledService>;
  backends: Map<string, BackendConfig>;
};

/** Validate and compile, or throw ProxyConfigError listing every issue. */
export function compileSnapshot(config: ProxyConfig): ProxySnapshot {
  const issues = validateConfig(config);
  if (issues.length > 0) throw new ProxyConfigError(issues);
  const policies: (AuthzPolicy & { targets: string[] })[] = (config.authorization ?? []).map((p) => ({
    name: p.name,
    action: p.action,
    targets: p.targetServices ?? [],
    rules: p.rules.map((r) => ({ from: r.from, to: r.to })),
  }));
  const services = new Map<string, CompiledService>();
  for (const s of config.services) {
    const compiled: CompiledService = {
      config: s,
      routes: computeRouteTable(s.routes ?? []),
      policies: policies.filter((p) => p.targets.length === 0 || p.targets.includes(s.name)),
    };
    for (const a of s.addresses) services.set(endpointKey(a.ip, a.port), compiled);
  }
  return {
    version: config.version,
    limits: computeLimits(config),
    services,
    backends: new Map(config.backends.map((b) => [b.name, b])),
  };
}

/** Live state of one backend: endpoints with their health, balancer cursor, in-flight count, budget, limiter. */
export type BackendState = {
  config: BackendConfig;
  endpoints: EndpointState[];
  cursor: number;
  /** Requests admitted and not finished (circuit breaker). */
  inflight: number;
  budget: RetryBudget;
  limiter: LocalRateLimiter | undefined;
};

/**
 * A backend's state whose retry budget is made on the first request. Why: a budget is two 10-slot Float64Arrays
 * (~1 KB with their ArrayBuffers and backing stores); a node with 10,000 services, most of them idle on any one
 * node, carried ~10 MB of budgets nobody read.
 */
class LazyBackendState implements BackendState {
  config: BackendConfig;
  endpoints: EndpointState[];
  cursor = 0;
  inflight = 0;
  limiter: LocalRateLimiter | undefined;
  #budget: RetryBudget | undefined;

  constructor(config: BackendConfig, endpoints: EndpointState[], limiter: LocalRateLimiter | undefined) {
    this.config = config;
    this.endpoints = endpoints;
    this.limiter = limiter;
  }

  get budget(): RetryBudget {
    return (this.#budget ??= new RetryBudget(this.config.trafficPolicy?.retryBudget ?? DEFAULT_RETRY_BUDGET));
  }

  set budget(b: RetryBudget) { this.#budget = b; }

  /** The budget if one was made; undefined while no request used this backend. */
  get budgetIfMade(): RetryBudget | undefined { return this.#budget; }

  /** Forget the budget: the next request makes a fresh one from the current policy. */
  resetBudget(): void { this.#budget = undefined; }
}

/**
 * Carry live state into a new snapshot: a backend keeps its state object (in-flight requests still hold it) and
 * each surviving endpoint its health; the budget or limiter starts fresh only when its policy changed.
 */
export function reconcileBackendStates(prev: ReadonlyMap<string, BackendState>, snapshot: ProxySnapshot): Map<string, BackendState> {
  const next = new Map<string, BackendState>();
  for (const [name, cfg] of snapshot.backends) {
    const old = prev.get(name);
    const oldEps = new Map((old?.endpoints ?? []).map((e) => [e.key, e]));
    const endpoints = cfg.endpoints.map((e): EndpointState => {
      const key = endpointKey(e.ip, e.port);
      const o = oldEps.get(key);
      if (o) { o.ready = e.ready; o.nodeName = e.nodeName; return o; }
      return { key, ip: e.ip, port: e.port, ready: e.ready, nodeName: e.nodeName, inflight: 0, consecutive5xx: 0, ejectedUntilMs: 0, ejections: 0 };
    });
    const tp = cfg.trafficPolicy;
    const samePolicy = (k: 'retryBudget' | 'rateLimit'): boolean => JSON.stringify(old?.config.trafficPolicy?.[k]) === JSON.stringify(tp?.[k]);
    const limiter = tp?.rateLimit ? (old?.limiter && samePolicy('rateLimit') ? old.limiter : new LocalRateLimiter(tp.rateLimit)) : undefined;
    if (old) {
      // A changed budget policy starts fresh (made lazily from the new policy); an unchanged one keeps its window.
      const keepBudget = samePolicy('retryBudget');
      old.config = cfg; old.endpoints = endpoints; old.limiter = limiter;
      if (!keepBudget) {
        if (old instanceof LazyBackendState) old.resetBudget();
        else old.budget = new RetryBudget(tp?.retryBudget ?? DEFAULT_RETRY_BUDGET);
      }
      next.set(name, old);
    } else {
      next.set(name, new LazyBackendState(cfg, endpoints, limiter));
    }
  }
  return next;
}
