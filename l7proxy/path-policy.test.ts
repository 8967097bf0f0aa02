// Path and host tricks against `DENY prefix /admin` and `ALLOW prefix /api/`: the decision is taken on exactly the
// normalized path that is forwarded, and the denied resource never reaches the echo backend.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { normalizePath, pathHasPrefix } from './normalize.ts';
import { rawExchange, request, simpleConfig, startEcho, startTestProxy, type EchoServer, type TestProxy } from './testing/harness.ts';

const get = (target: string, host = 'echo.default', extra = ''): string => `GET ${target} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`;

/** [raw target or full request, expected status]. */
const TRICKS: [string, string, number][] = [
  ['/admin', get('/admin'), 403],
  ['//admin', get('//admin'), 403],
  ['/./admin', get('/./admin'), 403],
  ['/x/../admin', get('/x/../admin'), 403],
  ['/api/../admin', get('/api/../admin'), 403],
  ['/%61dmin', get('/%61dmin'), 403],
  ['/%2e%2e/admin', get('/api/%2e%2e/admin'), 403],
  ['/admin/', get('/admin/'), 403],
  ['/admin;x', get('/admin;x'), 403],
  ['/admin;x/secret', get('/admin;x/secret'), 403],
  ['/api/..;/admin', get('/api/..;/admin'), 400],
  ['%2F', get('/api%2Fadmin'), 400],
  ['%2f', get('/x/..%2fadmin'), 400],
  ['%5C', get('/api/..%5Cadmin'), 400],
  ['%252F', get('/api/%252F..%252Fadmin'), 200],
  ['/admin#x', get('/admin#x'), 400],
  ['\\admin', get('\\admin'), 400],
  ['/api\\..\\admin', get('/api\\..\\admin'), 400],
  ['%00', get('/admin%00'), 400],
  ['overlong %C0%AF', get('/api/..%C0%AFadmin'), 400],
  ['absolute-form', get('http://echo.default/admin'), 403],
  ['absolute-form other host', get('http://other.default/api/x'), 400],
  ['duplicate Host', get('/api/x', 'echo.default', 'Host: admin.default\r\n'), 400],
  ['Host with bad chars', get('/api/x', 'echo.default/admin'), 400],
  ['/api/ allowed', get('/api/x'), 200],
  ['//api//x allowed, forwarded normalized', get('//api//x'), 200],
  ['/apix not allowed (default deny)', get('/apix'), 403],
];

describe('path normalization against policy', () => {
  let echo: EchoServer;
  let p: TestProxy;
  before(async () => {
    echo = await startEcho();
    p = await startTestProxy(simpleConfig([echo.port], {}, {
      authorization: [
        { name: 'default/deny-admin', action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] },
        { name: 'default/allow-api', action: 'ALLOW', rules: [{ to: [{ paths: [{ prefix: '/api/' }] }] }] },
      ],
    }));
  });
  after(async () => { await p?.close(); await echo?.close(); });

  for (const [name, raw, status] of TRICKS) {
    test(`${name} → ${status}`, async () => {
      const { text } = await rawExchange(p.port, raw);
      assert.match(text, new RegExp(`^HTTP/1\\.1 ${status} `), `${name}: ${JSON.stringify(text.slice(0, 120))}`);
    });
  }

  test('the backend only ever saw normalized /api/ paths, never anything under /admin', () => {
    assert.ok(echo.requests.length >= 3);
    for (const r of echo.requests) {
      const n = normalizePath(r.url.split('?')[0]!);
      assert.ok(n.ok && n.value === r.url.split('?')[0], `forwarded path is already normalized: ${r.url}`);
      assert.ok(r.url.startsWith('/api/'), r.url);
      // Even a backend that decodes once more (as many frameworks do) does not land under /admin.
      const decodedOnce = decodeURIComponent(r.url);
      assert.ok(!pathHasPrefix(decodedOnce, '/admin'), r.url);
    }
    assert.ok(echo.requests.some((r) => r.url === '/api/x'), 'forwarded as /api/x, not //api//x');
    assert.equal(echo.requests.find((r) => r.url.includes('%252F'))?.url, '/api/%252F..%252Fadmin', '%252F is decoded once only: a literal %2F segment');
    assert.equal(p.proxy.stats.authz.deny, TRICKS.filter(([, , s]) => s === 403).length);
  });
});

describe('case and host rules', () => {
  test('paths are case-sensitive: /ADMIN is not /admin and reaches the backend exactly as /ADMIN; hosts are case-insensitive', async () => {
    const echo = await startEcho();
    const p = await startTestProxy(simpleConfig([echo.port], {}, {
      authorization: [
        { name: 'default/deny-admin', action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] },
        { name: 'default/deny-host', action: 'DENY', rules: [{ to: [{ hosts: ['internal.default'] }] }] },
      ],
    }));
    try {
      assert.equal((await request(p.port, { path: '/ADMIN' })).status, 200);
      assert.equal(echo.requests.at(-1)!.url, '/ADMIN');
      assert.equal((await request(p.port, { path: '/admin' })).status, 403);
      for (const host of ['internal.default', 'INTERNAL.Default', 'internal.default.', 'internal.default:80']) {
        const { text } = await rawExchange(p.port, get('/x', host));
        assert.match(text, /^HTTP\/1\.1 403 /, host);
      }
      const { text } = await rawExchange(p.port, get('/x', 'Echo.DEFAULT.'));
      assert.match(text, /^HTTP\/1\.1 200 /);
      assert.match(echo.raw().toString(), /host: echo\.default\r\n/, 'the normalized host is forwarded');
      assert.ok(!echo.requests.some((r) => r.url.toLowerCase().startsWith('/admin') && r.url !== '/ADMIN'));
    } finally { await p.close(); await echo.close(); }
  });
});
