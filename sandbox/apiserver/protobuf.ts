/**
 * Decoding of Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) for the kinds
 * kubectl's typed clients send (`kubectl create configmap|secret|namespace|serviceaccount|token`,
 * `kubectl auth can-i|whoami`). Answers stay JSON: those clients accept it. Other kinds answer 415.
 */

import { unsupportedMediaType } from './errors.ts';
import type { JsonObject, JsonValue } from './json.ts';

type Scalar = 'string' | 'bytes' | 'int' | 'bool';
/** One field of a message schema. */
interface Field {
  name: string;
  type: Scalar | 'time' | Msg | { map: Scalar };
  repeated?: boolean;
}
/** A message schema: field number to field. */
type Msg = { [num: number]: Field };

const TYPE_META: Msg = { 1: { name: 'apiVersion', type: 'string' }, 2: { name: 'kind', type: 'string' } };
const UNKNOWN: Msg = { 1: { name: 'typeMeta', type: TYPE_META }, 2: { name: 'raw', type: 'bytes' }, 3: { name: 'contentEncoding', type: 'string' }, 4: { name: 'contentType', type: 'string' } };
const OWNER_REF: Msg = {
  5: { name: 'apiVersion', type: 'string' },
  1: { name: 'kind', type: 'string' },
  3: { name: 'name', type: 'string' },
  4: { name: 'uid', type: 'string' },
  6: { name: 'controller', type: 'bool' },
  7: { name: 'blockOwnerDeletion', type: 'bool' },
};
const OBJECT_META: Msg = {
  1: { name: 'name', type: 'string' },
  2: { name: 'generateName', type: 'string' },
  3: { name: 'namespace', type: 'string' },
  5: { name: 'uid', type: 'string' },
  6: { name: 'resourceVersion', type: 'string' },
  7: { name: 'generation', type: 'int' },
  8: { name: 'creationTimestamp', type: 'time' },
  11: { name: 'labels', type: { map: 'string' } },
  12: { name: 'annotations', type: { map: 'string' } },
  13: { name: 'ownerReferences', type: OWNER_REF, repeated: true },
  14: { name: 'finalizers', type: 'string', repeated: true },
};
const OBJECT_REF: Msg = {
  1: { name: 'kind', type: 'string' },
  2: { name: 'namespace', type: 'string' },
  3: { name: 'name', type: 'string' },
  4: { name: 'uid', type: 'string' },
  5: { name: 'apiVersion', type: 'string' },
  6: { name: 'resourceVersion', type: 'string' },
  7: { name: 'fieldPath', type: 'string' },
};
const LOCAL_REF: Msg = { 1: { name: 'name', type: 'string' } };

/** Schemas by `apiVersion/kind`. */
const KINDS: Record<string, Msg> = {
  'v1/ConfigMap': { 1: { name: 'metadata', type: OBJECT_META }, 2: { name: 'data', type: { map: 'string' } }, 3: { name: 'binaryData', type: { map: 'bytes' } }, 4: { name: 'immutable', type: 'bool' } },
  'v1/Secret': {
    1: { name: 'metadata', type: OBJECT_META },
    2: { name: 'data', type: { map: 'bytes' } },
    3: { name: 'type', type: 'string' },
    4: { name: 'stringData', type: { map: 'string' } },
    5: { name: 'immutable', type: 'bool' },
  },
  'v1/Namespace': { 1: { name: 'metadata', type: OBJECT_META }, 2: { name: 'spec', type: { 1: { name: 'finalizers', type: 'string', repeated: true } } } },
  'v1/ServiceAccount': {
    1: { name: 'metadata', type: OBJECT_META },
    2: { name: 'secrets', type: OBJECT_REF, repeated: true },
    3: { name: 'imagePullSecrets', type: LOCAL_REF, repeated: true },
    4: { name: 'automountServiceAccountToken', type: 'bool' },
  },
  'authorization.k8s.io/v1/SelfSubjectAccessReview': {
    1: { name: 'metadata', type: OBJECT_META },
    2: {
      name: 'spec',
      type: {
        1: {
          name: 'resourceAttributes',
          type: {
            1: { name: 'namespace', type: 'string' },
            2: { name: 'verb', type: 'string' },
            3: { name: 'group', type: 'string' },
            4: { name: 'version', type: 'string' },
            5: { name: 'resource', type: 'string' },
            6: { name: 'subresource', type: 'string' },
            7: { name: 'name', type: 'string' },
          },
        },
        2: { name: 'nonResourceAttributes', type: { 1: { name: 'path', type: 'string' }, 2: { name: 'verb', type: 'string' } } },
      },
    },
  },
  'authentication.k8s.io/v1/SelfSubjectReview': { 1: { name: 'metadata', type: OBJECT_META } },
  'authentication.k8s.io/v1/TokenRequest': {
    1: { name: 'metadata', type: OBJECT_META },
    2: {
      name: 'spec',
      type: {
        1: { name: 'audiences', type: 'string', repeated: true },
        4: { name: 'expirationSeconds', type: 'int' },
        3: { name: 'boundObjectRef', type: { 1: { name: 'kind', type: 'string' }, 2: { name: 'apiVersion', type: 'string' }, 3: { name: 'name', type: 'string' }, 4: { name: 'uid', type: 'string' } } },
      },
    },
  },
};

