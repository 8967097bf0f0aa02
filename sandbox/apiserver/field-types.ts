/**
 * The shape knowledge server-side apply needs: which lists are associative (merged by key), which are
 * sets, which lists and maps are atomic (replaced whole). Built-in kinds come from a table of the
 * `+listType`/`+listMapKey`/`+mapType` markers of the Kubernetes API types we serve; custom resources
 * from `x-kubernetes-list-type`, `x-kubernetes-list-map-keys` and `x-kubernetes-map-type` in their
 * CRD schema. Anything not described is a granular map or an atomic list, as in structured-merge-diff.
 */

import type { JsonObject, JsonValue } from './json.ts';
import { asArray, asObject, asString, isObject } from './json.ts';
import type { ResourceType } from './registry.ts';

/** How one node of an object merges and is owned. */
export interface FieldType {
  /** Types of named fields of an object. */
  fields?: Record<string, FieldType>;
  /** Type of map values (fields not in `fields`) or of list items. */
  elem?: FieldType;
  /** Lists: `map` merges items by `keys`, `set` merges scalar items by value, `atomic` replaces the list. */
  list?: 'atomic' | 'set' | 'map';
  keys?: string[];
  /** Values a key field has when an item omits it (admission defaults it), so `{port: 80}` matches `{port: 80, protocol: TCP}`. */
  keyDefaults?: Record<string, JsonValue>;
  /** An object replaced as a whole (`x-kubernetes-map-type: atomic`, e.g. label selectors). */
  atomic?: boolean;
}

const OBJECT_META: FieldType = {
  fields: {
    finalizers: { list: 'set' },
    ownerReferences: { list: 'map', keys: ['uid'] },
  },
};
const CONDITIONS: FieldType = { list: 'map', keys: ['type'] };
const LABEL_SELECTOR: FieldType = { atomic: true };
const CONTAINER: FieldType = {
  fields: {
    ports: { list: 'map', keys: ['containerPort', 'protocol'], keyDefaults: { protocol: 'TCP' } },
    env: { list: 'map', keys: ['name'] },
    volumeMounts: { list: 'map', keys: ['mountPath'] },
    volumeDevices: { list: 'map', keys: ['devicePath'] },
  },
};
const CONTAINERS: FieldType = { list: 'map', keys: ['name'], elem: CONTAINER };
const POD_SPEC: FieldType = {
  fields: {
    containers: CONTAINERS,
    initContainers: CONTAINERS,
    ephemeralContainers: CONTAINERS,
    volumes: { list: 'map', keys: ['name'] },
    imagePullSecrets: { list: 'map', keys: ['name'] },
    hostAliases: { list: 'map', keys: ['ip'] },
    topologySpreadConstraints: { list: 'map', keys: ['topologyKey', 'whenUnsatisfiable'] },
    schedulingGates: { list: 'map', keys: ['name'] },
    resourceClaims: { list: 'map', keys: ['name'] },
  },
};
const POD_TEMPLATE: FieldType = { fields: { metadata: OBJECT_META, spec: POD_SPEC } };
const WORKLOAD: FieldType = {
  fields: {
    metadata: OBJECT_META,
    spec: { fields: { selector: LABEL_SELECTOR, template: POD_TEMPLATE } },
    status: { fields: { conditions: CONDITIONS } },
  },
};
const WITH_CONDITIONS: FieldType = { fields: { metadata: OBJECT_META, status: { fields: { conditions: CONDITIONS } } } };

/** Field types of the built-in kinds we serve, by kind (group-qualified where a kind name is ambiguous). */
export const BUILTIN_FIELD_TYPES: Record<string, FieldType> = {
  Pod: {
    fields: {
      metadata: OBJECT_META,
      spec: POD_SPEC,
      status: { fields: { conditions: CONDITIONS, podIPs: { list: 'map', keys: ['ip'] }, hostIPs: { list: 'map', keys: ['ip'] } } },
    },
  },
  Deployment: WORKLOAD,
  ReplicaSet: WORKLOAD,
  Service: {
    fields: {
      metadata: OBJECT_META,
      spec: { fields: { ports: { list: 'map', keys: ['port', 'protocol'], keyDefaults: { protocol: 'TCP' } }, selector: { atomic: true } } },
      status: { fields: { conditions: CONDITIONS } },
    },
  },
  Node: WITH_CONDITIONS,
  Namespace: WITH_CONDITIONS,
  CustomResourceDefinition: {
    fields: {
      metadata: OBJECT_META,
      spec: { fields: { versions: { list: 'map', keys: ['name'] } } },
      status: { fields: { conditions: CONDITIONS } },
    },
  },
};

const DEFAULT_TYPE: FieldType = { fields: { metadata: OBJECT_META } };

/** The field type of one schema node of a CRD (structural schema with the x-kubernetes-* markers). */
export function fieldTypeFromSchema(schema: JsonValue | undefined): FieldType | undefined {
  const s = asObject(schema);
  if (!s) return undefined;
  const t: FieldType = {};
  if (s['x-kubernetes-map-type'] === 'atomic') t.atomic = true;
  const props = asObject(s['properties']);
  if (props) {
    t.fields = {};
    for (const [k, v] of Object.entries(props)) {
      const ft = fieldTypeFromSchema(v);
      if (ft) t.fields[k] = ft;
    }
  }
  if (isObject(s['additionalProperties'])) t.elem = fieldTypeFromSchema(s['additionalProperties']);
  if (s['type'] === 'array' || s['items'] !== undefined) {
    const lt = asString(s['x-kubernetes-list-type']);
    // A CRD list without a list type is atomic, as the real server treats it.
    t.list = lt === 'map' || lt === 'set' ? lt : 'atomic';
    if (lt === 'map') t.keys = asArray(s['x-kubernetes-list-map-keys']).map(String);
    t.elem = fieldTypeFromSchema(s['items']);
  }
  return t;
}

const crdTypes = new WeakMap<JsonObject, FieldType>();

/** The field type of a whole object of `rt`. */
export function fieldTypeFor(rt: ResourceType): FieldType {
  const schema = rt.custom?.schema;
  if (schema) {
    let t = crdTypes.get(schema);
    if (!t) {
      const root = fieldTypeFromSchema(schema) ?? {};
      // ObjectMeta is the API server's, whatever the CRD schema says about metadata.
      t = { ...root, fields: { ...(root.fields ?? {}), metadata: OBJECT_META } };
      crdTypes.set(schema, t);
    }
    return t;
  }
  if (rt.custom) return DEFAULT_TYPE;
  return BUILTIN_FIELD_TYPES[rt.kind] ?? DEFAULT_TYPE;
}
