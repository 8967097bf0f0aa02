/**
 * Attaching programs: cgroup and sockmap attachments as bpf_links pinned in bpffs, adopted on
 * restart (the pinned link gets the new program atomically, never a second attachment); tc via
 * libbpf's netlink helpers; queries for what is attached.
 */
import { existsSync, mkdirSync, statSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import { BpfAttachError, BpfError } from './errors.ts';
import { closeFd, ffi, openDirectory } from './libbpf.ts';

/** enum bpf_link_type values the binding checks. */
export const LINK_TYPE = { cgroup: 3, sockmap: 14 } as const;

/** What the kernel says about a link (struct bpf_link_info). */
export interface LinkInfo {
  type: number;
  id: number;
  progId: number;
  /** cgroup links: target cgroup id (0 once the cgroup is gone); sockmap links: map id. */
  targetId: bigint;
  attachType: number;
}

/** Reads struct bpf_link_info: type, id, prog_id, then a union at offset 16. */
export function getLinkInfo(fd: number): LinkInfo {
  const info = Buffer.alloc(64);
  const len = new Uint32Array([info.length]);
  const rc = ffi.bpf_obj_get_info_by_fd(fd, info, len) as number;
  if (rc < 0) throw new BpfAttachError('NM_ERR_BPF_ADOPT', 'bpf_obj_get_info_by_fd on a link failed', { errno: -rc });
  const type = info.readUInt32LE(0);
  // cgroup: { __u64 cgroup_id; __u32 attach_type; }  sockmap: { __u32 map_id; __u32 attach_type; }
  const isCgroup = type === LINK_TYPE.cgroup;
  return {
    type,
    id: info.readUInt32LE(4),
    progId: info.readUInt32LE(8),
    targetId: isCgroup ? info.readBigUInt64LE(16) : BigInt(info.readUInt32LE(16)),
    attachType: isCgroup ? info.readUInt32LE(24) : info.readUInt32LE(20),
  };
}

/** Reads the id of a program or map fd (first fields of bpf_prog_info / bpf_map_info: type, id). */
export function getObjectId(fd: number): number {
  const info = Buffer.alloc(8);
  const len = new Uint32Array([info.length]);
  const rc = ffi.bpf_obj_get_info_by_fd(fd, info, len) as number;
  if (rc < 0) throw new BpfError('NM_ERR_BPF_ADOPT', 'bpf_obj_get_info_by_fd failed', { errno: -rc });
  return info.readUInt32LE(4);
}

/** cgroup id of a cgroup2 directory: its inode number, as the kernel reports it in link info. */
export function cgroupId(path: string): bigint {
  return statSync(path, { bigint: true }).ino;
}

/** Pins an fd (map, program or link) at a bpffs path, creating parent directories. */
export function pinFd(fd: number, path: string, what: string): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const rc = ffi.bpf_obj_pin(fd, path) as number;
  if (rc < 0) throw new BpfError('NM_ERR_BPF_PIN', `${what}: cannot pin at ${path}; is bpffs mounted at /sys/fs/bpf?`, { errno: -rc, object: what });
}

/** Removes a pin; a link or map with no other reference is then released (a link detaches). */
export function unpin(path: string): boolean {
  if (!existsSync(path)) return false;
  unlinkSync(path);
  return true;
}

/** Opens a pinned object; returns its fd (owned by the caller) or -1 when nothing is pinned there. */
export function openPinned(path: string, what: string): number {
  if (!existsSync(path)) return -1;
  const fd = ffi.bpf_obj_get(path) as number;
  if (fd < 0) throw new BpfError('NM_ERR_BPF_PIN', `${what}: ${path} exists but cannot be opened`, { errno: -fd, object: what });
  return fd;
}

/** How a pinned attachment came to be. */
export type AttachAction = 'attached' | 'adopted' | 'replaced-stale';

/** A link attachment the process holds an fd to. */
export interface PinnedLink {
  readonly program: string;
  readonly pinPath: string;
  readonly action: AttachAction;
  /** Owned: close with closeLink (the pin keeps the attachment). */
  fd: number;
}

/** Where to attach and how to recognise an existing attachment there. */
export interface LinkTarget {
  /** fd of the cgroup directory or of the sockmap/sockhash. */
  fd: number;
  /** Expected LINK_TYPE and target id (cgroup id or map id) of an adoptable link. */
  linkType: number;
  targetId: bigint;
  describe: string;
}

/**
 * Ensures `program` is attached to `target` through the link pinned at `pinPath`:
 * - a pinned link of the right type, attach type and target gets the new program with
 *   BPF_LINK_UPDATE (atomic: no moment without a program, no second attachment) -> 'adopted';
 * - a pinned link that points elsewhere (the cgroup was recreated, the map replaced) is unpinned,
 *   which detaches it, and a fresh link is created -> 'replaced-stale';
 * - otherwise a link is created and pinned -> 'attached'.
 */
