/**
 * Field ownership (`metadata.managedFields`) and server-side apply, as pure functions.
 *
 * A field set is the set of paths a manager owns. A path is a list of path elements in the FieldsV1
 * vocabulary — `f:<field>`, `k:<json of the key fields>` (an item of an associative list), `v:<json>`
 * (an item of a set), `i:<index>` — joined by newlines, so prefix tests are string tests. Members are
 * leaves (scalars, atomic lists and maps, empty maps) and items of associative lists and sets.
 *
 * Apply (`planApply`): the applied configuration is merged into the live object by field type (maps
 * merge, associative lists merge by key, sets union, atomic values replace); a field the merge changes
 * that another manager owns is a conflict unless forced; fields the applier owned before and no longer
 * applies are removed unless another manager still owns them. Update (`planUpdateOwnership`): what
 * a PUT/PATCH/POST changed becomes the updater's, and other managers lose it.
 */

import type { FieldType } from './field-types.ts';
import type { JsonObject, JsonValue } from './json.ts';
import { clone, deepEqual, isObject } from './json.ts';

/** Paths (path elements joined by SEP) a manager owns. */
export type FieldSet = Set<string>;

const SEP = '\n';

/** Joins path elements into a set key. */
export function joinPath(pes: readonly string[]): string {
  return pes.join(SEP);
}

/** Splits a set key into path elements. */
export function splitPath(path: string): string[] {
  return path === '' ? [] : path.split(SEP);
}

function childPath(prefix: string, pe: string): string {
  return prefix === '' ? pe : prefix + SEP + pe;
}

function fieldChild(t: FieldType | undefined, name: string): FieldType | undefined {
  return t?.fields?.[name] ?? t?.elem;
}

function isGranularMap(v: JsonValue | undefined, t: FieldType | undefined): v is JsonObject {
  return isObject(v) && !t?.atomic && t?.list === undefined;
}

function itemPe(item: JsonValue, t: FieldType): string | undefined {
  if (!isObject(item) || !t.keys?.length) return undefined;
  const key: JsonObject = {};
  for (const name of [...t.keys].sort()) {
    const v = item[name] ?? t.keyDefaults?.[name];
    if (v === undefined || isObject(v) || Array.isArray(v)) return undefined;
    key[name] = v;
  }
  return `k:${JSON.stringify(key)}`;
}

/** The items of an associative list by path element; undefined when an item has no key or keys repeat (then the list is atomic). */
function keyedItems(list: JsonValue[], t: FieldType): Map<string, JsonObject> | undefined {
  const out = new Map<string, JsonObject>();
  for (const item of list) {
    const pe = itemPe(item, t);
    if (pe === undefined || out.has(pe)) return undefined;
    out.set(pe, item as JsonObject);
  }
  return out;
}

function setPe(item: JsonValue): string {
  return `v:${JSON.stringify(item)}`;
}

/** Adds the member paths of `v` (at `prefix`) to `out`. `skipNulls` leaves out explicit nulls (an applied null claims nothing). */
export function collectFields(v: JsonValue | undefined, t: FieldType | undefined, prefix: string, out: FieldSet, skipNulls = false): void {
  if (v === undefined || (skipNulls && v === null)) return;
  if (isGranularMap(v, t)) {
    const keys = Object.keys(v);
    if (keys.length === 0) {
      if (prefix) out.add(prefix);
      return;
    }
    for (const k of keys) collectFields(v[k], fieldChild(t, k), childPath(prefix, `f:${k}`), out, skipNulls);
    return;
  }
  if (Array.isArray(v) && v.length > 0 && t) {
    if (t.list === 'map') {
      const items = keyedItems(v, t);
      if (items) {
        for (const [pe, item] of items) {
          const p = childPath(prefix, pe);
          out.add(p);
          for (const k of Object.keys(item)) collectFields(item[k], fieldChild(t.elem, k), childPath(p, `f:${k}`), out, skipNulls);
        }
        return;
      }
    } else if (t.list === 'set') {
      for (const item of v) out.add(childPath(prefix, setPe(item)));
      return;
    }
  }
  if (prefix) out.add(prefix);
}

/** The member paths of a whole value. */
export function fieldSetOf(v: JsonValue, t: FieldType | undefined, skipNulls = false): FieldSet {
  const out: FieldSet = new Set();
  collectFields(v, t, '', out, skipNulls);
  return out;
}

