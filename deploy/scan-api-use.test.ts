/** The KubeRest scan on small sources: what it resolves, and that what it cannot resolve is reported with file:line. */
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { classifyRequest, createRestScanner } from './scan-api-use.ts';

const dir = mkdtempSync(join(tmpdir(), 'nm-scan-'));
after(() => rmSync(dir, { recursive: true, force: true }));

const CLIENT = `export class KubeRest {
  json(method: string, path: string, opts?: unknown): Promise<unknown> { return Promise.resolve(this.raw(method, path, opts)); }
  raw(method: string, path: string, opts?: unknown): unknown { return [method, path, opts]; }
  getOrUndefined(path: string): unknown { return path; }
  list(path: string): unknown { return path; }
  watch(path: string): unknown { return path; }
}
`;
const CRDS = `export const WidgetResource = { group: 'example.io', version: 'v1', plural: 'widgets' };
export const GadgetResource = { group: 'other.io', version: 'v2', plural: 'gadgets' };
export const TABLE = { Widget: WidgetResource, Gadget: GadgetResource };
`;

function scan(files: Record<string, string>) {
  const paths = Object.entries({ 'kube-rest.ts': CLIENT, 'crds.ts': CRDS, ...files }).map(([name, text]) => {
    writeFileSync(join(dir, name), text);
    return join(dir, name);
  });
  const scanFiles = createRestScanner(paths, dir);
  return scanFiles(paths.filter((p) => Object.keys(files).some((f) => p.endsWith(f))));
}

describe('scanRestCalls', () => {
  it('resolves consts, helpers, CRD constants, tables (keeping group and plural together) and callers of helpers', () => {
    const r = scan({
      'a.ts': `import type { KubeRest } from './kube-rest.ts';
import { TABLE, WidgetResource } from './crds.ts';
export const LOCK = 'the-lock';
export function api(rest: KubeRest, ns: string, name: string, kind: keyof typeof TABLE) {
  const base = \`/apis/coordination.k8s.io/v1/namespaces/\${encodeURIComponent(ns)}/leases\`;
  const at = (n: string): string => \`\${base}/\${encodeURIComponent(n)}\`;
  const path = (k: keyof typeof TABLE, n: string): string => {
    const t = TABLE[k];
    return \`/apis/\${t.group}/\${t.version}/\${t.plural}/\${n}\`;
  };
  const { group, version, plural } = WidgetResource;
  return [
    rest.json('POST', base, {}),
    rest.json('PUT', at(name), {}),
    (['Widget', 'Gadget'] as const).map((k) => rest.raw('PATCH', \`\${path(k, name)}/status\`)),
    rest.getOrUndefined(path(kind, name)),
    rest.watch(\`/apis/\${group}/\${version}/\${plural}\`),
    rest.json('GET', '/version'),
  ];
}
export const use = (rest: KubeRest) => api(rest, 'ns', LOCK, 'Widget');
`,
    });
    assert.deepEqual(r.unresolved, []);
    const got = r.needs.map((n) => `${n.key} ${n.verb} ${n.name ?? (n.dynamicName ? '*' : '-')} ${n.namespaced ? 'ns' : 'cluster'} ${n.at}`).sort();
    assert.deepEqual(got, [
      'coordination.k8s.io/leases create - ns a.ts:13',
      'coordination.k8s.io/leases update the-lock ns a.ts:14',
      'example.io/widgets get the-lock cluster a.ts:16',
      'example.io/widgets watch - cluster a.ts:17',
      'example.io/widgets/status patch the-lock cluster a.ts:15',
      'other.io/gadgets/status patch the-lock cluster a.ts:15',
    ]);
  });

  it('reports calls it cannot resolve, with file and line, instead of guessing', () => {
    const r = scan({
      'b.ts': `import type { KubeRest } from './kube-rest.ts';
export function f(rest: KubeRest, method: string, path: string, api: { group: string }) {
  void rest.json(method, '/api/v1/pods');
  void rest.raw('GET', path);
  void rest.raw('GET', \`/apis/\${api.group}/v1/things\`);
  return rest as unknown as { watch(): void };
}
`,
    });
    assert.deepEqual(r.unresolved.map((u) => `${u.at} ${u.why}`), [
      'b.ts:3 HTTP method ${method} is not a literal',
      'b.ts:4 path ${path} is not under /api/v1 or /apis/<group>/<version>',
      'b.ts:5 API group or version of /apis/${api.group}/v1/things is not known statically',
      'b.ts:6 KubeRest is cast to another type, so its requests cannot be followed',
    ]);
  });

  it('maps methods and paths to RBAC verbs', () => {
    assert.deepEqual(classifyRequest('GET', '/api/v1/pods'), { key: '/pods', verb: 'list', dynamicName: false, namespaced: false });
    assert.deepEqual(classifyRequest('GET', '/api/v1/namespaces/x/pods/p'), { key: '/pods', verb: 'get', name: 'p', dynamicName: false, namespaced: true });
    assert.deepEqual(classifyRequest('GET', '/api/v1/namespaces/x'), { key: '/namespaces', verb: 'get', name: 'x', dynamicName: false, namespaced: false });
    assert.deepEqual(classifyRequest('GET', '/api/v1/pods?watch=true'), { key: '/pods', verb: 'watch', dynamicName: false, namespaced: false });
    assert.deepEqual(classifyRequest('DELETE', '/apis/a.io/v1/things'), { key: 'a.io/things', verb: 'deletecollection', dynamicName: false, namespaced: false });
    assert.deepEqual(classifyRequest('GET', '/version'), { open: true });
  });
});
