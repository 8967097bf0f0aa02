/**
 * The registry of served kinds: group, version, resource name, scope, subresources and selectable
 * fields of every built-in kind, plus the custom kinds that CRDs add and remove at run time.
 */

import type { JsonObject } from './json.ts';

/** A CRD column shown by `kubectl get` (from additionalPrinterColumns). */
export interface PrinterColumn {
  name: string;
  type: string;
  format?: string;
  description?: string;
  priority: number;
  jsonPath: string;
}

/** Where the scale subresource finds replicas (CRD `subresources.scale`, or Deployment/ReplicaSet). */
export interface ScaleSpec {
  specReplicasPath: string; // e.g. .spec.replicas
  statusReplicasPath: string; // e.g. .status.replicas
  labelSelectorPath?: string; // e.g. .status.selector
}

/** What a CRD version contributes beyond names: its schema, columns and validation. */
export interface CustomInfo {
  crdName: string; // metadata.name of the CRD, <plural>.<group>
  storageVersion: string;
  schema: JsonObject | undefined; // openAPIV3Schema of this version
  printerColumns: PrinterColumn[];
  /** Compiled validator, set by crds.ts; unknown-typed here to keep registry free of validation imports. */
  validator: unknown;
}

/** One served group/version/resource. */
export interface ResourceType {
  group: string; // '' for core
  version: string;
  kind: string;
  listKind: string;
  plural: string;
  singular: string;
  namespaced: boolean;
  shortNames: string[];
  categories: string[];
  verbs: string[];
  /** Versions of one resource share storage: `<group>/<plural>`. Empty for create-only virtual kinds. */
  storageKey: string;
  /** Has a status subresource: the main endpoint ignores status changes, /status changes only status. */
  status: boolean;
  scale: ScaleSpec | undefined;
  /** Other subresources served (`token`, `binding`, `finalize`, `log`, `proxy`). */
  extraSubresources: string[];
  /** Field names accepted by fieldSelector besides metadata.name and metadata.namespace. */
  fieldLabels: string[];
  custom: CustomInfo | undefined;
}

/** apiVersion string of a resource type (`v1`, `apps/v1`). */
export function apiVersionOf(rt: { group: string; version: string }): string {
  return rt.group ? `${rt.group}/${rt.version}` : rt.version;
}

const ALL_VERBS = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];

function builtin(p: Partial<ResourceType> & Pick<ResourceType, 'group' | 'version' | 'kind' | 'plural' | 'namespaced'>): ResourceType {
  return {
    listKind: `${p.kind}List`,
    singular: p.kind.toLowerCase(),
    shortNames: [],
    categories: [],
    verbs: ALL_VERBS,
    storageKey: `${p.group}/${p.plural}`,
    status: false,
    scale: undefined,
    extraSubresources: [],
    fieldLabels: [],
    custom: undefined,
    ...p,
  };
}

const REPLICAS_SCALE: ScaleSpec = { specReplicasPath: '.spec.replicas', statusReplicasPath: '.status.replicas', labelSelectorPath: '.status.selector' };

