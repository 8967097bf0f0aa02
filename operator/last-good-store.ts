/**
 * Persisting the last good forms across operator restarts and leader changes.
 *
 * The decision: an object that is invalid now keeps the compiled form of its last valid generation (never
 * widening access while someone fixes it). That form lives in the operator's memory; a restarted operator, or
 * a new leader, would otherwise compile such an object as "never compiled" - no route, no mTLS mode from it, or
 * a deny-everything stand-in - which silently changes the datapath on a restart. So the leader stores the last
 * good forms still in effect (only objects invalid now: typically none or a handful) in the ConfigMap
 * `nodemesh-last-good` of the mesh namespace, which only the operator writes, before it writes NodeStates
 * from them; a leader loads it before its first compile.
 *
 * What is trusted on load: an entry is used only for an object with the same uid and kind that exists now and
 * whose generation is newer than the entry's; the stored spec must still validate (a valid current spec wins
 * over it anyway). When the
 * ConfigMap cannot be read (API errors other than 404/403) the reconcile fails and retries: nothing is written
 * from a view that may lack a last good form, so nodes keep their NodeStates (fail closed). A 404 means no record;
 * a 403 (RBAC without the ConfigMap) is reported and the operator runs as before, without persistence.
 */
import type { V1ConfigMap } from '@kubernetes/client-node';
import type { AuthorizationPolicy, HTTPRoute, MeshTLSPolicy, TrafficPolicy } from '../crds/index.ts';
import { canonicalJson } from './canonical-json.ts';
import type { CompiledMesh, LastGood, UserKind } from './compile-mesh.ts';
import type { KubeRest } from './kube-rest.ts';
import type { Snapshot } from './snapshot.ts';
import { validateAuthorizationPolicy, validateHTTPRoute, validateMeshTLSPolicy, validateTrafficPolicy, type FieldProblem } from './validate.ts';

/** Name of the ConfigMap in the mesh namespace. */
export const LAST_GOOD_CONFIGMAP = 'nodemesh-last-good';
/** Its data key. */
export const LAST_GOOD_KEY = 'last-good.json';
/** Budget for the record (a ConfigMap holds at most 1 MiB). */
export const LAST_GOOD_MAX_BYTES = 900 * 1024;

/** One persisted last good form. */
export interface LastGoodEntry {
  uid: string;
  kind: UserKind;
  namespace: string;
  name: string;
  generation: number;
  spec: unknown;
}

/** The persisted record. */
export interface LastGoodRecord {
  version: 1;
  entries: LastGoodEntry[];
}

/** Security-relevant kinds first: when the budget is short, their forms are the ones kept. */
const KIND_ORDER: Record<UserKind, number> = { AuthorizationPolicy: 0, MeshTLSPolicy: 1, TrafficPolicy: 2, HTTPRoute: 3 };

/**
 * The record to persist after a compile: the last good form of every object that is invalid now and served
 * from it. `dropped` names the entries left out because the record would exceed LAST_GOOD_MAX_BYTES.
 */
export function planLastGoodRecord(compiled: CompiledMesh): { record: LastGoodRecord; dropped: string[] } {
  const candidates: LastGoodEntry[] = [];
  for (const o of compiled.outcomes) {
    if (o.valid || o.effectiveGeneration === undefined || o.failClosed) continue;
    const lg = compiled.lastGood.get(o.uid);
    if (!lg || lg.kind !== o.kind) continue;
    candidates.push({ uid: o.uid, kind: o.kind, namespace: o.namespace, name: o.name, generation: lg.generation, spec: lg.spec });
  }
  candidates.sort((a, b) => KIND_ORDER[a.kind] - KIND_ORDER[b.kind] || (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0));
  const entries: LastGoodEntry[] = [];
  const dropped: string[] = [];
  let bytes = 64;
  for (const e of candidates) {
    const size = Buffer.byteLength(JSON.stringify(e), 'utf8') + 1;
    if (bytes + size > LAST_GOOD_MAX_BYTES) {
      dropped.push(`${e.kind} ${e.namespace}/${e.name}`);
      continue;
    }
    bytes += size;
    entries.push(e);
  }
  return { record: { version: 1, entries }, dropped };
}

const VALIDATORS: Record<UserKind, (spec: unknown) => FieldProblem[]> = {
  HTTPRoute: (spec) => validateHTTPRoute({ spec } as HTTPRoute),
  MeshTLSPolicy: (spec) => validateMeshTLSPolicy({ spec } as MeshTLSPolicy),
  TrafficPolicy: (spec) => validateTrafficPolicy({ spec } as TrafficPolicy),
  AuthorizationPolicy: (spec) => validateAuthorizationPolicy({ spec } as AuthorizationPolicy),
};

