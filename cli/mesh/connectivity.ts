/**
 * `kubectl mesh connectivity test`, like `cilium connectivity test`: in a namespace of its own it deploys two echo
 * pods (one per node when there are two), a Service, a namespace-wide MeshTLSPolicy STRICT and an
 * AuthorizationPolicy denying one path; then runs each check as a run-to-completion client pod on the first node
 * whose phase is the verdict (no exec needed, so it works wherever the images run). Checks: pod→pod on the same
 * node and across nodes, pod→Service, DNS, mTLS between nodes (the destination proxy names the client's
 * verified SPIFFE ID), STRICT enforced in the kernel (a connection that skips the mesh is refused), and a denied
 * path answered 403. It prints a line per check and a summary, and deletes the namespace (unless --keep).
 */
import { CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { CliError, describeApiError, httpStatusOf } from './errors.ts';
import { formatJson, type OutputFormat } from './output.ts';

/** The test namespace (Kubernetes), labelled so leftovers are easy to find. */
export const CONNECTIVITY_NAMESPACE = 'nodemesh-connectivity-test';
/** The node proxy's socket mark (agent/proxy/mesh-node.ts PROXY_MARK): the kernel never redirects such sockets. */
const PROXY_MARK = '0x4e4d';
/** Exit status the client uses when a check could not run (e.g. no CAP_NET_ADMIN for SO_MARK). */
const EXIT_CANNOT_RUN = 2;

/** Images of the test pods (the sandbox's built-in ones by default). */
export type ConnectivityImages = { echo: string; client: string };

/** One check: a client pod's URL and what it must get. */
export type ConnectivityCheck = {
  name: string;
  description: string;
  url: string;
  expect: { status?: number; body?: string; error?: boolean };
  soMark?: string;
};

/** Where the echo pods ended up. */
export type EchoPlacement = { nodeA: string; nodeB: string | undefined; ipA: string; ipB: string | undefined; clusterIP: string; namespace: string };

/** The objects the test deploys before any check (pure). */
export function computeConnectivityObjects(ns: string, nodeA: string, nodeB: string | undefined, images: ConnectivityImages): object[] {
  const labels = { 'app.kubernetes.io/part-of': 'nodemesh-connectivity-test' };
  const echo = (name: string, node: string): object => ({
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name, namespace: ns, labels: { ...labels, app: 'echo', instance: name } },
    spec: {
      nodeName: node, serviceAccountName: 'echo', terminationGracePeriodSeconds: 1,
      containers: [{ name: 'echo', image: images.echo, args: ['--port', '8080'], ports: [{ name: 'http', containerPort: 8080 }], readinessProbe: { httpGet: { path: '/ready', port: 'http' }, periodSeconds: 1 } }],
    },
  });
  return [
    { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'echo', namespace: ns, labels } },
    { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'client', namespace: ns, labels } },
    echo('echo-a', nodeA),
    ...(nodeB ? [echo('echo-b', nodeB)] : []),
    { apiVersion: 'v1', kind: 'Service', metadata: { name: 'echo', namespace: ns, labels }, spec: { selector: { app: 'echo' }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] } },
    { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'strict', namespace: ns, labels }, spec: { mode: 'STRICT' } },
    { apiVersion: 'nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'deny-path', namespace: ns, labels }, spec: { targetRefs: [{ kind: 'Service', name: 'echo' }], action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/denied' }] }] }] } },
  ];
}

/** The checks for a placement (pure); cross-node ones only with two nodes. */
export function computeConnectivityChecks(p: EchoPlacement): ConnectivityCheck[] {
  const identity = `"x-nodemesh-source-identity":"spiffe://[^"]+/ns/${p.namespace}/sa/client"`;
  const checks: ConnectivityCheck[] = [
    { name: 'pod-to-pod-same-node', description: `pod → pod, same node (${p.nodeA})`, url: `http://${p.ipA}:8080/same-node`, expect: { status: 200 } },
  ];
  if (p.ipB && p.nodeB) checks.push({ name: 'pod-to-pod-cross-node', description: `pod → pod, across nodes (${p.nodeA} → ${p.nodeB})`, url: `http://${p.ipB}:8080/cross-node`, expect: { status: 200 } });
  checks.push(
    { name: 'pod-to-service', description: 'pod → Service ClusterIP', url: `http://${p.clusterIP}:80/service`, expect: { status: 200 } },
    { name: 'dns', description: 'pod → Service by DNS name', url: `http://echo.${p.namespace}.svc.cluster.local/dns`, expect: { status: 200 } },
  );
  const remoteIp = p.ipB ?? p.ipA;
  checks.push(
    { name: 'mtls', description: p.ipB ? 'mTLS between nodes: the destination verified the client\'s SPIFFE ID' : 'mTLS: the destination verified the client\'s SPIFFE ID', url: `http://${remoteIp}:8080/mtls`, expect: { status: 200, body: identity } },
    { name: 'strict-enforced', description: 'STRICT: a connection that skips the node proxy is refused', url: `http://${remoteIp}:8080/bypass`, expect: { error: true }, soMark: PROXY_MARK },
    { name: 'deny-policy', description: 'AuthorizationPolicy DENY: a denied path gets 403', url: `http://${p.clusterIP}:80/denied`, expect: { status: 403 } },
  );
  return checks;
}

