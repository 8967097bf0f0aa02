/**
 * Object lifecycle, independent of HTTP: create, get, list, update, patch, delete for every served kind,
 * with admission (defaults, allocation, validation), generation rules, status subresources, finalizers,
 * graceful pod deletion, scale and binding subresources, and the hooks that make CRDs served kinds.
 */

import { randomUUID } from 'node:crypto';
import { defaultBuiltin } from './admission/defaults.ts';
import type { ServiceAllocations } from './admission/services.ts';
import { validateBuiltin, validateLabels, validateName } from './admission/validate.ts';
import { crdResourceTypes, crdStatus, validateCrd } from './crds.ts';
import type { FieldError } from './errors.ts';
import { StatusError, alreadyExists, badRequest, conflict, fieldInvalid, fieldRequired, forbidden, invalid, notFound, unsupportedMediaType } from './errors.ts';
import type { GcActions, ObjectRef } from './gc.ts';
import { GarbageCollector } from './gc.ts';
import type { JsonObject, JsonValue } from './json.ts';
import { asArray, asNumber, asObject, asString, clone, deepEqual, isObject } from './json.ts';
import { applyJsonPatch, applyMergePatch, applyStrategicMergePatch, patchMetaFor } from './patch.ts';
import { fieldTypeFor } from './field-types.ts';
import type { ManagedFieldsEntry, WriteScope } from './managed-fields.ts';
import { ManagedFieldsError, describeConflicts, encodeManagedFields, keepExistingFields, parseManagedFields, planApply, planUpdateOwnership } from './managed-fields.ts';
import type { Registry, ResourceType } from './registry.ts';
import { apiVersionOf } from './registry.ts';
import type { FieldSelector, LabelSelector } from './selectors.ts';
import { formatLabelSelector, labelSelectorFromObject, matchFields, matchLabels } from './selectors.ts';
import type { ObjectStore } from './store.ts';
import { nameOf, namespaceOf, objectKey } from './store.ts';
import type { CompiledSchema } from './validation/openapi.ts';
import { applyDefaults, pruneObject, validateCustomObject } from './validation/openapi.ts';

/** Per-request write options (query parameters dryRun and fieldValidation). */
export interface WriteOptions {
  dryRun: boolean;
  fieldValidation: 'Strict' | 'Warn' | 'Ignore';
  /** Warnings to send back in `Warning` headers. */
  warnings: string[];
  /** Who writes (query `fieldManager`, else from the User-Agent); writes without one leave managedFields alone. */
  fieldManager?: string;
  /** Server-side apply only: take over fields other managers own instead of answering 409. */
  force?: boolean;
  /** Set by apply(): the ownership the apply decided, instead of attributing the write as an Update. */
  appliedOwnership?: ManagedFieldsEntry[];
}

/** DeleteOptions from the body or query. */
export interface DeleteOptions {
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
}

/** A list request after parsing. */
export interface ListOptions {
  labelSelector: LabelSelector;
  fieldSelector: FieldSelector;
  limit: number | undefined;
  continueToken: string | undefined;
}

/** A list answer. */
export interface ListResult {
  items: JsonObject[];
  resourceVersion: string;
  continueToken: string | undefined;
  remainingItemCount: number | undefined;
}

/** Supported patch content types. */
export type PatchType = 'json' | 'merge' | 'strategic' | 'apply';

/** Construction options of the object service. */
export interface ObjectServiceOptions {
  store: ObjectStore;
  registry: Registry;
  services: ServiceAllocations;
  log: (line: string) => void;
  /** Pods bound to an existing node get deletionTimestamp + grace period; the kubelet finishes with grace 0. */
  gracefulPodDeletion: boolean;
}

const NAME_CHARS = 'bcdfghjklmnpqrstvwxz2456789';

