/**
 * Clock and version skew, for `kubectl mesh check` (pure: the readings come from check.ts).
 *
 * Clocks: every HTTP answer carries a `Date` header (whole seconds). From when this machine sent the request and
 * when the answer arrived, the remote clock's offset from ours is known within ±(RTT/2 + 0.5 s); the skew between
 * an agent's clock and the API server's is the difference of their offsets, within the sum of both bounds. Only
 * skew beyond the bound is reported. The API server is the reference: Lease renewals, certificate validity and
 * the operator's timestamps are all judged against it.
 *
 * Versions: the supported skew (docs/upgrade.md) is what a rolling upgrade goes through, CRDs → operator →
 * agents: the operator and the agents share a major version and an agent is at most one minor behind the
 * operator, never ahead; the CLI is read-only and tolerates one minor either way.
 */
import type { CheckResult } from './check.ts';

/** One timed request: our clock before and after it, and the remote `Date` header. */
export type ClockReading = { sentMs: number; receivedMs: number; date: string | undefined };

/** Above this the clocks are worth fixing (ages and Lease freshness read wrong), in ms. */
export const CLOCK_SKEW_WARN_MS = 5_000;
/**
 * Above this a certificate the CA just issued is "not yet valid" on a peer whose clock is behind: the CA backdates
 * notBefore by 60 s (operator/ca/plan-validity.ts DEFAULT_BACKDATE_MS) and no more.
 */
export const CLOCK_SKEW_FAIL_MS = 60_000;