class Reader {
  pos = 0;
  readonly buf: Buffer;
  constructor(buf: Buffer) {
    this.buf = buf;
  }
  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.buf.length) throw new Error('truncated varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return result;
      shift += 7;
      if (shift > 63) throw new Error('varint too long');
    }
  }
  bytes(): Buffer {
    const n = this.varint();
    if (this.pos + n > this.buf.length) throw new Error('truncated field');
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  skip(wire: number): void {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wire}`);
  }
}

function scalar(r: Reader, wire: number, t: Scalar): JsonValue {
  switch (t) {
    case 'string':
      return r.bytes().toString('utf8');
    case 'bytes':
      return r.bytes().toString('base64');
    case 'int':
      return r.varint();
    case 'bool':
      return r.varint() !== 0;
    default:
      r.skip(wire);
      return null;
  }
}

function decodeMsg(buf: Buffer, schema: Msg): JsonObject {
  const r = new Reader(buf);
  const out: JsonObject = {};
  while (r.pos < buf.length) {
    const tag = r.varint();
    const num = Math.floor(tag / 8);
    const wire = tag & 7;
    const f = schema[num];
    if (!f) {
      r.skip(wire);
      continue;
    }
    let v: JsonValue;
    if (typeof f.type === 'string') {
      if (f.type === 'time') {
        const t = decodeMsg(r.bytes(), { 1: { name: 'seconds', type: 'int' }, 2: { name: 'nanos', type: 'int' } });
        if (!t['seconds']) continue; // the zero Time is Go's "unset"
        v = new Date(Number(t['seconds']) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z');
      } else {
        v = scalar(r, wire, f.type);
        // Go marshals non-pointer fields even when empty; JSON would have omitted them.
        if (!f.repeated && (v === '' || (v === 0 && f.type === 'int'))) continue;
      }
    } else if ('map' in f.type) {
      const entry = decodeMsg(r.bytes(), { 1: { name: 'key', type: 'string' }, 2: { name: 'value', type: f.type.map as Scalar } });
      const m = (out[f.name] as JsonObject | undefined) ?? {};
      m[String(entry['key'] ?? '')] = entry['value'] ?? (f.type.map === 'bytes' ? '' : '');
      out[f.name] = m;
      continue;
    } else {
      v = decodeMsg(r.bytes(), f.type as Msg);
    }
    if (f.repeated) {
      const list = (out[f.name] as JsonValue[] | undefined) ?? [];
      list.push(v);
      out[f.name] = list;
    } else {
      out[f.name] = v;
    }
  }
  return out;
}

/** Decodes a `k8s\0`-prefixed protobuf body into the JSON form of the object; throws 415 for kinds it does not know. */
export function decodeKubernetesProtobuf(buf: Buffer): JsonObject {
  if (buf.length < 4 || buf.subarray(0, 4).toString('latin1') !== 'k8s\0') {
    throw unsupportedMediaType('the protobuf body does not start with the Kubernetes "k8s\\0" envelope');
  }
  let unknown: JsonObject;
  try {
    unknown = decodeMsg(buf.subarray(4), UNKNOWN);
  } catch (e) {
    throw unsupportedMediaType(`the protobuf body cannot be decoded: ${(e as Error).message}`);
  }
  const tm = (unknown['typeMeta'] as JsonObject | undefined) ?? {};
  const key = `${String(tm['apiVersion'] ?? '')}/${String(tm['kind'] ?? '')}`;
  const schema = KINDS[key];
  if (!schema) {
    throw unsupportedMediaType(
      `protobuf bodies are understood for ${Object.keys(KINDS).join(', ')} only (got ${key}); send JSON or YAML instead (kubectl apply -f / create -f)`,
    );
  }
  try {
    const obj = decodeMsg(Buffer.from(String(unknown['raw'] ?? ''), 'base64'), schema);
    return { apiVersion: tm['apiVersion'] ?? '', kind: tm['kind'] ?? '', ...obj };
  } catch (e) {
    throw unsupportedMediaType(`the protobuf ${key} cannot be decoded: ${(e as Error).message}`);
  }
}
