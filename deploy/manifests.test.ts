/**
 * The install manifests: every file parses, kustomize renders them, the CRD copies match crds/, the workloads
 * have the shape the design demands, every RBAC rule says why, and the ClusterRoles/Roles grant what the
 * operator's and the agent's code call: requests through KubeRest are resolved from the TypeScript AST
 * (scan-api-use.ts; the operator's roles must grant exactly those), client-node calls are found by method
 * name, watch paths and CRD resource constants. Unprivileged; needs /usr/bin/kubectl for `kubectl kustomize`.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { MESH_RESOURCES } from '../crds/index.ts';
import { createRestScanner, type ApiNeed } from './scan-api-use.ts';
import { DEPLOY_CRD_DIRECTORY, DEPLOY_CRD_FILES, expectedCopy } from './sync-crds.ts';

const DEPLOY = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(DEPLOY, '..');

type Obj = { apiVersion?: string; kind?: string; metadata?: { name?: string; namespace?: string }; [k: string]: unknown };
type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[] };
/** A rule of a subject's ClusterRole or Role (a Role grants only inside its namespace). */
type Grant = Rule & { kind: 'ClusterRole' | 'Role' };

function walk(dir: string, pred: (f: string) => boolean): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) {
      if (n !== 'node_modules' && n !== 'testing' && n !== 'testdata') out.push(...walk(p, pred));
    } else if (pred(p)) out.push(p);
  }
  return out.sort();
}

function loadYaml(file: string): Obj[] {
  return parseAllDocuments(readFileSync(file, 'utf8')).map((d, i) => {
    assert.equal(d.errors.length, 0, `${relative(ROOT, file)} document ${i + 1}: ${d.errors[0]?.message}`);
    return d.toJSON() as Obj;
  }).filter((o) => o !== null);
}

const manifestFiles = walk(DEPLOY, (f) => f.endsWith('.yaml') && !f.endsWith('kustomization.yaml'));
const objects = manifestFiles.flatMap((f) => loadYaml(f).map((o) => ({ file: relative(DEPLOY, f), o })));
const find = (kind: string, name: string): Obj => {
  const hit = objects.find((x) => x.o.kind === kind && x.o.metadata?.name === name);
  assert.ok(hit, `no ${kind} ${name} in deploy/`);
  return hit.o;
};

/** The rules of a service account's ClusterRole and Role. */
function grants(subject: string): Grant[] {
  return (['ClusterRole', 'Role'] as const).flatMap((kind) => ((find(kind, subject).rules as Rule[]) ?? []).map((r) => ({ ...r, kind })));
}

