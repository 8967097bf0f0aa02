/** Codecs between JS values and the C layouts of map keys and values; they alone decide byte order. */
import { isIPv4, isIPv6 } from 'node:net';
import { endianness } from 'node:os';
import { BpfCodecError } from './errors.ts';

// Host-order integers are written little-endian: BPF maps hold host order and nodemesh runs on
// little-endian machines (x86_64, arm64). Failing here beats silently swapped counters.
if (endianness() !== 'LE') {
  throw new BpfCodecError('the BPF codecs assume a little-endian host; this machine is big-endian');
}

/** Encodes a value of type T into `size` bytes at an offset, and decodes it back. */
export interface Codec<T> {
  /** C type the codec stands for ("struct nm_lb4_key", "__u32"). */
  readonly name: string;
  /** Size of the C type in bytes. */
  readonly size: number;
  encode(value: T, buf: Buffer, offset: number): void;
  decode(buf: Buffer, offset: number): T;
}

/** The JS type a codec handles. */
export type CodecValue<C> = C extends Codec<infer T> ? T : never;

function checkInt(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new BpfCodecError(`${what}: ${String(value)} is not an integer in 0..${max}`);
  }
}

/** Unsigned 8-bit integer. */
export const u8: Codec<number> = {
  name: '__u8',
  size: 1,
  encode(v, b, o) {
    checkInt(v, 0xff, '__u8');
    b.writeUInt8(v, o);
  },
  decode: (b, o) => b.readUInt8(o),
};

/** Unsigned 16-bit integer in host byte order. */
export const u16: Codec<number> = {
  name: '__u16',
  size: 2,
  encode(v, b, o) {
    checkInt(v, 0xffff, '__u16');
    b.writeUInt16LE(v, o);
  },
  decode: (b, o) => b.readUInt16LE(o),
};

/** Unsigned 32-bit integer in host byte order. */
export const u32: Codec<number> = {
  name: '__u32',
  size: 4,
  encode(v, b, o) {
    checkInt(v, 0xffffffff, '__u32');
    b.writeUInt32LE(v, o);
  },
  decode: (b, o) => b.readUInt32LE(o),
};

/** Signed 32-bit integer in host byte order. */
export const s32: Codec<number> = {
  name: '__s32',
  size: 4,
  encode(v, b, o) {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) {
      throw new BpfCodecError(`__s32: ${String(v)} is out of range`);
    }
    b.writeInt32LE(v, o);
  },
  decode: (b, o) => b.readInt32LE(o),
};

/** Unsigned 64-bit integer in host byte order, as a bigint (cookies, nanoseconds, counters). */
export const u64: Codec<bigint> = {
  name: '__u64',
  size: 8,
  encode(v, b, o) {
    if (typeof v !== 'bigint' || v < 0n || v > 0xffffffffffffffffn) {
      throw new BpfCodecError(`__u64: ${String(v)} is not a bigint in 0..2^64-1`);
    }
    b.writeBigUInt64LE(v, o);
  },
  decode: (b, o) => b.readBigUInt64LE(o),
};

/** 16-bit integer stored in network byte order, handled as a host number. */
export const be16: Codec<number> = {
  name: '__be16',
  size: 2,
  encode(v, b, o) {
    checkInt(v, 0xffff, '__be16');
    b.writeUInt16BE(v, o);
  },
  decode: (b, o) => b.readUInt16BE(o),
};

/** 32-bit integer stored in network byte order, handled as a host number. */
export const be32: Codec<number> = {
  name: '__be32',
  size: 4,
  encode(v, b, o) {
    checkInt(v, 0xffffffff, '__be32');
    b.writeUInt32BE(v, o);
  },
  decode: (b, o) => b.readUInt32BE(o),
};

/** nm_port_t: an L4 port, network byte order in the map, a plain number here. */
export const port: Codec<number> = { ...be16, name: 'nm_port_t' };

