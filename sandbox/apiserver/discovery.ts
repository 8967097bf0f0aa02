/**
 * Discovery documents built from the registry: /api, /apis, /api/v1, /apis/<g>[/<v>] (legacy), the
 * aggregated apidiscovery.k8s.io/v2 lists, and /openapi/v3 per group-version. The OpenAPI documents
 * declare `fieldValidation` on every PATCH so kubectl validates server-side, and carry CRD schemas
 * so `kubectl explain` works for custom kinds.
 */

import { createHash } from 'node:crypto';
import type { JsonObject, JsonValue } from './json.ts';
import type { Registry, ResourceType } from './registry.ts';
import { apiVersionOf } from './registry.ts';

/** Content type of aggregated discovery answers. */
export const AGGREGATED_DISCOVERY_TYPE = 'application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList';

interface SubresourceInfo {
  name: string;
  group?: string;
  version?: string;
  kind: string;
  verbs: string[];
}

function subresourcesOf(rt: ResourceType): SubresourceInfo[] {
  const out: SubresourceInfo[] = [];
  if (rt.scale) out.push({ name: 'scale', group: 'autoscaling', version: 'v1', kind: 'Scale', verbs: ['get', 'patch', 'update'] });
  if (rt.status) out.push({ name: 'status', kind: rt.kind, verbs: ['get', 'patch', 'update'] });
  if (rt.extraSubresources.includes('token')) out.push({ name: 'token', group: 'authentication.k8s.io', version: 'v1', kind: 'TokenRequest', verbs: ['create'] });
  if (rt.extraSubresources.includes('binding')) out.push({ name: 'binding', kind: 'Binding', verbs: ['create'] });
  if (rt.extraSubresources.includes('log')) out.push({ name: 'log', kind: 'Pod', verbs: ['get'] });
  if (rt.extraSubresources.includes('proxy')) out.push({ name: 'proxy', kind: 'PodProxyOptions', verbs: ['create', 'delete', 'get', 'patch', 'update'] });
  if (rt.extraSubresources.includes('finalize')) out.push({ name: 'finalize', kind: 'Namespace', verbs: ['update'] });
  return out.sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** GET /api */
export function apiVersions(serverAddress: string): JsonObject {
  return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress }] };
}

function groupEntry(g: { name: string; versions: string[] }): JsonObject {
  const versions = g.versions.map((v) => ({ groupVersion: `${g.name}/${v}`, version: v }));
  return { name: g.name, versions, preferredVersion: versions[0]! };
}

/** GET /apis */
export function apiGroupList(registry: Registry): JsonObject {
  return { kind: 'APIGroupList', apiVersion: 'v1', groups: registry.groups().map(groupEntry) };
}

/** GET /apis/<group> */
export function apiGroup(registry: Registry, group: string): JsonObject | undefined {
  const g = registry.groups().find((x) => x.name === group);
  if (!g) return undefined;
  return { kind: 'APIGroup', apiVersion: 'v1', ...groupEntry(g) };
}

/** GET /api/v1 or /apis/<group>/<version> */
export function apiResourceList(registry: Registry, group: string, version: string): JsonObject | undefined {
  const types = registry.resourcesOf(group, version);
  if (!types.length) return undefined;
  const resources: JsonValue[] = [];
  for (const rt of types) {
    resources.push({
      name: rt.plural,
      singularName: rt.singular,
      namespaced: rt.namespaced,
      kind: rt.kind,
      verbs: rt.verbs,
      ...(rt.shortNames.length ? { shortNames: rt.shortNames } : {}),
      ...(rt.categories.length ? { categories: rt.categories } : {}),
      storageVersionHash: createHash('sha256').update(`${rt.storageKey}/${rt.kind}`).digest('base64').slice(0, 11),
    });
    for (const s of subresourcesOf(rt)) {
      resources.push({
        name: `${rt.plural}/${s.name}`,
        singularName: '',
        namespaced: rt.namespaced,
        ...(s.group !== undefined ? { group: s.group, version: s.version! } : {}),
        kind: s.kind,
        verbs: s.verbs,
      });
    }
  }
  return { kind: 'APIResourceList', apiVersion: 'v1', groupVersion: apiVersionOf({ group, version }), resources };
}

function resourceDiscovery(rt: ResourceType): JsonObject {
  return {
    resource: rt.plural,
    responseKind: { group: rt.group, version: rt.version, kind: rt.kind },
    scope: rt.namespaced ? 'Namespaced' : 'Cluster',
    singularResource: rt.singular,
    verbs: rt.verbs,
    ...(rt.shortNames.length ? { shortNames: rt.shortNames } : {}),
    ...(rt.categories.length ? { categories: rt.categories } : {}),
    ...(subresourcesOf(rt).length
      ? {
          subresources: subresourcesOf(rt).map((s) => ({
            subresource: s.name,
            responseKind: { group: s.group ?? rt.group, version: s.version ?? rt.version, kind: s.kind },
            verbs: s.verbs,
          })),
        }
      : {}),
  };
}

/** Aggregated discovery (apidiscovery.k8s.io/v2) for /api (core) or /apis (all groups). */
export function aggregatedDiscovery(registry: Registry, core: boolean): JsonObject {
  const items: JsonValue[] = [];
  if (core) {
    items.push({ metadata: { creationTimestamp: null }, versions: [{ version: 'v1', resources: registry.resourcesOf('', 'v1').map(resourceDiscovery), freshness: 'Current' }] });
  } else {
    for (const g of registry.groups()) {
      items.push({
        metadata: { name: g.name, creationTimestamp: null },
        versions: g.versions.map((v) => ({ version: v, resources: registry.resourcesOf(g.name, v).map(resourceDiscovery), freshness: 'Current' })),
      });
    }
  }
  return { kind: 'APIGroupDiscoveryList', apiVersion: 'apidiscovery.k8s.io/v2', metadata: {}, items };
}

