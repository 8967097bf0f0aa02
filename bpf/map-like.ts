/** The interface shared by real BPF maps (map.ts) and fake ones (fake-map.ts): the agent codes against it. */
import type { MapName, MapTypes } from './codecs.generated.ts';
import type { MapSpec } from './map-spec.ts';

/** BPF_ANY, BPF_NOEXIST (create only), BPF_EXIST (replace only). */
export type UpdateMode = 'any' | 'noexist' | 'exist';

/** A typed BPF map: keys and values go through codecs, never raw buffers. */
export interface MapLike<K, V> {
  /** Kernel map name. */
  readonly name: string;
  /** The map's layout and limits. */
  readonly spec: MapSpec<K, unknown>;
  /** Value for key, or undefined when absent. */
  get(key: K): V | undefined;
  /** Creates or replaces one entry; throws BpfMapError (NM_ERR_BPF_MAP_FULL when full). */
  set(key: K, value: V, mode?: UpdateMode): void;
  /** Removes one entry; false when it was absent. */
  delete(key: K): boolean;
  /** Every key (order unspecified; a concurrent delete can restart a hash walk). */
  keys(): Generator<K>;
  /** Every entry, in chunks through BPF_MAP_LOOKUP_BATCH where the map type has it. */
  entries(): Generator<[K, V]>;
  /** Writes many entries with as few syscalls as the map type allows; returns how many. */
  setMany(entries: ReadonlyArray<readonly [K, V]>, mode?: UpdateMode): number;
  /** Removes many entries, skipping absent ones; returns how many were removed. */
  deleteMany(keys: readonly K[]): number;
  /** Removes every entry (array maps: zeroes them, as arrays cannot delete). */
  clear(): void;
}

/** Key type of a map by name. */
export type MapKey<N extends MapName> = MapTypes[N]['key'];
/** Value type of a map by name: an array with one value per possible CPU for per-CPU maps. */
export type MapValue<N extends MapName> = MapTypes[N]['perCpu'] extends true ? Array<MapTypes[N]['value']> : MapTypes[N]['value'];

/** A node's set of maps by name: the real datapath and the fake one both provide it. */
export interface MapSet {
  map<N extends MapName>(name: N): MapLike<MapKey<N>, MapValue<N>>;
}