/** The remote clock minus ours, and how far off that estimate can be; undefined without a usable Date. */
export function computeClockOffset(r: ClockReading): { offsetMs: number; uncertaintyMs: number } | undefined {
  if (!r.date) return undefined;
  const remote = Date.parse(r.date);
  if (Number.isNaN(remote) || r.receivedMs < r.sentMs) return undefined;
  // The header is truncated to the second: the remote instant lies in [remote, remote + 1000).
  const midpoint = (r.sentMs + r.receivedMs) / 2;
  return { offsetMs: remote + 500 - midpoint, uncertaintyMs: (r.receivedMs - r.sentMs) / 2 + 500 };
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** Checks each agent's clock against the API server's, and this machine's (warn only: it only skews what we print). */
export function computeClockChecks(api: ClockReading | undefined, agents: readonly { node: string; clock?: ClockReading }[]): CheckResult[] {
  const group = 'nodemesh-clocks';
  const ref = api ? computeClockOffset(api) : undefined;
  if (!ref) return [{ group, name: 'clocks agree with the API server', status: 'skip', detail: 'the API server sent no Date header' }];
  const out: CheckResult[] = [];
  const here = Math.abs(ref.offsetMs) - ref.uncertaintyMs;
  out.push(here > CLOCK_SKEW_WARN_MS
    ? { group, name: 'this machine\'s clock agrees with the API server', status: 'warn', detail: `off by ${seconds(Math.abs(ref.offsetMs))} (±${seconds(ref.uncertaintyMs)})`, hint: 'ages and expiry printed here are off by as much; sync this machine with NTP' }
    : { group, name: 'this machine\'s clock agrees with the API server', status: 'pass', detail: `within ${seconds(Math.max(CLOCK_SKEW_WARN_MS, ref.uncertaintyMs))}` });
  const measured = agents.flatMap((a) => {
    const o = a.clock ? computeClockOffset(a.clock) : undefined;
    return o ? [{ node: a.node, skewMs: o.offsetMs - ref.offsetMs, boundMs: o.uncertaintyMs + ref.uncertaintyMs }] : [];
  });
  if (measured.length === 0) {
    out.push({ group, name: 'agent clocks agree with the API server', status: 'skip', detail: 'no agent answered with a Date header' });
    return out;
  }
  const bad: CheckResult[] = [];
  for (const m of measured) {
    const beyond = Math.abs(m.skewMs) - m.boundMs;
    const direction = m.skewMs > 0 ? 'ahead of' : 'behind';
    const detail = `${m.node} is ${seconds(Math.abs(m.skewMs))} ${direction} the API server (±${seconds(m.boundMs)})`;
    if (beyond > CLOCK_SKEW_FAIL_MS) {
      bad.push({ group, name: `clock of ${m.node} is within ${CLOCK_SKEW_FAIL_MS / 1000}s of the API server`, status: 'fail', detail,
        hint: `beyond the CA's ${CLOCK_SKEW_FAIL_MS / 1000}s backdating, fresh workload certificates are not yet valid (or already expired) on one side and mTLS fails: sync the node with NTP (chronyc tracking / timedatectl)` });
    } else if (beyond > CLOCK_SKEW_WARN_MS) {
      bad.push({ group, name: `clock of ${m.node} is within ${CLOCK_SKEW_WARN_MS / 1000}s of the API server`, status: 'warn', detail,
        hint: 'Lease freshness and certificate rotation are judged on the API server\'s clock: sync the node with NTP before the skew reaches 60s' });
    }
  }
  if (bad.length === 0) out.push({ group, name: 'agent clocks agree with the API server', status: 'pass', detail: `${measured.length} agent(s) within ${seconds(Math.max(CLOCK_SKEW_WARN_MS, ...measured.map((m) => m.boundMs)))}` });
  return [...out, ...bad];
}

/** A release version, `v1.2.3` or `1.2.3-rc.1` (build and pre-release parts are kept for display only). */
export type Version = { major: number; minor: number; patch: number; text: string };

export function parseVersion(text: string | undefined): Version | undefined {
  if (!text) return undefined;
  const m = /^v?(\d+)\.(\d+)\.(\d+)(?:[-+].*)?$/.exec(text.trim());
  return m ? { major: Number(m[1]), minor: Number(m[2]), patch: Number(m[3]), text: text.trim() } : undefined;
}

/** What the version checks compare: this CLI, the operator (when found) and each agent that answered. */
export type VersionFacts = {
  cli: string;
  operator?: { version?: string; source: string; error?: string };
  agents: readonly { node: string; version?: string }[];
};

const minorDistance = (a: Version, b: Version): number => (a.major === b.major ? a.minor - b.minor : Number.POSITIVE_INFINITY * Math.sign(a.major - b.major));

/** Version skew: agents vs operator (the supported window), agents among themselves, CLI vs the cluster. */
export function computeVersionChecks(f: VersionFacts): CheckResult[] {
  const group = 'nodemesh-versions';
  const out: CheckResult[] = [];
  const cli = parseVersion(f.cli);
  const op = parseVersion(f.operator?.version);
  if (!f.operator || f.operator.version === undefined) {
    out.push({ group, name: 'operator version is known', status: 'skip', detail: f.operator?.error ?? 'no operator Deployment and no --operator-status-url' });
  } else if (!op) {
    out.push({ group, name: 'operator version is known', status: 'warn', detail: `${f.operator.source} says "${f.operator.version}", not a release version`, hint: 'a development build: skew cannot be judged' });
  }
  const agentVersions = f.agents.filter((a) => a.version !== undefined);
  const byVersion = new Map<string, string[]>();
  for (const a of agentVersions) byVersion.set(a.version!, [...(byVersion.get(a.version!) ?? []), a.node]);
  if (agentVersions.length === 0) out.push({ group, name: 'agent versions are known', status: 'skip', detail: 'no agent reported its version' });
  else if (byVersion.size > 1) {
    out.push({ group, name: 'agents run one version', status: 'warn', detail: [...byVersion].map(([v, nodes]) => `${v} on ${nodes.length} node(s)`).join(', '),
      hint: 'expected only while the DaemonSet rolls: kubectl -n nodemesh-system rollout status ds/nodemesh-agent' });
  } else {
    out.push({ group, name: 'agents run one version', status: 'pass', detail: `${[...byVersion.keys()][0]} on ${agentVersions.length} node(s)` });
  }
  if (op) {
    const outside: string[] = [];
    for (const [v, nodes] of byVersion) {
      const av = parseVersion(v);
      if (!av) { outside.push(`${v} (not a release version) on ${nodes.join(', ')}`); continue; }
      const d = minorDistance(op, av);
      if (!(d === 0 || d === 1)) outside.push(`${v} on ${nodes.join(', ')}`);
    }
    if (outside.length > 0) {
      out.push({ group, name: `agents are within the supported skew of operator ${op.text}`, status: 'fail', detail: `outside: ${outside.join('; ')}`,
        hint: 'an agent may lag the operator by one minor version, never lead it, and must share its major: upgrade in the order CRDs → operator → agents (docs/upgrade.md)' });
    } else if (byVersion.size > 0) {
      out.push({ group, name: `agents are within the supported skew of operator ${op.text}`, status: 'pass', detail: 'same major; agents at most one minor behind' });
    }
  }
  const reference = op ?? parseVersion(agentVersions[0]?.version);
  if (!cli) out.push({ group, name: 'kubectl-mesh version is known', status: 'warn', detail: `"${f.cli}"` });
  else if (reference) {
    const d = Math.abs(minorDistance(cli, reference));
    out.push(d <= 1
      ? { group, name: `kubectl-mesh ${cli.text} matches the cluster`, status: 'pass', detail: `cluster ${reference.text}` }
      : { group, name: `kubectl-mesh ${cli.text} matches the cluster`, status: 'warn', detail: `cluster runs ${reference.text}`, hint: 'the plugin reads fields of its own release; use the kubectl-mesh of the installed release (one minor either way is supported)' });
  }
  return out;
}