// ---------------------------------------------------------------- OpenAPI v3

function reverseGroup(group: string): string {
  return group ? group.split('.').reverse().join('.') : 'io.k8s.api.core';
}

/** The components.schemas name of a kind, as the real server names them. */
export function schemaName(rt: ResourceType): string {
  if (rt.custom) return `${reverseGroup(rt.group)}.${rt.version}.${rt.kind}`;
  const pkg = rt.group === '' ? 'core' : rt.group.replace(/\.k8s\.io$/, '').replace(/\./g, '');
  return `io.k8s.api.${pkg}.${rt.version}.${rt.kind}`;
}

const OBJECT_META = 'io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta';

function kindSchema(rt: ResourceType): JsonObject {
  const gvk = [{ group: rt.group, version: rt.version, kind: rt.kind }];
  const base: JsonObject = {
    apiVersion: { type: 'string', description: 'APIVersion defines the versioned schema of this representation of an object.' },
    kind: { type: 'string', description: 'Kind is a string value representing the REST resource this object represents.' },
    metadata: { allOf: [{ $ref: `#/components/schemas/${OBJECT_META}` }], default: {}, description: "Standard object's metadata." },
  };
  if (rt.custom?.schema) {
    const s = JSON.parse(JSON.stringify(rt.custom.schema)) as JsonObject;
    const props = (s['properties'] ?? {}) as JsonObject;
    s['properties'] = { ...props, ...base };
    s['x-kubernetes-group-version-kind'] = gvk;
    return s;
  }
  return {
    type: 'object',
    description: `${rt.kind} (the nodemesh sandbox API server publishes field schemas for custom resources only).`,
    properties: { ...base, spec: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true }, status: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true } },
    'x-kubernetes-group-version-kind': gvk,
  };
}

const QUERY_PARAMS = ['dryRun', 'fieldManager', 'fieldValidation', 'pretty'].map((name) => ({ name, in: 'query', schema: { type: 'string', uniqueItems: true } }));

function operation(rt: ResourceType, action: string, verbName: string, withBody: string[] | undefined): JsonObject {
  const group = rt.group ? rt.group.replace(/\.k8s\.io$/, '').replace(/\./g, '') : 'core';
  const opId = `${verbName}${group[0]!.toUpperCase()}${group.slice(1)}${rt.version[0]!.toUpperCase()}${rt.version.slice(1)}${rt.namespaced ? 'Namespaced' : ''}${rt.kind}`;
  const ref = { $ref: `#/components/schemas/${schemaName(rt)}` };
  const op: JsonObject = {
    operationId: opId,
    'x-kubernetes-action': action,
    'x-kubernetes-group-version-kind': { group: rt.group, version: rt.version, kind: rt.kind },
    parameters: action === 'get' ? [] : QUERY_PARAMS,
    responses: { '200': { description: 'OK', content: { 'application/json': { schema: ref } } } },
  };
  if (withBody) {
    const content: JsonObject = {};
    for (const ct of withBody) content[ct] = { schema: action === 'patch' ? { $ref: '#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Patch' } : ref };
    op['requestBody'] = { content, required: true };
  }
  return op;
}

/** The OpenAPI v3 document of one group-version. */
export function openApiV3Document(registry: Registry, group: string, version: string): JsonObject | undefined {
  const types = registry.resourcesOf(group, version);
  if (!types.length) return undefined;
  const prefix = group ? `/apis/${group}/${version}` : `/api/${version}`;
  const paths: JsonObject = {};
  const schemas: JsonObject = {
    [OBJECT_META]: { type: 'object', description: 'ObjectMeta is metadata that all persisted resources must have, which includes all objects users must create.' },
    'io.k8s.apimachinery.pkg.apis.meta.v1.Patch': { type: 'object', description: 'Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.' },
  };
  for (const rt of types) {
    schemas[schemaName(rt)] = kindSchema(rt);
    if (!rt.verbs.includes('get')) {
      paths[`${prefix}/${rt.plural}`] = { post: operation(rt, 'post', 'create', ['application/json']) };
      continue;
    }
    const item = rt.namespaced ? `${prefix}/namespaces/{namespace}/${rt.plural}/{name}` : `${prefix}/${rt.plural}/{name}`;
    // Strategic merge patch is deliberately not listed: kubectl then computes apply patches from its
    // compiled-in types (built-ins) or uses JSON merge patch (custom resources), both of which we apply.
    paths[item] = {
      get: operation(rt, 'get', 'read', undefined),
      put: operation(rt, 'put', 'replace', ['application/json']),
      patch: operation(rt, 'patch', 'patch', ['application/json-patch+json', 'application/merge-patch+json']),
      delete: operation(rt, 'delete', 'delete', undefined),
    };
  }
  return { openapi: '3.0.0', info: { title: 'Kubernetes', version: 'v1.32.0' }, paths, components: { schemas } };
}

/** GET /openapi/v3: the per-group-version document index. */
export function openApiV3Root(registry: Registry, docHash: (group: string, version: string) => string): JsonObject {
  const paths: JsonObject = {};
  const gvs = new Set<string>();
  for (const rt of registry.all()) gvs.add(`${rt.group}\n${rt.version}`);
  for (const gv of [...gvs].sort()) {
    const [group, version] = gv.split('\n') as [string, string];
    const key = group ? `apis/${group}/${version}` : `api/${version}`;
    paths[key] = { serverRelativeURL: `/openapi/v3/${key}?hash=${docHash(group, version)}` };
  }
  return { paths };
}
