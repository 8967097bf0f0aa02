import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { computeDownstreamResponseHeaders, computeUpstreamRequestHeaders, parsePodProxyId, planPodProxyTarget, type PodProxyTarget } from './pod-proxy.ts';
import type { StatusError } from './errors.ts';
import { startTestServer, type TestServer } from './testing.ts';

describe('pods/proxy planning (pure)', () => {
  const pod = {
    metadata: { name: 'agent-x', namespace: 'nodemesh-system' },
    spec: { nodeName: 'node-1', hostNetwork: true, containers: [{ name: 'agent', ports: [{ name: 'health', containerPort: 9880 }, { name: 'other', containerPort: 9999 }] }] },
    status: { phase: 'Running', podIP: '10.0.0.1' },
  };

  it('splits [scheme:]name[:port] and refuses other shapes', () => {
    assert.deepEqual(parsePodProxyId('agent-x'), { scheme: undefined, name: 'agent-x', port: undefined });
    assert.deepEqual(parsePodProxyId('agent-x:9880'), { scheme: undefined, name: 'agent-x', port: '9880' });
    assert.deepEqual(parsePodProxyId('https:agent-x:8443'), { scheme: 'https', name: 'agent-x', port: '8443' });
    assert.deepEqual(parsePodProxyId('agent-x:'), { scheme: undefined, name: 'agent-x', port: undefined });
    assert.equal(parsePodProxyId('ftp:agent-x:21'), undefined);
    assert.equal(parsePodProxyId(':9880'), undefined);
    assert.equal(parsePodProxyId('a:b:c:d'), undefined);
  });

  it('targets the pod IP with the port asked for, a named container port, or the first declared one', () => {
    assert.deepEqual(planPodProxyTarget(pod, { scheme: undefined, name: 'agent-x', port: '9999' }), { namespace: 'nodemesh-system', name: 'agent-x', nodeName: 'node-1', hostNetwork: true, podIP: '10.0.0.1', port: 9999, scheme: 'http' });
    assert.equal(planPodProxyTarget(pod, { scheme: undefined, name: 'agent-x', port: 'health' }).port, 9880);
    assert.equal(planPodProxyTarget(pod, { scheme: undefined, name: 'agent-x', port: undefined }).port, 9880);
    assert.equal(planPodProxyTarget({ ...pod, spec: { containers: [{ name: 'c' }] } }, { scheme: 'https', name: 'agent-x', port: undefined }).port, 443);
    assert.throws(() => planPodProxyTarget(pod, { scheme: undefined, name: 'agent-x', port: 'metrics' }), (e: StatusError) => e.code === 400 && /no container port named "metrics" \(ports: health=9880, other=9999\)/.test(e.message));
    assert.throws(() => planPodProxyTarget(pod, { scheme: undefined, name: 'agent-x', port: '70000' }), (e: StatusError) => e.code === 400);
  });

  it('a pod without an IP is a 503 naming the pod and its phase', () => {
    assert.throws(() => planPodProxyTarget({ ...pod, status: { phase: 'Pending' } }, { scheme: undefined, name: 'agent-x', port: '9880' }),
      (e: StatusError) => e.code === 503 && e.reason === 'ServiceUnavailable' && e.message === 'pod nodemesh-system/agent-x has no IP address yet (phase Pending): nothing to proxy to');
  });

  it('drops hop-by-hop headers, those Connection names, and the caller\'s credentials; sets Host to the pod', () => {
    const up = computeUpstreamRequestHeaders({ host: 'api:6443', authorization: 'Bearer secret', connection: 'keep-alive, x-private', 'keep-alive': 'timeout=5', 'x-private': '1', te: 'trailers', 'transfer-encoding': 'chunked', accept: 'application/json', 'x-request-id': 'r1' }, { podIP: 'fd00::1', port: 9880 });
    assert.deepEqual(up, { accept: 'application/json', 'x-request-id': 'r1', host: '[fd00::1]:9880' });
    const down = computeDownstreamResponseHeaders({ date: 'Sat, 21 Nov 2026 10:00:00 GMT', 'content-type': 'text/plain', connection: 'close', 'transfer-encoding': 'chunked', 'set-cookie': ['a=1', 'b=2'] });
    assert.deepEqual(down, { date: 'Sat, 21 Nov 2026 10:00:00 GMT', 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2'] });
  });
});

describe('pods/proxy over HTTP (fake dialer to a loopback stand-in pod)', () => {
  let t: TestServer;
  let upstream: Server;
  let upstreamPort = 0;
  const dialed: PodProxyTarget[] = [];
  const seen: { method: string; url: string; headers: IncomingMessage['headers']; body: string }[] = [];
  const podsPath = '/api/v1/namespaces/nodemesh-system/pods';
  const FIXED_DATE = 'Thu, 01 Jan 2026 00:00:00 GMT';

  before(async () => {
    upstream = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        seen.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks).toString() });
        if (req.url?.startsWith('/stream')) {
          // Written in parts, the last after a pause: the proxy must not buffer the whole answer.
          res.writeHead(200, { 'content-type': 'text/plain', date: FIXED_DATE, connection: 'keep-alive', 'keep-alive': 'timeout=5', 'x-agent': 'yes' });
          res.write('part1\n');
          setTimeout(() => res.end('part2\n'), 100);
          return;
        }
        res.writeHead(req.url === '/missing' ? 404 : 201, { 'content-type': 'application/json', date: FIXED_DATE });
        res.end(req.method === 'HEAD' ? undefined : JSON.stringify({ path: req.url, body: Buffer.concat(chunks).toString() }));
      });
    });
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
    upstreamPort = (upstream.address() as AddressInfo).port;
    t = await startTestServer({
      // The "pod network" is loopback here; the sandbox's dialer uses unix sockets into node namespaces instead.
      podProxyDialer: (target) => {
        dialed.push(target);
        if (target.port === 9) throw new Error('nothing listens there in this test');
        if (target.port === 10) return connect({ host: '127.0.0.1', port: 1 }) as Socket; // refused
        return connect({ host: '127.0.0.1', port: upstreamPort });
      },
    });
    const mk = async (name: string, status: Record<string, unknown> | undefined): Promise<void> => {
      const r = await t.request('POST', podsPath, { metadata: { name }, spec: { nodeName: 'node-1', hostNetwork: true, containers: [{ name: 'agent', image: 'i', ports: [{ name: 'health', containerPort: 9880 }] }] } });
      assert.equal(r.status, 201, JSON.stringify(r.body));
      if (status) assert.equal((await t.request('PATCH', `${podsPath}/${name}/status`, { status }, { 'content-type': 'application/merge-patch+json' })).status, 200);
    };
    await mk('agent-1', { phase: 'Running', podIP: '10.0.0.1' });
    await mk('agent-pending', undefined);
  });
  after(async () => {
    await t.close();
    upstream.closeAllConnections();
    await new Promise<void>((r) => upstream.close(() => r()));
  });

  it('GET forwards path and query, passes status and headers (Date) through, drops credentials and hop-by-hop headers', async () => {
    const r = await t.request('GET', `${podsPath}/agent-1:9880/proxy/explain?method=GET&url=http%3A%2F%2Fecho%2Fa%20b`, undefined, { 'x-trace': 't1' });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get('date'), FIXED_DATE, 'the pod\'s Date header, not the API server\'s');
    assert.deepEqual(r.body, { path: '/explain?method=GET&url=http%3A%2F%2Fecho%2Fa%20b', body: '' });
    const got = seen.at(-1)!;
    assert.equal(got.headers['authorization'], undefined, 'the API server\'s credentials do not reach the pod');
    assert.equal(got.headers['x-trace'], 't1', 'end-to-end headers reach the pod');
    assert.equal(got.headers['host'], '10.0.0.1:9880');
    assert.deepEqual(dialed.at(-1), { namespace: 'nodemesh-system', name: 'agent-1', nodeName: 'node-1', hostNetwork: true, podIP: '10.0.0.1', port: 9880, scheme: 'http' });
  });

  it('without a path the pod gets /; named ports resolve; the upstream\'s 404 is passed through', async () => {
    await t.request('GET', `${podsPath}/agent-1:health/proxy`);
    assert.equal(seen.at(-1)!.url, '/');
    assert.equal(dialed.at(-1)!.port, 9880);
    const trailing = await t.request('GET', `${podsPath}/agent-1/proxy/a/b/`);
    assert.equal(seen.at(-1)!.url, '/a/b/', 'the trailing slash belongs to the pod\'s path');
    assert.equal(trailing.status, 201);
    const missing = await t.request('GET', `${podsPath}/agent-1:9880/proxy/missing`);
    assert.equal(missing.status, 404);
    assert.deepEqual(missing.body, { path: '/missing', body: '' }, 'the pod\'s own 404, not a Status');
  });

  it('POST streams the request body; HEAD answers headers only', async () => {
    const r = await t.request('POST', `${podsPath}/agent-1:9880/proxy/submit`, 'x'.repeat(100_000), { 'content-type': 'text/plain' });
    assert.equal(r.status, 201);
    assert.equal((r.body as { body: string }).body.length, 100_000);
    assert.equal(seen.at(-1)!.method, 'POST');
    const head = await fetch(`${t.server.url}${podsPath}/agent-1:9880/proxy/statusz`, { method: 'HEAD', headers: { authorization: `Bearer ${t.server.token}` } });
    assert.equal(head.status, 201);
    assert.equal(seen.at(-1)!.method, 'HEAD');
  });

  it('streams the answer as the pod writes it, without hop-by-hop headers', async () => {
    const res = await fetch(`${t.server.url}${podsPath}/agent-1:9880/proxy/stream`, { headers: { authorization: `Bearer ${t.server.token}` } });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('x-agent'), 'yes');
    assert.notEqual(res.headers.get('keep-alive'), 'timeout=5', 'the pod\'s Keep-Alive describes its own connection to the API server');
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    assert.equal(first, 'part1\n', 'the first part arrives before the pod finished');
    let rest = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      rest += new TextDecoder().decode(value);
    }
    assert.equal(rest, 'part2\n');
  });

  it('503 Status when the pod has no IP, the dialer has no way, or the dial is refused; 404 for no pod; 401 without credentials', async () => {
    const pending = await t.request('GET', `${podsPath}/agent-pending:9880/proxy/statusz`);
    assert.equal(pending.status, 503);
    assert.equal(pending.body.kind, 'Status');
    assert.match(pending.body.message, /no IP address yet \(phase Pending\)/);
    const noWay = await t.request('GET', `${podsPath}/agent-1:9/proxy/statusz`);
    assert.equal(noWay.status, 503);
    assert.equal(noWay.body.reason, 'ServiceUnavailable');
    assert.equal(noWay.body.message, 'error trying to reach pod nodemesh-system/agent-1 at 10.0.0.1:9: nothing listens there in this test');
    const refused = await t.request('GET', `${podsPath}/agent-1:10/proxy/statusz`);
    assert.equal(refused.status, 503);
    assert.match(refused.body.message, /^error trying to reach pod nodemesh-system\/agent-1 at 10\.0\.0\.1:10: ECONNREFUSED/);
    const none = await t.request('GET', `${podsPath}/nope:9880/proxy/statusz`);
    assert.equal(none.status, 404);
    assert.equal(none.body.message, 'pods "nope" not found');
    const anon = await fetch(`${t.server.url}${podsPath}/agent-1:9880/proxy/statusz`);
    assert.equal(anon.status, 401);
  });

  it('discovery lists pods/proxy', async () => {
    const r = await t.request('GET', '/api/v1');
    const names = (r.body.resources as { name: string; verbs: string[] }[]).filter((x) => x.name.startsWith('pods/')).map((x) => x.name);
    assert.ok(names.includes('pods/proxy'), names.join(', '));
  });
});

describe('pods/proxy without a dialer', () => {
  it('answers 503: the server never routes to pods by itself', async () => {
    const t = await startTestServer();
    try {
      await t.request('POST', '/api/v1/namespaces/default/pods', { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'i' }] } });
      await t.request('PATCH', '/api/v1/namespaces/default/pods/p/status', { status: { phase: 'Running', podIP: '10.1.0.5' } }, { 'content-type': 'application/merge-patch+json' });
      const r = await t.request('GET', '/api/v1/namespaces/default/pods/p:8080/proxy/');
      assert.equal(r.status, 503);
      assert.match(r.body.message, /has no route into pod networks/);
    } finally {
      await t.close();
    }
  });
});
