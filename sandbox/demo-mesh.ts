/**
 * The mesh part of `nodemesh demo` (after the plain L2/L4 steps): the demo's policies (an HTTPRoute splitting
 * echo 90/10 between the v1 and v2 Deployments, with a header-matched canary rule and a /slow rule with a 500 ms
 * timeout, MeshTLSPolicy STRICT for the namespace, an AuthorizationPolicy
 * allowing only the client's service account and denying /admin), then what they do: 1,000 requests split ~90/10, the canary header and the timeout,
 * /admin answered 403 by the destination node's proxy, a capture on the node link holding no plaintext HTTP, the
 * route's conditions, `kubectl mesh status`, and one request's trace across both nodes from the OTLP file.
 */
import { CustomObjectsApi, type CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT, sandboxPaths, type SandboxConfig } from './config.ts';
import { locatePod } from './exec-pod.ts';
import { sleep } from './exec.ts';
import { httpStatusOf } from './kube.ts';
import { podWrapperArgv } from './kubelet/pod-exec.ts';
import { meshPaths, waitForAgentsMeshReady } from './mesh-wiring.ts';
import { waitFor } from './up.ts';

const NS = 'default';
const GATEWAY = { group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes' };
const MESH = { group: 'nodemesh.io', version: 'v1alpha1' };

/** The demo's mesh policies for the echo service in `ns` (port 8080), allowing `clientSa` (pure). */
export function computeDemoPolicies(ns: string, clientSa: string): { httpRoute: object; meshTls: object; allow: object; deny: object } {
  return {
    httpRoute: {
      apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'echo', namespace: ns },
      spec: {
        parentRefs: [{ group: '', kind: 'Service', name: 'echo', port: 8080 }],
        rules: [
          // A header-matched route: callers that ask for the canary get v2 only.
          { matches: [{ headers: [{ name: 'x-canary', value: 'true' }] }], backendRefs: [{ name: 'echo-v2', port: 8080 }] },
          // A route with a deadline: /slow answers 504 once 500 ms have passed, however long the backend takes.
          { matches: [{ path: { type: 'PathPrefix', value: '/slow' } }], timeouts: { request: '500ms' }, backendRefs: [{ name: 'echo-v1', port: 8080 }] },
          { backendRefs: [{ name: 'echo-v1', port: 8080, weight: 90 }, { name: 'echo-v2', port: 8080, weight: 10 }] },
        ],
      },
    },
    meshTls: { apiVersion: 'nodemesh.io/v1alpha1', kind: 'MeshTLSPolicy', metadata: { name: 'default', namespace: ns }, spec: { mode: 'STRICT' } },
    allow: {
      apiVersion: 'nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'echo-allow-client', namespace: ns },
      spec: { targetRefs: [{ kind: 'Service', name: 'echo' }], action: 'ALLOW', rules: [{ from: [{ serviceAccounts: [`${ns}/${clientSa}`] }] }] },
    },
    deny: {
      apiVersion: 'nodemesh.io/v1alpha1', kind: 'AuthorizationPolicy', metadata: { name: 'echo-deny-admin', namespace: ns },
      spec: { targetRefs: [{ kind: 'Service', name: 'echo' }], action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] },
    },
  };
}

/** A span as the OTLP receiver writes it (sandbox/otlp-receiver). */
export type SpanLine = { traceId: string; spanId: string; parentSpanId?: string; name: string; kind: string | number; durationMs?: number; attributes?: Record<string, unknown>; resource?: Record<string, unknown> };

/** The spans of one trace as an indented tree, parents first (pure). */
export function formatTrace(spans: readonly SpanLine[]): string[] {
  const byParent = new Map<string, SpanLine[]>();
  const ids = new Set(spans.map((s) => s.spanId));
  for (const s of spans) {
    const p = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : '';
    byParent.set(p, [...(byParent.get(p) ?? []), s]);
  }
  const out: string[] = [];
  const kindName = (k: string | number): string => (typeof k === 'number' ? (['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'][k] ?? String(k)) : String(k).replace(/^SPAN_KIND_/, ''));
  const walk = (parent: string, depth: number): void => {
    for (const s of byParent.get(parent) ?? []) {
      const a = s.attributes ?? {};
      const node = String(s.resource?.['k8s.node.name'] ?? a['nodemesh.node'] ?? '?');
      const who = kindName(s.kind) === 'CLIENT'
        ? `${a['nodemesh.source.workload'] ?? '?'} → ${a['nodemesh.destination.service'] ?? '?'}${a['nodemesh.route'] ? ` (route ${String(a['nodemesh.route'])})` : ''}`
        : `→ ${a['nodemesh.destination.workload'] ?? a['nodemesh.destination.service'] ?? '?'} from ${a['nodemesh.source.spiffe_id'] ?? 'unauthenticated'}`;
      out.push(`${'  '.repeat(depth)}${kindName(s.kind).padEnd(6)} ${s.name} ${String(a['url.path'] ?? '')}  on ${node}  ${who}  ${String(a['http.response.status_code'] ?? '-')}  ${(s.durationMs ?? 0).toFixed(1)}ms`);
      walk(s.spanId, depth + 1);
    }
  };
  walk('', 0);
  return out;
}

