/**
 * Random packet loss on a sandbox node's interface, made in the kernel by bpf/impair.c (tc, clsact ingress and
 * egress): the stand-in for `tc netem loss` on kernels without sch_netem. It cannot delay packets (no netem, no fq
 * for EDT timestamps here): tests that need latency emulate it themselves and must say so.
 * Only interfaces inside the sandbox's own namespaces (`nm-<instance>-*`) are accepted, never the machine's.
 */
import { readdirSync, rmSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { structCodec, u32, u64 } from '../../../bpf/codec.ts';
import { DEFAULT_OBJECT_DIR } from '../../../bpf/datapath.ts';
import { openPinnedMap } from '../../../bpf/map.ts';
import type { MapSpec } from '../../../bpf/map-spec.ts';
import type { Run, RunOptions } from './sandbox-instance.ts';

/** The tc filter the impairment uses on both hooks: its own handle ('IM') and priority, apart from the agent's. */
export const IMPAIR_TC = { handle: 0x494d, priority: 7 } as const;
/** Where each impairment pins its maps (bpffs is not per netns: the test reads the counters from the root one). */
export const IMPAIR_PIN_ROOT = '/sys/fs/bpf/nm-e2e-impair';
const NETNS_HELPER = join(import.meta.dirname, 'link-impair-netns.ts');
/** Test-only: bpf/Makefile builds it into build/test/, outside the datapath's objects. */
export const IMPAIR_OBJECT = join(DEFAULT_OBJECT_DIR, 'test', 'impair.bpf.o');

/** Value of nm_impair_cfg (struct nm_impair_cfg of bpf/impair.c). */
export interface ImpairCfg { loss_ppm: number }
/**
 * The object's maps, written here rather than generated: bpf/codecs.generated.ts covers the datapath's objects only,
 * and every map in it is one the agent opens. openPinnedMap compares key/value sizes and entries with the pinned map
 * (which the object created), so a drift from bpf/impair.c fails loudly.
 */
export const IMPAIR_MAPS = {
  cfg: { name: 'nm_impair_cfg', type: 'array', key: u32, value: structCodec<ImpairCfg>('struct nm_impair_cfg', 8, [['loss_ppm', 0, u32]]), maxEntries: 1, flags: 0, objects: ['impair'] } as MapSpec<number, ImpairCfg>,
  count: { name: 'nm_impair_count', type: 'percpu_array', key: u32, value: u64, maxEntries: 5, flags: 0, objects: ['impair'] } as MapSpec<number, bigint>,
};
/** enum nm_impair_count of bpf/impair.c. */
const COUNT = { inPassed: 0, inDropped: 1, egPassed: 2, egDropped: 3, nonIp: 4 } as const;

/** What to impair and how. */
export interface ImpairmentPlan {
  netns: string;
  dev: string;
  /** IP packets dropped per million, each direction. */
  lossPpm: number;
  pinDir: string;
}

/**
 * Checks the target and turns a loss fraction into the program's parts per million. `sandboxPrefix` is the
 * instance's namespace prefix (`nm-<instance>-`): a namespace outside it is refused, whatever its name.
 */
export function planImpairment(target: { netns: string; dev: string; lossFraction: number; sandboxPrefix: string }): ImpairmentPlan {
  const { netns, dev, lossFraction, sandboxPrefix } = target;
  if (!/^nm-[a-z0-9]{1,8}-$/.test(sandboxPrefix)) throw new Error(`impairment: sandbox prefix ${JSON.stringify(sandboxPrefix)} is not nm-<instance>-: refusing to pick namespaces by it`);
  if (!netns.startsWith(sandboxPrefix) || !/^[a-z0-9-]+$/.test(netns)) throw new Error(`impairment: network namespace ${JSON.stringify(netns)} is not one of the sandbox's (${sandboxPrefix}*): only sandbox links may be impaired`);
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(dev)) throw new Error(`impairment: interface name ${JSON.stringify(dev)} is not a valid Linux interface name`);
  if (!Number.isFinite(lossFraction) || lossFraction < 0 || lossFraction > 1) throw new Error(`impairment: loss fraction ${lossFraction} is not within 0..1 (5 % is 0.05)`);
  return { netns, dev, lossPpm: Math.round(lossFraction * 1_000_000), pinDir: join(IMPAIR_PIN_ROOT, `${netns}-${dev}`) };
}