export function attachPinnedLink(program: { name: string; fd: number; attachType: number }, target: LinkTarget, pinPath: string): PinnedLink {
  const existing = openPinned(pinPath, `link ${program.name}`);
  let action: AttachAction = 'attached';
  if (existing >= 0) {
    let info: LinkInfo | undefined;
    try {
      info = getLinkInfo(existing);
    } catch {
      info = undefined;
    }
    if (info && info.type === target.linkType && info.attachType === program.attachType && info.targetId === target.targetId) {
      const rc = ffi.bpf_link_update(existing, program.fd, null) as number;
      if (rc < 0) {
        closeFd(existing);
        throw new BpfAttachError('NM_ERR_BPF_ADOPT', `program ${program.name}: cannot update the link pinned at ${pinPath} on ${target.describe}`, { errno: -rc, object: program.name });
      }
      return { program: program.name, pinPath, action: 'adopted', fd: existing };
    }
    closeFd(existing);
    unpin(pinPath);
    action = 'replaced-stale';
  }
  const fd = ffi.bpf_link_create(program.fd, target.fd, program.attachType, null) as number;
  if (fd < 0) {
    throw new BpfAttachError('NM_ERR_BPF_ATTACH', `program ${program.name}: cannot attach to ${target.describe}`, { errno: -fd, object: program.name });
  }
  try {
    pinFd(fd, pinPath, `link ${program.name}`);
  } catch (err) {
    closeFd(fd); // unpinned and closed: the attachment goes away with it
    throw err;
  }
  return { program: program.name, pinPath, action, fd };
}

/** Attaches (or adopts) a cgroup program on a cgroup2 directory through a pinned link. */
export function attachCgroupPinned(program: { name: string; fd: number; attachType: number }, cgroupPath: string, pinPath: string): PinnedLink {
  const cgfd = openDirectory(cgroupPath);
  if (cgfd < 0) throw new BpfAttachError('NM_ERR_BPF_ATTACH', `program ${program.name}: cannot open cgroup ${cgroupPath} (is it a cgroup2 directory?)`, { errno: -cgfd, object: program.name });
  try {
    return attachPinnedLink(program, { fd: cgfd, linkType: LINK_TYPE.cgroup, targetId: cgroupId(cgroupPath), describe: `cgroup ${cgroupPath}` }, pinPath);
  } finally {
    closeFd(cgfd);
  }
}

/** Attaches (or adopts) an sk_msg/sk_skb program on a sockmap or sockhash through a pinned link (kernel 6.10+). */
export function attachSockmapPinned(program: { name: string; fd: number; attachType: number }, mapFd: number, mapId: number, mapName: string, pinPath: string): PinnedLink {
  return attachPinnedLink(program, { fd: mapFd, linkType: LINK_TYPE.sockmap, targetId: BigInt(mapId), describe: `map ${mapName}` }, pinPath);
}

/**
 * Attaches an sk_msg/sk_skb program to a sockmap without a link (kernels before 6.10). The map
 * holds the program for as long as the map lives, so a pinned map keeps it; attaching again
 * replaces it (a sockmap has one slot per attach type), so there is nothing to duplicate.
 */
export function attachSockmapLegacy(program: { name: string; fd: number; attachType: number }, mapFd: number, mapName: string): void {
  const rc = ffi.bpf_prog_attach(program.fd, mapFd, program.attachType, 0) as number;
  if (rc < 0) throw new BpfAttachError('NM_ERR_BPF_ATTACH', `program ${program.name}: cannot attach to map ${mapName}`, { errno: -rc, object: program.name });
}

/** Closes our fd of a link; the pin keeps the attachment. */
export function closeLink(link: PinnedLink): void {
  closeFd(link.fd);
  link.fd = -1;
}

/** Detaches a pinned link for good: unpins it and detaches it even if another process holds it. */
export function detachPinned(pinPath: string): boolean {
  const fd = openPinned(pinPath, 'link');
  if (fd < 0) return false;
  try {
    ffi.bpf_link_detach(fd);
  } finally {
    closeFd(fd);
    unpin(pinPath);
  }
  return true;
}

