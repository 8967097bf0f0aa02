/**
 * Opening this node's datapath: refuse a cgroup that is not the node's own, load or adopt the
 * pinned maps and links (bpf/datapath.ts does the adoption), write the node-wide settings, and
 * prove afterwards that each of our programs is attached exactly once to the node's cgroup.
 */
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { dirname } from 'node:path';
import { CGROUP_PROGRAMS, Datapath, getNetnsCookie, queryCgroupPrograms, replaceCounterMaps, writeDatapathConfig } from '../bpf/index.ts';
import type { AgentConfig } from './config.ts';
import { AgentError, describeError } from './errors.ts';
import type { Logger } from './logger.ts';

/** Kernel attach types of the cgroup programs (enum bpf_attach_type), for BPF_PROG_QUERY. */
export const CGROUP_ATTACH_TYPES: Record<(typeof CGROUP_PROGRAMS)[number]['program'], number> = {
  nm_sk4_connect: 10, // BPF_CGROUP_INET4_CONNECT
  nm_sk4_sendmsg: 14, // BPF_CGROUP_UDP4_SENDMSG
  nm_sk4_recvmsg: 19, // BPF_CGROUP_UDP4_RECVMSG
  nm_sk4_getpeer: 29, // BPF_CGROUP_INET4_GETPEERNAME
  nm_sock_ops: 3, // BPF_CGROUP_SOCK_OPS
};

/** cgroup2 mount points of this mount namespace. */
export function listCgroup2Mounts(procMounts: string): string[] {
  return procMounts
    .split('\n')
    .map((l) => l.split(' '))
    .filter((f) => f[2] === 'cgroup2' && f[1])
    .map((f) => (f[1] as string).replace(/\\040/g, ' '));
}

/**
 * Checks the cgroup the agent is told to attach to: it must exist, sit on a cgroup2 mount, and not
 * be the mount's root unless allowed (on a real node the root is right; in the sandbox it would be
 * the machine's own).
 */
export function checkCgroupPath(path: string, mounts: readonly string[], allowRoot: boolean): string | undefined {
  if (!existsSync(path)) return `cgroup ${path} does not exist: is the node's cgroup2 directory created (the sandbox kubelet makes it) and the path right?`;
  const real = realpathSync(path);
  const mount = mounts.map((m) => (existsSync(m) ? realpathSync(m) : m)).find((m) => real === m || real.startsWith(`${m}/`));
  if (!mount) return `cgroup ${path} is not on a cgroup2 mount (cgroup2 mounts: ${mounts.join(', ') || 'none'}); the socket programs need cgroup v2`;
  if (real === mount && !allowRoot) return `cgroup ${path} is the root of the cgroup2 mount: that governs every process of the machine. Give the node's own subtree, or --allow-root-cgroup on a real node`;
  return undefined;
}

/** What opening found, for the log and /statusz. */
export interface DatapathReport {
  pinDir: string;
  cgroupPath: string;
  attachments: Array<{ program: string; action: string }>;
  /** Program ids per attach point after opening; each must hold exactly one of ours. */
  attachedOnce: boolean;
  sockmap: boolean;
}

/** Loads or adopts the datapath and writes the node settings. */
export function openNodeDatapath(cfg: AgentConfig, log: Logger): { datapath: Datapath; report: DatapathReport } {
  const why = checkCgroupPath(cfg.cgroupPath, listCgroup2Mounts(readFileSync('/proc/mounts', 'utf8')), cfg.allowRootCgroup);
  if (why) throw new AgentError('NM_ERR_AGENT_CGROUP', why);
  if (!existsSync(dirname(cfg.bpffsDir))) {
    throw new AgentError('NM_ERR_AGENT_DATAPATH', `bpffs directory ${dirname(cfg.bpffsDir)} does not exist: is bpffs mounted at /sys/fs/bpf in this mount namespace? (\`ip netns exec\` remounts /sys; start the agent with \`nsenter --net\`)`);
  }
  let datapath: Datapath;
  try {
    datapath = Datapath.open({
      pinDir: cfg.bpffsDir,
      cgroupPath: cfg.cgroupPath,
      ...(cfg.bpfObjectDir ? { objectDir: cfg.bpfObjectDir } : {}),
      // A counter map pinned by an older agent with another layout (nm_lb_stats was a per-CPU
      // hash) is unpinned and recreated empty; any other layout change still fails the start.
      onIncompatibleMap: replaceCounterMaps,
      logger: { debug: (m, f) => log.debug(m, f), info: (m, f) => log.info(m, f), warn: (m, f) => log.warn(m, f) },
    });
  } catch (err) {
    throw new AgentError('NM_ERR_AGENT_DATAPATH', `opening the datapath in ${cfg.bpffsDir} for cgroup ${cfg.cgroupPath}: ${describeError(err)}`, { cause: err });
  }
  try {
    // The agent runs in the node's network namespace: its cookie marks the node's own sockets,
    // the only ones a loopback NodePort answers.
    writeDatapathConfig(datapath, { sockmap: cfg.sockmap, hostNetnsCookie: getNetnsCookie() });
    let attachedOnce = true;
    for (const { program } of CGROUP_PROGRAMS) {
      const ids = queryCgroupPrograms(cfg.cgroupPath, CGROUP_ATTACH_TYPES[program]);
      if (ids.length !== 1) {
        attachedOnce = false;
        log.warn('unexpected attachments', { program, cgroup: cfg.cgroupPath, programIds: ids.join(',') || 'none' });
      }
    }
    const report: DatapathReport = {
      pinDir: cfg.bpffsDir,
      cgroupPath: cfg.cgroupPath,
      attachments: datapath.attachments.map((a) => ({ program: a.program, action: a.action })),
      attachedOnce,
      sockmap: cfg.sockmap,
    };
    return { datapath, report };
  } catch (err) {
    datapath.close();
    throw new AgentError('NM_ERR_AGENT_DATAPATH', `configuring the datapath in ${cfg.bpffsDir}: ${describeError(err)}`, { cause: err });
  }
}
