/** Typed access to a kernel BPF map by fd: CRUD, batch operations with a per-element fallback, iteration. */
import { constants as osConstants } from 'node:os';
import { type Codec, perCpuCodec } from './codec.ts';
import { BpfError, BpfMapError } from './errors.ts';
import { possibleCpus } from './cpus.ts';
import { closeFd, ffi, lastErrno } from './libbpf.ts';
import type { MapLike, UpdateMode } from './map-like.ts';
import { type MapSpec, isPerCpu, supportsBatch } from './map-spec.ts';

const BPF_ANY = 0n;
const BPF_NOEXIST = 1n;
const BPF_EXIST = 2n;
const ENOENT = osConstants.errno.ENOENT;
const E2BIG = osConstants.errno.E2BIG;
const ENOSPC = osConstants.errno.ENOSPC;
const EINVAL = osConstants.errno.EINVAL;
const ENOTSUPP = 524;
const EOPNOTSUPP = osConstants.errno.EOPNOTSUPP;
const ENOMEM = osConstants.errno.ENOMEM;
/** Pauses without progress tolerated on ENOMEM before an update gives up (1, 2, 4 ... 32 ms). */
const ENOMEM_RETRIES = 8;

// Map calls are synchronous syscalls; a short blocking pause keeps setMany synchronous too.
const sleepCell = new Int32Array(new SharedArrayBuffer(4));
function sleepMs(ms: number): void {
  Atomics.wait(sleepCell, 0, 0, ms);
}

/** Entries per BPF_MAP_LOOKUP_BATCH call while iterating. */
const LOOKUP_CHUNK = 4096;

function modeFlag(mode: UpdateMode): bigint {
  return mode === 'noexist' ? BPF_NOEXIST : mode === 'exist' ? BPF_EXIST : BPF_ANY;
}

function batchOpts(elemFlags: bigint): Buffer {
  // struct bpf_map_batch_opts { size_t sz; __u64 elem_flags; __u64 flags; }
  const opts = Buffer.alloc(24);
  opts.writeBigUInt64LE(24n, 0);
  opts.writeBigUInt64LE(elemFlags, 8);
  return opts;
}

/**
 * A map the process holds an fd to. `owned` fds (from bpf_obj_get) are closed by close(); fds that
 * belong to a libbpf object are closed with the object.
 */
export class BpfMap<K, V> implements MapLike<K, V> {
  readonly name: string;
  readonly spec: MapSpec<K, unknown>;
  #fd: number;
  readonly #owned: boolean;
  readonly #value: Codec<V>;
  #batchBroken = false;

  constructor(fd: number, spec: MapSpec<K, unknown>, valueCodec: Codec<V>, owned: boolean) {
    this.#fd = fd;
    this.spec = spec;
    this.name = spec.name;
    this.#value = valueCodec;
    this.#owned = owned;
  }

