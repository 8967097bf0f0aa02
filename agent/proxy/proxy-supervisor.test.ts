// ProxySupervisor over a real proxy process (workers, no datapath: fixed destination): the listener opens only with
// the first config, updates reach every worker, and kill -9 of the proxy closes the port at once (connects refused)
// and a new proxy serves the latest config again within 5 s.
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEcho, type EchoServer } from '../../l7proxy/testing/harness.ts';
import { silentLogger } from '../logger.ts';
import { ProxySupervisor, type ProxyUpdate } from './proxy-supervisor.ts';

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

function get(port: number, path = '/'): Promise<{ status: number } | { error: string }> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let buf = '';
    s.on('data', (d: Buffer) => { buf += d.toString(); });
    s.on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
    s.on('close', () => { const m = /^HTTP\/1\.1 (\d+)/.exec(buf); if (m) resolve({ status: Number(m[1]) }); else resolve({ error: 'closed' }); });
    s.write(`GET ${path} HTTP/1.1\r\nhost: echo\r\nconnection: close\r\n\r\n`);
  });
}

function update(version: string, backendPort: number): ProxyUpdate {
  return {
    version,
    config: {
      version,
      services: [{ name: 'shop/echo:80', addresses: [{ ip: '10.96.0.20', port: 80 }], protocol: 'http', defaultBackend: 'shop/echo:80' }],
      backends: [{ name: 'shop/echo:80', endpoints: [{ ip: '127.0.0.1', port: backendPort, ready: true }] }],
    },
    identities: {},
    pluginData: { version, inbound: { version, services: [], backends: [] }, endpoints: {}, identities: {}, certs: { workloads: {} } },
  };
}

describe('ProxySupervisor', () => {
  let echo: EchoServer;
  let sup: ProxySupervisor;
  let port = 0;
  const runDir = mkdtempSync(join(tmpdir(), 'nm-proxy-sup-'));

  before(async () => {
    echo = await startEcho('echo');
    port = await freePort();
    sup = new ProxySupervisor({ nodeName: 'node-t', host: '127.0.0.1', outboundPort: port, inboundPort: await freePort(), workers: 2, fixedDst: '10.96.0.20:80', trustDomain: 'cluster.local', runDir, log: silentLogger });
    await sup.start();
  });
  after(async () => { await sup.stop(); await echo.close(); rmSync(runDir, { recursive: true, force: true }); });

  it('does not listen before the first config, then serves it', async () => {
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual(await get(port), { error: 'ECONNREFUSED' });
    await sup.apply(update('v1', echo.port));
    await sup.whenServing();
    assert.deepEqual(await get(port), { status: 200 });
    assert.equal(sup.status().applied, 'v1');
    assert.equal(Number(readFileSync(sup.pidFile, 'utf8')), sup.status().pid);
  });

  it('kill -9 of the proxy: refused within 1 s, serving the latest config again within 5 s', async () => {
    await sup.apply(update('v2', echo.port));
    const pid = sup.status().pid!;
    process.kill(pid, 'SIGKILL');
    const t0 = Date.now();
    let refusedAt: number | undefined;
    while (Date.now() - t0 < 1000) {
      const r = await get(port);
      if ('error' in r && r.error === 'ECONNREFUSED') { refusedAt = Date.now(); break; }
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.ok(refusedAt !== undefined, 'connects still accepted 1 s after kill -9');
    let backAt: number | undefined;
    while (Date.now() - t0 < 5000) {
      const r = await get(port);
      if ('status' in r && r.status === 200) { backAt = Date.now(); break; }
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.ok(backAt !== undefined, 'proxy not serving 5 s after kill -9');
    assert.notEqual(sup.status().pid, pid);
    assert.equal(sup.status().restarts, 1);
    assert.equal(sup.status().applied, 'v2');
  });
});
