/**
 * Privileged end-to-end test of `kubectl logs` on a real sandbox (instance `kclogs`): the kubelet captures each
 * container run's stdout and stderr as CRI records, and the API server's pods/log serves them — the default
 * container, --tail, --timestamps, --previous after a crash, -f that streams new lines and ends with the pod.
 * The pod itself is created with `kubectl apply --server-side`. Needs root: without it the test FAILS.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { ok, poller, requireRoot, sandboxInstance } from './helpers/sandbox-instance.ts';

const sb = sandboxInstance('kclogs');
const eventually = poller({ timeoutMs: 60_000, everyMs: 250 });

const POD = `apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: ticker
    image: busybox
    command: [sh, -c, 'echo started; i=0; while true; do i=$((i+1)); echo "tick $i"; sleep 0.2; done']
  - name: crasher
    image: busybox
    command: [sh, -c, 'echo "run on stdout"; echo "oops on stderr" >&2; sleep 0.5; exit 3']
`;

describe('kubectl logs on sandbox pods (root)', { timeout: 300_000 }, () => {
  before(async () => {
    requireRoot();
    await sb.up('--nodes', '1', '--pods-per-node', '0');
  });
  after(async () => {
    await sb.teardown({ what: 'sandbox down (kclogs)' });
  });

  it('serves the current and previous runs of each container, with tail and timestamps', async () => {
    ok(await sb.run('kubectl', ['--kubeconfig', sb.kubeconfig, 'apply', '--server-side', '-f', '-'], { input: POD }), 'kubectl apply --server-side');
    await eventually('the crasher to have restarted', async () => {
      const r = await sb.kubectl('get', 'pod', 'talker', '-o', 'jsonpath={.status.containerStatuses[?(@.name=="crasher")].restartCount}');
      return Number(r.stdout) >= 1 || undefined;
    });
    const defaulted = await sb.kubectl('logs', 'talker');
    assert.equal(defaulted.code, 0, defaulted.stderr);
    assert.match(defaulted.stdout, /^started\ntick 1\ntick 2\n/);
    assert.match(defaulted.stderr, /Defaulted container "ticker" out of: ticker, crasher/);
    const tail = ok(await sb.kubectl('logs', 'talker', '-c', 'ticker', '--tail=2', '--timestamps'), 'kubectl logs --tail --timestamps');
    const lines = tail.trimEnd().split('\n');
    assert.equal(lines.length, 2);
    for (const l of lines) assert.match(l, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z tick \d+$/);
    const previous = ok(await sb.kubectl('logs', 'talker', '-c', 'crasher', '--previous'), 'kubectl logs --previous');
    assert.match(previous, /run on stdout\n/);
    assert.match(previous, /oops on stderr\n/, 'stderr is captured too');
  });

  it('follows new output and ends when the pod is deleted', async () => {
    const child = spawn('kubectl', ['--kubeconfig', sb.kubeconfig, 'logs', '-f', 'talker', '-c', 'ticker', '--tail=1'], { env: sb.env });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    try {
      await eventually('three streamed ticks', () => (out.match(/tick \d+\n/g)?.length ?? 0) >= 3 || undefined, 20_000, 100);
      const ticks = out.match(/tick (\d+)/g)!.map((t) => Number(t.slice(5)));
      for (let i = 1; i < ticks.length; i++) assert.equal(ticks[i], ticks[i - 1]! + 1, `consecutive ticks, none lost or repeated: ${out}`);
      ok(await sb.kubectl('delete', 'pod', 'talker', '--wait=false'), 'kubectl delete pod');
      const code = await Promise.race([exited, new Promise<number>((r) => setTimeout(() => r(-1), 30_000))]);
      assert.notEqual(code, -1, 'kubectl logs -f ended once the pod was gone');
    } finally {
      child.kill();
    }
  });
});