/** Program ids attached to a cgroup for one attach type (BPF_PROG_QUERY; effective = false). */
export function queryCgroupPrograms(cgroupPath: string, attachType: number): number[] {
  const cgfd = openDirectory(cgroupPath);
  if (cgfd < 0) throw new BpfAttachError('NM_ERR_BPF_ATTACH', `cannot open cgroup ${cgroupPath}`, { errno: -cgfd });
  try {
    const ids = new Uint32Array(64);
    const cnt = new Uint32Array([ids.length]);
    const flags = new Uint32Array(1);
    const rc = ffi.bpf_prog_query(cgfd, attachType, 0, flags, ids, cnt) as number;
    if (rc < 0) throw new BpfAttachError('NM_ERR_BPF_ATTACH', `BPF_PROG_QUERY on ${cgroupPath} failed`, { errno: -rc });
    return [...ids.subarray(0, cnt[0] ?? 0)];
  } finally {
    closeFd(cgfd);
  }
}

/** tc attach point (enum bpf_tc_attach_point). */
export type TcDirection = 'ingress' | 'egress';

/** A tc attachment: enough to find and detach it again. */
export interface TcAttachment {
  ifindex: number;
  direction: TcDirection;
  handle: number;
  priority: number;
  progId: number;
}

function tcHook(ifindex: number, direction: TcDirection): Buffer {
  // struct bpf_tc_hook { size_t sz; int ifindex; enum attach_point; __u32 parent; } = 24 bytes
  const hook = Buffer.alloc(24);
  hook.writeBigUInt64LE(24n, 0);
  hook.writeInt32LE(ifindex, 8);
  hook.writeUInt32LE(direction === 'ingress' ? 1 : 2, 12); // BPF_TC_INGRESS = 1, BPF_TC_EGRESS = 2
  return hook;
}

function tcOpts(progFd: number, handle: number, priority: number, replace: boolean): Buffer {
  // struct bpf_tc_opts { size_t sz; int prog_fd; __u32 flags; __u32 prog_id; __u32 handle; __u32 priority; } = 32 bytes
  const opts = Buffer.alloc(32);
  opts.writeBigUInt64LE(32n, 0);
  opts.writeInt32LE(progFd, 8);
  opts.writeUInt32LE(replace ? 1 : 0, 12); // BPF_TC_F_REPLACE
  opts.writeUInt32LE(handle, 20);
  opts.writeUInt32LE(priority, 24);
  return opts;
}

/**
 * Attaches a sched_cls program with tc (clsact qdisc, direct-action filter), as libbpf 1.1 has no
 * TCX. Netlink acts in the calling thread's network namespace: run it where the interface lives.
 * Re-attaching with the same handle and priority replaces the program in place.
 */
export function attachTc(program: { name: string; fd: number }, ifindex: number, direction: TcDirection, handle = 1, priority = 1): TcAttachment {
  const hook = tcHook(ifindex, direction);
  const created = ffi.bpf_tc_hook_create(hook) as number;
  if (created < 0 && created !== -17 /* EEXIST: clsact already there */) {
    throw new BpfError('NM_ERR_BPF_TC', `program ${program.name}: cannot create the clsact qdisc on ifindex ${ifindex}`, { errno: -created, object: program.name });
  }
  const opts = tcOpts(program.fd, handle, priority, true);
  const rc = ffi.bpf_tc_attach(hook, opts) as number;
  if (rc < 0) throw new BpfError('NM_ERR_BPF_TC', `program ${program.name}: tc ${direction} attach on ifindex ${ifindex} failed`, { errno: -rc, object: program.name });
  return { ifindex, direction, handle: opts.readUInt32LE(20), priority: opts.readUInt32LE(24), progId: opts.readUInt32LE(16) };
}

/** Detaches a tc filter; false when it was not there. */
export function detachTc(att: Pick<TcAttachment, 'ifindex' | 'direction' | 'handle' | 'priority'>): boolean {
  const hook = tcHook(att.ifindex, att.direction);
  const opts = tcOpts(0, att.handle, att.priority, false);
  opts.writeUInt32LE(0, 12);
  const rc = ffi.bpf_tc_detach(hook, opts) as number;
  // ENOENT: no such filter; EINVAL here: the filter chain itself is gone (its last filter went).
  if (rc === -2 || rc === -22) return false;
  if (rc < 0) throw new BpfError('NM_ERR_BPF_TC', `tc ${att.direction} detach on ifindex ${att.ifindex} failed`, { errno: -rc });
  return true;
}

/** Program id of the tc filter at (handle, priority), or undefined when none. */
export function queryTc(att: Pick<TcAttachment, 'ifindex' | 'direction' | 'handle' | 'priority'>): number | undefined {
  const hook = tcHook(att.ifindex, att.direction);
  const opts = tcOpts(0, att.handle, att.priority, false);
  opts.writeUInt32LE(0, 12);
  const rc = ffi.bpf_tc_query(hook, opts) as number;
  if (rc === -2 || rc === -22) return undefined;
  if (rc < 0) throw new BpfError('NM_ERR_BPF_TC', `tc ${att.direction} query on ifindex ${att.ifindex} failed`, { errno: -rc });
  return opts.readUInt32LE(16);
}
