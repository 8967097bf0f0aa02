/** The cluster DNS server: the Kubernetes name schema, REFUSED outside the zone, wire format over UDP and TCP. */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { silentLogger } from '../logger.ts';
import { answerQuestion, buildDnsResponse, computeDnsState, type DnsQuery, parseDnsQuery, queryDns, RCODE, RR, startDnsServer, undashIp } from './dns.ts';

const state = computeDnsState(
  [
    { metadata: { name: 'echo', namespace: 'default' }, spec: { clusterIP: '10.96.0.42' } },
    { metadata: { name: 'db', namespace: 'shop' }, spec: { clusterIP: 'None' } },
    { metadata: { name: 'ext', namespace: 'shop' }, spec: { type: 'ExternalName', externalName: 'example.org' } },
  ],
  [
    {
      metadata: { name: 'db-1', namespace: 'shop', labels: { 'kubernetes.io/service-name': 'db' } }, addressType: 'IPv4',
      endpoints: [{ addresses: ['10.244.1.7'], hostname: 'db-0' }, { addresses: ['10.244.2.8'] }, { addresses: ['10.244.2.9'], conditions: { ready: false } }],
    },
  ],
);

function q(name: string, type: number = RR.A): DnsQuery {
  return { id: 7, flags: 0x0100, question: { name, type, class: 1 } };
}

describe('answerQuestion', () => {
  it('answers services, headless services, their hostnames and pods', () => {
    assert.deepEqual(answerQuestion(q('echo.default.svc.cluster.local'), state).answers.map((a) => a.type === 'A' && a.address), ['10.96.0.42']);
    assert.deepEqual(answerQuestion(q('ECHO.Default.svc.cluster.local.'), state).answers.length, 1, 'case-insensitive, trailing dot');
    assert.deepEqual(answerQuestion(q('db.shop.svc.cluster.local'), state).answers.map((a) => a.type === 'A' && a.address), ['10.244.1.7', '10.244.2.8']);
    assert.deepEqual(answerQuestion(q('db-0.db.shop.svc.cluster.local'), state).answers.map((a) => a.type === 'A' && a.address), ['10.244.1.7']);
    assert.deepEqual(answerQuestion(q('10-244-1-5.default.pod.cluster.local'), state).answers.map((a) => a.type === 'A' && a.address), ['10.244.1.5']);
  });

  it('says NODATA for names that exist without the asked type, NXDOMAIN for unknown names in the zone, REFUSED outside it', () => {
    const aaaa = answerQuestion(q('echo.default.svc.cluster.local', RR.AAAA), state);
    assert.equal(aaaa.rcode, RCODE.NOERROR);
    assert.equal(aaaa.answers.length, 0);
    assert.equal(answerQuestion(q('default.svc.cluster.local'), state).rcode, RCODE.NOERROR);
    for (const n of ['nope.default.svc.cluster.local', 'echo.nope.svc.cluster.local', 'ext.shop.svc.cluster.local', 'x.y.cluster.local', '999-1-1-1.default.pod.cluster.local', 'echo.default.svc.cluster.local.default.svc.cluster.local']) {
      assert.equal(answerQuestion(q(n), state).rcode, RCODE.NXDOMAIN, n);
    }
    for (const n of ['example.org', 'cluster.local.example.org', 'localhost', 'kubernetes.default']) {
      const a = answerQuestion(q(n), state);
      assert.equal(a.rcode, RCODE.REFUSED, n);
      assert.equal(a.authoritative, false);
    }
    assert.equal(answerQuestion({ id: 1, flags: 0x2800, question: { name: 'cluster.local', type: 1, class: 1 } }, state).rcode, RCODE.NOTIMP);
    assert.equal(answerQuestion(q('cluster.local', RR.SOA), state).answers[0]?.type, 'SOA');
  });

  it('reads dashed pod addresses strictly', () => {
    assert.equal(undashIp('10-0-0-1'), '10.0.0.1');
    assert.equal(undashIp('10-0-0'), undefined);
    assert.equal(undashIp('10-0-0-256'), undefined);
  });
});

describe('wire format', () => {
  it('round-trips a query and rejects garbage with FORMERR', () => {
    const resp = buildDnsResponse(q('echo.default.svc.cluster.local'), answerQuestion(q('echo.default.svc.cluster.local'), state));
    assert.equal(resp.readUInt16BE(0), 7);
    assert.equal(resp.readUInt16BE(2) & 0x8400, 0x8400, 'QR and AA set');
    assert.equal(resp.readUInt16BE(6), 1);
    const bad = parseDnsQuery(Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 70]));
    assert.ok(bad.error);
    assert.equal(answerQuestion(bad, state).rcode, RCODE.FORMERR);
  });

  it('truncates over 512 bytes on UDP (TC set) so the client retries over TCP', () => {
    const many = computeDnsState([{ metadata: { name: 'big', namespace: 'default' }, spec: { clusterIP: 'None' } }], [
      { metadata: { name: 'big-1', namespace: 'default', labels: { 'kubernetes.io/service-name': 'big' } }, addressType: 'IPv4', endpoints: Array.from({ length: 60 }, (_, i) => ({ addresses: [`10.244.3.${i + 1}`] })) },
    ]);
    const query = q('big.default.svc.cluster.local');
    const r = buildDnsResponse(query, answerQuestion(query, many), 512);
    assert.ok(r.length <= 512);
    assert.equal(r.readUInt16BE(2) & 0x0200, 0x0200);
  });
});

describe('startDnsServer', () => {
  let server: Awaited<ReturnType<typeof startDnsServer>>;
  before(async () => {
    server = await startDnsServer({ host: '127.0.0.1', port: 0, getState: () => state, log: silentLogger });
  });
  after(() => server.close());

  it('answers over UDP and TCP, and refuses outside names', async () => {
    const udp = await queryDns({ server: '127.0.0.1', port: server.port, name: 'echo.default.svc.cluster.local' });
    assert.deepEqual(udp.addresses, ['10.96.0.42']);
    assert.ok(udp.aa);
    const tcp = await queryDns({ server: '127.0.0.1', port: server.port, name: 'db.shop.svc.cluster.local', tcp: true });
    assert.deepEqual(tcp.addresses, ['10.244.1.7', '10.244.2.8']);
    const out = await queryDns({ server: '127.0.0.1', port: server.port, name: 'example.org' });
    assert.equal(out.rcode, RCODE.REFUSED);
    const nx = await queryDns({ server: '127.0.0.1', port: server.port, name: 'missing.default.svc.cluster.local' });
    assert.equal(nx.rcode, RCODE.NXDOMAIN);
  });
});
