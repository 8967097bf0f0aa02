// B5 differential properties: the decision is taken on the path the proxy forwards, and no backend that decodes
// the forwarded path the way common servers do (nginx merge_slashes + decode, Tomcat `;` stripping, WHATWG URL)
// ends up under a DENY prefix the policy did not cover. Seeded; the seed is printed so a failure can be replayed
// with NODEMESH_PROPERTY_SEED=<seed>. Interesting inputs found on the way are kept below as plain cases.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { authorize, type AuthzPolicy } from './authz.ts';
import { formatTarget, normalizeHost, normalizePath, normalizeTarget, pathHasPrefix } from './normalize.ts';
import { computeRewrittenPath } from './route.ts';

const SEED = Number(process.env['NODEMESH_PROPERTY_SEED'] ?? Date.now() % 2 ** 31);
console.log(`normalize.property: seed ${SEED} (replay with NODEMESH_PROPERTY_SEED=${SEED})`);
const RUNS = { seed: SEED, numRuns: 4000 };

/** The dangerous pieces attackers combine, in both hex cases, plus plain words and unicode. */
const PIECES = [
  '/', '//', '/./', '/../', '.', '..', '%2e', '%2E', '%2e%2e', '%2E%2e', '%2F', '%2f', '%5C', '%5c', '%252F', '%252f', '%25',
  ';', ';x', ';jsessionid=1', '.;', '..;', '%3B', '%3b', '#', '?', '\\', '%00', '%0a', '%09', '%c0%af', '%C0%AF', '%e0%80%af',
  '%61', '%41', '%7e', '%7E', 'a', 'admin', 'ADMIN', 'Admin', 'dmin', 'api', 'x', '%20', ' ', '~', '-', '@', ':', '+', '=',
  '%C3%A9', '%c3%a9', 'é', '%EF%BC%8F', '%e2%80%ae', '\u212a', '%ED%A0%80', '%C3', '{', '"', '|', '%', '%G0', '\u0000', '*',
];
const rawPath = fc.array(fc.constantFrom(...PIECES), { maxLength: 10 }).map((parts) => '/' + parts.join(''));

// Backend models: how a typical server turns the forwarded path into the resource it serves.
function resolveDots(p: string): string {
  const out: string[] = [];
  const parts = p.split('/');
  for (let i = 1; i < parts.length; i++) {
    const s = parts[i]!;
    if (s === '.') continue;
    if (s === '..') { out.pop(); continue; }
    out.push(s);
  }
  return '/' + out.join('/');
}
const mergeSlashes = (p: string): string => p.replace(/\/{2,}/g, '/');
/** Percent-decoding once, byte-wise (invalid UTF-8 left as the escape, as nginx passes bytes through). */
function decodeOnce(p: string): string {
  return p.replace(/(%[0-9A-Fa-f]{2})+/g, (run) => { try { return decodeURIComponent(run); } catch { return run; } });
}
const BACKENDS: Record<string, (forwarded: string) => string> = {
  // nginx: decode, merge_slashes on, resolve dot segments.
  nginx: (p) => resolveDots(mergeSlashes(decodeOnce(p))),
  // Tomcat/Spring: strip `;params` from every raw segment, then decode, merge and resolve.
  tomcat: (p) => resolveDots(mergeSlashes(decodeOnce(p.split('/').map((s) => s.split(';')[0]).join('/')))),
  // Node: WHATWG URL pathname, then the application decodes it.
  nodeUrl: (p) => decodeOnce(new URL(p, 'http://backend').pathname),
};
/** Whether a backend path is the resource `prefix` or below it (case-sensitive, segment boundary). */
const under = (p: string, prefix: string): boolean => p === prefix || p.startsWith(prefix + '/');

const POLICIES: AuthzPolicy[] = [
  { name: 'ns/deny-admin', action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] },
  { name: 'ns/allow-api', action: 'ALLOW', rules: [{ to: [{ paths: [{ prefix: '/api/' }], hosts: ['svc.ns'] }] }] },
];
const decide = (path: string, host = 'svc.ns'): 'allow' | 'deny' => authorize({ method: 'GET', normalizedPath: path, host, port: 80 }, { authenticated: false }, POLICIES).verdict;

