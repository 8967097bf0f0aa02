/**
 * `kubectl mesh check`: graded checks like `linkerd check`, grouped, each with a hint when it fails. What the
 * API server alone can tell: CRDs installed at the served versions we need, the operator's Lease held and
 * fresh, a complete NodeState set per Node, the mesh CA valid for at least 60 days. Agent-side checks
 * (kernel version and BPF, cgroup2, bpffs) come from each agent's status when it is reachable; clock skew from the
 * Date headers of the API server's and the agents' answers; version skew from the agents, the operator (its
 * status URL, else its Deployment) and this plugin (cli/mesh/skew.ts).
 */
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { V1CustomResourceDefinition, V1Deployment, V1Lease, V1Node, V1Secret } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { CRD_DIRECTORY, CRD_FILES, DEFAULT_MESH_NAMESPACE, NodeStateResource } from '../../crds/index.ts';
import { AGENT_DAEMONSET, agentReady, discoverAgentEndpoints, fetchAgentStatuses, type AgentFetch, type AgentStatusResult } from './agent-status.ts';
import type { ClusterReader, KubeObject } from './kube.ts';
import { groupNodeStates } from './mesh-objects.ts';
import { formatAge, formatJson, toMillis, type OutputFormat } from './output.ts';
import { computeClockChecks, computeVersionChecks, parseVersion, type ClockReading, type VersionFacts } from './skew.ts';

/** The operator's leader-election Lease (namespace/name). */
export const OPERATOR_LEASE = { namespace: DEFAULT_MESH_NAMESPACE, name: 'nodemesh-operator' } as const;
/** The mesh CA Secret (namespace/name). */
export const CA_SECRET = { namespace: DEFAULT_MESH_NAMESPACE, name: 'nodemesh-ca' } as const;
/** Certificates closer than this to expiry fail the check (as linkerd's "valid for at least 60 days"). */
export const MIN_CA_VALIDITY_DAYS = 60;
/**
 * The oldest kernel the datapath loads on: bpf_set_retval in cgroup/connect4 (5.18) is the newest thing it needs
 * (docs/supported-versions.md lists each feature and the release that brought it).
 */
export const MIN_KERNEL = { major: 5, minor: 18 } as const;
/** The operator's Deployment (deploy/operator/deployment.yaml), read for its version. */
export const OPERATOR_DEPLOYMENT = { namespace: DEFAULT_MESH_NAMESPACE, name: 'nodemesh-operator' } as const;

const DAY_MS = 86_400_000;

/** One check's outcome. */
export type CheckResult = { group: string; name: string; status: 'pass' | 'warn' | 'fail' | 'skip'; detail?: string; hint?: string };

/** A CRD we need: its name and the versions that must be served. */
export type RequiredCrd = { name: string; versions: string[] };

/** The CRDs in crds/ and the versions each declares served. */
export function loadRequiredCrds(): RequiredCrd[] {
  return CRD_FILES.map((f) => {
    const doc = parseYaml(readFileSync(join(CRD_DIRECTORY, f), 'utf8')) as { metadata: { name: string }; spec: { versions: { name: string; served?: boolean }[] } };
    return { name: doc.metadata.name, versions: doc.spec.versions.filter((v) => v.served !== false).map((v) => v.name) };
  });
}

/** Everything `check` decides on, as read from the cluster. */
export type CheckFacts = {
  now: number;
  serverVersion?: string;
  apiError?: string;
  requiredCrds: RequiredCrd[];
  crds?: V1CustomResourceDefinition[];
  lease?: V1Lease;
  nodes?: V1Node[];
  nodeStates?: KubeObject[];
  caSecret?: V1Secret | 'missing';
  agents?: AgentStatusResult[];
  /** The timed GET /version (clock-skew reference). */
  apiClock?: ClockReading;
  /** This plugin's version and the operator's, when found (version skew). */
  cliVersion?: string;
  operatorVersion?: VersionFacts['operator'];
};

/** `6.18.0-rc1`, `5.15.0-91-generic` → major and minor; undefined when unreadable. */
export function parseKernelRelease(release: string | undefined): { major: number; minor: number } | undefined {
  const m = /^(\d+)\.(\d+)/.exec(release ?? '');
  return m ? { major: Number(m[1]), minor: Number(m[2]) } : undefined;
}

/**
 * The operator's version from its Deployment: the image tag when it is a release version (what actually runs,
 * also after `kustomize edit set image`), else the `app.kubernetes.io/version` label.
 */
