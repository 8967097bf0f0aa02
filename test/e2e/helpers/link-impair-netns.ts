/**
 * Runs inside a sandbox node's network namespace (`nsenter --net`, which keeps /sys/fs/bpf; tc netlink acts in the
 * caller's netns): attaches bpf/impair.c's programs to one interface, clsact ingress and egress, or detaches them.
 *   attach <object> <dev> <loss ppm> <map pin dir>  → prints {"ifindex","ingressProgId","egressProgId"}
 *   detach <dev>                                   → prints {"ingress": bool, "egress": bool} (was it there)
 * The loss rate is written to the pinned nm_impair_cfg before the programs are attached, so no packet ever sees
 * the programs without it. Driven by link-impair.ts; never run by hand on the machine's own interfaces.
 */
import { spawnSync } from 'node:child_process';
import { attachTc, detachTc, queryTc, type TcDirection } from '../../../bpf/link.ts';
import { BpfObject } from '../../../bpf/object.ts';
import type { BpfMap } from '../../../bpf/map.ts';
import { IMPAIR_MAPS, IMPAIR_TC, type ImpairCfg } from './link-impair.ts';

const DIRECTIONS: TcDirection[] = ['ingress', 'egress'];

/** ifindex of `dev` in this process's netns (ip uses netlink; /sys/class/net would show the mount's netns). */
function ifindexOf(dev: string): number {
  const r = spawnSync('ip', ['-j', 'link', 'show', 'dev', dev], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`interface ${dev} not found in this network namespace: ${r.stderr.trim()}`);
  const [link] = JSON.parse(r.stdout) as Array<{ ifindex: number }>;
  if (!link) throw new Error(`ip link show dev ${dev} printed no interface`);
  return link.ifindex;
}

const [cmd = '', ...args] = process.argv.slice(2);
if (cmd === 'attach') {
  const [objectPath = '', dev = '', ppm = '', pinDir = ''] = args;
  const lossPpm = Number(ppm);
  if (!objectPath || !dev || !pinDir || !Number.isInteger(lossPpm)) throw new Error('usage: attach <object> <dev> <loss ppm> <map pin dir>');
  const ifindex = ifindexOf(dev);
  const obj = BpfObject.load(objectPath, { mapPinDir: pinDir, onIncompatibleMap: 'replace' });
  try {
    const cfgMap = obj.map(IMPAIR_MAPS.cfg) as BpfMap<number, ImpairCfg>;
    cfgMap.set(0, { loss_ppm: lossPpm });
    cfgMap.close();
    const ids: Record<string, number> = {};
    for (const direction of DIRECTIONS) {
      const name = `nm_impair_${direction}`;
      attachTc(obj.program(name), ifindex, direction, IMPAIR_TC.handle, IMPAIR_TC.priority);
      // Read back from the kernel, not from what attach returned: the filter must really be there.
      const id = queryTc({ ifindex, direction, ...IMPAIR_TC });
      if (id === undefined) throw new Error(`${name} attached on ${dev} but tc query finds no filter at handle ${IMPAIR_TC.handle}, priority ${IMPAIR_TC.priority}`);
      ids[`${direction}ProgId`] = id;
    }
    process.stdout.write(`${JSON.stringify({ ifindex, ...ids })}\n`);
  } finally {
    obj.close(); // the tc filters hold the programs, the pins hold the maps
  }
} else if (cmd === 'detach') {
  const [dev = ''] = args;
  const ifindex = ifindexOf(dev);
  const out: Record<string, boolean> = {};
  for (const direction of DIRECTIONS) out[direction] = detachTc({ ifindex, direction, ...IMPAIR_TC });
  process.stdout.write(`${JSON.stringify(out)}\n`);
} else {
  throw new Error(`unknown command ${JSON.stringify(cmd)}: attach | detach`);
}
