/**
 * Privileged end-to-end test of reliability anchor F13 in a sandbox instance of its own (`faults`): per-route timeouts
 * and retries on an impaired link. A client pod on node-1 calls an echo pod on node-2 (cross-node: HBONE over mTLS
 * STRICT) through one HTTPRoute with four rules:
 *   /deadline  timeouts.request 1s                                          (echo asked to answer after 3 s)
 *   /pertry    timeouts.request 3s, backendRequest 500ms, retry 504 ×2     (echo asked to answer after 2 s)
 *   /codes     retry 503 ×2, backoff 50ms                                  (echo answers 503)
 *   /steady    timeouts.request 5s                                         (echo answers after 50 ms)
 * Passes when: the 504 of /deadline comes at 1 s ±10 %; /pertry ends with 504 before its 3 s deadline (+10 %) and the
 * backend saw at most 1 + 2 attempts per request (counted in its raw log: every request has a unique path); /codes
 * returns the backend's 503 after at most 3 attempts; /steady answers everything, and no request of any kind hangs.
 * First on the plain link (the baseline), then with `tc netem delay 200ms loss 5%` on node-2's uplink (an interface
 * the sandbox made, inside its nm-faults-node-2 namespace; never one of the machine's). netem needs the kernel's
 * sch_netem: where it is missing the impaired half FAILS and says so (never a skip).
 * Needs root: without it the test FAILS. Brings its instance down at the end, qdisc included.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { computeTopology, UPLINK } from '../../sandbox/net/topology.ts';
import { assertMeshWired, agentStatus, fetchAgent } from './helpers/mesh-control-plane.ts';
import { NODEMESH, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';
import type { TimedResult } from './helpers/timed-requests.ts';

const INSTANCE = 'faults';
const NS = 'faults';
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000 });
const { cfg, kubectl } = sb;
const eventually = poller({ timeoutMs: 120_000, everyMs: 1000 });
const TIMED = join(import.meta.dirname, 'helpers/timed-requests.ts');
/** The impairment: reliability anchors F13. */
const NETEM = ['delay', '200ms', 'loss', '5%'];

const objects = (rawDir: string): string => `
apiVersion: v1
kind: Namespace
metadata: {name: ${NS}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: ${NS}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: ${NS}}
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: ${NS}, labels: {app: client}}
spec:
  nodeName: node-1
  serviceAccountName: client
  containers: [{name: main, image: nodemesh/echo, args: ["--port", "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: ${NS}, labels: {app: echo}}
spec:
  nodeName: node-2
  serviceAccountName: echo
  containers:
  - name: echo
    image: nodemesh/echo
    args: ["--port", "8080", "--raw-log", "${rawDir}/echo.raw"]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ${NS}}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: ${NS}}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /deadline}}]
    timeouts: {request: 1s}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /pertry}}]
    timeouts: {request: 3s, backendRequest: 500ms}
    retry: {codes: [504], attempts: 2, backoff: 100ms}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /codes}}]
    retry: {codes: [503], attempts: 2, backoff: 50ms}
    backendRefs: [{name: echo, port: 80}]
  - matches: [{path: {type: PathPrefix, value: /steady}}]
    timeouts: {request: 5s}
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: nodemesh.io/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: ${NS}}
spec: {mode: STRICT}
`;

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN; };