export function operatorVersionOfDeployment(d: V1Deployment): string | undefined {
  const image = d.spec?.template?.spec?.containers?.[0]?.image ?? '';
  const tag = /:([^/:@]+)(@.*)?$/.exec(image)?.[1];
  if (parseVersion(tag)) return tag;
  return d.metadata?.labels?.['app.kubernetes.io/version'];
}

/** Splits PEM text into certificates; unparsable blocks are reported by label. */
function parsePemBundle(pem: string, label: string): { label: string; cert?: X509Certificate; error?: string }[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) return [{ label, error: 'no PEM certificate in it' }];
  return blocks.map((b, i) => {
    const l = blocks.length > 1 ? `${label}[${i}]` : label;
    try {
      return { label: l, cert: new X509Certificate(b) };
    } catch (e) {
      return { label: l, error: (e as Error).message };
    }
  });
}

function secretText(s: V1Secret, key: string): string | undefined {
  const v = s.data?.[key];
  return v === undefined ? undefined : Buffer.from(v, 'base64').toString('utf8');
}

/** Decides every check from the facts (pure). */
export function computeChecks(f: CheckFacts): CheckResult[] {
  const out: CheckResult[] = [];
  const add = (r: CheckResult): void => {
    out.push(r);
  };

  // kubernetes-api
  if (f.apiError) {
    add({ group: 'kubernetes-api', name: 'can reach the API server', status: 'fail', detail: f.apiError, hint: 'check the kubeconfig (--kubeconfig, KUBECONFIG) and that the API server is up' });
    return out;
  }
  add({ group: 'kubernetes-api', name: 'can reach the API server', status: 'pass', ...(f.serverVersion ? { detail: `server ${f.serverVersion}` } : {}) });

  // CRDs
  for (const req of f.requiredCrds) {
    const crd = f.crds?.find((c) => c.metadata?.name === req.name);
    if (!crd) {
      const upstream = req.name.endsWith('.gateway.networking.k8s.io');
      add({
        group: 'nodemesh-crds', name: `${req.name} is installed`, status: 'fail', detail: `CustomResourceDefinition ${req.name} not found`,
        hint: upstream ? 'install the Gateway API CRDs v1.2+, the experimental channel for route retries (docs/install.md step 2)' : 'kubectl apply -k deploy/ (or kubectl apply -f crds/)',
      });
      continue;
    }
    const served = (crd.spec?.versions ?? []).filter((v) => v.served).map((v) => v.name);
    const missing = req.versions.filter((v) => !served.includes(v));
    if (missing.length > 0) {
      add({ group: 'nodemesh-crds', name: `${req.name} serves ${req.versions.join(', ')}`, status: 'fail', detail: `served: ${served.join(', ') || 'none'}; missing: ${missing.join(', ')}`, hint: 'the installed CRD is older or newer than this nodemesh: re-apply the CRDs of this release' });
    } else {
      add({ group: 'nodemesh-crds', name: `${req.name} is installed`, status: 'pass', detail: `serves ${served.join(', ')}` });
    }
  }

  // operator
  const lease = f.lease;
  const leaseName = `Lease ${OPERATOR_LEASE.namespace}/${OPERATOR_LEASE.name}`;
  if (!lease) {
    add({ group: 'nodemesh-operator', name: 'operator holds its leader Lease', status: 'fail', detail: `${leaseName} not found`, hint: `is the operator running? kubectl -n ${OPERATOR_LEASE.namespace} get deploy nodemesh-operator` });
  } else {
    const holder = lease.spec?.holderIdentity ?? '';
    const renew = toMillis(lease.spec?.renewTime);
    const durMs = (lease.spec?.leaseDurationSeconds ?? 15) * 1000;
    if (!holder) add({ group: 'nodemesh-operator', name: 'operator holds its leader Lease', status: 'fail', detail: `${leaseName} has no holder (released)`, hint: 'no operator replica is leading: check the operator pods and their logs' });
    else if (renew === undefined || f.now - renew > durMs) {
      add({ group: 'nodemesh-operator', name: 'operator Lease is fresh', status: 'fail', detail: `held by ${holder}, last renewed ${renew === undefined ? 'never' : `${formatAge(f.now - renew)} ago`} (lease ${durMs / 1000}s)`, hint: 'the leader stopped renewing: is it stuck or partitioned from the API server? (or the clocks are skewed)' });
    } else {
      add({ group: 'nodemesh-operator', name: 'operator Lease is held and fresh', status: 'pass', detail: `leader ${holder}` });
    }
  }

  // NodeStates
  if (f.nodes && f.nodeStates) {
    const sets = groupNodeStates(f.nodeStates);
    const nodeNames = f.nodes.map((n) => n.metadata?.name ?? '').filter((n) => n !== '').sort();
    const missing = nodeNames.filter((n) => !sets.has(n));
    const partial = nodeNames.filter((n) => sets.has(n) && !sets.get(n)!.complete);
    if (missing.length === 0 && partial.length === 0) {
      add({ group: 'nodemesh-nodestate', name: 'every Node has a complete NodeState set', status: 'pass', detail: `${nodeNames.length} node(s)` });
    } else {
      if (missing.length > 0) add({ group: 'nodemesh-nodestate', name: 'every Node has a NodeState', status: 'fail', detail: `no NodeState for: ${missing.join(', ')}`, hint: 'the operator writes one per Node (even an empty one): is it leading and healthy?' });
      if (partial.length > 0) add({ group: 'nodemesh-nodestate', name: 'NodeState sets are complete', status: 'fail', detail: `incomplete shard set on: ${partial.map((n) => `${n} (${sets.get(n)!.shards.length}/${sets.get(n)!.count ?? '?'})`).join(', ')}`, hint: 'agents keep the previous state until every shard agrees; a set staying incomplete means the operator failed writing: check its logs' });
    }
    const orphans = [...sets.keys()].filter((n) => !nodeNames.includes(n));
    if (orphans.length > 0) add({ group: 'nodemesh-nodestate', name: 'no NodeState for a missing Node', status: 'warn', detail: `NodeStates for Nodes that do not exist: ${orphans.join(', ')}`, hint: 'the operator deletes them; if they stay, it is not running' });
  }

  // CA
  const caName = `Secret ${CA_SECRET.namespace}/${CA_SECRET.name}`;
  if (f.caSecret === 'missing' || f.caSecret === undefined) {
    add({ group: 'nodemesh-identity', name: 'mesh CA Secret exists', status: 'fail', detail: `${caName} not found`, hint: 'the operator creates it on first start (or supply your own root: ca.crt + ca.key); is the operator running?' });
  } else {
    const certs = [
      ...(secretText(f.caSecret, 'ca.crt') !== undefined ? parsePemBundle(secretText(f.caSecret, 'ca.crt')!, 'root ca.crt') : [{ label: 'root ca.crt', error: 'key ca.crt is missing' }]),
      ...(secretText(f.caSecret, 'intermediate.crt') !== undefined ? parsePemBundle(secretText(f.caSecret, 'intermediate.crt')!, 'intermediate.crt') : []),
    ];
    for (const c of certs) {
      if (!c.cert) {
        add({ group: 'nodemesh-identity', name: `${c.label} is a valid certificate`, status: 'fail', detail: `${caName}: ${c.error}`, hint: 'restore the Secret from backup or supply a root (ca.crt + ca.key)' });
        continue;
      }
      const notAfter = Date.parse(c.cert.validTo);
      const notBefore = Date.parse(c.cert.validFrom);
      const daysLeft = Math.floor((notAfter - f.now) / DAY_MS);
      if (notBefore > f.now) add({ group: 'nodemesh-identity', name: `${c.label} is valid now`, status: 'fail', detail: `not valid before ${new Date(notBefore).toISOString()}`, hint: 'clock skew between this machine and whoever made the CA?' });
      else if (daysLeft < MIN_CA_VALIDITY_DAYS) {
        add({ group: 'nodemesh-identity', name: `${c.label} is valid for at least ${MIN_CA_VALIDITY_DAYS} days`, status: 'fail', detail: notAfter <= f.now ? `expired ${new Date(notAfter).toISOString()}` : `expires ${new Date(notAfter).toISOString()} (${daysLeft} days left)`, hint: 'rotate the CA with overlap (operator/ca/README.md: add root, switch issuer, drop root)' });
      } else {
        add({ group: 'nodemesh-identity', name: `${c.label} is valid for at least ${MIN_CA_VALIDITY_DAYS} days`, status: 'pass', detail: `expires ${new Date(notAfter).toISOString().slice(0, 10)} (${daysLeft} days left)` });
      }
    }
  }

  // agents
  if (!f.agents || f.agents.length === 0) {
    add({ group: 'nodemesh-agents', name: 'agents are ready', status: 'skip', detail: 'no Node to ask' });
  } else {
    const unknown = f.agents.filter((a) => !a.status);
    const notReady = f.agents.filter((a) => a.status && agentReady(a.status) !== true);
    if (unknown.length === f.agents.length) {
      add({ group: 'nodemesh-agents', name: 'agents are ready', status: 'skip', detail: `no agent status reachable (${unknown[0]!.error})` });
    } else {
      if (notReady.length === 0 && unknown.length === 0) add({ group: 'nodemesh-agents', name: 'agents are ready', status: 'pass', detail: `${f.agents.length} agent(s)` });
      for (const a of notReady) add({ group: 'nodemesh-agents', name: `agent on ${a.node} is ready`, status: 'fail', detail: a.status?.reason ?? a.status?.sync?.lastError ?? 'not ready', hint: a.pod ? `kubectl -n ${a.pod.split('/')[0]} logs ${a.pod.split('/')[1]}` : `kubectl -n ${DEFAULT_MESH_NAMESPACE} get pods -l ${AGENT_DAEMONSET.selector} --field-selector spec.nodeName=${a.node}, then kubectl logs that pod` });
      // No endpoint known is a gap in what we can see (skip); an endpoint that does not answer, or a node without an
      // agent pod (its workloads are not meshed), is a warning.
      for (const a of unknown) {
        const missingPod = !a.url && a.via === 'pod-proxy';
        add({
          group: 'nodemesh-agents', name: `agent on ${a.node} answers`, status: a.url || missingPod ? 'warn' : 'skip', detail: a.error,
          ...(missingPod ? { hint: `its workloads are not meshed; kubectl -n ${AGENT_DAEMONSET.namespace} describe ds ${AGENT_DAEMONSET.name} (the events say why ${a.node} has no pod)` } : {}),
        });
      }
      const minKernel = `${MIN_KERNEL.major}.${MIN_KERNEL.minor}`;
      for (const a of f.agents) {
        const k = a.status?.kernel;
        if (!k) continue;
        const rel = parseKernelRelease(k.release);
        const oldKernel = rel !== undefined && (rel.major < MIN_KERNEL.major || (rel.major === MIN_KERNEL.major && rel.minor < MIN_KERNEL.minor));
        const missing = ([['BPF', k.bpf], ['cgroup v2', k.cgroup2], ['bpffs', k.bpffs]] as const).filter(([, ok]) => ok === false).map(([feat]) => feat);
        const present = ([['BPF', k.bpf], ['cgroup v2', k.cgroup2], ['bpffs', k.bpffs]] as const).filter(([, ok]) => ok === true).map(([feat]) => feat);
        if (oldKernel) add({ group: 'nodemesh-agents', name: `${a.node}: kernel ${minKernel} or newer`, status: 'fail', detail: `kernel ${k.release}`, hint: `the datapath needs Linux ${minKernel}+ (bpf_set_retval in cgroup/connect4; see docs/supported-versions.md): upgrade the node's kernel` });
        else if (rel === undefined) add({ group: 'nodemesh-agents', name: `${a.node}: kernel ${minKernel} or newer`, status: 'warn', detail: `kernel release "${k.release ?? ''}" unreadable` });
        for (const feat of missing) {
          add({ group: 'nodemesh-agents', name: `${a.node}: ${feat} available`, status: 'fail', detail: `kernel ${k.release ?? '?'}`, hint: feat === 'bpffs' ? 'mount bpffs at /sys/fs/bpf on the node (mount -t bpf bpf /sys/fs/bpf)' : feat === 'cgroup v2' ? 'boot the node with the unified cgroup2 hierarchy (systemd.unified_cgroup_hierarchy=1)' : `the kernel needs BPF cgroup, sockops and sk_msg programs (${minKernel}+)` });
        }
        if (!oldKernel && rel !== undefined && missing.length === 0) add({ group: 'nodemesh-agents', name: `${a.node}: kernel ${minKernel} or newer${present.length ? `, ${present.join(', ')}` : ''}`, status: 'pass', detail: `kernel ${k.release}` });
      }
    }
  }

  // clocks and versions (only when the API answered: they compare against it)
  out.push(...computeClockChecks(f.apiClock, f.agents ?? []));
  out.push(...computeVersionChecks({ cli: f.cliVersion ?? 'unknown', ...(f.operatorVersion ? { operator: f.operatorVersion } : {}), agents: (f.agents ?? []).map((a) => ({ node: a.node, ...(a.status?.version ? { version: a.status.version } : {}) })) }));
  return out;
}