  /** The map's file descriptor (for pinning, sockmap attach); -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  #check(): number {
    if (this.#fd < 0) throw new BpfError('NM_ERR_BPF_CLOSED', `map ${this.name} is closed`, { object: this.name });
    return this.#fd;
  }

  #fail(op: string, rc: number, processed?: number): never {
    const errno = -rc;
    const code = errno === E2BIG || errno === ENOSPC ? 'NM_ERR_BPF_MAP_FULL' : 'NM_ERR_BPF_MAP_OP';
    throw new BpfMapError(code, `map ${this.name}: ${op} failed`, { errno, object: this.name, ...(processed !== undefined ? { processed } : {}) });
  }

  #key(key: K): Buffer {
    const buf = Buffer.alloc(this.spec.key.size);
    this.spec.key.encode(key, buf, 0);
    return buf;
  }

  get(key: K): V | undefined {
    const fd = this.#check();
    const value = Buffer.alloc(this.#value.size);
    const rc = ffi.bpf_map_lookup_elem(fd, this.#key(key), value) as number;
    if (rc === -ENOENT) return undefined;
    if (rc < 0) this.#fail('lookup', rc);
    return this.#value.decode(value, 0);
  }

  set(key: K, value: V, mode: UpdateMode = 'any'): void {
    const fd = this.#check();
    const vbuf = Buffer.alloc(this.#value.size);
    this.#value.encode(value, vbuf, 0);
    const rc = ffi.bpf_map_update_elem(fd, this.#key(key), vbuf, modeFlag(mode)) as number;
    if (rc < 0) this.#fail(`update (${mode})`, rc);
  }

  delete(key: K): boolean {
    const fd = this.#check();
    const rc = ffi.bpf_map_delete_elem(fd, this.#key(key)) as number;
    if (rc === -ENOENT) return false;
    if (rc < 0) this.#fail('delete', rc);
    return true;
  }

  *#rawKeys(): Generator<Buffer> {
    const fd = this.#check();
    const size = this.spec.key.size;
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(size);
      const rc = ffi.bpf_map_get_next_key(fd, prev, next) as number;
      if (rc === -ENOENT) return;
      if (rc < 0) this.#fail('get_next_key', rc);
      yield next;
      prev = next;
    }
  }

  *keys(): Generator<K> {
    for (const k of this.#rawKeys()) yield this.spec.key.decode(k, 0);
  }

  *entries(): Generator<[K, V]> {
    const fd = this.#check();
    if (!supportsBatch(this.spec.type, 'lookup') || this.#batchBroken) {
      for (const k of this.#rawKeys()) {
        const value = Buffer.alloc(this.#value.size);
        const rc = ffi.bpf_map_lookup_elem(fd, k, value) as number;
        if (rc === -ENOENT) continue; // deleted while walking
        if (rc < 0) this.#fail('lookup', rc);
        yield [this.spec.key.decode(k, 0), this.#value.decode(value, 0)];
      }
      return;
    }
    const ksize = this.spec.key.size;
    const vsize = this.#value.size;
    const keys = Buffer.alloc(ksize * LOOKUP_CHUNK);
    const values = Buffer.alloc(vsize * LOOKUP_CHUNK);
    // The batch token is opaque to user space (a bucket index for hash maps); 8 bytes covers it.
    let inBatch: Buffer | null = null;
    const outBatch = Buffer.alloc(Math.max(8, ksize));
    const opts = batchOpts(0n);
    for (;;) {
      const count = new Uint32Array([LOOKUP_CHUNK]);
      const rc = ffi.bpf_map_lookup_batch(fd, inBatch, outBatch, keys, values, count, opts) as number;
      if (rc < 0 && rc !== -ENOENT) this.#fail('lookup_batch', rc);
      const n = count[0] ?? 0;
      for (let i = 0; i < n; i++) {
        yield [this.spec.key.decode(keys, i * ksize), this.#value.decode(values, i * vsize)];
      }
      if (rc === -ENOENT) return; // walked past the last bucket
      inBatch = Buffer.from(outBatch);
    }
  }

  setMany(entries: ReadonlyArray<readonly [K, V]>, mode: UpdateMode = 'any'): number {
    const fd = this.#check();
    if (entries.length === 0) return 0;
    const ksize = this.spec.key.size;
    const vsize = this.#value.size;
    const keys = Buffer.alloc(ksize * entries.length);
    const values = Buffer.alloc(vsize * entries.length);
    entries.forEach(([k, v], i) => {
      this.spec.key.encode(k, keys, i * ksize);
      this.#value.encode(v, values, i * vsize);
    });
    let start = 0;
    let stalls = 0;
    if (supportsBatch(this.spec.type, 'update') && !this.#batchBroken) {
      const opts = batchOpts(modeFlag(mode));
      while (start < entries.length) {
        const count = new Uint32Array([entries.length - start]);
        const rc = ffi.bpf_map_update_batch(fd, keys.subarray(start * ksize), values.subarray(start * vsize), count, opts) as number;
        const done = count[0] ?? 0;
        start += done;
        if (rc === 0) return entries.length;
        // No-prealloc maps allocate per element from pools the kernel refills asynchronously
        // (per-CPU values from the atomic percpu pool): a burst can hit ENOMEM that a short
        // pause cures. Give up only when a pause brings no progress several times running.
        if (rc === -ENOMEM && (done > 0 || stalls < ENOMEM_RETRIES)) {
          stalls = done > 0 ? 0 : stalls + 1;
          sleepMs(1 << Math.min(stalls, 5));
          continue;
        }
        if (this.#isUnsupported(rc)) break;
        this.#fail(`update_batch (${mode})`, rc, start);
      }
      if (start >= entries.length) return entries.length;
    }
    const flag = modeFlag(mode);
    for (let i = start; i < entries.length; i++) {
      let rc = ffi.bpf_map_update_elem(fd, keys.subarray(i * ksize, (i + 1) * ksize), values.subarray(i * vsize, (i + 1) * vsize), flag) as number;
      for (let tries = 0; rc === -ENOMEM && tries < ENOMEM_RETRIES; tries++) {
        sleepMs(1 << Math.min(tries, 5));
        rc = ffi.bpf_map_update_elem(fd, keys.subarray(i * ksize, (i + 1) * ksize), values.subarray(i * vsize, (i + 1) * vsize), flag) as number;
      }
      if (rc < 0) this.#fail(`update (${mode})`, rc, i);
    }
    return entries.length;
  }

  deleteMany(keysToDelete: readonly K[]): number {
    const fd = this.#check();
    if (keysToDelete.length === 0) return 0;
    const ksize = this.spec.key.size;
    const keys = Buffer.alloc(ksize * keysToDelete.length);
    keysToDelete.forEach((k, i) => this.spec.key.encode(k, keys, i * ksize));
    let deleted = 0;
    let start = 0;
    if (supportsBatch(this.spec.type, 'delete') && !this.#batchBroken) {
      const opts = batchOpts(0n);
      while (start < keysToDelete.length) {
        const remaining = keysToDelete.length - start;
        const count = new Uint32Array([remaining]);
        const rc = ffi.bpf_map_delete_batch(fd, keys.subarray(start * ksize), count, opts) as number;
        const done = count[0] ?? 0;
        deleted += done;
        if (rc === 0) return deleted;
        if (rc === -ENOENT) {
          start += done + 1; // the key after the processed ones is absent: skip it
          continue;
        }
        if (this.#isUnsupported(rc)) break;
        this.#fail('delete_batch', rc, deleted);
      }
      if (start >= keysToDelete.length) return deleted;
    }
    for (let i = start; i < keysToDelete.length; i++) {
      const rc = ffi.bpf_map_delete_elem(fd, keys.subarray(i * ksize, (i + 1) * ksize)) as number;
      if (rc === 0) deleted++;
      else if (rc !== -ENOENT) this.#fail('delete', rc, deleted);
    }
    return deleted;
  }

  clear(): void {
    if (this.spec.type === 'array' || this.spec.type === 'percpu_array') {
      const zero = Buffer.alloc(this.#value.size);
      const fd = this.#check();
      for (let i = 0; i < this.spec.maxEntries; i++) {
        const k = Buffer.alloc(4);
        k.writeUInt32LE(i, 0);
        const rc = ffi.bpf_map_update_elem(fd, k, zero, BPF_ANY) as number;
        if (rc < 0) this.#fail('update (clear)', rc);
      }
      return;
    }
    const all = [...this.#rawKeys()].map((k) => this.spec.key.decode(k, 0));
    this.deleteMany(all);
  }

  // Old kernels or map types without a batch op answer EINVAL/ENOTSUPP: fall back once, for good.
  #isUnsupported(rc: number): boolean {
    const errno = -rc;
    if (errno === ENOTSUPP || errno === EOPNOTSUPP || errno === EINVAL) {
      this.#batchBroken = true;
      return true;
    }
    return false;
  }

  /** Closes the fd if this map owns it; idempotent. */
  close(): void {
    if (this.#owned) closeFd(this.#fd);
    this.#fd = -1;
  }
}

/** Wraps an fd with the typed interface of its spec (per-CPU maps take and give one value per CPU). */
export function wrapMap<K, V>(fd: number, spec: MapSpec<K, V>, owned: boolean): BpfMap<K, V> | BpfMap<K, V[]> {
  if (isPerCpu(spec.type)) return new BpfMap<K, V[]>(fd, spec, perCpuCodec(spec.value, possibleCpus), owned);
  return new BpfMap<K, V>(fd, spec, spec.value, owned);
}

/** What the kernel reports about a map (struct bpf_map_info, the fields nodemesh checks). */
export interface MapInfo {
  type: number;
  id: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  name: string;
}

/** Reads struct bpf_map_info for a map fd. */
export function getMapInfo(fd: number, what: string): MapInfo {
  // type, id, key_size, value_size, max_entries, map_flags (u32 each), name[16], ... (88 bytes in 6.x).
  const info = Buffer.alloc(88);
  const len = new Uint32Array([info.length]);
  const rc = ffi.bpf_obj_get_info_by_fd(fd, info, len) as number;
  if (rc < 0) throw new BpfMapError('NM_ERR_BPF_MAP_OP', `${what}: bpf_obj_get_info_by_fd failed`, { errno: -rc, object: what });
  const nameEnd = info.indexOf(0, 24);
  return {
    type: info.readUInt32LE(0),
    id: info.readUInt32LE(4),
    keySize: info.readUInt32LE(8),
    valueSize: info.readUInt32LE(12),
    maxEntries: info.readUInt32LE(16),
    flags: info.readUInt32LE(20),
    name: info.toString('utf8', 24, nameEnd < 0 || nameEnd > 40 ? 40 : nameEnd),
  };
}

/**
 * Opens a pinned map by path (e.g. the proxy reading nm_pxy4_odst) and checks that its key and
 * value sizes match the spec, so a stale pin from an older layout fails loudly instead of decoding
 * garbage. The returned map owns its fd: close() it.
 */
export function openPinnedMap<K, V>(path: string, spec: MapSpec<K, V>): BpfMap<K, V> | BpfMap<K, V[]> {
  const fd = ffi.bpf_obj_get(path) as number;
  if (fd < 0) {
    throw new BpfMapError('NM_ERR_BPF_NOT_FOUND', `map ${spec.name}: no pinned map at ${path}; is the datapath loaded for this node?`, { errno: lastErrno() || -fd, object: spec.name });
  }
  let info: MapInfo;
  try {
    info = getMapInfo(fd, spec.name);
  } catch (err) {
    closeFd(fd);
    throw err;
  }
  // bpf_map_info reports one CPU's value size for per-CPU maps, as the C definition states it.
  const valueSize = spec.value.size;
  if (info.keySize !== spec.key.size || info.valueSize !== valueSize || info.maxEntries !== spec.maxEntries) {
    closeFd(fd);
    throw new BpfMapError(
      'NM_ERR_BPF_MAP_INCOMPATIBLE',
      `map ${spec.name} pinned at ${path} has key ${info.keySize} B, value ${info.valueSize} B, ${info.maxEntries} entries; this binding expects ${spec.key.size} B, ${valueSize} B, ${spec.maxEntries}: the pin is from another nodemesh version`,
      { object: spec.name },
    );
  }
  return wrapMap(fd, spec, true);
}
