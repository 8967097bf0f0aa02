/**
 * The `pod-template-hash` a Deployment stamps on its ReplicaSets, and template equality ignoring it.
 * Like the Deployment controller's ComputeHash: FNV-32a over the template (here its canonical JSON,
 * there a spew dump, so the values differ from a real cluster's), collisionCount mixed in, encoded with
 * the vowel-free alphabet of rand.SafeEncodeString so a hash never spells a word.
 */
import type { V1PodTemplateSpec } from '@kubernetes/client-node';
import { formatApiTime } from './object-meta.ts';

/** The label (and ReplicaSet name suffix) that ties a ReplicaSet and its pods to one template. */
export const podTemplateHashLabel = 'pod-template-hash';

const safeAlphabet = 'bcdfghjklmnpqrstvwxz2456789';

/**
 * JSON with object keys sorted and null/undefined dropped, so two templates that differ only in key
 * order or in a `creationTimestamp: null` (which kubectl sends) compare and hash alike.
 */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(normalise(value));
}

function normalise(value: unknown): unknown {
  if (value instanceof Date) return formatApiTime(value);
  if (Array.isArray(value)) return value.map(normalise);
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v === null || v === undefined) continue;
      out[key] = normalise(v);
    }
    return out;
  }
  return value;
}

/** FNV-1a, 32 bits, over the UTF-8 bytes of `text`. */
export function fnv32a(text: string, seed = 0x811c9dc5): number {
  let hash = seed >>> 0;
  for (const byte of Buffer.from(text, 'utf8')) {
    hash ^= byte;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** rand.SafeEncodeString: each character mapped into the vowel-free alphabet. */
export function safeEncode(text: string): string {
  let out = '';
  for (let i = 0; i < text.length; i++) out += safeAlphabet[text.charCodeAt(i) % safeAlphabet.length];
  return out;
}

/** A copy of the template without the pod-template-hash label (what a Deployment's template looks like). */
export function stripTemplateHash(template: V1PodTemplateSpec | undefined): V1PodTemplateSpec {
  const copy = structuredClone(template ?? {}) as V1PodTemplateSpec;
  if (copy.metadata?.labels) {
    delete copy.metadata.labels[podTemplateHashLabel];
    if (Object.keys(copy.metadata.labels).length === 0) delete copy.metadata.labels;
  }
  return copy;
}

/** The hash of a Deployment's pod template; `collisionCount` changes it when a name is already taken. */
export function computePodTemplateHash(template: V1PodTemplateSpec | undefined, collisionCount = 0): string {
  let hash = fnv32a(canonicalJson(stripTemplateHash(template)));
  if (collisionCount > 0) {
    // Mixes the count in after the template, as ComputeHash writes it into the same hasher.
    const bytes = Buffer.alloc(4);
    bytes.writeUInt32LE(collisionCount >>> 0);
    for (const byte of bytes) {
      hash ^= byte;
      hash = Math.imul(hash, 0x01000193) >>> 0;
    }
  }
  return safeEncode(String(hash >>> 0));
}

/** True when two templates are equal once the pod-template-hash label is ignored (EqualIgnoreHash). */
export function templatesEqualIgnoringHash(a: V1PodTemplateSpec | undefined, b: V1PodTemplateSpec | undefined): boolean {
  return canonicalJson(stripTemplateHash(a)) === canonicalJson(stripTemplateHash(b));
}
