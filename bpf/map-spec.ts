/** The static description of a BPF map (generated from BTF into codecs.generated.ts). */
import type { Codec } from './codec.ts';

/** Map types the binding knows, by their uapi name without the BPF_MAP_TYPE_ prefix. */
export type MapTypeName =
  | 'hash'
  | 'array'
  | 'percpu_hash'
  | 'percpu_array'
  | 'lru_hash'
  | 'lru_percpu_hash'
  | 'lpm_trie'
  | 'sockmap'
  | 'sockhash'
  | 'ringbuf';

/** A map's name, type, layouts and limits, exactly as its C definition states them. */
export interface MapSpec<K, V> {
  /** Kernel map name (at most 15 characters). */
  readonly name: string;
  readonly type: MapTypeName;
  readonly key: Codec<K>;
  /** One CPU's value for per-CPU maps; the binding handles the per-CPU array. */
  readonly value: Codec<V>;
  readonly maxEntries: number;
  /** BPF_F_* map_flags of the definition. */
  readonly flags: number;
  /** Objects (bpf/build/<name>.bpf.o) that define the map; they share it through its pin. */
  readonly objects: readonly string[];
}

/** Whether values of this map type hold one copy per possible CPU. */
export function isPerCpu(type: MapTypeName): boolean {
  return type === 'percpu_hash' || type === 'percpu_array' || type === 'lru_percpu_hash';
}

/** Whether the kernel implements BPF_MAP_*_BATCH for this map type (delete: hash types only). */
export function supportsBatch(type: MapTypeName, op: 'lookup' | 'update' | 'delete'): boolean {
  switch (type) {
    case 'hash':
    case 'percpu_hash':
    case 'lru_hash':
    case 'lru_percpu_hash':
      return true;
    case 'array':
    case 'percpu_array':
      return op !== 'delete';
    default:
      return false;
  }
}