describe('F13: per-route timeouts and retries over an impaired link (root)', { timeout: 900_000 }, () => {
  let dir = '';
  let svc = '';
  let node2Netns = '';
  let netemOn = false;
  let passed = 0;

  /** Runs timed-requests.ts in the client pod. */
  async function timed(path: string, count: number, prefix: string, concurrency = 2): Promise<TimedResult[]> {
    const r = await sb.run(NODEMESH, ['sandbox', 'exec', 'client', '-n', NS, '--', process.execPath, TIMED, '--url', `http://${svc}${path}`, '--count', String(count), '--concurrency', String(concurrency), '--prefix', prefix, '--timeout-ms', '15000'], { timeoutMs: 300_000 });
    const line = r.stdout.trim().split('\n').reverse().find((l) => l.startsWith('['));
    assert.ok(line, `timed-requests printed nothing (exit ${r.code}):\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
    return JSON.parse(line) as TimedResult[];
  }

  /** How many times the backend received a request for `/<rule>/<id>/` (its raw log has every byte it got). */
  function attemptsAtBackend(rule: string, id: string): number {
    const raw = readFileSync(join(dir, 'echo.raw'), 'latin1');
    return raw.split(`GET /${rule}/${id}/?`).length - 1;
  }

  /** Sum of one counter over both agents. */
  async function counter(name: string): Promise<number> {
    let sum = 0;
    for (const node of ['node-1', 'node-2']) {
      for (const line of (await fetchAgent(cfg, node, 'metrics')).split('\n')) if (line.startsWith(name)) sum += Number(line.slice(line.lastIndexOf(' ') + 1)) || 0;
    }
    return sum;
  }

  /** The F13 checks, on whatever the link is now; `label` names the phase in messages. */
  async function checkTimeoutsAndRetries(label: string): Promise<Record<string, unknown>> {
    // Whole-request deadline: 504 at 1 s ±10 %.
    const deadline = await timed('/deadline/{id}/?delay=3s', 10, `${label}d`);
    for (const r of deadline) {
      assert.equal(r.status, 504, `${label} /deadline ${r.id}: ${JSON.stringify(r)}`);
      assert.ok(r.ms >= 900 && r.ms <= 1100, `${label} /deadline ${r.id}: the 504 came after ${r.ms} ms, not at 1 s ±10 %`);
    }
    // Per-attempt deadline with retries on 504: at most 3 attempts, ended before the 3 s request deadline (+10 %).
    const retriesBefore = await counter('nodemesh_retries_total');
    const pertry = await timed('/pertry/{id}/?delay=2s', 8, `${label}p`);
    for (const r of pertry) {
      assert.equal(r.status, 504, `${label} /pertry ${r.id}: ${JSON.stringify(r)}`);
      assert.ok(r.ms <= 3300, `${label} /pertry ${r.id}: ended after ${r.ms} ms, past the 3 s request deadline`);
      assert.ok(r.ms >= 450, `${label} /pertry ${r.id}: 504 after ${r.ms} ms, before even one 500 ms attempt could time out`);
    }
    // The backend keeps answering late requests into closed connections: give the log a moment.
    await new Promise((r) => setTimeout(r, 2500));
    const perId = pertry.map((r) => attemptsAtBackend('pertry', r.id));
    for (const [i, n] of perId.entries()) assert.ok(n <= 3, `${label} /pertry ${pertry[i]!.id}: ${n} attempts reached the backend, more than 1 + retry.attempts (2)`);
    assert.ok(perId.some((n) => n >= 2), `${label} /pertry: no request was retried at all (${perId.join(',')}): retry on 504 after backendRequest not in force`);
    const retriesAfter = await counter('nodemesh_retries_total');
    assert.ok(retriesAfter - retriesBefore <= 2 * pertry.length, `${label}: ${retriesAfter - retriesBefore} retries for ${pertry.length} requests allowed 2 each`);
    // Retry on a code: the backend's 503 comes back after at most 3 attempts.
    const codes = await timed('/codes/{id}/?status=503', 8, `${label}c`);
    await new Promise((r) => setTimeout(r, 500));
    const codeAttempts = codes.map((r) => attemptsAtBackend('codes', r.id));
    for (const [i, r] of codes.entries()) {
      assert.equal(r.status, 503, `${label} /codes ${r.id}: ${JSON.stringify(r)}`);
      assert.ok(codeAttempts[i]! >= 1 && codeAttempts[i]! <= 3, `${label} /codes ${r.id}: ${codeAttempts[i]} attempts at the backend (allowed 1..3)`);
    }
    // Steady traffic: everything answered, nothing hung.
    const steady = await timed('/steady/{id}/?delay=50ms', 40, `${label}s`, 4);
    const hung = steady.filter((r) => r.status === 0);
    assert.deepEqual(hung, [], `${label} /steady: requests without an answer`);
    const good = steady.filter((r) => r.status === 200).length;
    assert.ok(good >= 0.95 * steady.length, `${label} /steady: only ${good}/${steady.length} answered 200: ${JSON.stringify(steady.filter((r) => r.status !== 200))}`);
    return {
      deadlineMs: deadline.map((r) => r.ms), pertryMs: pertry.map((r) => r.ms), pertryAttempts: perId, codesAttempts: codeAttempts,
      steadyMedianMs: median(steady.map((r) => r.ms)), retries: retriesAfter - retriesBefore,
    };
  }

  before(async () => {
    requireRoot('this end-to-end test needs root (network namespaces, cgroups, bpffs, tc); run it with sudo');
    dir = await tempDir('nm-faults-e2e-');
    await sb.up('--nodes', '2', '--pods-per-node', '0');
    assertMeshWired(cfg);
    node2Netns = computeTopology(cfg, 2).nodes[1]!.netns;
    assert.ok(node2Netns.startsWith(cfg.prefix), `node-2's namespace ${node2Netns} is not one of the sandbox's (${cfg.prefix}*)`);
    const file = join(dir, 'objects.yaml');
    writeFileSync(file, objects(dir));
    ok(await kubectl('apply', '-f', file), 'kubectl apply');
    for (const pod of ['client', 'echo']) await eventually(`pod ${pod} Running`, async () => (await kubectl('get', 'pod', pod, '-n', NS, '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
    svc = ok(await kubectl('get', 'svc', 'echo', '-n', NS, '-o', 'jsonpath={.spec.clusterIP}'), 'echo ClusterIP');
    for (const node of ['node-1', 'node-2']) await eventually(`${node}'s proxy serving`, async () => (await agentStatus(cfg, node)).mesh?.proxy?.state === 'serving');
    await eventually('the route answering through the mesh', async () => (await timed('/steady/{id}/', 1, 'warm')).every((r) => r.status === 200));
  });

  after(async () => {
    if (netemOn) await sb.run('ip', ['netns', 'exec', node2Netns, 'tc', 'qdisc', 'del', 'dev', UPLINK, 'root']);
    if (passed < 2) {
      const keep = `/tmp/nm-faults-e2e-logs-${Date.now()}`;
      await sb.run('cp', ['-r', dirname(sb.paths.supervisorLog), keep]);
      console.log(`sandbox logs kept in ${keep}`);
    }
    await sb.teardown({ dir });
  });

  it('baseline (plain link): 504 at the request deadline, retries within the route\'s attempts, nothing hangs', async () => {
    const figures = await checkTimeoutsAndRetries('plain');
    passed++;
    console.log(`F13 baseline: ${JSON.stringify(figures)}`);
  });

  it('with netem 200 ms + 5 % loss on node-2\'s uplink: the same holds', async () => {
    const add = await sb.run('ip', ['netns', 'exec', node2Netns, 'tc', 'qdisc', 'add', 'dev', UPLINK, 'root', 'netem', ...NETEM]);
    if (add.code !== 0) {
      const kernel = (() => { try { return readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(); } catch { return 'unknown'; } })();
      assert.fail(`F13 cannot run: \`tc qdisc add dev ${UPLINK} root netem ${NETEM.join(' ')}\` in ${node2Netns} failed (exit ${add.code}: ${add.stderr.trim()}). `
        + `This kernel (${kernel}) has no netem qdisc: build or load sch_netem (CONFIG_NET_SCH_NETEM; \`modprobe sch_netem\`) and run again.`);
    }
    netemOn = true;
    const shown = ok(await sb.run('ip', ['netns', 'exec', node2Netns, 'tc', 'qdisc', 'show', 'dev', UPLINK]), 'tc qdisc show');
    assert.match(shown, /netem .*delay 200ms/, `netem not in force on ${node2Netns}/${UPLINK}: ${shown}`);
    const figures = await checkTimeoutsAndRetries('netem');
    // The impairment was really there: every cross-node round trip pays 200 ms.
    assert.ok((figures.steadyMedianMs as number) >= 250, `the steady requests' median ${String(figures.steadyMedianMs)} ms does not show the 200 ms delay: netem not on the path?`);
    passed++;
    console.log(`F13 netem: ${JSON.stringify(figures)}`);
  });
});