/** Reads the spans of `traceId` from the receiver's JSON-lines file. */
async function readTrace(file: string, traceId: string): Promise<SpanLine[]> {
  if (!existsSync(file)) return [];
  const text = await readFile(file, 'utf8');
  return text.split('\n').filter((l) => l.includes(traceId)).map((l) => JSON.parse(l) as SpanLine).filter((s) => s.traceId === traceId);
}

/** Runs a command in a pod (its netns and cgroup: the datapath applies) and collects its output. */
async function runInPod(cfg: SandboxConfig, pod: string, command: string[], timeoutMs = 120_000): Promise<{ code: number; stdout: string; stderr: string }> {
  const loc = await locatePod(cfg, pod, NS);
  const argv = podWrapperArgv(loc.cgroup, loc.netns, command);
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], timeout: timeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

/** `curl` from the client pod with a W3C trace context we choose, so the trace can be found afterwards. */
async function curlTraced(cfg: SandboxConfig, url: string, headers: string[] = []): Promise<{ status: number; body: string; traceId: string; seconds: number }> {
  const traceId = randomBytes(16).toString('hex');
  const extra = headers.flatMap((h) => ['-H', h]);
  const r = await runInPod(cfg, 'client', ['curl', '-s', '--max-time', '3', '-H', `traceparent: 00-${traceId}-${randomBytes(8).toString('hex')}-01`, ...extra, '-o', '-', '-w', '\n%{http_code} %{time_total}', url], 30_000);
  const nl = r.stdout.lastIndexOf('\n');
  const [code, total] = r.stdout.slice(nl + 1).split(' ');
  return { status: Number(code) || 0, body: r.stdout.slice(0, Math.max(nl, 0)), traceId, seconds: Number(total) || 0 };
}

async function createOrReplace(custom: CustomObjectsApi, group: string, version: string, plural: string, body: { metadata: { name: string; namespace: string } }): Promise<void> {
  const { name, namespace } = body.metadata;
  try {
    await custom.createNamespacedCustomObject({ group, version, namespace, plural, body });
  } catch (err) {
    if (httpStatusOf(err) !== 409) throw err;
    const cur = (await custom.getNamespacedCustomObject({ group, version, namespace, plural, name })) as { metadata?: { resourceVersion?: string } };
    await custom.replaceNamespacedCustomObject({ group, version, namespace, plural, name, body: { ...body, metadata: { ...body.metadata, resourceVersion: cur.metadata?.resourceVersion } } });
  }
}

/** The route's conditions on its parent, `Type=Status` each. */
async function routeConditions(custom: CustomObjectsApi): Promise<{ text: string; programmed: boolean }> {
  const r = (await custom.getNamespacedCustomObject({ ...GATEWAY, namespace: NS, name: 'echo' })) as { status?: { parents?: { conditions?: { type: string; status: string; reason?: string }[] }[] } };
  const conds = r.status?.parents?.[0]?.conditions ?? [];
  return { text: conds.map((c) => `${c.type}=${c.status}${c.status === 'True' ? '' : ` (${c.reason})`}`).join(' ') || '(no status yet)', programmed: conds.some((c) => c.type === 'Programmed' && c.status === 'True') };
}