function step(cur: JsonValue | undefined, pe: string, t: FieldType | undefined): { v: JsonValue | undefined; t: FieldType | undefined; index: number } {
  const body = pe.slice(2);
  if (pe.startsWith('f:')) return { v: isObject(cur) ? cur[body] : undefined, t: fieldChild(t, body), index: -1 };
  if (!Array.isArray(cur)) return { v: undefined, t: undefined, index: -1 };
  let index = -1;
  if (pe.startsWith('k:') && t) index = cur.findIndex((item) => itemPe(item, t) === pe);
  else if (pe.startsWith('v:')) index = cur.findIndex((item) => setPe(item) === pe);
  else if (pe.startsWith('i:')) index = Number(body) < cur.length ? Number(body) : -1;
  return { v: index >= 0 ? cur[index] : undefined, t: t?.elem, index };
}

/** True when `path` names something present in `obj`. */
export function pathExists(obj: JsonValue, path: string, t: FieldType | undefined): boolean {
  let cur: JsonValue | undefined = obj;
  let ct = t;
  for (const pe of splitPath(path)) {
    const s = step(cur, pe, ct);
    if (s.v === undefined) return false;
    cur = s.v;
    ct = s.t;
  }
  return true;
}

/** Removes the thing `path` names from `obj` (in place); false when it was not there. */
function removeAt(obj: JsonValue, pes: string[], t: FieldType | undefined): boolean {
  let cur: JsonValue | undefined = obj;
  let ct = t;
  for (const pe of pes.slice(0, -1)) {
    const s = step(cur, pe, ct);
    if (s.v === undefined) return false;
    cur = s.v;
    ct = s.t;
  }
  const last = pes[pes.length - 1]!;
  if (last.startsWith('f:')) {
    if (!isObject(cur) || !(last.slice(2) in cur)) return false;
    delete cur[last.slice(2)];
    return true;
  }
  const s = step(cur, last, ct);
  if (s.index < 0 || !Array.isArray(cur)) return false;
  cur.splice(s.index, 1);
  return true;
}

function valueAt(obj: JsonValue, pes: string[], t: FieldType | undefined): JsonValue | undefined {
  let cur: JsonValue | undefined = obj;
  let ct = t;
  for (const pe of pes) {
    const s = step(cur, pe, ct);
    if (s.v === undefined) return undefined;
    cur = s.v;
    ct = s.t;
  }
  return cur;
}

/**
 * Removes `paths` from `obj` in place, deepest first. A map left empty by a removal goes too, unless
 * `isOwned` says someone owns it (an applied `{}` is a field of its own).
 */
export function removeFields(obj: JsonObject, paths: Iterable<string>, t: FieldType | undefined, isOwned: (path: string) => boolean): void {
  const sorted = [...paths].map(splitPath).sort((a, b) => b.length - a.length);
  for (const pes of sorted) {
    if (!removeAt(obj, pes, t)) continue;
    for (let n = pes.length - 1; n > 0; n--) {
      const parent = pes.slice(0, n);
      if (!parent[parent.length - 1]!.startsWith('f:')) break;
      const v = valueAt(obj, parent, t);
      if (!isObject(v) || Object.keys(v).length > 0 || isOwned(joinPath(parent))) break;
      removeAt(obj, parent, t);
    }
  }
}

/** Merges an applied configuration into a live value by field type; explicit nulls remove. Returns a new value. */
export function mergeApplied(live: JsonValue | undefined, applied: JsonValue, t: FieldType | undefined): JsonValue {
  if (isGranularMap(applied, t)) {
    const out: JsonObject = isGranularMap(live, t) ? { ...live } : {};
    for (const [k, v] of Object.entries(applied)) {
      if (v === null) delete out[k];
      else out[k] = mergeApplied(out[k], v, fieldChild(t, k));
    }
    return out;
  }
  if (Array.isArray(applied) && Array.isArray(live) && t) {
    if (t.list === 'map') {
      const liveItems = keyedItems(live, t);
      const appliedItems = keyedItems(applied, t);
      if (liveItems && appliedItems) {
        // Items keep their place; items new to the list follow in the applied order.
        const out: JsonValue[] = [];
        for (const [pe, item] of liveItems) {
          const a = appliedItems.get(pe);
          out.push(a ? mergeApplied(item, a, t.elem) : item);
        }
        for (const [pe, a] of appliedItems) if (!liveItems.has(pe)) out.push(mergeApplied(undefined, a, t.elem));
        return out;
      }
    } else if (t.list === 'set') {
      const out = [...live];
      for (const a of applied) if (!out.some((x) => deepEqual(x, a))) out.push(clone(a));
      return out;
    }
  }
  if (Array.isArray(applied) && t?.list === 'map') return applied.map((a) => mergeApplied(undefined, a, t.elem));
  return clone(applied);
}