/** The built-in kinds every server serves. */
export function builtinTypes(): ResourceType[] {
  return [
    builtin({ group: '', version: 'v1', kind: 'Namespace', plural: 'namespaces', namespaced: false, shortNames: ['ns'], status: true, extraSubresources: ['finalize'], fieldLabels: ['status.phase'] }),
    builtin({ group: '', version: 'v1', kind: 'Node', plural: 'nodes', namespaced: false, shortNames: ['no'], status: true, fieldLabels: ['spec.unschedulable'] }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'Pod',
      plural: 'pods',
      namespaced: true,
      shortNames: ['po'],
      categories: ['all'],
      status: true,
      extraSubresources: ['binding', 'log', 'proxy'],
      fieldLabels: ['spec.nodeName', 'spec.restartPolicy', 'spec.schedulerName', 'spec.serviceAccountName', 'spec.hostNetwork', 'status.phase', 'status.podIP', 'status.nominatedNodeName'],
    }),
    builtin({ group: '', version: 'v1', kind: 'Binding', plural: 'bindings', namespaced: true, verbs: ['create'], storageKey: '' }),
    builtin({ group: '', version: 'v1', kind: 'Service', plural: 'services', namespaced: true, shortNames: ['svc'], categories: ['all'], status: true }),
    builtin({ group: '', version: 'v1', kind: 'Endpoints', plural: 'endpoints', singular: 'endpoints', listKind: 'EndpointsList', namespaced: true, shortNames: ['ep'] }),
    builtin({ group: '', version: 'v1', kind: 'ServiceAccount', plural: 'serviceaccounts', namespaced: true, shortNames: ['sa'], extraSubresources: ['token'] }),
    builtin({ group: '', version: 'v1', kind: 'Secret', plural: 'secrets', namespaced: true, fieldLabels: ['type'] }),
    builtin({ group: '', version: 'v1', kind: 'ConfigMap', plural: 'configmaps', namespaced: true, shortNames: ['cm'] }),
    builtin({
      group: '',
      version: 'v1',
      kind: 'Event',
      plural: 'events',
      namespaced: true,
      shortNames: ['ev'],
      fieldLabels: ['involvedObject.kind', 'involvedObject.namespace', 'involvedObject.name', 'involvedObject.uid', 'involvedObject.apiVersion', 'involvedObject.resourceVersion', 'involvedObject.fieldPath', 'reason', 'reportingComponent', 'source', 'type'],
    }),
    builtin({ group: 'coordination.k8s.io', version: 'v1', kind: 'Lease', plural: 'leases', namespaced: true }),
    builtin({ group: 'discovery.k8s.io', version: 'v1', kind: 'EndpointSlice', plural: 'endpointslices', namespaced: true, fieldLabels: ['addressType'] }),
    builtin({ group: 'apps', version: 'v1', kind: 'Deployment', plural: 'deployments', namespaced: true, shortNames: ['deploy'], categories: ['all'], status: true, scale: REPLICAS_SCALE }),
    builtin({ group: 'apps', version: 'v1', kind: 'ReplicaSet', plural: 'replicasets', namespaced: true, shortNames: ['rs'], categories: ['all'], status: true, scale: REPLICAS_SCALE, fieldLabels: ['status.replicas'] }),
    builtin({ group: 'apiextensions.k8s.io', version: 'v1', kind: 'CustomResourceDefinition', plural: 'customresourcedefinitions', namespaced: false, shortNames: ['crd', 'crds'], categories: ['api-extensions'], status: true }),
    builtin({ group: 'authentication.k8s.io', version: 'v1', kind: 'TokenReview', plural: 'tokenreviews', namespaced: false, verbs: ['create'], storageKey: '' }),
    builtin({ group: 'authentication.k8s.io', version: 'v1', kind: 'SelfSubjectReview', plural: 'selfsubjectreviews', namespaced: false, verbs: ['create'], storageKey: '' }),
    builtin({ group: 'authorization.k8s.io', version: 'v1', kind: 'SelfSubjectAccessReview', plural: 'selfsubjectaccessreviews', namespaced: false, verbs: ['create'], storageKey: '' }),
  ];
}

/** Kubernetes version ordering: GA before beta before alpha, higher numbers first, others last by name. */
export function compareKubeVersions(a: string, b: string): number {
  const parse = (v: string): [number, number, number] | undefined => {
    const m = v.match(/^v(\d+)(?:(alpha|beta)(\d+))?$/);
    if (!m) return undefined;
    const stage = m[2] === 'alpha' ? 0 : m[2] === 'beta' ? 1 : 2;
    return [stage, Number(m[1]), m[3] ? Number(m[3]) : 0];
  };
  const pa = parse(a);
  const pb = parse(b);
  if (pa && !pb) return -1;
  if (!pa && pb) return 1;
  if (!pa || !pb) return a < b ? -1 : a > b ? 1 : 0;
  for (let i = 0; i < 3; i++) if (pa[i] !== pb[i]) return pb[i]! - pa[i]!;
  return 0;
}

