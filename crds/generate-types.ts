/** Derives crds/types.generated.ts from the CRD YAML schemas (the YAML is the source of truth). */
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

/** The subset of an OpenAPI v3 schema node the generator reads. */
export interface SchemaNode {
  type?: string;
  description?: string;
  properties?: Record<string, SchemaNode>;
  additionalProperties?: SchemaNode | boolean;
  items?: SchemaNode;
  required?: string[];
  enum?: unknown[];
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  [key: string]: unknown;
}

/** A CustomResourceDefinition as far as the generator and the tests need it. */
export interface CrdDocument {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: {
    group: string;
    scope: 'Namespaced' | 'Cluster';
    names: { kind: string; plural: string; singular: string; listKind: string; shortNames?: string[] };
    versions: Array<{
      name: string;
      served: boolean;
      storage: boolean;
      schema: { openAPIV3Schema: SchemaNode };
      subresources?: { status?: object };
      additionalPrinterColumns?: Array<{ name: string; type: string; jsonPath: string }>;
    }>;
  };
}

/**
 * Names for the schema nodes worth a named type, keyed "Kind:path" ("[]" marks array items). Every other
 * object is emitted inline. One name may serve several paths only when they emit the same type.
 */
const TYPE_NAMES: Record<string, string> = {
  'HTTPRoute:spec': 'HTTPRouteSpec',
  'HTTPRoute:spec.parentRefs[]': 'ParentReference',
  'HTTPRoute:spec.rules[]': 'HTTPRouteRule',
  'HTTPRoute:spec.rules[].matches[]': 'HTTPRouteMatch',
  'HTTPRoute:spec.rules[].matches[].path': 'HTTPPathMatch',
  'HTTPRoute:spec.rules[].matches[].headers[]': 'HTTPHeaderMatch',
  'HTTPRoute:spec.rules[].matches[].queryParams[]': 'HTTPQueryParamMatch',
  'HTTPRoute:spec.rules[].filters[]': 'HTTPRouteFilter',
  'HTTPRoute:spec.rules[].filters[].requestHeaderModifier': 'HTTPHeaderFilter',
  'HTTPRoute:spec.rules[].filters[].responseHeaderModifier': 'HTTPHeaderFilter',
  'HTTPRoute:spec.rules[].filters[].requestHeaderModifier.set[]': 'HTTPHeader',
  'HTTPRoute:spec.rules[].filters[].requestHeaderModifier.add[]': 'HTTPHeader',
  'HTTPRoute:spec.rules[].filters[].responseHeaderModifier.set[]': 'HTTPHeader',
  'HTTPRoute:spec.rules[].filters[].responseHeaderModifier.add[]': 'HTTPHeader',
  'HTTPRoute:spec.rules[].filters[].requestRedirect': 'HTTPRequestRedirectFilter',
  'HTTPRoute:spec.rules[].filters[].requestRedirect.path': 'HTTPPathModifier',
  'HTTPRoute:spec.rules[].filters[].urlRewrite': 'HTTPURLRewriteFilter',
  'HTTPRoute:spec.rules[].filters[].urlRewrite.path': 'HTTPPathModifier',
  'HTTPRoute:spec.rules[].filters[].requestMirror': 'HTTPRequestMirrorFilter',
  'HTTPRoute:spec.rules[].filters[].requestMirror.backendRef': 'BackendObjectReference',
  'HTTPRoute:spec.rules[].backendRefs[]': 'HTTPBackendRef',
  'HTTPRoute:spec.rules[].timeouts': 'HTTPRouteTimeouts',
  'HTTPRoute:spec.rules[].retry': 'HTTPRouteRetry',
  'HTTPRoute:status': 'HTTPRouteStatus',
  'HTTPRoute:status.parents[]': 'RouteParentStatus',
  'HTTPRoute:status.parents[].parentRef': 'ParentReference',
  'HTTPRoute:status.parents[].conditions[]': 'Condition',
  'MeshTLSPolicy:spec': 'MeshTLSPolicySpec',
  'MeshTLSPolicy:spec.selector': 'LabelSelector',
  'MeshTLSPolicy:spec.selector.matchExpressions[]': 'LabelSelectorRequirement',
  'MeshTLSPolicy:status': 'PolicyStatus',
  'MeshTLSPolicy:status.conditions[]': 'Condition',
  'TrafficPolicy:spec': 'TrafficPolicySpec',
  'TrafficPolicy:spec.targetRefs[]': 'TrafficPolicyTargetRef',
  'TrafficPolicy:spec.timeouts': 'TrafficPolicyTimeouts',
  'TrafficPolicy:spec.retryBudget': 'RetryBudget',
  'TrafficPolicy:spec.circuitBreaker': 'CircuitBreaker',
  'TrafficPolicy:spec.outlierDetection': 'OutlierDetection',
  'TrafficPolicy:spec.loadBalancer': 'LoadBalancer',
  'TrafficPolicy:spec.rateLimit': 'RateLimit',
  'TrafficPolicy:spec.faultInjection': 'FaultInjection',
  'TrafficPolicy:status': 'PolicyStatus',
  'TrafficPolicy:status.conditions[]': 'Condition',
  'AuthorizationPolicy:spec': 'AuthorizationPolicySpec',
  'AuthorizationPolicy:spec.targetRefs[]': 'AuthorizationPolicyTargetRef',
  'AuthorizationPolicy:spec.selector': 'LabelSelector',
  'AuthorizationPolicy:spec.selector.matchExpressions[]': 'LabelSelectorRequirement',
  'AuthorizationPolicy:spec.rules[]': 'AuthorizationRule',
  'AuthorizationPolicy:spec.rules[].from[]': 'AuthorizationSource',
  'AuthorizationPolicy:spec.rules[].to[]': 'AuthorizationDestination',
  'AuthorizationPolicy:spec.rules[].to[].paths[]': 'AuthorizationPathMatch',
  'AuthorizationPolicy:status': 'PolicyStatus',
  'AuthorizationPolicy:status.conditions[]': 'Condition',
  'NodeState:spec': 'NodeStateSpec',
  'NodeState:spec.shard': 'NodeStateShard',
  'NodeState:spec.workloads[]': 'NodeWorkload',
  'NodeState:spec.workloads[].mtls': 'WorkloadMtls',
  'NodeState:spec.workloads[].authorization': 'WorkloadAuthorization',
  'NodeState:spec.workloads[].authorization.policies[]': 'CompiledAuthorizationPolicy',
  'NodeState:spec.workloads[].authorization.policies[].rules[]': 'CompiledAuthorizationRule',
  'NodeState:spec.workloads[].authorization.policies[].rules[].from[]': 'CompiledAuthorizationSource',
  'NodeState:spec.workloads[].authorization.policies[].rules[].to[]': 'CompiledAuthorizationDestination',
  'NodeState:spec.services[]': 'NodeService',
  'NodeState:spec.services[].ports[]': 'NodeServicePort',
  'NodeState:spec.services[].ports[].routes[]': 'CompiledRoute',
  'NodeState:spec.services[].ports[].routes[].match': 'CompiledRouteMatch',
  'NodeState:spec.services[].ports[].routes[].filters[]': 'CompiledFilter',
  'NodeState:spec.services[].ports[].routes[].filters[].headers': 'CompiledHeaderModifier',
  'NodeState:spec.services[].ports[].routes[].filters[].redirect': 'CompiledRedirect',
  'NodeState:spec.services[].ports[].routes[].filters[].rewrite': 'CompiledRewrite',
  'NodeState:spec.services[].ports[].routes[].filters[].mirror': 'CompiledMirror',
  'NodeState:spec.services[].ports[].routes[].backends[]': 'CompiledBackend',
  'NodeState:spec.services[].ports[].routes[].timeouts': 'CompiledRouteTimeouts',
  'NodeState:spec.services[].ports[].routes[].retry': 'CompiledRetry',
  'NodeState:spec.services[].ports[].routes[].trafficPolicy': 'CompiledTrafficPolicy',
  'NodeState:spec.services[].ports[].trafficPolicy': 'CompiledTrafficPolicy',
};