/** Runs the mesh steps; `first` is the number of the first step. */
export async function runMeshDemo(cfg: SandboxConfig, kc: KubeConfig, core: CoreV1Api, out: (line: string) => void, first: number): Promise<void> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const paths = sandboxPaths(cfg);
  const spansFile = meshPaths(cfg).spansFile;
  let step = first;
  const head = (text: string): void => out(`== ${step++}. ${text}`);

  head('mesh policies: HTTPRoute echo 90/10 v1/v2 (+ x-canary header rule, /slow 500 ms timeout), MeshTLSPolicy STRICT, AuthorizationPolicy allow sa/client + deny /admin');
  const p = computeDemoPolicies(NS, 'client');
  await createOrReplace(custom, GATEWAY.group, GATEWAY.version, GATEWAY.plural, p.httpRoute as never);
  await createOrReplace(custom, MESH.group, MESH.version, 'meshtlspolicies', p.meshTls as never);
  await createOrReplace(custom, MESH.group, MESH.version, 'authorizationpolicies', p.allow as never);
  await createOrReplace(custom, MESH.group, MESH.version, 'authorizationpolicies', p.deny as never);
  await waitFor(async () => (await routeConditions(custom)).programmed, 60_000, 'HTTPRoute echo to be Programmed (is the operator leading? `kubectl mesh status`)');
  out(`   httproute echo: ${(await routeConditions(custom)).text}`);
  // Until every proxy serves the new plan with its workloads' certificates, mesh flows fail closed: wait for that,
  // then for a request that went through mTLS (the destination names the client's identity).
  const report = JSON.parse(await readFile(paths.supervisorStatus, 'utf8')) as { mesh?: { agentStatusUrl?: string }; nodes: { name: string }[] };
  if (report.mesh?.agentStatusUrl) await waitForAgentsMeshReady(report.mesh.agentStatusUrl, report.nodes.map((n) => n.name), 90_000);
  await waitFor(async () => {
    const r = await curlTraced(cfg, 'http://echo.default.svc.cluster.local:8080/ready');
    return r.status === 200 && r.body.includes('x-nodemesh-source-identity');
  }, 90_000, 'a first request through the mesh (agents need their certificates: `kubectl mesh status`)');

  head('1,000 requests from client to echo, with a capture on the node link (fabric bridge) during the first second');
  const pcap = join(cfg.stateDir, 'demo-fabric.pcap');
  await rm(pcap, { force: true });
  const dump = spawn('ip', ['netns', 'exec', `${cfg.prefix}fabric`, 'tcpdump', '-i', 'br0', '-U', '-s', '0', '-w', pcap, 'tcp'], { stdio: ['ignore', 'ignore', 'ignore'] });
  const dumpDone = new Promise<void>((r) => dump.once('close', () => r()));
  dump.on('error', () => {});
  await waitFor(async () => existsSync(pcap) && (await stat(pcap)).size > 0, 5000, 'tcpdump to start').catch(() => {});
  const run = runInPod(cfg, 'client', [process.execPath, join(REPO_ROOT, 'sandbox/workloads/client.ts'), '--url', 'http://echo.default.svc.cluster.local:8080/split', '--count', '1000', '--concurrency', '8', '--interval', '0s', '--summary-json']);
  await sleep(1000);
  dump.kill('SIGTERM');
  const r = await run;
  await dumpDone;
  const summaryLine = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('{'));
  const summary = summaryLine ? (JSON.parse(summaryLine) as { total: number; ok: number; byPod: Record<string, number> }) : undefined;
  if (!summary) out(`   the client printed no summary: ${r.stderr.trim().split('\n').pop() ?? ''}`);
  else {
    const pods = (await core.listNamespacedPod({ namespace: NS, labelSelector: 'app=echo' })).items;
    const version = (name: string): string => pods.find((x) => x.metadata?.name === name)?.metadata?.labels?.version ?? '?';
    const byVersion: Record<string, number> = {};
    for (const [pod, n] of Object.entries(summary.byPod)) byVersion[version(pod)] = (byVersion[version(pod)] ?? 0) + n;
    const pct = (v: string): string => `${(((byVersion[v] ?? 0) / Math.max(1, summary.total)) * 100).toFixed(1)}%`;
    out(`   ${summary.ok}/${summary.total} answered 200: v1 ${byVersion.v1 ?? 0} (${pct('v1')}), v2 ${byVersion.v2 ?? 0} (${pct('v2')}) — the route asks 90/10`);
  }
  const capture = await describeCapture(pcap);
  out(`   node link capture: ${capture}`);

  head('a header-matched route (x-canary: true → v2 only) and a route timeout (/slow: 500 ms)');
  const canary: string[] = [];
  for (let i = 0; i < 4; i++) {
    const c = await curlTraced(cfg, 'http://echo.default.svc.cluster.local:8080/canary', ['x-canary: true']);
    canary.push(c.status === 200 ? ((JSON.parse(c.body) as { version?: string }).version ?? '?') : String(c.status));
  }
  out(`   4 requests with x-canary: true answered by: ${canary.join(', ')}`);
  const slow = await curlTraced(cfg, 'http://echo.default.svc.cluster.local:8080/slow?delay=2s');
  out(`   /slow?delay=2s (the backend waits 2 s): ${slow.status} after ${Math.round(slow.seconds * 1000)} ms — the route's timeouts.request`);

  head('a request to /admin');
  // The route may pick an echo pod on the client's own node; a few tries show one answered from the other node.
  const clientNode = (await locatePod(cfg, 'client', NS)).node;
  let admin = await curlTraced(cfg, 'http://echo.default.svc.cluster.local:8080/admin');
  let adminNode = await waitForServerNode(spansFile, admin.traceId);
  for (let i = 0; i < 8 && adminNode === clientNode; i++) {
    admin = await curlTraced(cfg, 'http://echo.default.svc.cluster.local:8080/admin');
    adminNode = await waitForServerNode(spansFile, admin.traceId);
  }
  out(`   ${admin.status} ${admin.body.trim()}${adminNode ? `  — answered by ${adminNode}'s proxy, the destination's (client on ${clientNode}): AuthorizationPolicy runs where the pod is` : ''}`);

  head('kubectl mesh status');
  const st = await runCommand(process.execPath, [join(REPO_ROOT, 'cli/kubectl-mesh.ts'), 'status', '--kubeconfig', paths.hostKubeconfig]);
  for (const l of st.trimEnd().split('\n')) out(`   ${l}`);

  head(`one request's trace across both nodes (OTLP receiver → ${spansFile})`);
  let shown = false;
  for (let i = 0; i < 10 && !shown; i++) {
    const t = await curlTraced(cfg, `http://echo.default.svc.cluster.local:8080/trace-${i}`);
    const spans = await waitForSpans(spansFile, t.traceId, 2);
    const nodes = new Set(spans.map((s) => String(s.resource?.['k8s.node.name'] ?? '')));
    if (nodes.size < 2) continue;
    out(`   trace ${t.traceId}:`);
    for (const l of formatTrace(spans)) out(`     ${l}`);
    shown = true;
  }
  if (!shown) out('   (no request crossed nodes in 10 tries: every echo pod the route chose ran on the client\'s node)');
}