/** The set of served kinds, changing as CRDs come and go. */
export class Registry {
  private readonly byGvr = new Map<string, ResourceType>();
  /** Bumped on every change so discovery and OpenAPI documents can be cached. */
  generation = 0;

  constructor(types: ResourceType[] = builtinTypes()) {
    for (const t of types) this.add(t);
  }

  private static key(group: string, version: string, plural: string): string {
    return `${group}/${version}/${plural}`;
  }

  /** Adds or replaces a served resource. */
  add(rt: ResourceType): void {
    this.byGvr.set(Registry.key(rt.group, rt.version, rt.plural), rt);
    this.generation++;
  }

  /** Removes every version served for a CRD; returns the storage keys that stopped being served. */
  removeCustom(crdName: string): string[] {
    const keys = new Set<string>();
    for (const [k, rt] of this.byGvr) {
      if (rt.custom?.crdName === crdName) {
        this.byGvr.delete(k);
        keys.add(rt.storageKey);
      }
    }
    this.generation++;
    return [...keys];
  }

  /** The resource at /apis/<group>/<version>/<plural>, if served. */
  lookup(group: string, version: string, plural: string): ResourceType | undefined {
    return this.byGvr.get(Registry.key(group, version, plural));
  }

  /** The served resource for a kind in a group/version (used for ownerReferences and apply). */
  lookupKind(apiVersion: string, kind: string): ResourceType | undefined {
    const slash = apiVersion.indexOf('/');
    const group = slash < 0 ? '' : apiVersion.slice(0, slash);
    const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
    for (const rt of this.byGvr.values()) if (rt.group === group && rt.version === version && rt.kind === kind) return rt;
    return undefined;
  }

  /** The preferred served version of a storage key (the one stored objects are rendered in by default). */
  byStorageKey(storageKey: string): ResourceType | undefined {
    let best: ResourceType | undefined;
    for (const rt of this.byGvr.values()) {
      if (rt.storageKey !== storageKey) continue;
      if (rt.custom && rt.custom.storageVersion === rt.version) return rt;
      if (!best || compareKubeVersions(rt.version, best.version) < 0) best = rt;
    }
    return best;
  }

  /** Every served resource. */
  all(): ResourceType[] {
    return [...this.byGvr.values()];
  }

  /** Resources of one group/version, sorted by name. */
  resourcesOf(group: string, version: string): ResourceType[] {
    return this.all()
      .filter((rt) => rt.group === group && rt.version === version)
      .sort((a, b) => (a.plural < b.plural ? -1 : 1));
  }

  /** Non-core groups with their versions, preferred first; groups sorted with built-ins first as the real server does. */
  groups(): { name: string; versions: string[] }[] {
    const m = new Map<string, Set<string>>();
    for (const rt of this.byGvr.values()) {
      if (rt.group === '') continue;
      let s = m.get(rt.group);
      if (!s) m.set(rt.group, (s = new Set()));
      s.add(rt.version);
    }
    return [...m.entries()]
      .map(([name, vs]) => ({ name, versions: [...vs].sort(compareKubeVersions) }))
      .sort((a, b) => {
        const ab = a.name.endsWith('.k8s.io') || !a.name.includes('.') ? 0 : 1;
        const bb = b.name.endsWith('.k8s.io') || !b.name.includes('.') ? 0 : 1;
        return ab !== bb ? ab - bb : a.name < b.name ? -1 : 1;
      });
  }

  /** True when group/version has at least one served resource. */
  hasGroupVersion(group: string, version: string): boolean {
    for (const rt of this.byGvr.values()) if (rt.group === group && rt.version === version) return true;
    return false;
  }
}
