/** Authorization: a pure decision over compiled ALLOW/DENY/AUDIT policies, taken on exactly what will be forwarded. */
// Order as Istio's: any DENY match denies; AUDIT matches are reported and never change the verdict; when no ALLOW
// policy applies the request is allowed, else it needs an ALLOW match (a selecting ALLOW turns on default-deny).
// At L4 (opaque TCP, no method or path) a rule naming HTTP fields cannot be evaluated: an ALLOW rule with them
// never matches and a DENY rule with them matches on its other fields, so missing information only narrows access.
import { pathHasPrefix } from './normalize.ts';

/** The request as it will be forwarded (normalized once); method and path are absent for opaque TCP. */
export type AuthzRequest = {
  method?: string;
  normalizedPath?: string;
  /** Lower-cased host without port. */
  host?: string;
  /** Destination port the client dialled. */
  port: number;
};

/** Who is asking: from the mTLS peer certificate, or the node's own record of a local pod. */
export type AuthzPeer = {
  spiffeId?: string;
  namespace?: string;
  serviceAccount?: string;
  /** False for plaintext peers (PERMISSIVE) and unknown sources: identity conditions never match them. */
  authenticated: boolean;
};

/** A path condition: exact string, or prefix on a segment boundary (see `pathHasPrefix`). */
export type AuthzPathMatch = { exact: string } | { prefix: string };

/** One source condition: every given field must hold (values within a field are alternatives). */
export type AuthzSource = {
  spiffeIds?: readonly string[];
  namespaces?: readonly string[];
  /** `namespace/name` of service accounts. */
  serviceAccounts?: readonly string[];
};

/** One operation condition: every given field must hold (values within a field are alternatives). */
export type AuthzOperation = {
  ports?: readonly number[];
  /** Upper-case methods. */
  methods?: readonly string[];
  paths?: readonly AuthzPathMatch[];
  /** Lower-case hosts without port. */
  hosts?: readonly string[];
};

/** A rule matches when any `from` and any `to` match; an absent or empty list matches anything. */
export type AuthzRule = { from?: readonly AuthzSource[]; to?: readonly AuthzOperation[] };

/** A compiled policy; a policy with no rules matches nothing (an ALLOW with no rules allows nothing). */
export type AuthzPolicy = {
  /** `namespace/name`, reported in verdicts and logs. */
  name: string;
  action: 'ALLOW' | 'DENY' | 'AUDIT';
  rules: readonly AuthzRule[];
};

/** The decision with the policy and rule index that made it (absent when no policy decided). */
export type AuthzVerdict = {
  verdict: 'allow' | 'deny';
  policy?: string;
  rule?: number;
  /** AUDIT policies that matched, as `name#rule`. */
  audit: string[];
  /** Why, in a few words, for logs and the 403 body. */
  reason: string;
};

/** Shared empty audit list of the no-policy verdict (frozen: a verdict is read, never edited). */
const NO_AUDIT: string[] = Object.freeze([]) as unknown as string[];

/** Decide on `request` from `peer` under the policies that apply to the destination. */
export function authorize(request: AuthzRequest, peer: AuthzPeer, policies: readonly AuthzPolicy[]): AuthzVerdict {
  if (policies.length === 0) return { verdict: 'allow', audit: NO_AUDIT, reason: 'no policy applies' };
  const audit: string[] = [];
  for (const p of policies) {
    if (p.action !== 'AUDIT') continue;
    const r = firstMatch(p, request, peer, 'ALLOW');
    if (r >= 0) audit.push(`${p.name}#${r}`);
  }
  for (const p of policies) {
    if (p.action !== 'DENY') continue;
    const r = firstMatch(p, request, peer, 'DENY');
    if (r >= 0) return { verdict: 'deny', policy: p.name, rule: r, audit, reason: `denied by ${p.name} rule ${r}` };
  }
  let anyAllow = false;
  for (const p of policies) {
    if (p.action !== 'ALLOW') continue;
    anyAllow = true;
    const r = firstMatch(p, request, peer, 'ALLOW');
    if (r >= 0) return { verdict: 'allow', policy: p.name, rule: r, audit, reason: `allowed by ${p.name} rule ${r}` };
  }
  if (anyAllow) return { verdict: 'deny', audit, reason: 'no ALLOW policy matched (default deny once an ALLOW policy applies)' };
  return { verdict: 'allow', audit, reason: 'no policy applies' };
}

/** Index of the first matching rule, or -1. `mode` says how to treat HTTP fields the request lacks. */
function firstMatch(p: AuthzPolicy, req: AuthzRequest, peer: AuthzPeer, mode: 'ALLOW' | 'DENY'): number {
  for (let i = 0; i < p.rules.length; i++) {
    const rule = p.rules[i]!;
    const fromOk = !rule.from || rule.from.length === 0 || rule.from.some((s) => sourceMatches(s, peer));
    if (!fromOk) continue;
    const toOk = !rule.to || rule.to.length === 0 || rule.to.some((o) => operationMatches(o, req, mode));
    if (toOk) return i;
  }
  return -1;
}

function sourceMatches(s: AuthzSource, peer: AuthzPeer): boolean {
  const hasIdentityField = (s.spiffeIds?.length ?? 0) + (s.namespaces?.length ?? 0) + (s.serviceAccounts?.length ?? 0) > 0;
  if (!hasIdentityField) return true;
  if (!peer.authenticated) return false;
  if (s.spiffeIds?.length && (peer.spiffeId === undefined || !s.spiffeIds.includes(peer.spiffeId))) return false;
  if (s.namespaces?.length && (peer.namespace === undefined || !s.namespaces.includes(peer.namespace))) return false;
  if (s.serviceAccounts?.length) {
    if (peer.namespace === undefined || peer.serviceAccount === undefined) return false;
    if (!s.serviceAccounts.includes(`${peer.namespace}/${peer.serviceAccount}`)) return false;
  }
  return true;
}

function operationMatches(o: AuthzOperation, req: AuthzRequest, mode: 'ALLOW' | 'DENY'): boolean {
  if (o.ports?.length && !o.ports.includes(req.port)) return false;
  // Missing HTTP information (L4): ALLOW cannot be proven, DENY is assumed to apply.
  const unknown = (): boolean => mode === 'DENY';
  if (o.methods?.length) {
    if (req.method === undefined) { if (!unknown()) return false; } else if (!o.methods.includes(req.method)) return false;
  }
  if (o.hosts?.length) {
    if (req.host === undefined) { if (!unknown()) return false; } else if (!o.hosts.includes(req.host)) return false;
  }
  if (o.paths?.length) {
    if (req.normalizedPath === undefined) { if (!unknown()) return false; } else if (!o.paths.some((m) => pathMatches(m, req.normalizedPath!, mode))) return false;
  }
  return true;
}

/**
 * Exact is string equality on the normalized path; prefix is segment-boundary. Whether `;` is a boundary depends
 * on which reading narrows access: servlet containers serve `/admin;x/y` as `/admin/y`, nginx as a sibling of
 * `/admin`. A DENY prefix covers both (`;` is a boundary); an ALLOW prefix grants neither (`/api/` does not allow
 * `/api;x/y`, which nginx would serve from outside `/api`).
 */
export function pathMatches(m: AuthzPathMatch, path: string, mode: 'ALLOW' | 'DENY' = 'DENY'): boolean {
  return 'exact' in m ? path === m.exact : pathHasPrefix(path, m.prefix, mode === 'DENY');
}
