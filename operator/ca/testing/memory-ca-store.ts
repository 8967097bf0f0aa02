/** A CaStore in memory, with resourceVersions and 409 on stale writes, as the API server behaves. */
import type { CaStore } from '../../ca-service.ts';

type Obj = { data: Record<string, string>; annotations: Record<string, string>; rv: number };

/** The store and what it holds, for assertions. */
export type MemoryCaStore = CaStore & { secret?: Obj; bundle?: { data: Record<string, string>; rv: number }; writes: number; secretWrites: number };

const conflict = (): Error => Object.assign(new Error('Conflict'), { code: 409 });

export function memoryCaStore(): MemoryCaStore {
  const s: MemoryCaStore = {
    writes: 0,
    secretWrites: 0,
    readSecret: async () => (s.secret ? { data: { ...s.secret.data }, annotations: { ...s.secret.annotations }, resourceVersion: String(s.secret.rv) } : undefined),
    createSecret: async (data) => {
      if (s.secret) throw Object.assign(new Error('AlreadyExists'), { code: 409 });
      s.secret = { data, annotations: {}, rv: 1 };
      s.secretWrites++;
    },
    replaceSecret: async (data, rv, annotations) => {
      if (!s.secret || String(s.secret.rv) !== rv) throw conflict();
      s.secret = { data, annotations: { ...(annotations ?? {}) }, rv: s.secret.rv + 1 };
      s.secretWrites++;
    },
    readBundle: async () => (s.bundle ? { data: { ...s.bundle.data }, resourceVersion: String(s.bundle.rv) } : undefined),
    writeBundle: async (data, rv) => {
      if ((rv === undefined) !== (s.bundle === undefined) || (s.bundle && String(s.bundle.rv) !== rv)) throw conflict();
      s.bundle = { data, rv: (s.bundle?.rv ?? 0) + 1 };
      s.writes++;
    },
  };
  return s;
}
