/**
 * The install manifests: every file parses, kustomize renders them, the CRD copies match crds/, the workloads
 * have the shape the design demands, every RBAC rule says why, and the ClusterRoles/Roles grant what the
 * operator's and the agent's code call (found by scanning their sources for API calls, watch paths and CRD
 * resource constants). Unprivileged; needs /usr/bin/kubectl for `kubectl kustomize` (no cluster).
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
import { DEPLOY_CRD_DIRECTORY, DEPLOY_CRD_FILES, expectedCopy } from './sync-crds.ts';

const DEPLOY = fileURLToPath(new URL('.', import.meta.url));
const ROOT = join(DEPLOY, '..');

type Obj = { apiVersion?: string; kind?: string; metadata?: { name?: string; namespace?: string }; [k: string]: unknown };
type Rule = { apiGroups?: string[]; resources?: string[]; verbs?: string[]; resourceNames?: string[] };

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

/** (group, resource) → verbs granted to a service account by its ClusterRole and Role. */
function grants(subject: string): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>();
  for (const kind of ['ClusterRole', 'Role']) {
    for (const r of ((find(kind, subject).rules as Rule[]) ?? [])) {
      for (const g of r.apiGroups ?? []) for (const res of r.resources ?? []) {
        const k = `${g}/${res}`;
        const s = m.get(k) ?? new Set();
        for (const v of r.verbs ?? []) s.add(v);
        m.set(k, s);
      }
    }
  }
  return m;
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

/** What the code of `dirs` calls on the API server: `group/resource` → verbs. */
function scanApiUse(dirs: string[]): { needs: Map<string, Set<string>>; unknown: string[] } {
  const needs = new Map<string, Set<string>>();
  const unknown: string[] = [];
  const need = (key: string, verbs: string[]): void => {
    const s = needs.get(key) ?? new Set();
    for (const v of verbs) s.add(v);
    needs.set(key, s);
  };
  for (const dir of dirs) {
    for (const file of walk(join(ROOT, dir), (f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.includes('test-helpers'))) {
      const src = readFileSync(file, 'utf8');
      for (const m of src.matchAll(/'\/api\/v1\/([a-z]+)'/g)) need(`/${m[1]}`, ['list', 'watch']);
      for (const m of src.matchAll(/'\/apis\/([a-z0-9.-]+)\/v[0-9a-z]+\/([a-z]+)'/g)) need(`${m[1]}/${m[2]}`, ['list', 'watch']);
      const customResources = MESH_RESOURCES.filter((r) => new RegExp(`\\b${r.kind}Resource\\b`).test(src) || (src.includes('USER_RESOURCES') && USER_KINDS.includes(r.kind)));
      // Only files that talk to the API server through client-node count for method names.
      if (src.includes("'@kubernetes/client-node'") && /makeApiClient/.test(src)) {
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
            unknown.push(`${relative(ROOT, file)}: ${m[0]}`);
            continue;
          }
          need(`${k[0]}/${k[1]}${m[4] ? '/status' : ''}`, VERB[m[1]!]!);
        }
      }
      for (const r of customResources) need(`${r.group}/${r.plural}`, ['get', 'list', 'watch']);
    }
  }
  return { needs, unknown };
}

function missingGrants(needs: Map<string, Set<string>>, have: Map<string, Set<string>>): string[] {
  const out: string[] = [];
  for (const [res, verbs] of needs) {
    const granted = have.get(res) ?? new Set();
    for (const v of verbs) if (!granted.has(v) && !granted.has('*')) out.push(`${res} ${v}`);
  }
  return out.sort();
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

  it('the operator\'s roles grant every API call its code makes', (t) => {
    const { needs, unknown } = scanApiUse(['operator']);
    t.diagnostic(`operator uses: ${[...needs].map(([k, v]) => `${k}[${[...v].join(',')}]`).join(' ')}`);
    assert.deepEqual(unknown, [], 'unknown client-node calls: add them to KINDS in this test and to deploy/operator/rbac.yaml');
    assert.ok(needs.has('coordination.k8s.io/leases'), 'the scan finds the leader election');
    assert.deepEqual(missingGrants(needs, grants('nodemesh-operator')), []);
  });

  it('the agent\'s roles grant every API call its code (and its proxy\'s) makes', (t) => {
    const { needs, unknown } = scanApiUse(['agent', 'l7proxy']);
    t.diagnostic(`agent uses: ${[...needs].map(([k, v]) => `${k}[${[...v].join(',')}]`).join(' ')}`);
    assert.deepEqual(unknown, [], 'unknown client-node calls: add them to KINDS in this test and to deploy/agent/rbac.yaml');
    assert.ok(needs.has('/pods') && needs.has('discovery.k8s.io/endpointslices'), 'the scan finds the informers');
    const have = grants('nodemesh-agent');
    assert.deepEqual(missingGrants(needs, have), []);
    assert.ok(!have.has('/secrets'), 'agents never read Secrets: certificates come from the operator CA');
  });
});
