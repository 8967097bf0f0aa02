/**
 * In-memory maps with the MapLike interface and the kernel's semantics (BPF_NOEXIST/BPF_EXIST,
 * E2BIG when a hash is full, LRU eviction, arrays that cannot delete), for unprivileged tests of
 * the agent. Entries are stored encoded, so codec errors and key identity behave as with real maps.
 */
import { constants as osConstants } from 'node:os';
import { type Codec, perCpuCodec } from './codec.ts';
import { type MapName, mapSpecs } from './codecs.generated.ts';
import { possibleCpus } from './cpus.ts';
import { BpfError, BpfMapError } from './errors.ts';
import type { MapKey, MapLike, MapSet, MapValue, UpdateMode } from './map-like.ts';
import { type MapSpec, isPerCpu } from './map-spec.ts';

const { ENOENT, EEXIST, E2BIG, EINVAL } = osConstants.errno;

/** Operations a test can make fail on purpose. */
export type FakeOp = 'get' | 'set' | 'delete' | 'setMany' | 'deleteMany';

/** Counts of calls, to assert how a reconciler talks to the maps (e.g. batches, not loops). */
export interface FakeMapStats {
  get: number;
  set: number;
  delete: number;
  setMany: number;
  deleteMany: number;
  iterate: number;
}

/** A fake map of one spec. */
export class FakeMap<K, V> implements MapLike<K, V> {
  readonly name: string;
  readonly spec: MapSpec<K, unknown>;
  readonly stats: FakeMapStats = { get: 0, set: 0, delete: 0, setMany: 0, deleteMany: 0, iterate: 0 };
  readonly #value: Codec<V>;
  // hex(key) -> encoded entry; Map order doubles as LRU recency (oldest first).
  readonly #store = new Map<string, { key: Buffer; value: Buffer }>();
  readonly #faults: Array<{ op: FakeOp; errno: number; times: number }> = [];
  readonly #isArray: boolean;
  readonly #isLru: boolean;

  constructor(spec: MapSpec<K, unknown>, valueCodec: Codec<V>) {
    this.spec = spec;
    this.name = spec.name;
    this.#value = valueCodec;
    this.#isArray = spec.type === 'array' || spec.type === 'percpu_array';
    this.#isLru = spec.type === 'lru_hash' || spec.type === 'lru_percpu_hash';
  }

  /** Makes the next `times` calls of `op` fail with `errno` (e.g. E2BIG to simulate a full map). */
  injectFault(op: FakeOp, errno: number, times = 1): void {
    this.#faults.push({ op, errno, times });
  }