test('property: normalization is idempotent and the forwarded path is a fixed point', () => {
  fc.assert(fc.property(rawPath, (raw) => {
    const once = normalizePath(raw);
    if (!once.ok) return;
    const twice = normalizePath(once.value);
    assert.ok(twice.ok, `${JSON.stringify(raw)} → ${once.value} is refused when normalized again: ${twice.ok ? '' : twice.reason}`);
    assert.equal(twice.value, once.value, JSON.stringify(raw));
    // A WHATWG URL parser leaves a normalized path alone (no dot segment or backslash it would still resolve).
    assert.equal(new URL(once.value, 'http://backend').pathname, once.value, JSON.stringify(raw));
  }), RUNS);
});

test('property: no backend model reaches a denied resource, and what is allowed stays under the allowed prefix', () => {
  fc.assert(fc.property(rawPath, (raw) => {
    const n = normalizePath(raw);
    if (!n.ok) return;
    const verdict = decide(n.value);
    for (const [name, serve] of Object.entries(BACKENDS)) {
      const served = serve(n.value);
      if (under(served, '/admin')) assert.equal(verdict, 'deny', `${name} serves ${served} for ${JSON.stringify(raw)} (forwarded ${n.value}) but policy said ${verdict}`);
      if (verdict === 'allow') assert.ok(under(served, '/api'), `${name} serves ${served} for allowed ${n.value}`);
    }
  }), RUNS);
});

test('property: whole targets: re-normalizing the forwarded target gives the same path, query and decision', () => {
  const query = fc.array(fc.constantFrom('a=1', '&', '%2F', '%zz', '?', '/', '#', '%41', '\\', ' ', '{'), { maxLength: 4 }).map((q) => q.join(''));
  const form = fc.constantFrom('origin', 'absolute', 'ABSOLUTE', 'absolute-port');
  fc.assert(fc.property(rawPath, fc.option(query), form, (p, q, f) => {
    const origin = q === null ? p : `${p}?${q}`;
    const target = f === 'origin' ? origin : f === 'absolute' ? `http://svc.ns${origin}` : f === 'ABSOLUTE' ? `HTTP://SVC.NS${origin}` : `http://svc.ns:80${origin}`;
    const hosts = f === 'absolute-port' ? ['svc.ns:80'] : ['Svc.NS.'];
    const n = normalizeTarget(target, hosts);
    if (!n.ok) return;
    const forwarded = formatTarget(n.value.path, n.value.query);
    const again = normalizeTarget(forwarded, [n.value.authority]);
    assert.ok(again.ok, `${JSON.stringify(target)} forwarded as ${forwarded} is refused by a second hop: ${again.ok ? '' : again.reason}`);
    assert.deepEqual(again.value, n.value);
    assert.equal(decide(again.value.path, again.value.host), decide(n.value.path, n.value.host));
  }), RUNS);
});

test('property: a prefix rewrite yields a normalized path, and deciding on it matches what is forwarded', () => {
  const prefixes = fc.constantFrom('/api', '/api/', '/', '/a;b');
  const repl = fc.constantFrom('/', '/v2', '/v2/', '/admin', '/x;y');
  fc.assert(fc.property(rawPath, prefixes, repl, (raw, prefix, replacement) => {
    const n = normalizePath(raw);
    if (!n.ok || !pathHasPrefix(n.value, prefix)) return;
    const out = computeRewrittenPath(n.value, { type: 'ReplacePrefixMatch', replacePrefixMatch: replacement }, prefix);
    const again = normalizePath(out);
    assert.ok(again.ok && again.value === out, `${n.value} rewritten to ${out} is not normalized`);
    for (const serve of Object.values(BACKENDS)) if (under(serve(out), '/admin')) assert.equal(decide(out), 'deny', out);
  }), RUNS);
});

// Hosts: what changes the spelling must not change the decision; what is ambiguous is refused.
const label = fc.stringMatching(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?$/);
const hostName = fc.array(label, { minLength: 1, maxLength: 4 }).map((l) => l.join('.'));