async function waitForSpans(file: string, traceId: string, atLeast: number): Promise<SpanLine[]> {
  let spans: SpanLine[] = [];
  const until = Date.now() + 5000;
  while (Date.now() < until) {
    spans = await readTrace(file, traceId);
    if (spans.length >= atLeast) return spans;
    await sleep(200);
  }
  return spans;
}

async function waitForServerNode(file: string, traceId: string): Promise<string | undefined> {
  const spans = await waitForSpans(file, traceId, 2);
  const server = spans.find((s) => s.kind === 'SERVER' || s.kind === 2 || s.kind === 'SPAN_KIND_SERVER' || s.kind === 1);
  return server ? String(server.resource?.['k8s.node.name'] ?? '') : undefined;
}

function runCommand(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => { text += d; });
    child.stderr.setEncoding('utf8').on('data', (d: string) => { text += d; });
    child.on('error', (e) => resolve(e.message));
    child.on('close', () => resolve(text));
  });
}

/** What the capture holds: packets, how many to or from HBONE (15008), and whether any reads as plaintext HTTP. */
async function describeCapture(pcap: string): Promise<string> {
  if (!existsSync(pcap)) return 'no capture (is tcpdump installed?)';
  const text = await runCommand('tcpdump', ['-r', pcap, '-nn', '-A']);
  const packets = text.split('\n').filter((l) => /^\d\d:\d\d:\d\d\.\d+ IP /.test(l));
  const hbone = packets.filter((l) => /\.15008[: ]/.test(l)).length;
  const plaintext = ['GET /split', 'HTTP/1.1 200', 'x-nodemesh-source-identity', '"pod":"echo'].filter((n) => text.includes(n));
  return `${packets.length} packets, ${hbone} to/from the HBONE port 15008 (TLS 1.3), ${plaintext.length === 0 ? 'no plaintext HTTP' : `PLAINTEXT FOUND: ${plaintext.join(', ')}`}`;
}