// Client-node method names → (group, resource). A call not in here fails the test: add it, and the RBAC rule.
const KINDS: Record<string, [string, string]> = {
  Pod: ['', 'pods'], Service: ['', 'services'], Node: ['', 'nodes'], Namespace: ['', 'namespaces'], ServiceAccount: ['', 'serviceaccounts'],
  Secret: ['', 'secrets'], ConfigMap: ['', 'configmaps'], Event: ['', 'events'], EndpointSlice: ['discovery.k8s.io', 'endpointslices'],
  Lease: ['coordination.k8s.io', 'leases'], TokenReview: ['authentication.k8s.io', 'tokenreviews'],
};
const VERB: Record<string, string[]> = { list: ['list', 'watch'], read: ['get'], get: ['get'], create: ['create'], replace: ['update'], patch: ['patch'], delete: ['delete'] };
const API_CALL = /\.(list|read|get|create|replace|patch|delete)(Namespaced|Cluster)?([A-Z][A-Za-z]*?)(Status)?(ForAllNamespaces)?\(/g;
/** Every method of client-node's generated API classes: a call counts only when its name is one of them (not our wrappers). */
const CLIENT_METHODS = new Set(
  Object.entries(k8s)
    .filter(([name, v]) => name.endsWith('Api') && typeof v === 'function' && (v as { prototype?: object }).prototype)
    .flatMap(([, v]) => Object.getOwnPropertyNames((v as { prototype: object }).prototype)),
);
/** API methods that need no RBAC rule: /version is open to every authenticated user. */
const NOT_RESOURCES = new Set(['Code']);
/** Custom-object calls: their resources are the CRD constants the same file names (or USER_RESOURCES). */
const CUSTOM_OBJECT = 'CustomObject';
/** The four user kinds behind the operator's USER_RESOURCES table. */
const USER_KINDS = ['HTTPRoute', 'MeshTLSPolicy', 'TrafficPolicy', 'AuthorizationPolicy'];

/**
 * One request the code makes. `exact` needs come from the KubeRest scan (deploy/scan-api-use.ts), which knows
 * the object's name and whether the request is namespaced; the client-node scan below knows neither, so its
 * needs are matched on group/resource/verb alone, as before.
 */
type Need = ApiNeed & { exact: boolean };

/**
 * KubeRest uses the scan cannot follow, each with the reason it is still covered. Matched on file and call
 * text (not line); an entry that matches nothing fails the test, so the list cannot go stale.
 */
const UNRESOLVED_OK: { file: string; what: string; reason: string }[] = [
  {
    file: 'operator/informers.ts',
    what: 'this.#rest as unknown as Watch',
    reason: 'ResilientInformer hands its KubeRest to client-node\'s ListWatch as the Watch of spec.path; the scan resolves ' +
      'spec.path where each `new ResilientInformer(rest, { path })` is built and counts it as list + watch',
  },
];

const sourcesOf = (dir: string): string[] => walk(join(ROOT, dir), (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.includes('test-helpers'));
/** One TypeScript program over every component's sources, so helpers and constants resolve across them. */
const restScan = createRestScanner(['operator', 'agent', 'l7proxy', 'crds'].flatMap(sourcesOf), ROOT);

/** What the code of `dirs` asks of the API server, and the calls no scan could resolve. */
function scanApiUse(dirs: string[]): { needs: Need[]; unknown: string[] } {
  const files = dirs.flatMap(sourcesOf);
  const rest = restScan(files);
  const needs: Need[] = rest.needs.map((n) => ({ ...n, exact: true }));
  const unknown: string[] = [];
  const used = new Set<(typeof UNRESOLVED_OK)[number]>();
  for (const u of rest.unresolved) {
    const ok = UNRESOLVED_OK.find((e) => u.at.startsWith(`${e.file}:`) && u.what.includes(e.what));
    if (ok) used.add(ok);
    else unknown.push(`${u.at}: ${u.what}: ${u.why}`);
  }
  for (const e of UNRESOLVED_OK) {
    if (files.some((f) => relative(ROOT, f) === e.file) && !used.has(e)) unknown.push(`UNRESOLVED_OK entry for ${e.file} (${e.what}) matches no call any more: remove it`);
  }
  for (const file of files) {
    const src = readFileSync(file, 'utf8');
    // The client-node scan: only files that talk to the API server through client-node's own clients or Watch.
    if (!/makeApiClient|new Watch\(/.test(src)) continue;
    const at = relative(ROOT, file);
    const need = (key: string, verbs: string[]): void => {
      for (const verb of verbs) needs.push({ key, verb, at, namespaced: false, exact: false });
    };
    for (const m of src.matchAll(/'\/api\/v1\/([a-z]+)'/g)) need(`/${m[1]}`, ['list', 'watch']);
    for (const m of src.matchAll(/'\/apis\/([a-z0-9.-]+)\/v[0-9a-z]+\/([a-z]+)'/g)) need(`${m[1]}/${m[2]}`, ['list', 'watch']);
    const customResources = MESH_RESOURCES.filter((r) => new RegExp(`\\b${r.kind}Resource\\b`).test(src) || (src.includes('USER_RESOURCES') && USER_KINDS.includes(r.kind)));
    for (const m of src.matchAll(API_CALL)) {
      if (!CLIENT_METHODS.has(m[0].slice(1, -1))) continue;
      const kind = m[3]!;
      if (kind === CUSTOM_OBJECT) {
        for (const r of customResources) need(`${r.group}/${r.plural}${m[4] ? '/status' : ''}`, VERB[m[1]!]!);
        continue;
      }
      if (NOT_RESOURCES.has(kind)) continue;
      const k = KINDS[kind];
      if (!k) {
        unknown.push(`${at}: ${m[0]}: client-node call of an unknown kind: add it to KINDS in this test`);
        continue;
      }
      need(`${k[0]}/${k[1]}${m[4] ? '/status' : ''}`, VERB[m[1]!]!);
    }
    for (const r of customResources) need(`${r.group}/${r.plural}`, ['get', 'list', 'watch']);
  }
  return { needs, unknown };
}

/** Whether `g` grants `verb` on `key` for `n` (RBAC semantics: resourceNames bind only named requests; a Role only in its namespace). */
function covers(g: Grant, n: Need, key = n.key, verb = n.verb): boolean {
  const [group, ...res] = key.split('/');
  if (!(g.apiGroups ?? []).some((x) => x === group || x === '*')) return false;
  if (!(g.resources ?? []).some((x) => x === res.join('/') || x === '*')) return false;
  if (!(g.verbs ?? []).some((x) => x === verb || x === '*')) return false;
  if (!n.exact) return true;
  if (g.kind === 'Role' && !n.namespaced) return false;
  return !g.resourceNames?.length || (n.name !== undefined && g.resourceNames.includes(n.name));
}

/** Needs no rule grants, as `group/resource verb [name] (where)`. */
function missingGrants(needs: Need[], have: Grant[]): string[] {
  const out = needs.filter((n) => !have.some((g) => covers(g, n)))
    .map((n) => `${n.key} ${n.verb}${n.name ? ` ${n.name}` : n.dynamicName ? ' <any name>' : ''}${n.exact && !n.namespaced ? ' (cluster-wide)' : ''} (${n.at})`);
  return [...new Set(out)].sort();
}

/** Granted (rule, resource, verb) triples no need uses: least privilege. */
function unusedGrants(needs: Need[], have: Grant[]): string[] {
  const out: string[] = [];
  for (const g of have) {
    for (const group of g.apiGroups ?? []) for (const res of g.resources ?? []) for (const verb of g.verbs ?? []) {
      const key = `${group}/${res}`;
      if (!needs.some((n) => n.key === key && n.verb === verb && covers(g, n))) out.push(`${g.kind} ${key} ${verb}${g.resourceNames ? ` [${g.resourceNames.join(',')}]` : ''}`);
    }
  }
  return out;
}

/** `key[verbs]` of the needs, for the test's diagnostics. */
function summarize(needs: Need[]): string {
  const m = new Map<string, Set<string>>();
  for (const n of needs) m.set(n.key, (m.get(n.key) ?? new Set()).add(n.name ? `${n.verb}:${n.name}` : n.verb));
  return [...m].map(([k, v]) => `${k}[${[...v].join(',')}]`).join(' ');
}

describe('deploy manifests', () => {
  it('every file parses and every object is named, namespaced in nodemesh-system when namespaced', () => {
    assert.ok(objects.length >= 15);
    const clusterScoped = new Set(['Namespace', 'CustomResourceDefinition', 'ClusterRole', 'ClusterRoleBinding']);
    for (const { file, o } of objects) {
      assert.ok(o.apiVersion && o.kind && o.metadata?.name, `${file}: every object needs apiVersion, kind and metadata.name`);
      if (!clusterScoped.has(o.kind!)) assert.equal(o.metadata?.namespace, 'nodemesh-system', `${file}: ${o.kind} ${o.metadata?.name} belongs in nodemesh-system`);
    }
  });

  it('kustomization lists every manifest, and kubectl kustomize renders it', () => {
    const k = loadYaml(join(DEPLOY, 'kustomization.yaml'))[0] as { resources: string[] };
    assert.deepEqual([...k.resources].sort(), manifestFiles.map((f) => relative(DEPLOY, f)).sort());
    const rendered = execFileSync('/usr/bin/kubectl', ['kustomize', DEPLOY], { encoding: 'utf8' });
    assert.equal(parseAllDocuments(rendered).length, objects.length);
  });

  it('carries our CRDs as up-to-date copies of crds/, and not HTTPRoute (upstream Gateway API installs it)', () => {
    for (const f of DEPLOY_CRD_FILES) {
      assert.equal(readFileSync(join(DEPLOY_CRD_DIRECTORY, f), 'utf8'), expectedCopy(f), `deploy/crds/${f} differs from crds/${f}: run node deploy/sync-crds.ts`);
    }
    assert.ok(!objects.some(({ o }) => o.kind === 'CustomResourceDefinition' && o.metadata?.name === 'httproutes.gateway.networking.k8s.io'));
  });

  it('runs the operator with 2 replicas and the agent with exactly the host access it needs', () => {
    const op = find('Deployment', 'nodemesh-operator') as { spec: { replicas: number; template: { spec: { containers: { securityContext: { capabilities: { drop: string[]; add?: string[] } } }[] } } } };
    assert.equal(op.spec.replicas, 2);
    assert.deepEqual(op.spec.template.spec.containers[0]!.securityContext.capabilities, { drop: ['ALL'] });
    const ds = find('DaemonSet', 'nodemesh-agent') as { spec: { template: { spec: Record<string, unknown> & { containers: { securityContext: { privileged: boolean; capabilities: { add: string[] } }; volumeMounts: { mountPath: string }[] }[]; volumes: { hostPath?: { path: string } }[] } } } };
    const pod = ds.spec.template.spec;
    assert.equal(pod.hostNetwork, true);
    assert.equal(pod.hostPID, false);
    const c = pod.containers[0]!;
    assert.equal(c.securityContext.privileged, false);
    for (const cap of ['BPF', 'NET_ADMIN', 'SYS_ADMIN']) assert.ok(c.securityContext.capabilities.add.includes(cap), `agent needs CAP_${cap}`);
    assert.deepEqual(pod.volumes.map((v) => v.hostPath?.path).filter(Boolean).sort(), ['/run/nodemesh', '/sys/fs/bpf', '/sys/fs/cgroup']);
  });

  it('every RBAC rule carries a comment saying why', () => {
    for (const f of manifestFiles.filter((x) => x.includes('rbac'))) {
      const lines = readFileSync(f, 'utf8').split('\n');
      let prevResources = '';
      for (const [i, l] of lines.entries()) {
        if (!/^ {2}- apiGroups:/.test(l)) continue;
        const resources = lines[i + 1]?.trim() ?? '';
        const commented = lines[i - 1]?.trim().startsWith('#');
        assert.ok(commented || resources === prevResources, `${relative(DEPLOY, f)}:${i + 1}: rule without a comment saying why`);
        prevResources = resources;
      }
    }
  });

  it('the operator\'s roles grant every API call its code makes, and nothing more', (t) => {
    const { needs, unknown } = scanApiUse(['operator']);
    t.diagnostic(`operator uses: ${summarize(needs)}`);
    assert.deepEqual(unknown, [], 'API calls the scan cannot resolve: make the path resolvable (literal, template, same-file const or helper), teach deploy/scan-api-use.ts or the client-node KINDS here, or add an UNRESOLVED_OK entry with a reason');
    const keys = new Set(needs.map((n) => n.key));
    for (const k of ['coordination.k8s.io/leases', 'authentication.k8s.io/tokenreviews', '/secrets', '/configmaps', 'nodemesh.io/nodestates', 'nodemesh.io/meshtlspolicies/status', '/pods']) {
      assert.ok(keys.has(k), `the scan finds the operator's use of ${k} (leader election, CA, NodeStates, status writes, informers)`);
    }
    const have = grants('nodemesh-operator');
    assert.deepEqual(missingGrants(needs, have), [], 'deploy/operator/rbac.yaml lacks these grants');
    assert.deepEqual(unusedGrants(needs, have), [], 'deploy/operator/rbac.yaml grants what no code uses: remove it (least privilege)');
  });

  it('the agent\'s roles grant every API call its code (and its proxy\'s) makes', (t) => {
    const { needs, unknown } = scanApiUse(['agent', 'l7proxy']);
    t.diagnostic(`agent uses: ${summarize(needs)}`);
    assert.deepEqual(unknown, [], 'API calls the scan cannot resolve: add them to KINDS in this test (client-node) or make them resolvable (KubeRest), and grant them in deploy/agent/rbac.yaml');
    const keys = new Set(needs.map((n) => n.key));
    assert.ok(keys.has('/pods') && keys.has('discovery.k8s.io/endpointslices'), 'the scan finds the informers');
    const have = grants('nodemesh-agent');
    assert.deepEqual(missingGrants(needs, have), []);
    assert.ok(!have.some((g) => g.resources?.includes('secrets') || g.resources?.includes('*')), 'agents never read Secrets: certificates come from the operator CA');
  });
});
