import { test } from 'node:test';
import assert from 'node:assert/strict';
import { authorize, type AuthzPeer, type AuthzPolicy } from './authz.ts';

const frontend: AuthzPeer = { spiffeId: 'spiffe://cluster.local/ns/web/sa/frontend', namespace: 'web', serviceAccount: 'frontend', authenticated: true };
const other: AuthzPeer = { spiffeId: 'spiffe://cluster.local/ns/web/sa/other', namespace: 'web', serviceAccount: 'other', authenticated: true };
const anon: AuthzPeer = { authenticated: false };
const req = (method: string, path: string, port = 80) => ({ method, normalizedPath: path, host: 'echo.default', port });

const allowFrontend: AuthzPolicy = { name: 'default/allow-frontend', action: 'ALLOW', rules: [{ from: [{ serviceAccounts: ['web/frontend'] }], to: [{ methods: ['GET'], paths: [{ prefix: '/api/' }] }] }] };
const denyAdmin: AuthzPolicy = { name: 'default/deny-admin', action: 'DENY', rules: [{ to: [{ paths: [{ prefix: '/admin' }] }] }] };
const auditAll: AuthzPolicy = { name: 'default/audit', action: 'AUDIT', rules: [{}] };

test('no policy: allow', () => {
  assert.equal(authorize(req('GET', '/x'), anon, []).verdict, 'allow');
});

test('an ALLOW policy turns on default deny', () => {
  assert.equal(authorize(req('GET', '/api/v1'), frontend, [allowFrontend]).verdict, 'allow');
  assert.equal(authorize(req('GET', '/api/v1'), other, [allowFrontend]).verdict, 'deny');
  assert.equal(authorize(req('POST', '/api/v1'), frontend, [allowFrontend]).verdict, 'deny');
  assert.equal(authorize(req('GET', '/apix'), frontend, [allowFrontend]).verdict, 'deny');
  assert.equal(authorize(req('GET', '/api/v1'), anon, [allowFrontend]).verdict, 'deny', 'identity rules never match unauthenticated peers');
});

test('DENY beats ALLOW and reports policy and rule', () => {
  const allowAll: AuthzPolicy = { name: 'default/allow-all', action: 'ALLOW', rules: [{}] };
  const v = authorize(req('GET', '/admin/x'), frontend, [allowAll, denyAdmin]);
  assert.deepEqual([v.verdict, v.policy, v.rule], ['deny', 'default/deny-admin', 0]);
  assert.equal(authorize(req('GET', '/admin;jsessionid=1'), frontend, [allowAll, denyAdmin]).verdict, 'deny');
  assert.equal(authorize(req('GET', '/ADMIN'), frontend, [allowAll, denyAdmin]).verdict, 'allow', 'paths are case-sensitive');
  assert.equal(authorize(req('GET', '/administrator'), frontend, [allowAll, denyAdmin]).verdict, 'allow');
});

test('exact paths are string equality; an ALLOW with no rules allows nothing', () => {
  const exact: AuthzPolicy = { name: 'default/exact', action: 'DENY', rules: [{ to: [{ paths: [{ exact: '/admin' }] }] }] };
  assert.equal(authorize(req('GET', '/admin'), anon, [exact]).verdict, 'deny');
  assert.equal(authorize(req('GET', '/admin/'), anon, [exact]).verdict, 'allow');
  const nothing: AuthzPolicy = { name: 'default/nothing', action: 'ALLOW', rules: [] };
  assert.equal(authorize(req('GET', '/'), frontend, [nothing]).verdict, 'deny');
});

test('AUDIT records and never decides', () => {
  const v = authorize(req('GET', '/x'), anon, [auditAll]);
  assert.equal(v.verdict, 'allow');
  assert.deepEqual(v.audit, ['default/audit#0']);
});

test('sources by SPIFFE ID and namespace; destinations by port and host', () => {
  const p: AuthzPolicy = { name: 'default/p', action: 'ALLOW', rules: [{ from: [{ spiffeIds: [frontend.spiffeId!] }, { namespaces: ['ops'] }], to: [{ ports: [8080], hosts: ['echo.default'] }] }] };
  assert.equal(authorize(req('GET', '/', 8080), frontend, [p]).verdict, 'allow');
  assert.equal(authorize(req('GET', '/', 80), frontend, [p]).verdict, 'deny');
  assert.equal(authorize(req('GET', '/', 8080), { ...other, namespace: 'ops' }, [p]).verdict, 'allow');
  assert.equal(authorize({ ...req('GET', '/', 8080), host: 'x' }, frontend, [p]).verdict, 'deny');
});

test('L4 (no method/path): HTTP-only ALLOW rules do not match, HTTP-only DENY rules do', () => {
  assert.equal(authorize({ port: 80 }, frontend, [allowFrontend]).verdict, 'deny');
  assert.equal(authorize({ port: 80 }, frontend, [denyAdmin]).verdict, 'deny');
  const allowPort: AuthzPolicy = { name: 'default/port', action: 'ALLOW', rules: [{ to: [{ ports: [80] }] }] };
  assert.equal(authorize({ port: 80 }, anon, [allowPort]).verdict, 'allow');
});
