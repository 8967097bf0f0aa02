/**
 * The node proxy's own memory cgroup (reliability anchor F12): the proxy and its workers run under a memory limit of
 * their own, so a proxy that grows is OOM-killed alone (the agent, the datapath and the pods stay), and the agent can
 * tell an OOM kill from any other death (the cgroup's `oom_kill` counter) and restart the proxy as after a crash (F3:
 * mesh connects refused meanwhile, never forwarded around the proxy).
 *
 * Where: on cgroup v2 with the memory controller, `<node cgroup>/nodemesh-proxy` (memory.max, memory.oom.group, so an
 * OOM kill takes the whole proxy rather than one worker); on a hybrid host whose memory controller is still on v1, a
 * child of the agent's own v1 memory cgroup, `nodemesh-proxy-<scope>` (memory.limit_in_bytes). Moving the proxy
 * between cgroups does not change how the datapath sees it: connect4 recognises the proxy's own upstream connects by
 * their socket mark (bpf/sock-lb.c, __sock_is_proxy), not by cgroup.
 */
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Name of the proxy's cgroup under the node's (v2). */
export const PROXY_CGROUP_NAME = 'nodemesh-proxy';

/** Where the proxy runs and how its memory is limited and watched. */
export type ProxyCgroupPlan = {
  /** cgroup v2 or the v1 memory hierarchy. */
  hierarchy: 'v2' | 'v1-memory';
  dir: string;
  /** The limit's file and the value written to it. */
  limitFile: string;
  limitBytes: number;
  /** The file with `oom_kill <n>` (memory.events on v2, memory.oom_control on v1). */
  eventsFile: string;
  /** Written before the limit: v2 needs the memory controller enabled in the parent (`+memory` in its subtree_control). */
  enableIn?: string;
  /** v2: kill the whole group on OOM (memory.oom.group). */
  oomGroup: boolean;
};

/** What planProxyCgroup reads (all text, so the decision is pure and testable). */
export type ProxyCgroupFacts = {
  /** The node's cgroup v2 directory (the agent's --cgroup). */
  nodeCgroup: string;
  /** `<node cgroup>/cgroup.controllers`, or undefined when unreadable. */
  nodeControllers: string | undefined;
  /** /proc/self/cgroup of the agent. */
  procSelfCgroup: string;
  /** /proc/mounts. */
  procMounts: string;
  /** Distinguishes proxies of two agents sharing one v1 memory cgroup (two sandbox instances). */
  scope: string;
};

/**
 * Where the proxy's memory limit can be applied, or why it cannot (pure). v2 is preferred (the memory controller in
 * the node cgroup's cgroup.controllers); a hybrid host (memory on v1) uses a child of the agent's own v1 memory cgroup.
 */
export function planProxyCgroup(f: ProxyCgroupFacts, limitBytes: number): { plan: ProxyCgroupPlan } | { problem: string } {
  if (!Number.isSafeInteger(limitBytes) || limitBytes < 16 << 20) return { problem: `proxy memory limit ${limitBytes} is not a whole number of bytes of at least 16 MiB (the proxy alone needs more)` };
  const controllers = (f.nodeControllers ?? '').trim().split(/\s+/);
  if (controllers.includes('memory')) {
    return { plan: { hierarchy: 'v2', dir: join(f.nodeCgroup, PROXY_CGROUP_NAME), limitFile: 'memory.max', limitBytes, eventsFile: 'memory.events', enableIn: f.nodeCgroup, oomGroup: true } };
  }
  let mount: string | undefined;
  for (const line of f.procMounts.split('\n')) {
    const [, mnt, type, opts] = line.split(' ');
    if (type === 'cgroup' && mnt && opts?.split(',').includes('memory')) { mount = mnt.replace(/\\040/g, ' '); break; }
  }
  // `<id>:<controllers>:<path>`; the memory line on a hybrid host.
  const own = f.procSelfCgroup.split('\n').map((l) => l.split(':')).find((p) => p.length >= 3 && p[1]!.split(',').includes('memory'))?.slice(2).join(':');
  if (mount && own !== undefined) {
    const safeScope = f.scope.replace(/[^a-z0-9-]/gi, '-');
    return { plan: { hierarchy: 'v1-memory', dir: join(mount, own, `${PROXY_CGROUP_NAME}-${safeScope}`), limitFile: 'memory.limit_in_bytes', limitBytes, eventsFile: 'memory.oom_control', oomGroup: false } };
  }
  return {
    problem: `no memory controller for the proxy's cgroup: ${f.nodeCgroup}/cgroup.controllers has none (${f.nodeControllers === undefined ? 'unreadable' : `"${f.nodeControllers.trim()}"`}) and no cgroup v1 memory hierarchy is mounted; the proxy runs without its memory limit`,
  };
}

/** The `oom_kill` count in a memory.events / memory.oom_control text; 0 when absent (older kernels). */
export function parseOomKills(text: string): number {
  const m = /^oom_kill (\d+)$/m.exec(text);
  return m ? Number(m[1]) : 0;
}

/** Creates the cgroup and sets its limit (idempotent: a restarted agent finds it made). Throws naming the file. */
export function applyProxyCgroup(p: ProxyCgroupPlan): void {
  const write = (file: string, text: string): void => {
    try {
      writeFileSync(file, text);
    } catch (err) {
      throw new Error(`writing "${text.trim()}" to ${file} failed (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})${p.hierarchy === 'v2' && file.endsWith('subtree_control') ? ': a cgroup with processes of its own cannot pass controllers down (cgroup v2 "no internal processes")' : ''}`, { cause: err });
    }
  };
  if (p.enableIn && !readFileSync(join(p.enableIn, 'cgroup.subtree_control'), 'utf8').split(/\s+/).includes('memory')) write(join(p.enableIn, 'cgroup.subtree_control'), '+memory');
  mkdirSync(p.dir, { recursive: true });
  write(join(p.dir, p.limitFile), String(p.limitBytes));
  if (p.oomGroup && existsSync(join(p.dir, 'memory.oom.group'))) write(join(p.dir, 'memory.oom.group'), '1');
}

/** Moves a process (the proxy just started) into the cgroup; its workers, forked later, start there. */
export function moveIntoProxyCgroup(p: ProxyCgroupPlan, pid: number): void {
  writeFileSync(join(p.dir, 'cgroup.procs'), `${pid}\n`);
}

/** The cgroup's OOM kills so far; undefined when unreadable. */
export function readOomKills(p: ProxyCgroupPlan): number | undefined {
  try {
    return parseOomKills(readFileSync(join(p.dir, p.eventsFile), 'utf8'));
  } catch {
    return undefined;
  }
}

/** The processes in the cgroup now. */
export function proxyCgroupPids(p: ProxyCgroupPlan): number[] {
  try {
    return readFileSync(join(p.dir, 'cgroup.procs'), 'utf8').split('\n').filter((l) => l.trim()).map(Number);
  } catch {
    return [];
  }
}

/** Current memory use of the cgroup in bytes (memory.current / memory.usage_in_bytes); undefined when unreadable. */
export function readProxyMemory(p: ProxyCgroupPlan): number | undefined {
  try {
    return Number(readFileSync(join(p.dir, p.hierarchy === 'v2' ? 'memory.current' : 'memory.usage_in_bytes'), 'utf8').trim());
  } catch {
    return undefined;
  }
}

/** Removes the (empty) cgroup; false when processes are still in it (a draining proxy): the next agent reuses it. */
export function removeProxyCgroup(p: ProxyCgroupPlan): boolean {
  try {
    rmdirSync(p.dir);
    return true;
  } catch {
    return false;
  }
}