  #fault(op: FakeOp): void {
    const f = this.#faults.find((x) => x.op === op && x.times > 0);
    if (!f) return;
    f.times--;
    this.#raise(`${op} (injected)`, f.errno);
  }

  #raise(op: string, errno: number, processed?: number): never {
    throw new BpfMapError(errno === E2BIG ? 'NM_ERR_BPF_MAP_FULL' : 'NM_ERR_BPF_MAP_OP', `map ${this.name}: ${op} failed`, {
      errno,
      object: this.name,
      ...(processed !== undefined ? { processed } : {}),
    });
  }

  #encodeKey(key: K): Buffer {
    const buf = Buffer.alloc(this.spec.key.size);
    this.spec.key.encode(key, buf, 0);
    return buf;
  }

  #arrayIndex(k: Buffer): number {
    return k.readUInt32LE(0);
  }

  #lookup(k: Buffer): Buffer | undefined {
    const id = k.toString('hex');
    const e = this.#store.get(id);
    if (e && this.#isLru) {
      this.#store.delete(id);
      this.#store.set(id, e);
    }
    if (!e && this.#isArray && this.#arrayIndex(k) < this.spec.maxEntries) return Buffer.alloc(this.#value.size);
    return e?.value;
  }

  #update(k: Buffer, v: Buffer, mode: UpdateMode, op: string): void {
    const id = k.toString('hex');
    const exists = this.#store.has(id) || (this.#isArray && this.#arrayIndex(k) < this.spec.maxEntries);
    if (this.#isArray && this.#arrayIndex(k) >= this.spec.maxEntries) this.#raise(op, E2BIG);
    if (mode === 'noexist' && exists) this.#raise(op, EEXIST);
    if (mode === 'exist' && !exists) this.#raise(op, ENOENT);
    if (!exists && this.#store.size >= this.spec.maxEntries) {
      if (!this.#isLru) this.#raise(op, E2BIG);
      const oldest = this.#store.keys().next().value;
      if (oldest !== undefined) this.#store.delete(oldest);
    }
    this.#store.delete(id);
    this.#store.set(id, { key: Buffer.from(k), value: Buffer.from(v) });
  }

  #remove(k: Buffer, op: string): boolean {
    if (this.#isArray) this.#raise(op, EINVAL);
    return this.#store.delete(k.toString('hex'));
  }

  get(key: K): V | undefined {
    this.stats.get++;
    this.#fault('get');
    const v = this.#lookup(this.#encodeKey(key));
    return v ? this.#value.decode(v, 0) : undefined;
  }

  set(key: K, value: V, mode: UpdateMode = 'any'): void {
    this.stats.set++;
    this.#fault('set');
    const v = Buffer.alloc(this.#value.size);
    this.#value.encode(value, v, 0);
    this.#update(this.#encodeKey(key), v, mode, `update (${mode})`);
  }

  delete(key: K): boolean {
    this.stats.delete++;
    this.#fault('delete');
    return this.#remove(this.#encodeKey(key), 'delete');
  }

  *keys(): Generator<K> {
    this.stats.iterate++;
    for (const [k] of this.#snapshot()) yield this.spec.key.decode(k, 0);
  }

  *entries(): Generator<[K, V]> {
    this.stats.iterate++;
    for (const [k, v] of this.#snapshot()) yield [this.spec.key.decode(k, 0), this.#value.decode(v, 0)];
  }

  #snapshot(): Array<[Buffer, Buffer]> {
    if (this.#isArray) {
      const out: Array<[Buffer, Buffer]> = [];
      for (let i = 0; i < this.spec.maxEntries; i++) {
        const k = Buffer.alloc(4);
        k.writeUInt32LE(i, 0);
        out.push([k, this.#store.get(k.toString('hex'))?.value ?? Buffer.alloc(this.#value.size)]);
      }
      return out;
    }
    return [...this.#store.values()].map((e) => [e.key, e.value]);
  }

  setMany(entries: ReadonlyArray<readonly [K, V]>, mode: UpdateMode = 'any'): number {
    this.stats.setMany++;
    this.#fault('setMany');
    entries.forEach(([k, v], i) => {
      const vb = Buffer.alloc(this.#value.size);
      this.#value.encode(v, vb, 0);
      try {
        this.#update(this.#encodeKey(k), vb, mode, `update_batch (${mode})`);
      } catch (err) {
        if (err instanceof BpfMapError && err.errno !== undefined) this.#raise(`update_batch (${mode})`, err.errno, i);
        throw err;
      }
    });
    return entries.length;
  }

  deleteMany(keys: readonly K[]): number {
    this.stats.deleteMany++;
    this.#fault('deleteMany');
    let n = 0;
    for (const k of keys) if (this.#remove(this.#encodeKey(k), 'delete_batch')) n++;
    return n;
  }

  clear(): void {
    this.#store.clear();
  }

  /** Entries sorted by their encoded key bytes: a stable order for golden dumps. */
  sortedEntries(): Array<[K, V]> {
    return this.#snapshot()
      .filter(([k]) => !this.#isArray || this.#store.has(k.toString('hex')))
      .sort(([a], [b]) => Buffer.compare(a, b))
      .map(([k, v]) => [this.spec.key.decode(k, 0), this.#value.decode(v, 0)]);
  }

  /** Number of entries present (arrays: entries written so far). */
  get size(): number {
    return this.#store.size;
  }
}

/** Creates a fake map for a spec; per-CPU maps hold one value per CPU, as real ones do. */
export function createFakeMap<K, V>(spec: MapSpec<K, V>, cpus = possibleCpus): FakeMap<K, V> | FakeMap<K, V[]> {
  if (isPerCpu(spec.type)) return new FakeMap<K, V[]>(spec, perCpuCodec(spec.value, cpus));
  return new FakeMap<K, V>(spec, spec.value);
}

/** Every map of the datapath, faked: a drop-in MapSet for the agent's planner and reconciler tests. */
export class FakeMapSet implements MapSet {
  readonly #maps = new Map<string, FakeMap<unknown, unknown>>();

  constructor(cpus = possibleCpus) {
    for (const [name, spec] of Object.entries(mapSpecs)) {
      this.#maps.set(name, createFakeMap(spec as MapSpec<unknown, unknown>, cpus) as FakeMap<unknown, unknown>);
    }
  }

  map<N extends MapName>(name: N): MapLike<MapKey<N>, MapValue<N>> {
    return this.fake(name);
  }

  /** The fake itself, for fault injection, stats and sorted dumps. */
  fake<N extends MapName>(name: N): FakeMap<MapKey<N>, MapValue<N>> {
    const m = this.#maps.get(name);
    if (!m) throw new BpfError('NM_ERR_BPF_NOT_FOUND', `no fake map ${name}`);
    return m as unknown as FakeMap<MapKey<N>, MapValue<N>>;
  }
}
