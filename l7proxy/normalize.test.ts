import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { authorize, type AuthzPolicy } from './authz.ts';
import { normalizeHost, normalizePath, normalizeTarget, pathHasPrefix } from './normalize.ts';

const path = (p: string): string => { const n = normalizePath(p); assert.ok(n.ok, `${p}: ${n.ok ? '' : n.reason}`); return n.value; };
const rejected = (p: string): void => { const n = normalizePath(p); assert.equal(n.ok, false, `${p} should be rejected, got ${n.ok ? n.value : ''}`); };

test('dot segments, duplicate slashes and unreserved escapes normalize', () => {
  assert.equal(path('//admin'), '/admin');
  assert.equal(path('/./admin'), '/admin');
  assert.equal(path('/x/../admin'), '/admin');
  assert.equal(path('/../../admin'), '/admin');
  assert.equal(path('/%61dmin'), '/admin');
  assert.equal(path('/%2e%2e/admin'), '/admin');
  assert.equal(path('/a/%2E/b'), '/a/b');
  assert.equal(path('/a/b/'), '/a/b/');
  assert.equal(path('/a/b/.'), '/a/b/');
  assert.equal(path('/a/b/..'), '/a/');
  assert.equal(path('/'), '/');
  assert.equal(path('/..'), '/');
  assert.equal(path('/a%3ab'), '/a%3Ab');
  assert.equal(path('/%252F'), '/%252F');
  assert.equal(path('/admin;x'), '/admin;x');
  assert.equal(path('/ADMIN'), '/ADMIN');
  assert.equal(path('/caf%C3%A9'), '/caf%C3%A9');
  assert.equal(path('/a{b}|c'), '/a%7Bb%7D%7Cc');
});

test('ambiguous paths are rejected', () => {
  for (const p of ['/a%2Fb', '/a%2fb', '/a%5Cb', '/a\\b', '/a%00', '/a%0A', '/a%zz', '/a%2', '/%C0%AF', '/%E0%80%AF', '/%ED%A0%80', '/%C3', '/a#b', '/..;/admin', '/x/.;/admin', 'admin', '/a b', '/caf\u00e9']) rejected(p);
});

test('targets: query kept, fragments and bad hosts rejected, absolute form checked against Host', () => {
  const t = normalizeTarget('/a//b?x=%41&y', ['Echo.Default.']);
  assert.ok(t.ok);
  assert.deepEqual(t.value, { path: '/a/b', query: 'x=%41&y', host: 'echo.default', port: undefined, authority: 'echo.default' });
  const abs = normalizeTarget('http://echo.default:8080/x', ['echo.default:8080']);
  assert.ok(abs.ok && abs.value.path === '/x' && abs.value.port === 8080);
  assert.equal(normalizeTarget('http://other/x', ['echo.default']).ok, false);
  assert.equal(normalizeTarget('https://echo.default/x', ['echo.default']).ok, false);
  assert.equal(normalizeTarget('http://u@echo.default/x', ['echo.default']).ok, false);
  assert.equal(normalizeTarget('/x', ['a', 'b']).ok, false);
  assert.equal(normalizeTarget('/x', ['a', 'A.']).ok, true, 'the same host twice after normalization is one host');
  assert.equal(normalizeTarget('/x', []).ok, false);
  assert.equal(normalizeTarget('*', ['a']).ok, false);
  assert.equal(normalizeTarget('/x?a#b', ['a']).ok, false);
  assert.equal(normalizeTarget('/x?a=%zz', ['a']).ok, false);
});

test('hosts', () => {
  const h = normalizeHost('[::1]:80');
  assert.ok(h.ok && h.value.host === '::1' && h.value.port === 80 && h.value.authority === '[::1]:80');
  for (const bad of ['a b', 'a/b', 'a@b', 'a:0', 'a:99999', 'a:', '', '.', 'a..b', 'a%41', '[zz]']) assert.equal(normalizeHost(bad).ok, false, bad);
  assert.deepEqual(normalizeHost('SVC.NS.').ok && normalizeHost('SVC.NS.'), { ok: true, value: { host: 'svc.ns', port: undefined, authority: 'svc.ns' } });
});

test('prefix matching is on segment boundaries, with ";" as a boundary', () => {
  assert.ok(pathHasPrefix('/admin', '/admin'));
  assert.ok(pathHasPrefix('/admin/', '/admin'));
  assert.ok(pathHasPrefix('/admin/x', '/admin/'));
  assert.ok(pathHasPrefix('/admin;x', '/admin'));
  assert.ok(!pathHasPrefix('/adminx', '/admin'));
  assert.ok(!pathHasPrefix('/ADMIN', '/admin'));
  assert.ok(pathHasPrefix('/anything', '/'));
});

// Property tests: raw targets built from the pieces attackers combine.
const piece = fc.constantFrom('a', 'admin', 'api', 'A', '.', '..', '', '%2e', '%2E%2e', '%61', '%41', ';x', ';', '%25', '%2F', '%5C', '%00', '~', '-', '%7e', '%C3%A9', '%C0%AF', '\\', 'x y', '%zz', '{', '%3B');
const rawPath = fc.array(piece, { maxLength: 8 }).map((parts) => '/' + parts.join('/'));
const policies: AuthzPolicy[] = [
  { name: 'ns/deny-admin', action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] },
  { name: 'ns/allow-api', action: 'ALLOW', rules: [{ to: [{ paths: [{ prefix: '/api/' }, { exact: '/a' }] }] }] },
];
const decide = (p: string): string => authorize({ method: 'GET', normalizedPath: p, host: 'h', port: 80 }, { authenticated: false }, policies).verdict;

test('property: normalize is idempotent', () => {
  fc.assert(fc.property(rawPath, (raw) => {
    const once = normalizePath(raw);
    if (!once.ok) return true;
    const twice = normalizePath(once.value);
    return twice.ok && twice.value === once.value;
  }), { numRuns: 3000 });
});

test('property: the policy decision on a path equals the decision on the path the backend receives', () => {
  fc.assert(fc.property(rawPath, (raw) => {
    const n = normalizePath(raw);
    if (!n.ok) return true;
    // The forwarded string is n.value; a backend (or a second proxy) normalizing it again must decide the same.
    const again = normalizePath(n.value);
    return again.ok && decide(again.value) === decide(n.value);
  }), { numRuns: 3000 });
});

test('property: nothing that normalizes to /admin... escapes the DENY', () => {
  fc.assert(fc.property(rawPath, (raw) => {
    const n = normalizePath(raw);
    if (!n.ok) return true;
    const underAdmin = n.value === '/admin' || n.value.startsWith('/admin/') || n.value.startsWith('/admin;');
    return !underAdmin || decide(n.value) === 'deny';
  }), { numRuns: 3000 });
});