// Hot path of bulk writes (tens of thousands of addresses): parse digits by hand instead of
// isIPv4 + split, and write straight into the target buffer.
function writeIp4(text: string, b: Buffer, o: number, what: string): void {
  let part = 0;
  let octet = 0;
  let digits = 0;
  let leadingZero = false;
  let ok = text.length >= 7 && text.length <= 15;
  for (let i = 0; ok && i <= text.length; i++) {
    const c = i < text.length ? text.charCodeAt(i) : 46; // a final '.' closes the last octet
    if (c >= 48 && c <= 57) {
      if (digits === 0) leadingZero = c === 48;
      else if (leadingZero) ok = false; // "010" reads as octal to some parsers: refuse it
      octet = octet * 10 + (c - 48);
      digits++;
      if (octet > 255) ok = false;
    } else if (c === 46 && digits > 0 && part < 4) {
      b[o + part++] = octet;
      octet = 0;
      digits = 0;
    } else {
      ok = false;
    }
  }
  if (!ok || part !== 4) throw new BpfCodecError(`${what}: "${String(text)}" is not an IPv4 address`);
}

/** nm_ip4_t: an IPv4 address, network byte order in the map, dotted quad here. */
export const ip4: Codec<string> = {
  name: 'nm_ip4_t',
  size: 4,
  encode(v, b, o) {
    if (typeof v !== 'string') throw new BpfCodecError(`nm_ip4_t: ${String(v)} is not an IPv4 address string`);
    writeIp4(v, b, o, 'nm_ip4_t');
  },
  decode: (b, o) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`,
};

/** Parses an IPv4 or IPv6 address into its 16-byte form (IPv4 as IPv4-mapped IPv6). */
export function addressToBytes(text: string): Buffer {
  const out = Buffer.alloc(16);
  if (isIPv4(text)) {
    out[10] = 0xff;
    out[11] = 0xff;
    ip4.encode(text, out, 12);
    return out;
  }
  if (!isIPv6(text)) throw new BpfCodecError(`struct nm_addr: "${text}" is neither an IPv4 nor an IPv6 address`);
  let rest = text.split('%')[0] ?? text;
  // A dotted-quad tail ("::ffff:10.0.0.1") stands for the last two groups.
  const dotted = /(\d+\.\d+\.\d+\.\d+)$/.exec(rest);
  const tail: number[] = [];
  if (dotted?.[1]) {
    const q = dotted[1].split('.').map(Number);
    tail.push(((q[0] ?? 0) << 8) | (q[1] ?? 0), ((q[2] ?? 0) << 8) | (q[3] ?? 0));
    rest = rest.slice(0, -dotted[1].length);
    if (!rest.endsWith('::')) rest = rest.replace(/:$/, '');
  }
  const [head = '', after] = rest.split('::');
  const headGroups = head ? head.split(':') : [];
  const afterGroups = after ? after.split(':') : [];
  const given = headGroups.length + afterGroups.length + tail.length;
  const zeros = after !== undefined ? 8 - given : 0;
  const groups = [...headGroups.map((g) => parseInt(g, 16)), ...new Array<number>(zeros).fill(0), ...afterGroups.map((g) => parseInt(g, 16)), ...tail];
  for (let i = 0; i < 8; i++) out.writeUInt16BE(groups[i] ?? 0, i * 2);
  return out;
}

/** Formats 16 address bytes: IPv4-mapped as a dotted quad, others as RFC 5952 IPv6 text. */
export function bytesToAddress(buf: Buffer, offset: number): string {
  let mapped = buf.readUInt16BE(offset + 10) === 0xffff;
  for (let i = 0; i < 10 && mapped; i++) if (buf[offset + i] !== 0) mapped = false;
  if (mapped) return ip4.decode(buf, offset + 12);
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push(buf.readUInt16BE(offset + i * 2));
  // RFC 5952: compress the longest run (>= 2) of zero groups, the first one on ties.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** struct nm_addr: a 16-byte IPv6 or IPv4-mapped address, as text. */
export const addr: Codec<string> = {
  name: 'struct nm_addr',
  size: 16,
  encode(v, b, o) {
    if (typeof v === 'string' && v.indexOf(':') < 0) {
      b.fill(0, o, o + 10);
      b[o + 10] = 0xff;
      b[o + 11] = 0xff;
      writeIp4(v, b, o + 12, 'struct nm_addr');
      return;
    }
    addressToBytes(v).copy(b, o);
  },
  decode: (b, o) => bytesToAddress(b, o),
};

/** A fixed-length C array of one element codec. */
export function arrayCodec<T>(element: Codec<T>, length: number): Codec<T[]> {
  return {
    name: `${element.name}[${length}]`,
    size: element.size * length,
    encode(v, b, o) {
      if (!Array.isArray(v) || v.length !== length) {
        throw new BpfCodecError(`${element.name}[${length}]: expected an array of ${length} elements`);
      }
      v.forEach((x, i) => element.encode(x, b, o + i * element.size));
    },
    decode(b, o) {
      const out: T[] = [];
      for (let i = 0; i < length; i++) out.push(element.decode(b, o + i * element.size));
      return out;
    },
  };
}

/** One member of a struct layout: JS property, byte offset, codec. */
export type FieldLayout = readonly [name: string, offset: number, codec: Codec<unknown>];

/**
 * A C struct: members at fixed offsets; padding members are not listed, and every byte not covered
 * by a member is written as zero, because hash maps compare keys byte for byte.
 */
export function structCodec<T extends object>(name: string, size: number, fields: readonly FieldLayout[]): Codec<T> {
  return {
    name,
    size,
    encode(v, b, o) {
      if (typeof v !== 'object' || v === null) throw new BpfCodecError(`${name}: expected an object, got ${String(v)}`);
      b.fill(0, o, o + size);
      const rec = v as Record<string, unknown>;
      for (const [field, off, codec] of fields) {
        const fv = rec[field];
        if (fv === undefined) throw new BpfCodecError(`${name}.${field}: missing`);
        try {
          codec.encode(fv, b, o + off);
        } catch (err) {
          if (err instanceof BpfCodecError) throw new BpfCodecError(`${name}.${field}: ${err.message}`);
          throw err;
        }
      }
    },
    decode(b, o) {
      const out: Record<string, unknown> = {};
      for (const [field, off, codec] of fields) out[field] = codec.decode(b, o + off);
      return out as T;
    },
  };
}

/** Size of one CPU's value in a per-CPU map: the kernel rounds each copy up to 8 bytes. */
export function perCpuStride(valueSize: number): number {
  return Math.ceil(valueSize / 8) * 8;
}

/** A per-CPU value: one element per possible CPU, each copy 8-byte aligned. */
export function perCpuCodec<T>(element: Codec<T>, cpus: number): Codec<T[]> {
  const stride = perCpuStride(element.size);
  return {
    name: `${element.name} per CPU x${cpus}`,
    size: stride * cpus,
    encode(v, b, o) {
      if (!Array.isArray(v) || v.length !== cpus) {
        throw new BpfCodecError(`${element.name}: a per-CPU value needs ${cpus} elements (one per possible CPU), got ${Array.isArray(v) ? v.length : typeof v}`);
      }
      b.fill(0, o, o + stride * cpus);
      v.forEach((x, i) => element.encode(x, b, o + i * stride));
    },
    decode(b, o) {
      const out: T[] = [];
      for (let i = 0; i < cpus; i++) out.push(element.decode(b, o + i * stride));
      return out;
    },
  };
}

/** Encodes one value into a fresh buffer of the codec's size. */
export function encodeValue<T>(codec: Codec<T>, value: T): Buffer {
  const buf = Buffer.alloc(codec.size);
  codec.encode(value, buf, 0);
  return buf;
}