/** The operator's version: from its status URL when given, else its Deployment. Failures are facts, not throws. */
async function readOperatorVersion(reader: ClusterReader, statusUrl: string | undefined): Promise<VersionFacts['operator']> {
  if (statusUrl) {
    try {
      const res = await fetch(statusUrl, { signal: AbortSignal.timeout(3000), headers: { accept: 'application/json' } });
      if (!res.ok) return { source: statusUrl, error: `${statusUrl} answered ${res.status}` };
      const v = ((await res.json()) as { version?: unknown }).version;
      return typeof v === 'string' ? { version: v, source: statusUrl } : { source: statusUrl, error: `${statusUrl}: no "version" in the answer` };
    } catch (e) {
      return { source: statusUrl, error: `${statusUrl}: ${(e as Error & { cause?: { code?: string } }).cause?.code ?? (e as Error).message}` };
    }
  }
  const where = `Deployment ${OPERATOR_DEPLOYMENT.namespace}/${OPERATOR_DEPLOYMENT.name}`;
  if (!reader.getDeployment) return { source: where, error: 'cannot read Deployments here' };
  try {
    const d = await reader.getDeployment(OPERATOR_DEPLOYMENT.namespace, OPERATOR_DEPLOYMENT.name);
    if (!d) return { source: where, error: `${where} not found (not installed from deploy/? pass --operator-status-url)` };
    const v = operatorVersionOfDeployment(d);
    return v ? { version: v, source: where } : { source: where, error: `${where} has no app.kubernetes.io/version label and no image tag` };
  } catch (e) {
    return { source: where, error: (e as Error).message };
  }
}

