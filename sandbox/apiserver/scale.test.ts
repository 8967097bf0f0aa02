/**
 * Scale: 10,000 Services and 50,000 endpoints (5,000 EndpointSlices of 10) created over HTTP while three
 * watchers (each on services and endpointslices) follow; prints the time. NM_SCALE_FACTOR=0.1 runs a tenth.
 */

import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { after, before, describe, it } from 'node:test';
import type { ApiServer } from './server.ts';
import { startApiServer } from './server.ts';

const FACTOR = Number(process.env['NM_SCALE_FACTOR'] ?? '1');
const SERVICES = Math.round(10_000 * FACTOR);
const SLICES = Math.round(5_000 * FACTOR);
const ENDPOINTS_PER_SLICE = 10;
const CONCURRENCY = 64;

interface Counter {
  services: number;
  slices: number;
  endpoints: number;
  streams: AbortController[];
}

/** POSTs JSON over a keep-alive agent (lighter than fetch, so the figure is the server's more than the client's). */
function post(agent: Agent, url: string, token: string, body: unknown): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = request(url, { method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(data);
  });
}

describe('scale', () => {
  let server: ApiServer;
  before(async () => {
    server = await startApiServer({ tls: false, watchHistoryWindow: 10_000 });
  });
  after(async () => {
    await server.close();
  });

  it(`holds ${SERVICES} services and ${SLICES * ENDPOINTS_PER_SLICE} endpoints with three watchers`, async () => {
    const auth = { authorization: `Bearer ${server.token}`, 'content-type': 'application/json' };
    const rv = ((await (await fetch(`${server.url}/api/v1/services`, { headers: auth })).json()) as { metadata: { resourceVersion: string } }).metadata.resourceVersion;

    const follow = async (c: Counter, path: string, onEvent: (line: string) => void): Promise<void> => {
      const ac = new AbortController();
      c.streams.push(ac);
      const res = await fetch(`${server.url}${path}?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`, { headers: auth, signal: ac.signal });
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let buf = '';
      void (async () => {
        try {
          for (;;) {
            const { value, done } = await reader.read();
            if (done) return;
            buf += dec.decode(value, { stream: true });
            let nl: number;
            while ((nl = buf.indexOf('\n')) >= 0) {
              onEvent(buf.slice(0, nl));
              buf = buf.slice(nl + 1);
            }
          }
        } catch {
          // aborted at the end of the test
        }
      })();
    };
    const watchers: Counter[] = [];
    for (let i = 0; i < 3; i++) {
      const c: Counter = { services: 0, slices: 0, endpoints: 0, streams: [] };
      watchers.push(c);
      await follow(c, '/api/v1/services', (line) => {
        if (line.startsWith('{"type":"ADDED"')) c.services++;
      });
      await follow(c, '/apis/discovery.k8s.io/v1/endpointslices', (line) => {
        if (!line.startsWith('{"type":"ADDED"')) return;
        c.slices++;
        c.endpoints += (JSON.parse(line) as { object: { endpoints: unknown[] } }).object.endpoints.length;
      });
    }

    const namespaces = 20;
    for (let n = 0; n < namespaces; n++) {
      const r = await fetch(`${server.url}/api/v1/namespaces`, { method: 'POST', headers: auth, body: JSON.stringify({ metadata: { name: `scale-${n}` } }) });
      assert.equal(r.status, 201);
    }
    const agent = new Agent({ keepAlive: true, maxSockets: CONCURRENCY });
    const jobs: (() => Promise<void>)[] = [];
    for (let i = 0; i < SERVICES; i++) {
      const ns = `scale-${i % namespaces}`;
      jobs.push(async () => {
        const r = await post(agent, `${server.url}/api/v1/namespaces/${ns}/services`, server.token, {
          metadata: { name: `svc-${i}`, labels: { app: `app-${i}` } },
          spec: { selector: { app: `app-${i}` }, ports: [{ name: 'http', port: 80, targetPort: 8080 }] },
        });
        if (r.status !== 201) throw new Error(`service ${i}: ${r.status} ${r.text}`);
      });
    }
    for (let i = 0; i < SLICES; i++) {
      const ns = `scale-${i % namespaces}`;
      jobs.push(async () => {
        const endpoints = Array.from({ length: ENDPOINTS_PER_SLICE }, (_, k) => ({
          addresses: [`10.${(i >> 8) & 255}.${i & 255}.${k + 1}`],
          conditions: { ready: true, serving: true, terminating: false },
          nodeName: `node-${k % 4}`,
          targetRef: { kind: 'Pod', namespace: ns, name: `pod-${i}-${k}` },
        }));
        const r = await post(agent, `${server.url}/apis/discovery.k8s.io/v1/namespaces/${ns}/endpointslices`, server.token, {
          metadata: { name: `svc-${i}-abcde`, labels: { 'kubernetes.io/service-name': `svc-${i}` } },
          addressType: 'IPv4',
          endpoints,
          ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
        });
        if (r.status !== 201) throw new Error(`slice ${i}: ${r.status} ${r.text}`);
      });
    }

    const start = performance.now();
    const cpuStart = process.cpuUsage();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < jobs.length) await jobs[next++]!();
      }),
    );
    const written = performance.now();
    const cpu = process.cpuUsage(cpuStart);
    const deadline = Date.now() + 60_000;
    while (watchers.some((c) => c.services < SERVICES || c.endpoints < SLICES * ENDPOINTS_PER_SLICE) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    const seen = performance.now();
    for (const c of watchers) {
      assert.equal(c.services, SERVICES, 'every watcher saw every service');
      assert.equal(c.slices, SLICES);
      assert.equal(c.endpoints, SLICES * ENDPOINTS_PER_SLICE);
    }
    const listStart = performance.now();
    const list = (await (await fetch(`${server.url}/api/v1/services?limit=500`, { headers: auth })).json()) as { items: unknown[]; metadata: { continue?: string } };
    assert.equal(list.items.length, 500);
    assert.ok(list.metadata.continue);
    const all = (await (await fetch(`${server.url}/api/v1/services`, { headers: auth })).json()) as { items: unknown[] };
    const listMs = performance.now() - listStart;
    assert.equal(all.items.length, SERVICES + 1);
    for (const c of watchers) for (const s of c.streams) s.abort();
    agent.destroy();
    const objects = SERVICES + SLICES;
    console.log(
      `scale: created ${SERVICES} services + ${SLICES} endpointslices (${SLICES * ENDPOINTS_PER_SLICE} endpoints) over HTTP in ${((written - start) / 1000).toFixed(2)} s ` +
        `(${Math.round(objects / ((written - start) / 1000))} objects/s, ${CONCURRENCY} in flight, ${((cpu.user + cpu.system) / 1e6).toFixed(1)} s CPU for client+server in one process); all 3 watchers caught up ${(seen - written).toFixed(0)} ms later; ` +
        `list of ${SERVICES + 1} services (+ a 500-item page) in ${listMs.toFixed(0)} ms; heap ${Math.round(process.memoryUsage().heapUsed / 1e6)} MB`,
    );
  });
});