/**
 * The last good forms from a persisted record that apply to `snapshot` (see the rules at the top), and why the
 * others were not used.
 */
export function restoreLastGood(record: unknown, snapshot: Snapshot): { lastGood: Map<string, LastGood>; ignored: string[] } {
  const lastGood = new Map<string, LastGood>();
  const ignored: string[] = [];
  const r = record as Partial<LastGoodRecord> | undefined;
  if (!r || r.version !== 1 || !Array.isArray(r.entries)) return { lastGood, ignored: r === undefined ? [] : ['the record is not a version 1 last-good record'] };
  const byUid = new Map<string, { kind: UserKind; object: { metadata?: { generation?: number }; spec?: unknown } }>();
  const lists: Array<[UserKind, readonly { metadata?: { uid?: string; generation?: number }; spec?: unknown }[]]> = [
    ['HTTPRoute', snapshot.httpRoutes],
    ['MeshTLSPolicy', snapshot.meshTLSPolicies],
    ['TrafficPolicy', snapshot.trafficPolicies],
    ['AuthorizationPolicy', snapshot.authorizationPolicies],
  ];
  for (const [kind, list] of lists) for (const o of list) if (o.metadata?.uid) byUid.set(o.metadata.uid, { kind, object: o });
  for (const e of r.entries) {
    const name = `${e?.kind} ${e?.namespace}/${e?.name}`;
    const current = e && typeof e.uid === 'string' ? byUid.get(e.uid) : undefined;
    if (!current || current.kind !== e.kind) {
      ignored.push(`${name}: no such object now (deleted or re-created)`);
      continue;
    }
    const generation = current.object.metadata?.generation ?? 1;
    if (typeof e.generation !== 'number' || e.generation >= generation) {
      ignored.push(`${name}: generation ${e.generation} is not older than the current ${generation}`);
      continue;
    }
    let problems: FieldProblem[];
    try {
      problems = VALIDATORS[e.kind](e.spec);
    } catch (err) {
      problems = [{ path: 'spec', message: (err as Error).message }];
    }
    if (problems.length > 0) {
      ignored.push(`${name}: the stored generation ${e.generation} does not validate (${problems[0]!.path}: ${problems[0]!.message})`);
      continue;
    }
    lastGood.set(e.uid, { kind: e.kind, generation: e.generation, spec: e.spec });
  }
  return { lastGood, ignored };
}

/** Where the record lives (the API server, or a fake in tests). Errors carry the HTTP status in `code`. */
export interface LastGoodStore {
  /** The stored record, undefined when there is none. */
  load(): Promise<unknown>;
  save(record: LastGoodRecord): Promise<void>;
}

/** LastGoodStore over the ConfigMap `nodemesh-last-good` in `namespace`. */
export function createKubeLastGoodStore(rest: KubeRest, namespace: string, timeoutMs = 30_000): LastGoodStore {
  const base = `/api/v1/namespaces/${encodeURIComponent(namespace)}/configmaps`;
  const body = (record: LastGoodRecord, resourceVersion?: string): V1ConfigMap => ({
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: {
      name: LAST_GOOD_CONFIGMAP,
      namespace,
      labels: { 'app.kubernetes.io/managed-by': 'nodemesh-operator' },
      ...(resourceVersion ? { resourceVersion } : {}),
    },
    data: { [LAST_GOOD_KEY]: canonicalJson(record) },
  });
  return {
    load: async () => {
      const cm = await rest.getOrUndefined<V1ConfigMap>(`${base}/${LAST_GOOD_CONFIGMAP}`, timeoutMs);
      const text = cm?.data?.[LAST_GOOD_KEY];
      if (text === undefined) return undefined;
      try {
        return JSON.parse(text) as unknown;
      } catch (err) {
        return { invalid: `ConfigMap ${namespace}/${LAST_GOOD_CONFIGMAP} key ${LAST_GOOD_KEY} is not JSON (${(err as Error).message})` };
      }
    },
    save: async (record) => {
      const cm = await rest.getOrUndefined<V1ConfigMap>(`${base}/${LAST_GOOD_CONFIGMAP}`, timeoutMs);
      if (!cm) await rest.json('POST', base, { body: body(record), timeoutMs });
      else await rest.json('PUT', `${base}/${LAST_GOOD_CONFIGMAP}`, { body: body(record, cm.metadata?.resourceVersion), timeoutMs });
    },
  };
}
