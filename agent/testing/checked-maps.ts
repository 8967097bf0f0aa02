/**
 * Test helper: a MapSet over fake maps that checks, after every single map call, what a concurrent
 * connect() could see: every frontend names a service, every service's slots 1..ready+terminating
 * exist, every slot names a backend of that service. A reconciler that orders its writes wrongly
 * fails here at the call that broke it.
 */
import { FakeMapSet, type MapKey, type MapLike, type MapSet, type MapValue } from '../../bpf/index.ts';

type MapName = Parameters<MapSet['map']>[0];

/** Checks the lookup invariants of a map set; returns the violations. */
export function checkLookupInvariants(maps: MapSet): string[] {
  const problems: string[] = [];
  const svcs = new Map(maps.map('nm_lb_svc').entries());
  const slots = new Map([...maps.map('nm_lb_slot').entries()].map(([k, v]) => [`${k.svc_id}|${k.slot}`, v]));
  const bes = new Map(maps.map('nm_lb_be').entries());
  for (const [k, v] of [...maps.map('nm_lb4_fe').entries(), ...maps.map('nm_lb6_fe').entries()]) {
    if (!svcs.has(v.svc_id)) problems.push(`frontend ${k.addr}:${k.port} points at missing service ${v.svc_id}`);
  }
  for (const [id, s] of svcs) {
    for (let slot = 1; slot <= s.ready + s.terminating; slot++) {
      const sl = slots.get(`${id}|${slot}`);
      if (!sl) {
        problems.push(`service ${id} slot ${slot} missing (ready=${s.ready} terminating=${s.terminating})`);
        continue;
      }
      const be = bes.get(sl.backend_id);
      if (!be) problems.push(`service ${id} slot ${slot} points at missing backend ${sl.backend_id}`);
      else if (be.svc_id !== id) problems.push(`service ${id} slot ${slot} points at backend ${sl.backend_id} of service ${be.svc_id}`);
    }
  }
  return problems;
}

/** Fake maps whose every write and delete is followed by checkLookupInvariants; violations are collected. */
export class CheckedMapSet implements MapSet {
  readonly inner: FakeMapSet;
  readonly violations: string[] = [];
  readonly calls: string[] = [];

  constructor(inner = new FakeMapSet(2)) {
    this.inner = inner;
  }

  map<N extends MapName>(name: N): MapLike<MapKey<N>, MapValue<N>> {
    const m = this.inner.map(name);
    const after = (op: string): void => {
      this.calls.push(`${op} ${name}`);
      for (const v of checkLookupInvariants(this.inner)) this.violations.push(`after ${op} ${name}: ${v}`);
    };
    return new Proxy(m, {
      get: (target, prop, receiver) => {
        const v = Reflect.get(target, prop, receiver) as unknown;
        if (typeof v !== 'function') return v;
        if (prop === 'set' || prop === 'delete' || prop === 'setMany' || prop === 'deleteMany') {
          return (...args: unknown[]) => {
            const r = (v as (...a: unknown[]) => unknown).apply(target, args);
            after(String(prop));
            return r;
          };
        }
        return (v as (...a: unknown[]) => unknown).bind(target);
      },
    });
  }
}