/** Adds to `changed` the member paths that `after` adds or modifies, and to `removed` those of `before` it no longer has. */
export function diffFields(before: JsonValue | undefined, after: JsonValue | undefined, t: FieldType | undefined, prefix: string, changed: FieldSet, removed: FieldSet): void {
  if (before === undefined && after === undefined) return;
  if (before === undefined) return collectFields(after, t, prefix, changed);
  if (after === undefined) return collectFields(before, t, prefix, removed);
  if (isGranularMap(before, t) && isGranularMap(after, t)) {
    const bk = Object.keys(before);
    const ak = Object.keys(after);
    // An empty map is a member of its own: it stops or starts being one.
    if (prefix && bk.length === 0 && ak.length > 0) removed.add(prefix);
    if (prefix && ak.length === 0 && bk.length > 0) changed.add(prefix);
    for (const k of new Set([...bk, ...ak])) diffFields(before[k], after[k], fieldChild(t, k), childPath(prefix, `f:${k}`), changed, removed);
    return;
  }
  if (Array.isArray(before) && Array.isArray(after) && before.length > 0 && after.length > 0 && t) {
    if (t.list === 'map') {
      const bi = keyedItems(before, t);
      const ai = keyedItems(after, t);
      if (bi && ai) {
        for (const [pe, item] of ai) {
          const p = childPath(prefix, pe);
          const old = bi.get(pe);
          if (!old) {
            changed.add(p);
            for (const k of Object.keys(item)) collectFields(item[k], fieldChild(t.elem, k), childPath(p, `f:${k}`), changed);
          } else {
            for (const k of new Set([...Object.keys(old), ...Object.keys(item)])) diffFields(old[k], item[k], fieldChild(t.elem, k), childPath(p, `f:${k}`), changed, removed);
          }
        }
        for (const [pe, item] of bi) {
          if (ai.has(pe)) continue;
          const p = childPath(prefix, pe);
          removed.add(p);
          for (const k of Object.keys(item)) collectFields(item[k], fieldChild(t.elem, k), childPath(p, `f:${k}`), removed);
        }
        return;
      }
    } else if (t.list === 'set') {
      const b = new Set(before.map(setPe));
      const a = new Set(after.map(setPe));
      for (const pe of a) if (!b.has(pe)) changed.add(childPath(prefix, pe));
      for (const pe of b) if (!a.has(pe)) removed.add(childPath(prefix, pe));
      return;
    }
  }
  if (deepEqual(before, after)) return;
  const bs: FieldSet = new Set();
  const as: FieldSet = new Set();
  collectFields(before, t, prefix, bs);
  collectFields(after, t, prefix, as);
  for (const p of bs) if (!as.has(p)) removed.add(p);
  for (const p of as) changed.add(p);
}

// ---------------------------------------------------------------- managedFields entries

/** One entry of metadata.managedFields, with its field set decoded. */
export interface ManagedFieldsEntry {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  time?: string;
  subresource?: string;
  fields: FieldSet;
  /** The entry as stored; written back verbatim while its fields do not change, so no-op writes stay no-ops. */
  stored?: JsonObject;
}

/** A managedFields entry that cannot be decoded, with the field at fault. */
export class ManagedFieldsError extends Error {
  readonly field: string;
  readonly value: unknown;
  constructor(field: string, value: unknown, message: string) {
    super(message);
    this.name = 'ManagedFieldsError';
    this.field = field;
    this.value = value;
  }
}

