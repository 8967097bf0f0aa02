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
 * First on the plain link (the baseline), then on an impaired one. The anchor asks for `tc netem delay 200ms loss 5%`;
 * kernels without sch_netem (and without fq, so no EDT delay either) cannot run that, so the impairment is split:
 *   - real: 5 % random loss of IP packets in the kernel, each direction, by bpf/impair.c (tc clsact ingress + egress)
 *     on node-2's uplink, an interface the sandbox made inside its nm-faults-node-2 namespace (never one of the
 *     machine's). TCP really loses segments and retransmits them (RTO ≥ 200 ms; a lost SYN costs 1 s), which can
 *     push a request past its deadline. The test checks the loss happened: the programs' counters (rate within
 *     binomial bounds of 5 %) and TCP RetransSegs of both nodes' namespaces.
 *   - emulated: the 200 ms of latency. Nothing on this kernel can hold a packet, so the echo backend is asked to
 *     answer 200 ms later (`?delay=` + 200 ms): one extra round trip's worth per request, at the backend, not per packet.
 * If the BPF impairment cannot be attached, the impaired half FAILS and says why (never a skip).
 * Needs root: without it the test FAILS. Detaches the impairment and brings its instance down at the end.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { computeTopology, UPLINK } from '../../sandbox/net/topology.ts';
import { attachImpairment, detachImpairment, type ImpairmentPlan, planImpairment, readImpairCounters, tcpRetransSegs } from './helpers/link-impair.ts';
import { assertMeshWired, agentStatus, fetchAgent } from './helpers/mesh-control-plane.ts';
import { NODEMESH, ok, poller, requireRoot, sandboxInstance, tempDir } from './helpers/sandbox-instance.ts';
import type { TimedResult } from './helpers/timed-requests.ts';
import { twoNodeEchoYaml } from './helpers/two-node-echo.ts';

const INSTANCE = 'faults';
const NS = 'faults';
const sb = sandboxInstance(INSTANCE, { nodemeshTimeoutMs: 300_000 });
const { cfg, kubectl } = sb;
const eventually = poller({ timeoutMs: 120_000, everyMs: 1000 });
const TIMED = join(import.meta.dirname, 'helpers/timed-requests.ts');
/** The impairment of reliability anchor F13: 5 % loss (real, in the kernel) and 200 ms latency (emulated at the backend). */
const LOSS = 0.05;
const EMULATED_LATENCY_MS = 200;

const objects = (rawDir: string): string => twoNodeEchoYaml({
  namespace: NS,
  client: 'client',
  echoPod: 'echo',
  echoArgs: ['--raw-log', `${rawDir}/echo.raw`],
  routeRules: `
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
    backendRefs: [{name: echo, port: 80}]`.slice(1),
});

const median = (xs: number[]): number => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] ?? NaN; };