test('property: host case, one trailing dot and an explicit port do not change the normalized host', () => {
  fc.assert(fc.property(hostName, fc.integer({ min: 1, max: 65535 }), (h, port) => {
    const base = normalizeHost(h.toLowerCase());
    assert.ok(base.ok, h);
    for (const spelling of [h.toUpperCase(), `${h}.`, `${h.toUpperCase()}.`]) {
      const s = normalizeHost(spelling);
      assert.ok(s.ok && s.value.host === base.value.host && s.value.authority === base.value.authority, spelling);
    }
    const withPort = normalizeHost(`${h}.:${port}`);
    assert.ok(withPort.ok && withPort.value.host === base.value.host && withPort.value.port === port);
    // The forwarded authority is itself normalized (a second hop reads the same host and port).
    const again = normalizeHost(withPort.value.authority);
    assert.ok(again.ok && again.value.authority === withPort.value.authority);
    // Two Host values, or Host vs :authority, that differ after normalization are refused.
    assert.equal(normalizeTarget('/', [h, `${h}x`]).ok, false);
    assert.equal(normalizeTarget('/', [h, `${h}:${port}`]).ok, false, 'a port on one value only is a different authority');
    assert.equal(normalizeTarget('/', [h.toUpperCase(), `${h}.`]).ok, true);
    // An absolute-form target naming another host is refused, whatever Host says.
    assert.equal(normalizeTarget(`http://${h}x/`, [h]).ok, false);
  }), RUNS);
});

test('property: arbitrary Host bytes never normalize to something with separators or upper case', () => {
  const hostChars = fc.constantFrom('a', 'B', '.', '-', '_', ':', '8', '[', ']', '@', '/', '\\', ' ', '%', '\u0130', '\u212a', '\u0000', '\r', '\n', '#', '?');
  fc.assert(fc.property(fc.array(hostChars, { maxLength: 12 }).map((c) => c.join('')), (raw) => {
    const n = normalizeHost(raw);
    if (!n.ok) return;
    assert.match(n.value.host, /^([a-z0-9\-_~.]+|[0-9a-f:.]+)$/, JSON.stringify(raw));
    assert.ok(!n.value.host.endsWith('.'), JSON.stringify(raw));
  }), RUNS);
});

// Seed corpus: inputs the properties found or that earlier advisories name, with the expected outcome. A string
// is the normalized path; null means 400.
const CORPUS: [string, string | null][] = [
  // Found by the Tomcat model: `;x` alone as a segment is an empty segment to servlet containers.
  ['/;x/admin', null],
  ['/%7E//../;x/./admin', null],
  ['/;/admin', null],
  ['/;jsessionid=1/admin/secret', null],
  ['/app/;jsessionid=1', '/app/;jsessionid=1'],
  ['/;x', '/;x'],
  // Known families, kept as regressions.
  ['/admin;x/../secret', '/secret'],
  ['/api/%2e%2e/admin', '/admin'],
  ['/api/%2E%2e;/admin', null],
  ['/api/..%2fadmin', null],
  ['/api/%252F..%252Fadmin', '/api/%252F..%252Fadmin'],
  ['/%61dmin', '/admin'],
  ['/admin%3bx', '/admin%3Bx'],
  ['/%C0%AFadmin', null],
  ['/%e0%80%af', null],
  ['/%ED%A0%80', null],
  ['/%EF%BC%8Fadmin', '/%EF%BC%8Fadmin'],
  ['/api/\u212a', null],
  ['/a\\..\\admin', null],
  ['/admin%00', null],
  ['/admin#x', null],
];

test('corpus: path cases found by the properties', () => {
  for (const [raw, want] of CORPUS) {
    const n = normalizePath(raw);
    assert.equal(n.ok ? n.value : null, want, JSON.stringify(raw));
    if (n.ok) for (const [name, serve] of Object.entries(BACKENDS)) if (under(serve(n.value), '/admin')) assert.equal(decide(n.value), 'deny', `${name}: ${raw}`);
  }
});

test('corpus: decisions found by the properties', () => {
  // Found by the nginx model: an ALLOW prefix `/api/` must not take `;` as a boundary (nginx serves `/api;x/y`
  // from a directory `api;x`, outside `/api`); a DENY prefix still does (Tomcat serves `/admin;x` as `/admin`).
  assert.equal(decide('/api;jsessionid=1'), 'deny');
  assert.equal(decide('/api;x/y'), 'deny');
  assert.equal(decide('/api/y;x'), 'allow');
  assert.equal(decide('/admin;x'), 'deny');
  assert.equal(decide('/admin;x/y'), 'deny');
  assert.equal(decide('/api/x', 'other.ns'), 'deny', 'host condition');
});