const SYMBOL = { pass: '√', warn: '‼', fail: '×', skip: '-' } as const;

/** Renders results as linkerd does: a header per group, a line per check, hints indented, a summary line. */
export function formatChecks(results: readonly CheckResult[], format: OutputFormat): string {
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  if (format === 'json') return formatJson({ success: failed === 0, failed, warnings: warned, checks: results });
  let out = '';
  let group = '';
  for (const r of results) {
    if (r.group !== group) {
      out += `${group === '' ? '' : '\n'}${r.group}\n${'-'.repeat(r.group.length)}\n`;
      group = r.group;
    }
    out += `${SYMBOL[r.status]} ${r.name}${r.detail && r.status === 'pass' ? ` (${r.detail})` : ''}\n`;
    if (r.status !== 'pass' && r.detail) out += `    ${r.detail}\n`;
    if (r.status !== 'pass' && r.hint) out += `    hint: ${r.hint}\n`;
  }
  out += failed === 0 ? `\nStatus check results are ${SYMBOL.pass}${warned ? ` (${warned} warning${warned > 1 ? 's' : ''})` : ''}\n` : `\nStatus check results are ${SYMBOL.fail}: ${failed} check${failed > 1 ? 's' : ''} failed\n`;
  return out;
}

/** Reads the facts and returns the rendered text and whether every check passed. */
export async function runCheck(reader: ClusterReader, opts: { format: OutputFormat; agentEndpoints: ReadonlyMap<string, string>; cliVersion: string; operatorStatusUrl?: string; now?: number; fetchImpl?: AgentFetch }): Promise<{ text: string; ok: boolean }> {
  const facts: CheckFacts = { now: opts.now ?? Date.now(), requiredCrds: loadRequiredCrds(), cliVersion: opts.cliVersion };
  try {
    facts.serverVersion = await reader.serverVersion();
  } catch (e) {
    facts.apiError = (e as Error).message;
  }
  if (!facts.apiError) {
    const [crds, lease, nodes, nodeStates, secret] = await Promise.all([
      reader.listCrds(),
      reader.getLease(OPERATOR_LEASE.namespace, OPERATOR_LEASE.name),
      reader.listNodes(),
      reader.listCustom(NodeStateResource),
      reader.getSecret(CA_SECRET.namespace, CA_SECRET.name),
    ]);
    facts.crds = crds;
    if (lease) facts.lease = lease;
    facts.nodes = nodes;
    facts.nodeStates = nodeStates ?? [];
    facts.caSecret = secret ?? 'missing';
    const [agents, apiClock, operatorVersion] = await Promise.all([
      discoverAgentEndpoints(reader, nodes, opts.agentEndpoints).then((eps) => fetchAgentStatuses(eps, { reader, ...(opts.fetchImpl ? { fetchImpl: opts.fetchImpl } : {}) })),
      reader.serverClock?.().catch(() => undefined),
      readOperatorVersion(reader, opts.operatorStatusUrl),
    ]);
    facts.agents = agents;
    if (apiClock) facts.apiClock = apiClock;
    facts.operatorVersion = operatorVersion;
  }
  const results = computeChecks(facts);
  return { text: formatChecks(results, opts.format), ok: !results.some((r) => r.status === 'fail') };
}
