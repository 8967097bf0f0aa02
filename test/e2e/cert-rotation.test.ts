/**
 * Privileged end-to-end test of certificate rotation under load (F8, F10), in its own sandbox instance `rot` with
 * SVIDs of one minute (NODEMESH_SANDBOX_LEAF_TTL=1m):
 *   - a client pod on node-1 sends 200 requests/s to the echo Service whose pod is on node-2 (most on HTTP
 *     keep-alive connections, one in five on a new connection, so new handshakes keep happening), through both
 *     node proxies and HBONE mTLS;
 *   - until the client's and the echo's SVIDs have each had at least 5 serial numbers (agent /statusz);
 *   - then a trust-bundle rotation (root) requested by annotation on the CA Secret, with load throughout: add
 *     root, wait for both agents to serve the new bundle, switch issuer, wait one leaf TTL, drop the old root;
 *   - every request answered 2xx, no connection error; after the drop a leaf chained to the old root (made by the
 *     test from the old CA state) is refused by node-2's HBONE listener, in a full handshake and when offering a
 *     TLS session ticket it got during the overlap (CVE-2022-21654 class), while a new-chain leaf is accepted.
 * Needs root: without it the test FAILS. Brings its instance down at the end, whatever happened.
 *
 * The file is also its own helper: `--rotation-load` is the load generator run inside the client pod, and
 * `--handshake` the TLS probe run in node-1's network namespace.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { join } from 'node:path';
import tls from 'node:tls';
import { parseArgs } from 'node:util';

const HELPER = process.argv.includes('--rotation-load') ? 'load' : process.argv.includes('--handshake') ? 'handshake' : undefined;

// --- helper 1: the load generator (inside the client pod) -----------------------------------------------------
type LoadSummary = { total: number; ok: number; failed: number; newConnections: number; byStatus: Record<string, number>; errors: string[]; seconds: number; maxLatencyMs: number };

async function runLoad(): Promise<void> {
  const { values } = parseArgs({ options: { url: { type: 'string' }, rps: { type: 'string', default: '200' }, 'stop-file': { type: 'string' }, out: { type: 'string' }, 'rotation-load': { type: 'boolean' } } });
  const url = values.url!;
  const rps = Number(values.rps);
  const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 32 });
  const s: LoadSummary = { total: 0, ok: 0, failed: 0, newConnections: 0, byStatus: {}, errors: [], seconds: 0, maxLatencyMs: 0 };
  const t0 = Date.now();
  let inFlight = 0;
  let seq = 0;
  const once = (fresh: boolean): void => {
    inFlight++;
    const started = Date.now();
    const done = (status: string, ok: boolean, err?: string): void => {
      inFlight--;
      s.total++;
      s.byStatus[status] = (s.byStatus[status] ?? 0) + 1;
      s.maxLatencyMs = Math.max(s.maxLatencyMs, Date.now() - started);
      if (ok) s.ok++;
      else {
        s.failed++;
        if (s.errors.length < 20) s.errors.push(`${new Date().toISOString()} ${err ?? status}`);
      }
    };
    if (fresh) s.newConnections++;
    const req = http.get(`${url}?n=${seq++}`, { agent: fresh ? false : keepAlive, timeout: 10_000 }, (res) => {
      res.resume();
      res.on('end', () => done(String(res.statusCode), (res.statusCode ?? 0) >= 200 && (res.statusCode ?? 0) < 300));
      res.on('error', (e) => done('error', false, e.message));
    });
    req.on('timeout', () => req.destroy(new Error('timeout after 10 s')));
    req.on('error', (e: NodeJS.ErrnoException) => done(`error:${e.code ?? 'unknown'}`, false, e.message));
  };
  // Ticks of 50 ms carry rps/20 requests each; every fifth request opens its own connection (a new handshake path).
  const perTick = rps / 20;
  let carry = 0;
  let n = 0;
  const timer = setInterval(() => {
    carry += perTick;
    while (carry >= 1) {
      carry -= 1;
      once(n++ % 5 === 4);
    }
  }, 50);
  await new Promise<void>((resolve) => {
    const check = setInterval(() => {
      if (existsSync(values['stop-file']!)) {
        clearInterval(check);
        resolve();
      }
    }, 200);
  });
  clearInterval(timer);
  const drainUntil = Date.now() + 15_000;
  while (inFlight > 0 && Date.now() < drainUntil) await new Promise((r) => setTimeout(r, 50));
  s.seconds = (Date.now() - t0) / 1000;
  writeFileSync(values.out!, JSON.stringify(s));
  keepAlive.destroy();
  process.exit(0);
}

// --- helper 2: the TLS probe of an HBONE listener (in node-1's network namespace) ------------------------------
type Probe = { outcome: 'accepted' | 'refused'; reused: boolean; detail: string; session?: string };

async function runHandshake(): Promise<void> {
  const { values } = parseArgs({ options: { host: { type: 'string' }, port: { type: 'string', default: '15008' }, cert: { type: 'string' }, key: { type: 'string' }, ca: { type: 'string' }, session: { type: 'string' }, handshake: { type: 'boolean' } } });
  const session = values.session && existsSync(values.session) ? Buffer.from(readFileSync(values.session, 'utf8'), 'base64') : undefined;
  const out = await new Promise<Probe>((resolve) => {
    const r: Probe = { outcome: 'refused', reused: false, detail: '' };
    const socket = tls.connect({
      host: values.host!, port: Number(values.port), cert: readFileSync(values.cert!, 'utf8'), key: readFileSync(values.key!, 'utf8'), ca: readFileSync(values.ca!, 'utf8'),
      ALPNProtocols: ['h2'], minVersion: 'TLSv1.3', ...(session ? { session } : {}),
      // A probe of the server's decision about us: whose certificate it presents is not under test here.
      checkServerIdentity: () => undefined,
    }, () => {
      r.reused = socket.isSessionReused();
      // The HTTP/2 client preface and an empty SETTINGS frame: an accepting HBONE listener answers with its SETTINGS.
      socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), Buffer.from([0, 0, 0, 4, 0, 0, 0, 0, 0])]));
    });
    socket.on('session', (s: Buffer) => { r.session = s.toString('base64'); });
    socket.on('data', () => {
      r.outcome = 'accepted';
      r.detail = 'HTTP/2 SETTINGS received';
      // Wait a little for the session ticket (sent after the handshake), then go.
      setTimeout(() => socket.destroy(), 300);
    });
    socket.on('error', (e: NodeJS.ErrnoException) => { if (r.outcome !== 'accepted') r.detail = e.code ?? e.message; });
    socket.on('close', () => resolve(r));
    socket.setTimeout(5000, () => { r.detail = 'no answer in 5 s'; socket.destroy(); });
  });
  process.stdout.write(`${JSON.stringify(out)}\n`);
  process.exit(0);
}

if (HELPER === 'load') await runLoad();
else if (HELPER === 'handshake') await runHandshake();
else await defineTests();

// --- the test ----------------------------------------------------------------------------------------------
async function defineTests(): Promise<void> {
  const { agentStatus, assertMeshWired, readSupervisorReport } = await import('./helpers/mesh-control-plane.ts');
  const { NODEMESH, ok, poller, requireRoot, sandboxInstance, tempDir } = await import('./helpers/sandbox-instance.ts');
  const { twoNodeEchoYaml } = await import('./helpers/two-node-echo.ts');
  const { MeshCa } = await import('../../operator/ca/mesh-ca.ts');
  const { generateKeyAndCsr } = await import('../../agent/certs/workload-key.ts');

  const INSTANCE = 'rot';
  const NS = 'rot';
  const TD = 'cluster.local';
  const sb = sandboxInstance(INSTANCE, { extraEnv: { NODEMESH_SANDBOX_LEAF_TTL: '1m' }, nodemeshTimeoutMs: 300_000 });
  const { cfg, run, kubectl } = sb;
  const eventually = poller({ timeoutMs: 90_000, everyMs: 500 });
  const SELF = import.meta.filename;

  type CertStatus = { spiffeId: string; serialNumber?: string; issuer?: string; state: string };
  type Secret = { data: Record<string, string>; metadata: { annotations?: Record<string, string> } };
  const readSecret = async (): Promise<Secret> => JSON.parse(ok(await kubectl('get', 'secret', 'nodemesh-ca', '-n', 'nodemesh-system', '-o', 'json'), 'CA Secret')) as Secret;
  const rotationState = async (): Promise<{ phase: string; kind?: string; lastCompleted?: { kind: string; at: string } }> =>
    JSON.parse((await readSecret()).metadata.annotations?.['nodemesh.io/ca-rotation'] ?? '{"phase":"idle"}') as { phase: string };
  const pemOf = (s: Secret, k: string): string => Buffer.from(s.data[k] ?? '', 'base64').toString('utf8');
  const fingerprint = (pem: string): string => createHash('sha256').update(Buffer.from(pem.replace(/-----[^-]+-----|\s+/g, ''), 'base64')).digest('hex');

  describe('certificate rotation under load (root)', { timeout: 600_000 }, () => {
    let dir = '';
    let echoIp = '';
    let load: ChildProcess | undefined;
    let loadExit: Promise<number | null> | undefined;
    const serials = { client: new Set<string>(), echo: new Set<string>() };
    const issuers = { client: new Set<string>(), echo: new Set<string>() };
    let watching: NodeJS.Timeout | undefined;

    const stopLoad = async (): Promise<LoadSummary | undefined> => {
      if (!load) return undefined;
      await writeFile(join(dir, 'stop'), '');
      const code = await Promise.race([loadExit!, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
      if (code === 'timeout' && load.exitCode === null && load.pid) process.kill(load.pid, 'SIGTERM');
      load = undefined;
      const file = join(dir, 'load.json');
      return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as LoadSummary) : undefined;
    };

    const watchSerials = async (): Promise<void> => {
      for (const [node, who, sa] of [['node-1', 'client', 'client'], ['node-2', 'echo', 'echo']] as const) {
        const st = await agentStatus(cfg, node).catch(() => undefined);
        const certs = (st?.mesh?.certificates ?? []) as CertStatus[] | string;
        if (!Array.isArray(certs)) continue;
        const c = certs.find((x) => x.spiffeId === `spiffe://${TD}/ns/${NS}/sa/${sa}`);
        if (c?.serialNumber) serials[who].add(c.serialNumber);
        if (c?.issuer) issuers[who].add(c.issuer);
      }
    };

    /** Runs the TLS probe from node-1's network namespace against node-2's HBONE listener. */
    const probe = async (leaf: { cert: string; key: string }, caPem: string, sessionFile?: string): Promise<Probe> => {
      const r = readSupervisorReport(cfg);
      const n1 = r.nodes.find((n) => n.name === 'node-1')!;
      const n2 = r.nodes.find((n) => n.name === 'node-2')!;
      const ca = join(dir, `ca-${Date.now()}.pem`);
      await writeFile(ca, caPem);
      const res = await run('ip', ['netns', 'exec', n1.netns, process.execPath, SELF, '--handshake', '--host', n2.address, '--cert', leaf.cert, '--key', leaf.key, '--ca', ca, ...(sessionFile ? ['--session', sessionFile] : [])], { timeoutMs: 30_000 });
      const line = res.stdout.trim().split('\n').pop() ?? '';
      assert.ok(line.startsWith('{'), `handshake probe printed nothing: ${res.stderr}`);
      return JSON.parse(line) as Probe;
    };

    /** A leaf for rot/client signed by the CA state in `secret` (the test's own copy of it), written to files. */
    const leafFrom = async (secret: Secret, name: string): Promise<{ cert: string; key: string }> => {
      const ca = await MeshCa.fromSecretData(secret.data, { trustDomain: TD, leafTtlMs: 30 * 60_000 });
      const spiffeId = `spiffe://${TD}/ns/${NS}/sa/client`;
      const k = await generateKeyAndCsr(spiffeId);
      const svid = await ca.issue(k.csrPem, { namespace: NS, serviceAccount: 'client' });
      const cert = join(dir, `${name}.crt`);
      const key = join(dir, `${name}.key`);
      await writeFile(cert, svid.certChainPem);
      await writeFile(key, k.keyPem, { mode: 0o600 });
      return { cert, key };
    };

    before(async () => {
      requireRoot('this end-to-end test needs root (network namespaces, cgroups, bpffs); run it with sudo');
      dir = await tempDir('nm-rot-e2e-');
      await sb.up('--nodes', '2', '--pods-per-node', '0');
      assertMeshWired(cfg);
      await writeFile(join(dir, 'objects.yaml'), twoNodeEchoYaml({ namespace: NS, client: 'client' }));
      ok(await kubectl('apply', '-f', join(dir, 'objects.yaml')), 'kubectl apply');
      for (const pod of ['client', 'echo-0']) await eventually(`pod ${NS}/${pod} Running`, async () => (await kubectl('get', 'pod', pod, '-n', NS, '-o', 'jsonpath={.status.phase}')).stdout === 'Running');
      echoIp = ok(await kubectl('get', 'svc', 'echo', '-n', NS, '-o', 'jsonpath={.spec.clusterIP}'), 'echo ClusterIP');
      for (const node of ['node-1', 'node-2']) await eventually(`${node}'s proxy serving`, async () => (await agentStatus(cfg, node)).mesh?.proxy?.state === 'serving', 120_000);
      await eventually('a first request through the mesh', async () => {
        const r = await run(NODEMESH, ['sandbox', 'exec', 'client', '-n', NS, '--', 'curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '3', `http://${echoIp}/ready`], { timeoutMs: 30_000 });
        return r.stdout === '200';
      }, 120_000);
    });

    let passed = false;
    after(async () => {
      if (watching) clearInterval(watching);
      try {
        await stopLoad();
        // On failure keep the control plane's logs (the instance's state directory goes with `down`).
        if (!passed) {
          const keep = await tempDir('nm-rot-e2e-logs-');
          for (const f of ['operator.log', 'agent-node-1.log', 'agent-node-2.log', 'supervisor.log', 'load.json']) {
            const from = f === 'load.json' ? join(dir, f) : join(cfg.stateDir, f);
            if (existsSync(from)) await copyFile(from, join(keep, f)).catch(() => {});
          }
          process.stdout.write(`# logs kept in ${keep}\n`);
        }
      } finally {
        await sb.teardown({ dir });
      }
    });

    it('0 failed requests through ≥ 5 SVID rotations per identity and a root rotation; old-chain certificates refused afterwards, resumed sessions included', async () => {
      // Load, from the client pod (its netns and cgroup: the datapath sends it through the node proxies).
      load = spawn(NODEMESH, ['sandbox', 'exec', 'client', '-n', NS, '--', process.execPath, SELF, '--rotation-load', '--url', `http://${echoIp}/rot`, '--rps', '200', '--stop-file', join(dir, 'stop'), '--out', join(dir, 'load.json')], { env: sb.env, stdio: ['ignore', 'ignore', 'pipe'] });
      let loadErr = '';
      load.stderr!.setEncoding('utf8').on('data', (d: string) => { loadErr += d; });
      loadExit = new Promise((r) => load!.once('exit', (code) => r(code)));
      const t0 = Date.now();
      watching = setInterval(() => { void watchSerials(); }, 2000);

      // F8: SVIDs of one minute renew every ~30 s under load.
      await eventually('≥ 5 serial numbers for the client and the echo SVIDs', async () => {
        await watchSerials();
        return serials.client.size >= 5 && serials.echo.size >= 5;
      }, 240_000, 2000);
      const renewedAt = Date.now();

      // Before the rotation: an old-chain leaf of our own (signed from the CA Secret as it is now) is accepted.
      const oldSecret = await readSecret();
      const oldRootFp = fingerprint(pemOf(oldSecret, 'ca.crt'));
      const oldIssuer = [...issuers.client][0];
      const oldLeaf = await leafFrom(oldSecret, 'old-leaf');
      // The probe trusts every root, old and new, so only the server's verdict about our leaf is measured.
      let probeCa = pemOf(oldSecret, 'roots.pem');
      const control = await probe(oldLeaf, probeCa);
      assert.equal(control.outcome, 'accepted', `an old-chain leaf before the rotation: ${JSON.stringify(control)}`);

      // F10: a root rotation by request, load running.
      ok(await kubectl('annotate', 'secret', 'nodemesh-ca', '-n', 'nodemesh-system', `nodemesh.io/rotate=root:e2e-${Date.now()}`, '--overwrite'), 'annotate the CA Secret');
      const phases: string[] = [];
      const sessionFile = join(dir, 'overlap.session');
      let overlapProbe: Probe | undefined;
      await eventually('the root rotation to complete', async () => {
        const st = await rotationState();
        if (phases[phases.length - 1] !== st.phase) phases.push(st.phase);
        if (st.phase !== 'idle' && !overlapProbe) {
          // During the overlap the old chain still works; keep the ticket the listener gives us.
          const s = await readSecret();
          probeCa = pemOf(s, 'roots.pem');
          overlapProbe = await probe(oldLeaf, probeCa);
          if (overlapProbe.session) writeFileSync(sessionFile, overlapProbe.session);
        }
        return st.phase === 'idle' && st.lastCompleted?.kind === 'root';
      }, 180_000, 1000);
      const rotatedAt = Date.now();
      assert.deepEqual(phases.filter((p) => p !== 'idle'), ['propagating', 'switched'], `phases seen: ${phases.join(' → ')}`);
      assert.equal(overlapProbe?.outcome, 'accepted', `old-chain leaf during the overlap: ${JSON.stringify(overlapProbe)}`);
      assert.ok(overlapProbe?.session, 'the HBONE listener issued no session ticket during the overlap');

      // Both proxies serve the bundle without the old root (agents report what their proxy applied).
      const newSecret = await readSecret();
      assert.ok(!pemOf(newSecret, 'roots.pem').includes(pemOf(oldSecret, 'ca.crt').trim()), 'the old root is still in the CA Secret');
      for (const node of ['node-1', 'node-2']) {
        await eventually(`${node} serves the bundle without the old root`, async () => {
          const st = (await agentStatus(cfg, node)) as { mesh?: { trustBundleReport?: { fingerprints: string[] } } };
          const fps = st.mesh?.trustBundleReport?.fingerprints;
          return !!fps && fps.length > 0 && !fps.includes(oldRootFp);
        }, 30_000);
      }

      // After the drop: the old-chain leaf is refused, in a full handshake and when resuming the overlap session.
      const full = await probe(oldLeaf, probeCa);
      assert.equal(full.outcome, 'refused', `old-chain leaf after the drop: ${JSON.stringify(full)}`);
      const resumed = await probe(oldLeaf, probeCa, sessionFile);
      assert.equal(resumed.outcome, 'refused', `old-chain leaf offering an overlap ticket after the drop: ${JSON.stringify(resumed)}`);
      assert.equal(resumed.reused, false, 'a ticket from before the drop resumed');
      const newLeaf = await leafFrom(newSecret, 'new-leaf');
      const fresh = await probe(newLeaf, probeCa);
      assert.equal(fresh.outcome, 'accepted', `new-chain leaf after the drop: ${JSON.stringify(fresh)}`);

      // Load kept running through it all: every answer 2xx, no connection error.
      await watchSerials();
      const summary = await stopLoad();
      assert.ok(summary, `the load generator wrote no summary: ${loadErr.slice(-2000)}`);
      const seconds = (Date.now() - t0) / 1000;
      process.stdout.write(`# load: ${JSON.stringify({ ...summary, errors: summary.errors.slice(0, 5) })}\n# serials: client ${serials.client.size}, echo ${serials.echo.size}; issuers client ${issuers.client.size}, echo ${issuers.echo.size}\n# timing: renewals ${((renewedAt - t0) / 1000).toFixed(0)} s, rotation ${((rotatedAt - renewedAt) / 1000).toFixed(0)} s, total ${seconds.toFixed(0)} s; rate ${(summary.total / summary.seconds).toFixed(0)} req/s\n`);
      assert.equal(summary.failed, 0, `failed requests: ${JSON.stringify(summary.byStatus)} ${summary.errors.join('\n')}`);
      assert.ok(summary.total >= 150 * summary.seconds, `load too thin to mean anything: ${summary.total} requests in ${summary.seconds} s`);
      assert.ok(summary.newConnections >= 1000, `too few new connections: ${summary.newConnections}`);
      assert.ok(serials.client.size >= 5 && serials.echo.size >= 5, `serials: client ${serials.client.size}, echo ${serials.echo.size}`);
      // Both identities were re-issued by the new chain.
      assert.ok(issuers.client.size >= 2 && issuers.echo.size >= 2, `issuers seen: ${[...issuers.client, ...issuers.echo].join(' | ')}`);
      assert.ok(oldIssuer !== undefined);
      passed = true;
    });
  });
}