/** The run-to-completion client pod of one check (pure). */
export function computeCheckPod(ns: string, node: string, c: ConnectivityCheck, images: ConnectivityImages, deadlineSeconds: number): V1Pod {
  const args = ['--url', c.url, '--deadline', `${deadlineSeconds}s`, '--timeout', '2s', '--interval', '500ms'];
  if (c.expect.status !== undefined) args.push('--expect-status', String(c.expect.status));
  if (c.expect.body !== undefined) args.push('--expect-body', c.expect.body);
  if (c.expect.error) args.push('--expect-error');
  if (c.soMark) args.push('--so-mark', c.soMark);
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { name: `check-${c.name}`, namespace: ns, labels: { 'app.kubernetes.io/part-of': 'nodemesh-connectivity-test', check: c.name } },
    spec: {
      nodeName: node, serviceAccountName: 'client', restartPolicy: 'Never', terminationGracePeriodSeconds: 1,
      containers: [{ name: 'client', image: images.client, args, ...(c.soMark ? { securityContext: { capabilities: { add: ['NET_ADMIN'] } } } : {}) }],
    },
  };
}

/** A check's outcome. */
export type CheckOutcome = { name: string; description: string; result: 'pass' | 'fail' | 'skip'; detail?: string };

/** The report (pure); `N/N tests passed` counts what ran (skips are listed, not counted). */
export function formatConnectivityReport(r: { namespace: string; nodes: string[]; outcomes: CheckOutcome[] }, format: OutputFormat): string {
  if (format === 'json') return formatJson(r);
  const ran = r.outcomes.filter((o) => o.result !== 'skip');
  const passed = ran.filter((o) => o.result === 'pass').length;
  const width = Math.max(...r.outcomes.map((o) => o.description.length));
  let out = `Connectivity test in namespace ${r.namespace} (nodes: ${r.nodes.join(', ')})\n`;
  r.outcomes.forEach((o, i) => {
    const mark = o.result === 'pass' ? '✓' : o.result === 'fail' ? '✗' : '-';
    out += `  [${i + 1}/${r.outcomes.length}] ${o.description.padEnd(width)}  ${mark} ${o.result}${o.detail ? `: ${o.detail}` : ''}\n`;
  });
  const skipped = r.outcomes.length - ran.length;
  out += `\n${passed === ran.length ? '✓' : '✗'} ${passed}/${ran.length} tests passed${skipped ? ` (${skipped} skipped)` : ''}\n`;
  return out;
}

/** Options of a run. */
export type ConnectivityOptions = {
  format: OutputFormat;
  images?: Partial<ConnectivityImages>;
  namespace?: string;
  /** Per-check deadline inside the pod (the mesh may need a few seconds to program the new namespace). */
  checkDeadlineSeconds?: number;
  /** Keep the namespace afterwards (to look around). */
  keep?: boolean;
  /** Progress lines while it runs (stderr), not part of the report. */
  progress?: (line: string) => void;
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(what: string, timeoutMs: number, fn: () => Promise<T | undefined>): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    await sleep(500);
  }
  throw new CliError('NM_ERR_CLI_API', `connectivity test: timed out after ${timeoutMs / 1000}s waiting for ${what}${last ? ` (${describeApiError(last)})` : ''}`);
}

/** Creates an object of one of the kinds the test uses. */
async function createObject(core: CoreV1Api, custom: CustomObjectsApi, o: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }): Promise<void> {
  const ns = o.metadata.namespace ?? '';
  const body = o as never;
  try {
    switch (o.kind) {
      case 'Namespace': await core.createNamespace({ body }); return;
      case 'ServiceAccount': await core.createNamespacedServiceAccount({ namespace: ns, body }); return;
      case 'Pod': await core.createNamespacedPod({ namespace: ns, body }); return;
      case 'Service': await core.createNamespacedService({ namespace: ns, body }); return;
      default: {
        const [group, version] = o.apiVersion.split('/') as [string, string];
        const plural = ({ MeshTLSPolicy: 'meshtlspolicies', AuthorizationPolicy: 'authorizationpolicies' } as Record<string, string>)[o.kind];
        if (!plural) throw new Error(`kind ${o.kind} is not one the test creates`);
        await custom.createNamespacedCustomObject({ group, version, namespace: ns, plural, body });
      }
    }
  } catch (e) {
    if (httpStatusOf(e) === 409) return;
    throw new CliError('NM_ERR_CLI_API', `connectivity test: creating ${o.kind} ${ns ? `${ns}/` : ''}${o.metadata.name}: ${describeApiError(e)}`, { cause: e });
  }
}