/** Decodes FieldsV1 (`{"f:spec":{"f:replicas":{}}}`) into a field set. */
export function decodeFieldsV1(v: JsonValue, where = 'fieldsV1', prefix = '', out: FieldSet = new Set()): FieldSet {
  if (!isObject(v)) throw new ManagedFieldsError(where, v, 'must be an object');
  for (const [k, child] of Object.entries(v)) {
    if (k === '.') {
      if (prefix) out.add(prefix);
      continue;
    }
    if (!/^[fkvi]:/.test(k)) throw new ManagedFieldsError(where, k, `unknown path element ${JSON.stringify(k)} (expected f:, k:, v: or i:)`);
    const p = childPath(prefix, k);
    if (isObject(child) && Object.keys(child).length === 0) out.add(p);
    else decodeFieldsV1(child, where, p, out);
  }
  return out;
}

/** Encodes a field set as FieldsV1: `.` marks a member that also has members below it. */
export function encodeFieldsV1(set: FieldSet): JsonObject {
  interface Node {
    member: boolean;
    children: Map<string, Node>;
  }
  const root: Node = { member: false, children: new Map() };
  for (const p of set) {
    let node = root;
    for (const pe of splitPath(p)) {
      let next = node.children.get(pe);
      if (!next) node.children.set(pe, (next = { member: false, children: new Map() }));
      node = next;
    }
    node.member = true;
  }
  const render = (n: Node): JsonObject => {
    const out: JsonObject = {};
    if (n.member && n.children.size > 0) out['.'] = {};
    for (const k of [...n.children.keys()].sort()) out[k] = render(n.children.get(k)!);
    return out;
  };
  return render(root);
}

/** Decodes metadata.managedFields; throws ManagedFieldsError naming the entry and field at fault. */
export function parseManagedFields(v: JsonValue | undefined): ManagedFieldsEntry[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new ManagedFieldsError('metadata.managedFields', v, 'must be a list');
  return v.map((raw, i) => {
    const at = `metadata.managedFields[${i}]`;
    if (!isObject(raw)) throw new ManagedFieldsError(at, raw, 'must be an object');
    const manager = raw['manager'];
    const operation = raw['operation'];
    if (typeof manager !== 'string') throw new ManagedFieldsError(`${at}.manager`, manager ?? null, 'must be a string');
    if (operation !== 'Apply' && operation !== 'Update') throw new ManagedFieldsError(`${at}.operation`, operation ?? null, 'must be "Apply" or "Update"');
    if (raw['fieldsType'] !== undefined && raw['fieldsType'] !== 'FieldsV1') throw new ManagedFieldsError(`${at}.fieldsType`, raw['fieldsType'], 'must be "FieldsV1"');
    const entry: ManagedFieldsEntry = {
      manager,
      operation,
      apiVersion: typeof raw['apiVersion'] === 'string' ? raw['apiVersion'] : '',
      fields: raw['fieldsV1'] === undefined ? new Set() : decodeFieldsV1(raw['fieldsV1'], `${at}.fieldsV1`),
      stored: raw,
    };
    if (typeof raw['time'] === 'string') entry.time = raw['time'];
    if (typeof raw['subresource'] === 'string' && raw['subresource']) entry.subresource = raw['subresource'];
    return entry;
  });
}

function sameSet(a: FieldSet, b: FieldSet): boolean {
  if (a.size !== b.size) return false;
  for (const p of a) if (!b.has(p)) return false;
  return true;
}

/** Encodes entries for metadata.managedFields; unchanged entries keep their stored form (and time). Empty entries are dropped. */
export function encodeManagedFields(entries: ManagedFieldsEntry[], now: string): JsonObject[] {
  const out: JsonObject[] = [];
  for (const e of entries) {
    if (e.fields.size === 0) continue;
    if (e.stored && e.stored['apiVersion'] === e.apiVersion && sameSet(e.fields, decodeFieldsV1(e.stored['fieldsV1'] ?? {}))) {
      out.push(e.stored);
      continue;
    }
    const entry: JsonObject = { manager: e.manager, operation: e.operation, apiVersion: e.apiVersion, time: now, fieldsType: 'FieldsV1', fieldsV1: encodeFieldsV1(e.fields) };
    if (e.subresource) entry['subresource'] = e.subresource;
    out.push(entry);
  }
  return out;
}

// ---------------------------------------------------------------- scope

/** Where a write lands: the main resource (of a kind with or without a status subresource) or /status. */
export interface WriteScope {
  statusSubresource: boolean;
  subresource?: 'status';
}

const OWNED_METADATA = ['labels', 'annotations', 'finalizers', 'ownerReferences'];