describe('F13: per-route timeouts and retries over an impaired link (root)', { timeout: 900_000 }, () => {
  let dir = '';
  let svc = '';
  let node1Netns = '';
  let node2Netns = '';
  let impairment: ImpairmentPlan | undefined;
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

  /**
   * The F13 checks, on whatever the link is now; `label` names the phase in messages; `extraMs` is added to every
   * delay the backend is asked for (the emulated latency).
   */
  async function checkTimeoutsAndRetries(label: string, extraMs = 0): Promise<Record<string, unknown>> {
    const delay = (ms: number): string => `delay=${ms + extraMs}ms`;
    // Whole-request deadline: 504 at 1 s ±10 %.
    const deadline = await timed(`/deadline/{id}/?${delay(3000)}`, 10, `${label}d`);
    for (const r of deadline) {
      assert.equal(r.status, 504, `${label} /deadline ${r.id}: ${JSON.stringify(r)}`);
      assert.ok(r.ms >= 900 && r.ms <= 1100, `${label} /deadline ${r.id}: the 504 came after ${r.ms} ms, not at 1 s ±10 %`);
    }
    // Per-attempt deadline with retries on 504: at most 3 attempts, ended before the 3 s request deadline (+10 %).
    const retriesBefore = await counter('nodemesh_retries_total');
    const pertry = await timed(`/pertry/{id}/?${delay(2000)}`, 8, `${label}p`);
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
    const codes = await timed(`/codes/{id}/?status=503${extraMs ? `&${delay(0)}` : ''}`, 8, `${label}c`);
    await new Promise((r) => setTimeout(r, 500));
    const codeAttempts = codes.map((r) => attemptsAtBackend('codes', r.id));
    for (const [i, r] of codes.entries()) {
      assert.equal(r.status, 503, `${label} /codes ${r.id}: ${JSON.stringify(r)}`);
      assert.ok(codeAttempts[i]! >= 1 && codeAttempts[i]! <= 3, `${label} /codes ${r.id}: ${codeAttempts[i]} attempts at the backend (allowed 1..3)`);
    }
    // Steady traffic: everything answered, nothing hung.
    const steady = await timed(`/steady/{id}/?${delay(50)}`, 40, `${label}s`, 4);
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
    const topo = computeTopology(cfg, 2);
    node1Netns = topo.nodes[0]!.netns;
    node2Netns = topo.nodes[1]!.netns;
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
    if (impairment) {
      try {
        await detachImpairment(sb.run, impairment);
      } catch (err) {
        console.log(`detaching the impairment failed (sandbox down removes the namespace with it): ${String(err)}`);
      }
    }
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

  it(`with ${LOSS * 100} % random loss in the kernel (BPF, both directions of node-2's uplink) and ${EMULATED_LATENCY_MS} ms latency emulated at the backend: the same holds`, async () => {
    impairment = planImpairment({ netns: node2Netns, dev: UPLINK, lossFraction: LOSS, sandboxPrefix: cfg.prefix });
    let attached: Awaited<ReturnType<typeof attachImpairment>>;
    try {
      attached = await attachImpairment(sb.run, impairment);
    } catch (err) {
      assert.fail(`F13 cannot run: the BPF packet-loss impairment could not be attached. ${(err as Error).message}`);
    }
    const retransBefore = await tcpRetransSegs(sb.run, node1Netns) + await tcpRetransSegs(sb.run, node2Netns);
    const before = readImpairCounters(impairment);
    const figures = await checkTimeoutsAndRetries('impaired', EMULATED_LATENCY_MS);
    const c = readImpairCounters(impairment);
    const retrans = await tcpRetransSegs(sb.run, node1Netns) + await tcpRetransSegs(sb.run, node2Netns) - retransBefore;
    // The loss was really there: the programs saw the traffic and dropped about LOSS of it...
    const dropped = c.ingressDropped + c.egressDropped - before.ingressDropped - before.egressDropped;
    const seen = dropped + c.ingressPassed + c.egressPassed - before.ingressPassed - before.egressPassed;
    assert.ok(seen >= 200, `only ${seen} IP packets crossed ${node2Netns}/${UPLINK} during the impaired phase: the BPF impairment is not on the path`);
    const rate = dropped / seen;
    const sigma = Math.sqrt((LOSS * (1 - LOSS)) / seen);
    assert.ok(Math.abs(rate - LOSS) <= 4 * sigma + 0.005, `the BPF impairment dropped ${dropped}/${seen} IP packets (${(rate * 100).toFixed(2)} %), not ${LOSS * 100} % within ±${((4 * sigma + 0.005) * 100).toFixed(2)} %`);
    assert.ok(c.ingressDropped > before.ingressDropped && c.egressDropped > before.egressDropped, `loss not in both directions: ${JSON.stringify(c)}`);
    // ...and TCP paid for it.
    assert.ok(retrans > 0, `no TCP retransmission in ${node1Netns} or ${node2Netns} although ${dropped} packets were dropped`);
    // The emulated latency is applied (this checks the emulation, not the kernel).
    assert.ok((figures.steadyMedianMs as number) >= 50 + EMULATED_LATENCY_MS, `the steady requests' median ${String(figures.steadyMedianMs)} ms does not include the emulated ${EMULATED_LATENCY_MS} ms`);
    passed++;
    console.log(`F13 impaired (real: ${LOSS * 100} % random loss of IP packets each direction, BPF tc on ${node2Netns}/${UPLINK}, progs ${attached.ingressProgId}/${attached.egressProgId}; `
      + `emulated: ${EMULATED_LATENCY_MS} ms latency as backend delay): ${JSON.stringify({ ...figures, packetsSeen: seen, packetsDropped: dropped, lossPct: Number((rate * 100).toFixed(2)), tcpRetransSegs: retrans })}`);
  });
});