/** RFC 3339 time with second precision, as Kubernetes stamps it. */
export function nowRfc3339(date = new Date()): string {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function metaOf(obj: JsonObject): JsonObject {
  const m = obj['metadata'];
  if (isObject(m)) return m;
  const created: JsonObject = {};
  obj['metadata'] = created;
  return created;
}

function jsonPathToKeys(p: string): string[] {
  return p.replace(/^\./, '').split('.').filter(Boolean);
}

function setAt(obj: JsonObject, keys: string[], v: JsonValue): void {
  let cur = obj;
  for (const k of keys.slice(0, -1)) {
    const next = cur[k];
    if (isObject(next)) cur = next;
    else {
      const created: JsonObject = {};
      cur[k] = created;
      cur = created;
    }
  }
  cur[keys[keys.length - 1]!] = v;
}

function getAt(obj: JsonObject, keys: string[]): JsonValue | undefined {
  let cur: JsonValue | undefined = obj;
  for (const k of keys) {
    if (!isObject(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}

/** Encodes a continue token: the list's revision and the last key returned. */
export function encodeContinue(rv: string, lastKey: string): string {
  return Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv: Number(rv), start: lastKey })).toString('base64url');
}

function decodeContinue(token: string): { rv: string; start: string } {
  try {
    const o = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as unknown;
    if (isObject(o) && typeof o['start'] === 'string' && typeof o['rv'] === 'number') return { rv: String(o['rv']), start: o['start'] };
  } catch {
    // fall through
  }
  throw badRequest('continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)');
}

/** The object lifecycle for every served kind. */
export class ObjectService {
  readonly store: ObjectStore;
  readonly registry: Registry;
  readonly gc: GarbageCollector;
  private readonly services: ServiceAllocations;
  private readonly log: (line: string) => void;
  private readonly gracefulPodDeletion: boolean;

  constructor(opts: ObjectServiceOptions) {
    this.store = opts.store;
    this.registry = opts.registry;
    this.services = opts.services;
    this.log = opts.log;
    this.gracefulPodDeletion = opts.gracefulPodDeletion;
    this.store.subscribe((ev) => {
      if (ev.resource === '/services') this.services.observe(ev);
    });
    const actions: GcActions = {
      deleteObject: (ref, policy) => this.deleteRef(ref, policy),
      setOwnerReferences: (ref, refs) => this.setOwnerRefs(ref, refs),
      namespacedStorageKeys: () => [...new Set(this.registry.all().filter((rt) => rt.namespaced && rt.storageKey).map((rt) => rt.storageKey))],
      finalizeNamespace: (name) => this.finalizeNamespace(name),
      log: this.log,
    };
    this.gc = new GarbageCollector(this.store, actions);
  }

  // ------------------------------------------------------------ helpers

  /** The object as served for `rt`'s version (stored objects of a CRD may carry another version). */
  render(rt: ResourceType, obj: JsonObject): JsonObject {
    const av = apiVersionOf(rt);
    if (obj['apiVersion'] === av && obj['kind'] === rt.kind) return obj;
    return { ...obj, apiVersion: av, kind: rt.kind };
  }

  private storageType(rt: ResourceType): ResourceType {
    return this.registry.byStorageKey(rt.storageKey) ?? rt;
  }

  private requireNamespace(rt: ResourceType, ns: string, name: string, creating: boolean): void {
    if (!rt.namespaced) return;
    const nsObj = this.store.get('/namespaces', '', ns);
    if (!nsObj) throw notFound('', 'namespaces', ns);
    if (creating && asString(asObject(nsObj['metadata'])?.['deletionTimestamp'])) {
      throw forbidden(rt.group, rt.plural, name, `unable to create new content in namespace ${ns} because it is being terminated`);
    }
  }

  /** Gets an object or throws 404. */
  get(rt: ResourceType, ns: string, name: string): JsonObject {
    const obj = this.store.get(rt.storageKey, rt.namespaced ? ns : '', name);
    if (!obj) throw notFound(rt.group, rt.plural, name);
    return this.render(rt, obj);
  }

  /** Lists with selectors and limit/continue pagination. */
  list(rt: ResourceType, ns: string | undefined, opts: ListOptions): ListResult {
    let rv = String(this.store.currentRevision());
    let after: string | undefined;
    if (opts.continueToken) {
      const c = decodeContinue(opts.continueToken);
      rv = c.rv;
      after = c.start;
    }
    const namespace = rt.namespaced ? ns : undefined;
    const filtered = opts.labelSelector.length > 0 || opts.fieldSelector.length > 0;
    const limit = opts.limit && opts.limit > 0 ? opts.limit : undefined;
    const items: JsonObject[] = [];
    let more = false;
    let remaining = 0;
    let lastKey = after;
    const chunk = limit ? Math.max(limit, 256) : Number.MAX_SAFE_INTEGER;
    for (;;) {
      const page = this.store.listPage(rt.storageKey, namespace, lastKey, chunk);
      let stoppedEarly = false;
      for (let i = 0; i < page.items.length; i++) {
        const o = page.items[i]!;
        if (limit && items.length >= limit) {
          more = true;
          remaining = page.items.length - i + page.remaining;
          stoppedEarly = true;
          break;
        }
        lastKey = objectKey(namespaceOf(o), nameOf(o));
        if (filtered && !this.matches(o, opts.labelSelector, opts.fieldSelector)) continue;
        items.push(this.render(rt, o));
      }
      if (stoppedEarly || !page.more) break;
    }
    // lastKey is the key of the last object examined (returned or filtered out), where the next page starts.
    let continueToken: string | undefined;
    if (more && items.length > 0) {
      const last = items[items.length - 1]!;
      continueToken = encodeContinue(rv, objectKey(namespaceOf(last), nameOf(last)));
    }
    return { items, resourceVersion: rv, continueToken, remainingItemCount: more && !filtered ? remaining : undefined };
  }

  /** True when an object matches both selectors. */
  matches(obj: JsonObject, labels: LabelSelector, fields: FieldSelector): boolean {
    if (labels.length && !matchLabels(labels, asObject(asObject(obj['metadata'])?.['labels']) as Record<string, string> | undefined)) return false;
    if (fields.length && !matchFields(fields, obj)) return false;
    return true;
  }

  // ------------------------------------------------------------ admission

  /** Defaults, prunes and validates `obj` in place; returns a rollback for allocations. Throws 422/400. */
  private admit(rt: ResourceType, obj: JsonObject, old: JsonObject | undefined, opts: WriteOptions): () => void {
    const meta = metaOf(obj);
    const name = asString(meta['name']) ?? '';
    const errs: FieldError[] = [];
    if (rt.custom) {
      const compiled = rt.custom.validator as CompiledSchema | undefined;
      if (compiled) {
        const unknown = pruneObject(obj, compiled.schema);
        if (unknown.length) {
          const list = unknown.map((u) => `unknown field "${u}"`);
          if (opts.fieldValidation === 'Strict') {
            throw badRequest(`${rt.kind} in version "${rt.version}" cannot be handled as a ${rt.kind}: strict decoding error: ${list.join(', ')}`);
          }
          if (opts.fieldValidation === 'Warn') opts.warnings.push(...list);
        }
        applyDefaults(obj, compiled.schema);
        errs.push(...validateCustomObject(compiled, obj, old));
      }
      if (!old) errs.unshift(...validateName(rt.kind, name));
      errs.unshift(...validateLabels(meta['labels']));
    } else {
      defaultBuiltin(rt.kind, obj, !old);
      if (!old) errs.push(...validateName(rt.kind, name));
      errs.push(...validateLabels(meta['labels']));
      errs.push(...validateBuiltin(rt.kind, obj));
      if (rt.kind === 'CustomResourceDefinition') errs.push(...validateCrd(obj));
    }
    let rollback = (): void => {};
    if (errs.length === 0 && rt.kind === 'Service' && rt.group === '') {
      const r = this.services.admit(obj, old);
      rollback = r.rollback;
      errs.push(...r.errors);
    }
    if (errs.length) {
      rollback();
      throw invalid(rt.group, rt.kind, name, errs);
    }
    return rollback;
  }

  // ------------------------------------------------------------ create

  /** Creates an object (POST to a collection). */
  create(rt: ResourceType, ns: string, body: unknown, opts: WriteOptions): JsonObject {
    if (!isObject(body)) throw badRequest(`the body of the request for ${rt.plural} must be a JSON or YAML object`);
    const obj = clone(body);
    this.checkKind(rt, obj);
    const meta = metaOf(obj);
    if (rt.namespaced) {
      const bodyNs = asString(meta['namespace']);
      if (bodyNs && ns && bodyNs !== ns) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      meta['namespace'] = ns;
    } else {
      delete meta['namespace'];
    }
    let name = asString(meta['name']) ?? '';
    const generateName = asString(meta['generateName']);
    if (!name && generateName) {
      do {
        name = generateName + Array.from({ length: 5 }, () => NAME_CHARS[Math.floor(Math.random() * NAME_CHARS.length)]).join('');
      } while (this.store.get(rt.storageKey, rt.namespaced ? ns : '', name));
      meta['name'] = name;
    }
    if (!name) throw invalid(rt.group, rt.kind, '', [fieldRequired('metadata.name', 'name or generateName is required')]);
    this.requireNamespace(rt, ns, name, true);
    if (this.store.get(rt.storageKey, rt.namespaced ? ns : '', name)) {
      // Deliberately before admission: an existing object must answer AlreadyExists, not a validation error.
      throw alreadyExists(rt.group, rt.plural, name);
    }
    meta['uid'] = randomUUID();
    meta['creationTimestamp'] = nowRfc3339();
    delete meta['resourceVersion'];
    delete meta['deletionTimestamp'];
    delete meta['deletionGracePeriodSeconds'];
    delete meta['selfLink'];
    delete meta['managedFields'];
    if (rt.status && rt.kind !== 'Node' && rt.kind !== 'CustomResourceDefinition') delete obj['status'];
    if (obj['spec'] !== undefined || rt.custom) meta['generation'] = 1;
    else delete meta['generation'];
    const rollback = this.admit(rt, obj, undefined, opts);
    if (rt.kind === 'CustomResourceDefinition' && rt.group === 'apiextensions.k8s.io') {
      obj['status'] = crdStatus(obj, undefined, nowRfc3339());
    }
    this.trackManagedFields(rt, undefined, obj, undefined, opts);
    const stored = this.toStorage(rt, obj);
    if (opts.dryRun) {
      rollback();
      return this.render(rt, stored);
    }
    const saved = this.store.create(rt.storageKey, stored);
    this.afterWrite(rt, saved, undefined);
    return this.render(rt, saved);
  }

  private checkKind(rt: ResourceType, obj: JsonObject): void {
    const kind = asString(obj['kind']);
    if (kind && kind !== rt.kind) {
      throw badRequest(`the kind in the body (${kind}) does not match the kind of the resource ${rt.plural} (${rt.kind})`);
    }
    const av = asString(obj['apiVersion']);
    if (av && rt.group && !av.startsWith(`${rt.group}/`)) {
      throw badRequest(`the API version in the data (${av}) does not match the expected API version (${apiVersionOf(rt)})`);
    }
  }

  private toStorage(rt: ResourceType, obj: JsonObject): JsonObject {
    const st = this.storageType(rt);
    obj['apiVersion'] = apiVersionOf(st);
    obj['kind'] = st.kind;
    return obj;
  }

  /** Side effects of a committed write: CRDs become served kinds, namespaces get a default ServiceAccount. */
  private afterWrite(rt: ResourceType, saved: JsonObject, previous: JsonObject | undefined): void {
    if (rt.kind === 'CustomResourceDefinition' && rt.group === 'apiextensions.k8s.io') {
      this.registerCrd(saved, previous);
    }
    if (rt.kind === 'Namespace' && rt.group === '' && !previous) {
      const ns = nameOf(saved);
      if (!this.store.get('/serviceaccounts', ns, 'default')) {
        this.store.create('/serviceaccounts', {
          apiVersion: 'v1',
          kind: 'ServiceAccount',
          metadata: { name: 'default', namespace: ns, uid: randomUUID(), creationTimestamp: nowRfc3339() },
        });
      }
    }
  }

  /** Makes a stored CRD's versions served (start-up, create, update). */
  registerCrd(crd: JsonObject, previous: JsonObject | undefined): void {
    const name = nameOf(crd);
    const types = crdResourceTypes(crd, this.log);
    const oldKeys = previous ? this.registry.removeCustom(name) : [];
    for (const t of types) this.registry.add(t);
    const newKeys = new Set(types.map((t) => t.storageKey));
    for (const k of oldKeys) if (!newKeys.has(k)) this.dropStorage(k);
    this.log(`CRD ${name}: serving ${types.map((t) => `${apiVersionOf(t)}/${t.plural}`).join(', ') || 'no versions'}`);
  }

  private dropStorage(storageKey: string): void {
    for (const obj of this.store.list(storageKey)) this.store.remove(storageKey, namespaceOf(obj), nameOf(obj));
  }

  // ------------------------------------------------------------ update

  /** Replaces an object (PUT), or only its status when `sub` is 'status'. */
  update(rt: ResourceType, ns: string, name: string, body: unknown, opts: WriteOptions, sub?: 'status'): JsonObject {
    if (!isObject(body)) throw badRequest(`the body of the request for ${rt.plural} must be a JSON or YAML object`);
    const namespace = rt.namespaced ? ns : '';
    const cur = this.store.get(rt.storageKey, namespace, name);
    if (!cur) throw notFound(rt.group, rt.plural, name);
    this.checkKind(rt, body);
    const bodyMeta = asObject(body['metadata']) ?? {};
    const bodyName = asString(bodyMeta['name']);
    if (bodyName !== undefined && bodyName !== name) throw badRequest(`the name of the object (${bodyName}) does not match the name on the URL (${name})`);
    const bodyNs = asString(bodyMeta['namespace']);
    if (rt.namespaced && bodyNs && bodyNs !== ns) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    const curMeta = asObject(cur['metadata'])!;
    const bodyRv = asString(bodyMeta['resourceVersion']);
    if (bodyRv && bodyRv !== curMeta['resourceVersion']) throw conflict(rt.group, rt.plural, name);

    let next: JsonObject;
    if (sub === 'status') {
      next = clone(cur);
      if (body['status'] === undefined) delete next['status'];
      else next['status'] = clone(body['status']);
    } else {
      next = clone(body);
      const meta = metaOf(next);
      for (const k of ['uid', 'creationTimestamp', 'deletionTimestamp', 'deletionGracePeriodSeconds', 'generation', 'generateName'] as const) {
        if (curMeta[k] === undefined) delete meta[k];
        else meta[k] = clone(curMeta[k]);
      }
      meta['name'] = name;
      if (rt.namespaced) meta['namespace'] = ns;
      else delete meta['namespace'];
      delete meta['selfLink'];
      if (rt.status) {
        if (cur['status'] === undefined) delete next['status'];
        else next['status'] = clone(cur['status']);
      }
      // Finalizers may be removed but not added while the object is being deleted.
      if (curMeta['deletionTimestamp']) {
        const curFin = asArray(curMeta['finalizers']).map(String);
        const added = asArray(meta['finalizers']).map(String).filter((f) => !curFin.includes(f));
        if (added.length) {
          throw invalid(rt.group, rt.kind, name, [fieldInvalid('metadata.finalizers', added, 'no new finalizers can be added if the object is being deleted')]);
        }
      }
    }
    metaOf(next)['resourceVersion'] = curMeta['resourceVersion'] ?? '';
    const rollback = this.admit(rt, next, this.render(rt, cur), opts);
    if (rt.kind === 'CustomResourceDefinition' && rt.group === 'apiextensions.k8s.io' && sub !== 'status') {
      next['status'] = crdStatus(next, cur, nowRfc3339());
    }
    try {
      this.trackManagedFields(rt, cur, next, sub === 'status' ? undefined : body, opts, sub);
    } catch (e) {
      rollback();
      throw e;
    }
    // Generation moves only when the desired state moves: not for metadata, not for status (when a subresource).
    const generation = asNumber(curMeta['generation']);
    if (generation !== undefined) {
      const strip = (o: JsonObject): JsonObject => {
        const c: JsonObject = { ...o };
        delete c['metadata'];
        delete c['apiVersion'];
        delete c['kind'];
        if (rt.status) delete c['status'];
        return c;
      };
      metaOf(next)['generation'] = deepEqual(strip(next), strip(cur)) ? generation : generation + 1;
    }
    this.toStorage(rt, next);
    if (deepEqual(next, cur)) {
      // A no-op write is not a change: no new resourceVersion, no watch event (as the real server).
      rollback();
      return this.render(rt, cur);
    }
    if (opts.dryRun) {
      rollback();
      return this.render(rt, next);
    }
    const nextMeta = metaOf(next);
    if (nextMeta['deletionTimestamp'] && asArray(nextMeta['finalizers']).length === 0 && !(asNumber(nextMeta['deletionGracePeriodSeconds']) ?? 0)) {
      const last = this.store.remove(rt.storageKey, namespace, name)!;
      this.afterRemove(rt, last);
      return this.render(rt, last);
    }
    const saved = this.store.update(rt.storageKey, next);
    this.afterWrite(rt, saved, cur);
    return this.render(rt, saved);
  }

  // ------------------------------------------------------------ field management

  private managedEntries(rt: ResourceType, name: string, value: JsonValue | undefined): ManagedFieldsEntry[] {
    try {
      return parseManagedFields(value);
    } catch (e) {
      if (e instanceof ManagedFieldsError) throw invalid(rt.group, rt.kind, name, [fieldInvalid(e.field, e.value, e.message)]);
      throw e;
    }
  }

  /**
   * Sets metadata.managedFields of `next` (the object about to be stored): the ownership an apply
   * decided, the managedFields a client sent explicitly (kubectl's client-side to server-side apply
   * migration replaces them with a JSON patch; `[{}]` clears them), or the write attributed to its
   * field manager as an Update.
   */
  private trackManagedFields(rt: ResourceType, cur: JsonObject | undefined, next: JsonObject, body: JsonObject | undefined, opts: WriteOptions, sub?: 'status'): void {
    const meta = metaOf(next);
    const name = asString(meta['name']) ?? '';
    const type = fieldTypeFor(rt);
    const scope: WriteScope = sub ? { statusSubresource: rt.status, subresource: sub } : { statusSubresource: rt.status };
    const stored = cur ? asObject(cur['metadata'])?.['managedFields'] : undefined;
    let entries: ManagedFieldsEntry[];
    if (opts.appliedOwnership) {
      entries = keepExistingFields(opts.appliedOwnership, next, type);
    } else {
      const sent = body ? asObject(body['metadata'])?.['managedFields'] : undefined;
      if (cur && sent !== undefined && !deepEqual(sent, stored)) {
        const reset = Array.isArray(sent) && sent.length === 1 && isObject(sent[0]) && Object.keys(sent[0]).length === 0;
        entries = reset ? [] : this.managedEntries(rt, name, sent);
      } else if (!opts.fieldManager) {
        if (stored === undefined) delete meta['managedFields'];
        else meta['managedFields'] = clone(stored);
        return;
      } else {
        const before = cur ? this.render(rt, cur) : undefined;
        entries = planUpdateOwnership(this.managedEntries(rt, name, stored), before, next, type, { manager: opts.fieldManager, apiVersion: apiVersionOf(rt) }, scope);
      }
    }
    const encoded = encodeManagedFields(entries, nowRfc3339());
    if (encoded.length) meta['managedFields'] = encoded;
    else delete meta['managedFields'];
  }

  /**
   * Server-side apply (PATCH with application/apply-patch+yaml): merges the applied configuration into
   * the live object (or creates it), with field ownership, conflicts and removal of fields the manager
   * stopped applying. The result goes through the same admission (defaults, schema, CEL) as any write.
   */
  apply(rt: ResourceType, ns: string, name: string, body: unknown, opts: WriteOptions, sub?: 'status'): { object: JsonObject; created: boolean } {
    if (!isObject(body)) throw badRequest(`the applied configuration for ${rt.plural} "${name}" must be a YAML or JSON object`);
    if (!asString(body['apiVersion']) || !asString(body['kind'])) {
      throw badRequest(`the applied configuration for ${rt.plural} "${name}" must set apiVersion and kind (expected ${apiVersionOf(rt)}, ${rt.kind})`);
    }
    this.checkKind(rt, body);
    const bodyMeta = asObject(body['metadata']) ?? {};
    const bodyName = asString(bodyMeta['name']);
    if (bodyName !== undefined && bodyName !== name) throw badRequest(`the name of the object (${bodyName}) does not match the name on the URL (${name})`);
    const bodyNs = asString(bodyMeta['namespace']);
    if (rt.namespaced && bodyNs && bodyNs !== ns) throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    if (bodyMeta['managedFields'] !== undefined && bodyMeta['managedFields'] !== null) {
      throw badRequest(`metadata.managedFields must be nil in an applied configuration (${rt.plural} "${name}")`);
    }
    const manager = opts.fieldManager;
    if (!manager) throw invalid('meta.k8s.io', 'PatchOptions', '', [fieldRequired('fieldManager', 'is required for apply patch')]);
    const who = { manager, apiVersion: apiVersionOf(rt) };
    const type = fieldTypeFor(rt);
    const scope: WriteScope = sub ? { statusSubresource: rt.status, subresource: sub } : { statusSubresource: rt.status };
    const cur = this.store.get(rt.storageKey, rt.namespaced ? ns : '', name);
    if (!cur) {
      if (sub) throw notFound(rt.group, rt.plural, name);
      if (asString(bodyMeta['resourceVersion'])) {
        throw conflict(rt.group, rt.plural, name, 'the object does not exist, so the resourceVersion in the applied configuration cannot match');
      }
      const plan = planApply({ live: undefined, applied: body, type, entries: [], who, force: opts.force === true, scope });
      if (plan.conflicts) throw new Error('an apply that creates an object cannot conflict');
      metaOf(plan.object)['name'] = name;
      return { object: this.create(rt, ns, plan.object, { ...opts, appliedOwnership: plan.entries }), created: true };
    }
    const live = this.render(rt, cur);
    const entries = this.managedEntries(rt, name, asObject(live['metadata'])?.['managedFields']);
    const plan = planApply({ live, applied: body, type, entries, who, force: opts.force === true, scope });
    if (plan.conflicts) {
      const d = describeConflicts(plan.conflicts);
      throw new StatusError(409, 'Conflict', d.message, { causes: d.causes });
    }
    return { object: this.update(rt, ns, name, plan.object, { ...opts, appliedOwnership: plan.entries }, sub), created: false };
  }

  // ------------------------------------------------------------ patch

  /** Applies a patch (PATCH), to the object or its status. */
  patch(rt: ResourceType, ns: string, name: string, type: PatchType, patch: unknown, opts: WriteOptions, sub?: 'status'): JsonObject {
    const cur = this.get(rt, ns, name);
    const patched = this.applyPatch(rt, cur, type, patch);
    return this.update(rt, ns, name, patched, opts, sub);
  }

  private applyPatch(rt: ResourceType, cur: JsonObject, type: PatchType, patch: unknown): JsonObject {
    switch (type) {
      case 'json':
        return applyJsonPatch(cur, patch);
      case 'merge': {
        if (!isObject(patch)) throw badRequest('merge patch must be a JSON object');
        const out = applyMergePatch(cur, patch);
        if (!isObject(out)) throw badRequest('merge patch result is not an object');
        return out;
      }
      case 'strategic':
        if (rt.custom) {
          throw unsupportedMediaType(
            'the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (strategic merge patch is not supported for custom resources)',
          );
        }
        return applyStrategicMergePatch(cur, patch, patchMetaFor(rt.kind));
      case 'apply':
        // The REST layer sends apply to apply(); reaching here is a routing bug.
        throw badRequest('server-side apply must go through ObjectService.apply');
    }
  }

  // ------------------------------------------------------------ delete

  /** Deletes an object; answers whether it is gone or only marked (finalizers, graceful pod termination). */
  delete(rt: ResourceType, ns: string, name: string, dopts: DeleteOptions, opts: WriteOptions): { object: JsonObject; removed: boolean } {
    const namespace = rt.namespaced ? ns : '';
    const cur = this.store.get(rt.storageKey, namespace, name);
    if (!cur) throw notFound(rt.group, rt.plural, name);
    const meta = asObject(cur['metadata'])!;
    const pre = dopts.preconditions;
    if (pre?.uid && pre.uid !== meta['uid']) {
      throw conflict(rt.group, rt.plural, name, `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${String(meta['uid'])}`);
    }
    if (pre?.resourceVersion && pre.resourceVersion !== meta['resourceVersion']) {
      throw conflict(rt.group, rt.plural, name, `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in object meta: ${String(meta['resourceVersion'])}`);
    }
    if (opts.dryRun) return { object: this.render(rt, cur), removed: true };
    const uid = asString(meta['uid']) ?? '';

    if (rt.kind === 'Namespace' && rt.group === '') {
      if (meta['deletionTimestamp']) return { object: this.render(rt, cur), removed: false };
      const next = clone(cur);
      metaOf(next)['deletionTimestamp'] = nowRfc3339();
      metaOf(next)['deletionGracePeriodSeconds'] = 0;
      next['status'] = { ...(asObject(cur['status']) ?? {}), phase: 'Terminating' };
      const saved = this.store.update(rt.storageKey, next);
      return { object: this.render(rt, saved), removed: false };
    }

    const policy = dopts.propagationPolicy ?? 'Background';
    if (policy === 'Orphan') this.gc.orphan(uid);
    if (policy === 'Foreground') this.gc.deleteDependentsNow(uid);

    const finalizers = asArray(meta['finalizers']);
    const fresh = this.store.get(rt.storageKey, namespace, name) ?? cur;
    if (rt.kind === 'Pod' && rt.group === '' && this.gracefulPodDeletion) {
      const spec = asObject(fresh['spec']) ?? {};
      const phase = asString(asObject(fresh['status'])?.['phase']);
      const node = asString(spec['nodeName']);
      const fmeta = asObject(fresh['metadata'])!;
      const grace = dopts.gracePeriodSeconds ?? asNumber(fmeta['deletionGracePeriodSeconds']) ?? asNumber(spec['terminationGracePeriodSeconds']) ?? 30;
      const bound = !!node && !!this.store.get('/nodes', '', node);
      if (bound && grace > 0 && phase !== 'Succeeded' && phase !== 'Failed') {
        const existing = asNumber(fmeta['deletionGracePeriodSeconds']);
        if (existing !== undefined && fmeta['deletionTimestamp'] && existing <= grace) return { object: this.render(rt, fresh), removed: false };
        const next = clone(fresh);
        metaOf(next)['deletionTimestamp'] = nowRfc3339(new Date(Date.now() + grace * 1000));
        metaOf(next)['deletionGracePeriodSeconds'] = grace;
        const saved = this.store.update(rt.storageKey, next);
        return { object: this.render(rt, saved), removed: false };
      }
    }
    if (finalizers.length > 0) {
      const fmeta = asObject(fresh['metadata'])!;
      if (fmeta['deletionTimestamp'] && fmeta['deletionGracePeriodSeconds'] === 0) return { object: this.render(rt, fresh), removed: false };
      const next = clone(fresh);
      metaOf(next)['deletionTimestamp'] ??= nowRfc3339();
      metaOf(next)['deletionGracePeriodSeconds'] = 0;
      const saved = this.store.update(rt.storageKey, next);
      return { object: this.render(rt, saved), removed: false };
    }
    const last = this.store.remove(rt.storageKey, namespace, name)!;
    this.afterRemove(rt, last);
    return { object: this.render(rt, last), removed: true };
  }

  private afterRemove(rt: ResourceType, last: JsonObject): void {
    if (rt.kind === 'CustomResourceDefinition' && rt.group === 'apiextensions.k8s.io') {
      const keys = this.registry.removeCustom(nameOf(last));
      for (const k of keys) this.dropStorage(k);
      this.log(`CRD ${nameOf(last)}: no longer served; its objects were removed`);
    }
  }

  /** Deletes every object of a collection matching the selectors. */
  deleteCollection(rt: ResourceType, ns: string | undefined, list: ListOptions, dopts: DeleteOptions, opts: WriteOptions): JsonObject[] {
    const { items } = this.list(rt, ns, { ...list, limit: undefined, continueToken: undefined });
    const out: JsonObject[] = [];
    for (const o of items) {
      try {
        out.push(this.delete(rt, namespaceOf(o), nameOf(o), dopts, opts).object);
      } catch (e) {
        if (!(e instanceof StatusError && e.code === 404)) throw e;
      }
    }
    return out;
  }

  private typeOfStorage(storageKey: string): ResourceType | undefined {
    return this.registry.byStorageKey(storageKey);
  }

  private deleteRef(ref: ObjectRef, policy: 'Background' | 'Foreground' | 'Orphan'): void {
    const rt = this.typeOfStorage(ref.storageKey);
    if (!rt) return;
    try {
      this.delete(rt, ref.namespace, ref.name, { propagationPolicy: policy, gracePeriodSeconds: 0 }, { dryRun: false, fieldValidation: 'Ignore', warnings: [] });
    } catch (e) {
      if (!(e instanceof StatusError && e.code === 404)) throw e;
    }
  }

  private setOwnerRefs(ref: ObjectRef, refs: JsonObject[]): void {
    const cur = this.store.get(ref.storageKey, ref.namespace, ref.name);
    if (!cur) return;
    const next = clone(cur);
    if (refs.length) metaOf(next)['ownerReferences'] = refs;
    else delete metaOf(next)['ownerReferences'];
    this.store.update(ref.storageKey, next);
  }

  private finalizeNamespace(name: string): void {
    const cur = this.store.get('/namespaces', '', name);
    if (!cur) return;
    const fin = asArray(asObject(cur['metadata'])?.['finalizers']);
    if (fin.length) {
      // metadata.finalizers of the namespace itself are someone else's; keep it until they are removed.
      const spec = asObject(cur['spec']);
      if (spec && asArray(spec['finalizers']).length) {
        const next = clone(cur);
        (next['spec'] as JsonObject)['finalizers'] = [];
        this.store.update('/namespaces', next);
      }
      return;
    }
    this.store.remove('/namespaces', '', name);
  }

  // ------------------------------------------------------------ subresources

  /** The autoscaling/v1 Scale of an object with a scale subresource. */
  getScale(rt: ResourceType, ns: string, name: string): JsonObject {
    const obj = this.get(rt, ns, name);
    const scale = rt.scale!;
    const meta = asObject(obj['metadata'])!;
    let selector = '';
    if (rt.custom) {
      if (scale.labelSelectorPath) selector = String(getAt(obj, jsonPathToKeys(scale.labelSelectorPath)) ?? '');
    } else {
      const sel = labelSelectorFromObject(asObject(obj['spec'])?.['selector']);
      selector = sel.length ? formatLabelSelector(sel) : '';
    }
    return {
      kind: 'Scale',
      apiVersion: 'autoscaling/v1',
      metadata: {
        name,
        ...(rt.namespaced ? { namespace: ns } : {}),
        uid: meta['uid'] ?? '',
        resourceVersion: meta['resourceVersion'] ?? '',
        creationTimestamp: meta['creationTimestamp'] ?? null,
      },
      spec: { replicas: asNumber(getAt(obj, jsonPathToKeys(scale.specReplicasPath))) ?? 0 },
      status: { replicas: asNumber(getAt(obj, jsonPathToKeys(scale.statusReplicasPath))) ?? 0, ...(selector ? { selector } : {}) },
    };
  }

  /** Writes spec.replicas through the scale subresource (PUT of a Scale). */
  updateScale(rt: ResourceType, ns: string, name: string, body: unknown, opts: WriteOptions): JsonObject {
    if (!isObject(body)) throw badRequest('the body of a scale request must be an autoscaling/v1 Scale object');
    const replicas = asObject(body['spec'])?.['replicas'];
    if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) {
      throw invalid('autoscaling', 'Scale', name, [fieldInvalid('spec.replicas', replicas ?? null, 'must be greater than or equal to 0')]);
    }
    const cur = this.get(rt, ns, name);
    const rv = asString(asObject(body['metadata'])?.['resourceVersion']);
    if (rv && rv !== asObject(cur['metadata'])?.['resourceVersion']) throw conflict(rt.group, rt.plural, name);
    const next = clone(cur);
    setAt(next, jsonPathToKeys(rt.scale!.specReplicasPath), replicas);
    this.update(rt, ns, name, next, opts);
    return this.getScale(rt, ns, name);
  }

  /** Patches the Scale of an object. */
  patchScale(rt: ResourceType, ns: string, name: string, type: PatchType, patch: unknown, opts: WriteOptions): JsonObject {
    const scale = this.getScale(rt, ns, name);
    let patched: JsonObject;
    if (type === 'json') patched = applyJsonPatch(scale, patch);
    else if (type === 'merge' || type === 'strategic') {
      if (!isObject(patch)) throw badRequest('patch must be a JSON object');
      patched = applyMergePatch(scale, patch) as JsonObject;
    } else throw unsupportedMediaType('server-side apply is not supported for the scale subresource');
    return this.updateScale(rt, ns, name, patched, opts);
  }

  /** pods/binding: assigns a pod to a node (what a scheduler does). */
  bind(ns: string, podName: string, body: unknown): void {
    const target = asObject(asObject(body)?.['target']);
    const nodeName = asString(target?.['name']);
    if (!nodeName) throw invalid('', 'Binding', podName, [fieldRequired('target.name')]);
    const cur = this.store.get('/pods', ns, podName);
    if (!cur) throw notFound('', 'pods', podName);
    const spec = asObject(cur['spec']) ?? {};
    if (asString(spec['nodeName'])) {
      throw conflict('', 'pods/binding', podName, `pod ${podName} is already assigned to node "${String(spec['nodeName'])}"`);
    }
    const next = clone(cur);
    (next['spec'] as JsonObject)['nodeName'] = nodeName;
    const status = asObject(next['status']) ?? (next['status'] = {});
    const conds = asArray(status['conditions']).filter((c) => !(isObject(c) && c['type'] === 'PodScheduled'));
    conds.push({ type: 'PodScheduled', status: 'True', lastProbeTime: null, lastTransitionTime: nowRfc3339() });
    status['conditions'] = conds;
    this.store.update('/pods', next);
  }

  /** Stops background work. */
  close(): void {
    this.gc.close();
  }
}