/**
 * The part of an object whose fields are owned through this endpoint: not apiVersion/kind, not the
 * server-set metadata (name, uid, resourceVersion...), not status on the main endpoint of a kind with
 * a status subresource; only status on /status.
 */
export function ownedPart(obj: JsonObject, scope: WriteScope): JsonObject {
  if (scope.subresource === 'status') return obj['status'] === undefined ? {} : { status: obj['status'] };
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(obj)) {
    if (k === 'apiVersion' || k === 'kind') continue;
    if (k === 'status' && scope.statusSubresource) continue;
    if (k === 'metadata') {
      if (!isObject(v)) continue;
      const m: JsonObject = {};
      for (const f of OWNED_METADATA) if (v[f] !== undefined) m[f] = v[f]!;
      if (Object.keys(m).length) out['metadata'] = m;
      continue;
    }
    out[k] = v;
  }
  return out;
}

// ---------------------------------------------------------------- update

/** Who writes: the manager and the version it speaks. */
export interface Writer {
  manager: string;
  apiVersion: string;
}

function isEntryOf(e: ManagedFieldsEntry, who: Writer, operation: 'Apply' | 'Update', scope: WriteScope): boolean {
  return e.manager === who.manager && e.operation === operation && (e.subresource ?? '') === (scope.subresource ?? '');
}

/**
 * Ownership after a create, update or non-apply patch: what the write added or changed becomes the
 * writer's (operation Update); every manager loses what it changed or removed. No conflicts: updates force.
 */
export function planUpdateOwnership(entries: ManagedFieldsEntry[], before: JsonObject | undefined, after: JsonObject, t: FieldType, who: Writer, scope: WriteScope): ManagedFieldsEntry[] {
  const changed: FieldSet = new Set();
  const removed: FieldSet = new Set();
  diffFields(before ? ownedPart(before, scope) : undefined, ownedPart(after, scope), t, '', changed, removed);
  if (changed.size === 0 && removed.size === 0) return entries;
  const out: ManagedFieldsEntry[] = [];
  let mine = false;
  for (const e of entries) {
    if (isEntryOf(e, who, 'Update', scope)) {
      mine = true;
      const fields = new Set([...e.fields].filter((p) => !removed.has(p)));
      for (const p of changed) fields.add(p);
      out.push({ ...e, apiVersion: who.apiVersion, fields });
      continue;
    }
    const fields = new Set([...e.fields].filter((p) => !changed.has(p) && !removed.has(p)));
    out.push({ ...e, fields });
  }
  if (!mine && changed.size > 0) {
    const e: ManagedFieldsEntry = { manager: who.manager, operation: 'Update', apiVersion: who.apiVersion, fields: changed };
    if (scope.subresource) e.subresource = scope.subresource;
    out.push(e);
  }
  return out.filter((e) => e.fields.size > 0);
}

// ---------------------------------------------------------------- apply

/** One field another manager owns with a different value. */
export interface ApplyConflict {
  manager: string;
  operation: 'Apply' | 'Update';
  apiVersion: string;
  path: string;
}

/** What planApply needs. */
export interface ApplyInput {
  live: JsonObject | undefined;
  applied: JsonObject;
  type: FieldType;
  entries: ManagedFieldsEntry[];
  who: Writer;
  force: boolean;
  scope: WriteScope;
}

/** The merged object and the new ownership, or the conflicts that stop the apply. */
export type ApplyPlan = { object: JsonObject; entries: ManagedFieldsEntry[]; conflicts?: undefined } | { conflicts: ApplyConflict[] };

function isKeyFieldOfItem(pes: string[]): boolean {
  const last = pes[pes.length - 1]!;
  const parent = pes[pes.length - 2];
  if (!last.startsWith('f:') || !parent?.startsWith('k:')) return false;
  try {
    const key = JSON.parse(parent.slice(2)) as JsonObject;
    return last.slice(2) in key;
  } catch {
    return false;
  }
}