type Runner = (cmd: string, args: string[], opts?: RunOptions) => Promise<Run>;

/** `nsenter --net` (not `ip netns exec`, which remounts /sys and so hides /sys/fs/bpf). */
const inNetns = (run: Runner, netns: string, args: string[]): Promise<Run> =>
  run('nsenter', [`--net=/var/run/netns/${netns}`, '--', process.execPath, NETNS_HELPER, ...args], { timeoutMs: 60_000 });

/** Attaches the loss on both directions of plan.dev; throws, with the loader's own words, when it cannot. */
export async function attachImpairment(run: Runner, plan: ImpairmentPlan): Promise<{ ifindex: number; ingressProgId: number; egressProgId: number }> {
  const object = IMPAIR_OBJECT;
  const r = await inNetns(run, plan.netns, ['attach', object, plan.dev, String(plan.lossPpm), plan.pinDir]);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  if (r.code !== 0 || !line.startsWith('{')) {
    throw new Error(`cannot attach the BPF impairment (${object}) to ${plan.netns}/${plan.dev} (exit ${r.code}): ${r.stderr.trim().slice(-1500) || r.stdout.trim()}`
      + '\n(is the object built — make -C bpf — is bpffs mounted at /sys/fs/bpf, does the kernel have clsact, CONFIG_NET_SCH_INGRESS and CONFIG_NET_CLS_BPF?)');
  }
  return JSON.parse(line) as { ifindex: number; ingressProgId: number; egressProgId: number };
}

/** Removes both filters (only ours: handle/priority IMPAIR_TC) and the pinned maps. Safe to call twice. */
export async function detachImpairment(run: Runner, plan: ImpairmentPlan): Promise<{ ingress: boolean; egress: boolean } | undefined> {
  let out: { ingress: boolean; egress: boolean } | undefined;
  try {
    const r = await inNetns(run, plan.netns, ['detach', plan.dev]);
    if (r.code === 0) out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '{}') as { ingress: boolean; egress: boolean };
  } finally {
    rmSync(plan.pinDir, { recursive: true, force: true });
    // The shared root goes with its last impairment (another test's may still be there).
    try {
      if (readdirSync(IMPAIR_PIN_ROOT).length === 0) rmdirSync(IMPAIR_PIN_ROOT);
    } catch {
      // already gone
    }
  }
  return out;
}

/** What the programs did so far, summed over CPUs. */
export interface ImpairCounters { ingressPassed: number; ingressDropped: number; egressPassed: number; egressDropped: number; nonIp: number }

/** Reads nm_impair_count through its pin. */
export function readImpairCounters(plan: ImpairmentPlan): ImpairCounters {
  const map = openPinnedMap(join(plan.pinDir, IMPAIR_MAPS.count.name), IMPAIR_MAPS.count);
  try {
    const at = (i: number): number => {
      const v = map.get(i) as bigint[] | bigint | undefined;
      return Number(Array.isArray(v) ? v.reduce((a, b) => a + b, 0n) : (v ?? 0n));
    };
    return {
      ingressPassed: at(COUNT.inPassed),
      ingressDropped: at(COUNT.inDropped),
      egressPassed: at(COUNT.egPassed),
      egressDropped: at(COUNT.egDropped),
      nonIp: at(COUNT.nonIp),
    };
  } finally {
    map.close();
  }
}

/** Tcp RetransSegs of a namespace (/proc/net/snmp is per network namespace): TCP's own account of the loss. */
export async function tcpRetransSegs(run: Runner, netns: string): Promise<number> {
  const r = await run('nsenter', [`--net=/var/run/netns/${netns}`, '--', 'cat', '/proc/net/snmp']);
  if (r.code !== 0) throw new Error(`cannot read /proc/net/snmp in ${netns}: ${r.stderr.trim()}`);
  const [names, values] = r.stdout.split('\n').filter((l) => l.startsWith('Tcp:')).map((l) => l.trim().split(/\s+/));
  const i = names?.indexOf('RetransSegs') ?? -1;
  const v = i > 0 ? Number(values?.[i]) : NaN;
  if (!Number.isFinite(v)) throw new Error(`no Tcp RetransSegs in ${netns}'s /proc/net/snmp`);
  return v;
}