/** The header of the generated file; the drift test compares the whole text. */
const HEADER = `// Code generated by crds/generate-types.ts from crds/*.yaml. DO NOT EDIT.
// Regenerate with: node crds/generate-types.ts (crds/types.test.ts fails when this file is stale).
/** TypeScript types of the nodemesh CRDs and of the Gateway API HTTPRoute subset, one per schema node worth a name. */
import type { V1ObjectMeta } from '@kubernetes/client-node';
`;

/** Reads every CRD YAML file of a directory, sorted by file name. */
export function readCrds(dir: string): Array<{ file: string; crd: CrdDocument }> {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.yaml'))
    .sort()
    .map((file) => ({ file, crd: parse(readFileSync(join(dir, file), 'utf8')) as CrdDocument }));
}

/** Emits the TypeScript source for the given CRDs. */
export function generateTypes(crds: readonly CrdDocument[]): string {
  const named = new Map<string, { shape: string; text: string }>();
  const order: string[] = [];

  const indent = (text: string, by: string): string => text.split('\n').map((l) => (l === '' ? l : by + l)).join('\n');
  const docComment = (node: SchemaNode, pad: string): string => {
    if (!node.description) return '';
    const text = node.description.replace(/\s+/g, ' ').replace(/\*\//g, '* /').trim();
    return `${pad}/** ${text} */\n`;
  };

  // emitType returns a type expression; named object types are hoisted into `named`.
  const emitType = (kind: string, path: string, node: SchemaNode): string => {
    if (node['x-kubernetes-int-or-string']) return 'number | string';
    if (node.enum && node.enum.length > 0) {
      return node.enum.map((v) => JSON.stringify(v)).join(' | ');
    }
    switch (node.type) {
      case 'string':
        return 'string';
      case 'integer':
      case 'number':
        return 'number';
      case 'boolean':
        return 'boolean';
      case 'array': {
        if (!node.items) throw new Error(`${kind}:${path}: array without items`);
        const inner = emitType(kind, `${path}[]`, node.items);
        return /[|{]/.test(inner) && !TYPE_NAMES[`${kind}:${path}[]`] ? `Array<${inner}>` : `${inner}[]`;
      }
      case 'object':
      case undefined: {
        if (!node.properties) {
          if (node.additionalProperties && typeof node.additionalProperties === 'object') {
            return `Record<string, ${emitType(kind, `${path}.*`, node.additionalProperties)}>`;
          }
          return 'Record<string, unknown>';
        }
        const required = new Set(node.required ?? []);
        const lines: string[] = [];
        for (const [prop, child] of Object.entries(node.properties)) {
          const opt = required.has(prop) ? '' : '?';
          lines.push(`${docComment(child, '')}${prop}${opt}: ${emitType(kind, path === '' ? prop : `${path}.${prop}`, child)};`);
        }
        const body = `{\n${indent(lines.join('\n'), '  ')}\n}`;
        const name = TYPE_NAMES[`${kind}:${path}`];
        if (!name) return body;
        const shape = body.replace(/^[ ]*\/\*\*.*\*\/\n/gm, '');
        const prev = named.get(name);
        if (prev) {
          if (prev.shape !== shape) throw new Error(`type ${name} is used for different schemas (again at ${kind}:${path})`);
          return name;
        }
        named.set(name, { shape, text: `${docComment(node, '')}export interface ${name} ${body}\n` });
        order.push(name);
        return name;
      }
      default:
        throw new Error(`${kind}:${path}: unsupported type ${String(node.type)}`);
    }
  };

  const roots: string[] = [];
  const constants: string[] = [];
  for (const crd of crds) {
    const { group, names, scope } = crd.spec;
    const version = crd.spec.versions.find((v) => v.storage);
    if (!version) throw new Error(`${crd.metadata.name}: no storage version`);
    const root = version.schema.openAPIV3Schema;
    const required = new Set(root.required ?? []);
    const apiVersion = `${group}/${version.name}`;
    const lines = [`apiVersion: ${JSON.stringify(apiVersion)};`, `kind: ${JSON.stringify(names.kind)};`, 'metadata?: V1ObjectMeta;'];
    for (const [prop, child] of Object.entries(root.properties ?? {})) {
      if (prop === 'apiVersion' || prop === 'kind' || prop === 'metadata') continue;
      const opt = required.has(prop) ? '' : '?';
      lines.push(`${docComment(child, '')}${prop}${opt}: ${emitType(names.kind, prop, child)};`);
    }
    roots.push(`${docComment(root, '')}export interface ${names.kind} {\n${indent(lines.join('\n'), '  ')}\n}\n`);
    constants.push(
      `/** API coordinates of ${names.kind}. */\nexport const ${names.kind}Resource = ${JSON.stringify(
        { group, version: version.name, apiVersion, kind: names.kind, plural: names.plural, namespaced: scope === 'Namespaced' },
        null,
        2,
      ).replace(/"([a-zA-Z]+)":/g, '$1:')} as const;\n`,
    );
  }
  return [HEADER, ...constants, ...roots, ...order.map((n) => named.get(n)!.text)].join('\n');
}

/** Where the generated file lives. */
export const GENERATED_PATH = fileURLToPath(new URL('./types.generated.ts', import.meta.url));

/** The CRD directory (this file's own). */
export const CRD_DIR = fileURLToPath(new URL('.', import.meta.url));

// Run as a script: rewrite the generated file.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  writeFileSync(GENERATED_PATH, generateTypes(readCrds(CRD_DIR).map((c) => c.crd)));
}