/** Server-side apply of `applied` over `live` (absent: create) by `who`. */
export function planApply(input: ApplyInput): ApplyPlan {
  const { applied, type, who, scope } = input;
  const live = input.live ?? {};
  const appliedFields = fieldSetOf(ownedPart(applied, scope), type, true);
  const merged = mergeApplied(live, applied, type) as JsonObject;
  const changed: FieldSet = new Set();
  const removed: FieldSet = new Set();
  diffFields(ownedPart(live, scope), ownedPart(merged, scope), type, '', changed, removed);

  const self = input.entries.find((e) => isEntryOf(e, who, 'Apply', scope));
  const conflicts: ApplyConflict[] = [];
  for (const e of input.entries) {
    if (e === self) continue;
    for (const p of e.fields) {
      if (changed.has(p) || removed.has(p)) conflicts.push({ manager: e.manager, operation: e.operation, apiVersion: e.apiVersion, path: p });
    }
  }
  if (conflicts.length > 0 && !input.force) return { conflicts };

  // Forced or not, other managers lose what this apply changed.
  const updated = new Map<ManagedFieldsEntry, ManagedFieldsEntry>();
  for (const e of input.entries) {
    if (e !== self) updated.set(e, { ...e, fields: new Set([...e.fields].filter((p) => !changed.has(p) && !removed.has(p))) });
  }
  const others = [...updated.values()];
  const ownedByOthers = (p: string): boolean => others.some((e) => e.fields.has(p) || [...e.fields].some((q) => q.startsWith(p + SEP)));
  const dropped = [...(self?.fields ?? [])].filter((p) => !appliedFields.has(p));
  const toRemove = dropped.filter((p) => !ownedByOthers(p) && !isKeyFieldOfItem(splitPath(p)));
  removeFields(merged, toRemove, type, (p) => appliedFields.has(p) || others.some((e) => e.fields.has(p)));

  const mine: ManagedFieldsEntry = { manager: who.manager, operation: 'Apply', apiVersion: who.apiVersion, fields: appliedFields };
  if (scope.subresource) mine.subresource = scope.subresource;
  if (self?.stored) mine.stored = self.stored;
  if (self?.time) mine.time = self.time;
  const entries = input.entries.map((e) => (e === self ? mine : updated.get(e)!));
  if (!self) entries.push(mine);
  return { object: merged, entries: entries.filter((e) => e.fields.size > 0) };
}

/** Keeps only owned paths that exist in the stored object (admission may prune unknown fields of custom resources). */
export function keepExistingFields(entries: ManagedFieldsEntry[], obj: JsonObject, t: FieldType): ManagedFieldsEntry[] {
  return entries.map((e) => ({ ...e, fields: new Set([...e.fields].filter((p) => pathExists(obj, p, t))) })).filter((e) => e.fields.size > 0);
}

// ---------------------------------------------------------------- messages

/** A path as the real server prints it: `.spec.containers[name="echo"].image`, `.metadata.finalizers[="x"]`. */
export function formatFieldPath(path: string): string {
  return splitPath(path)
    .map((pe) => {
      const body = pe.slice(2);
      if (pe.startsWith('f:')) return `.${body}`;
      if (pe.startsWith('v:')) return `[=${body}]`;
      if (pe.startsWith('i:')) return `[${body}]`;
      try {
        const key = JSON.parse(body) as JsonObject;
        return `[${Object.entries(key).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}]`;
      } catch {
        return `[${body}]`;
      }
    })
    .join('');
}

function describeManager(c: ApplyConflict): string {
  return c.operation === 'Update' ? `${JSON.stringify(c.manager)} using ${c.apiVersion}` : JSON.stringify(c.manager);
}

/** The message and per-field causes of a 409 apply conflict, worded as the real server words them. */
export function describeConflicts(conflicts: ApplyConflict[]): { message: string; causes: { reason: string; message: string; field: string }[] } {
  const causes = conflicts.map((c) => ({ reason: 'FieldManagerConflict', message: `conflict with ${describeManager(c)}`, field: formatFieldPath(c.path) }));
  if (conflicts.length === 1) {
    const c = conflicts[0]!;
    return { message: `Apply failed with 1 conflict: conflict with ${describeManager(c)}: ${formatFieldPath(c.path)}`, causes };
  }
  const byManager = new Map<string, string[]>();
  for (const c of conflicts) {
    const m = describeManager(c);
    byManager.set(m, [...(byManager.get(m) ?? []), formatFieldPath(c.path)]);
  }
  const lines: string[] = [];
  for (const m of [...byManager.keys()].sort()) {
    lines.push(`conflicts with ${m}:`);
    for (const p of byManager.get(m)!) lines.push(`- ${p}`);
  }
  return { message: `Apply failed with ${conflicts.length} conflicts: ${lines.join('\n')}`, causes };
}