/** Deletes the test namespace and waits until its pods are gone (their network namespaces with them). */
async function cleanUp(core: CoreV1Api, ns: string): Promise<void> {
  await core.deleteNamespace({ name: ns }).catch((e: unknown) => { if (httpStatusOf(e) !== 404) throw e; });
  await waitFor(`namespace ${ns} to be deleted`, 60_000, async () => {
    try {
      await core.readNamespace({ name: ns });
      return undefined;
    } catch (e) {
      if (httpStatusOf(e) === 404) return true;
      throw e;
    }
  });
}

/** Runs the test against the cluster of `kc`; `ok` is false when a check failed. */
export async function runConnectivityTest(kc: KubeConfig, opts: ConnectivityOptions): Promise<{ text: string; ok: boolean }> {
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const ns = opts.namespace ?? CONNECTIVITY_NAMESPACE;
  const images: ConnectivityImages = { echo: opts.images?.echo ?? 'nodemesh/echo', client: opts.images?.client ?? 'nodemesh/client' };
  const progress = opts.progress ?? (() => {});
  const deadline = opts.checkDeadlineSeconds ?? 45;
  const nodes = (await core.listNode().catch((e: unknown) => { throw new CliError('NM_ERR_CLI_API', `listing Nodes: ${describeApiError(e)}`, { cause: e }); })).items
    .filter((n) => !n.spec?.unschedulable && n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'))
    .map((n) => n.metadata?.name ?? '').filter((n) => n !== '').sort();
  if (nodes.length === 0) throw new CliError('NM_ERR_CLI_API', 'connectivity test: no Ready, schedulable Node to run on');
  const [nodeA, nodeB] = nodes as [string, string | undefined];
  // A namespace left by an earlier run (interrupted) is removed first: the test starts from nothing.
  if (await core.readNamespace({ name: ns }).then(() => true, () => false)) {
    progress(`removing the namespace ${ns} an earlier run left`);
    await cleanUp(core, ns);
  }
  let outcomes: CheckOutcome[] = [];
  try {
    progress(`deploying echo pods, Service, MeshTLSPolicy STRICT and AuthorizationPolicy in ${ns}`);
    for (const o of computeConnectivityObjects(ns, nodeA, nodeB, images)) await createObject(core, custom, o as never);
    const echoNames = nodeB ? ['echo-a', 'echo-b'] : ['echo-a'];
    const ready = await waitFor('the echo pods to be Ready', 90_000, async () => {
      const pods = (await core.listNamespacedPod({ namespace: ns, labelSelector: 'app=echo' })).items;
      const ok = echoNames.map((n) => pods.find((p) => p.metadata?.name === n && p.status?.podIP && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')));
      return ok.every((p) => p) ? (ok as V1Pod[]) : undefined;
    });
    const svc = await core.readNamespacedService({ namespace: ns, name: 'echo' });
    const placement: EchoPlacement = { namespace: ns, nodeA, nodeB, ipA: ready[0]!.status!.podIP!, ipB: ready[1]?.status?.podIP, clusterIP: svc.spec?.clusterIP ?? '' };
    const checks = computeConnectivityChecks(placement);
    progress(`running ${checks.length} checks from client pods on ${nodeA}`);
    for (const c of checks) await createObject(core, custom, computeCheckPod(ns, nodeA, c, images, deadline) as never);
    outcomes = await Promise.all(checks.map(async (c): Promise<CheckOutcome> => {
      const pod = await waitFor(`check pod check-${c.name} to finish`, (deadline + 60) * 1000, async () => {
        const p = await core.readNamespacedPod({ namespace: ns, name: `check-${c.name}` });
        return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p : undefined;
      }).catch((e: unknown) => e as Error);
      if (pod instanceof Error) return { name: c.name, description: c.description, result: 'fail', detail: pod.message };
      if (pod.status?.phase === 'Succeeded') return { name: c.name, description: c.description, result: 'pass' };
      const code = pod.status?.containerStatuses?.[0]?.state?.terminated?.exitCode;
      if (code === EXIT_CANNOT_RUN) return { name: c.name, description: c.description, result: 'skip', detail: 'the check could not run there (e.g. no CAP_NET_ADMIN for SO_MARK)' };
      return { name: c.name, description: c.description, result: 'fail', detail: `${c.url} did not ${c.expect.error ? 'fail' : `answer ${c.expect.status ?? ''}${c.expect.body ? ' with the expected body' : ''}`} within ${deadline}s (pod ${ns}/check-${c.name} exit ${code ?? '?'})` };
    }));
  } finally {
    if (!opts.keep) {
      progress(`deleting namespace ${ns}`);
      await cleanUp(core, ns);
    }
  }
  const text = formatConnectivityReport({ namespace: ns, nodes: nodeB ? [nodeA, nodeB] : [nodeA], outcomes }, opts.format);
  return { text, ok: outcomes.every((o) => o.result !== 'fail') };
}
