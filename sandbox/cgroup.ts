/**
 * cgroup v2 for the sandbox: <cgroup2 mount>/<instance dir>/<node>/<pod>. We use the machine's cgroup2 mount
 * when it has one (found in /proc/mounts), else mount one under /run/nodemesh. Nothing is attached to the
 * root cgroup and only processes the sandbox started are ever moved.
 */
import { existsSync, type Dirent } from 'node:fs';
import { mkdir, readdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { SandboxConfig } from './config.ts';
import { SandboxError } from './errors.ts';
import { runChecked, sleep } from './exec.ts';
import type { StateStore } from './state.ts';

/** Where the sandbox mounts a cgroup2 hierarchy when the machine has none. */
export const OWN_CGROUP2_MOUNT = '/run/nodemesh/cgroup2';

/** The first cgroup2 mount point in a /proc/mounts text, if any. */
export function findCgroup2Mount(procMounts: string): string | undefined {
  for (const line of procMounts.split('\n')) {
    const [, mountPoint, fsType] = line.split(' ');
    if (fsType === 'cgroup2' && mountPoint) return mountPoint.replace(/\\040/g, ' ');
  }
  return undefined;
}

/** The instance's cgroup root path when a cgroup2 hierarchy is mounted, without creating anything. */
export async function locateCgroupRoot(cfg: SandboxConfig): Promise<string | undefined> {
  const mnt = findCgroup2Mount(await readFile('/proc/mounts', 'utf8'));
  return mnt ? join(mnt, cfg.cgroupDirName) : undefined;
}

/** Makes sure a cgroup2 hierarchy is mounted and the instance's directory exists; returns that directory. */
export async function ensureCgroupRoot(cfg: SandboxConfig, store: StateStore): Promise<string> {
  let mnt = findCgroup2Mount(await readFile('/proc/mounts', 'utf8'));
  if (!mnt) {
    await store.record({ kind: 'mount', path: OWN_CGROUP2_MOUNT });
    await mkdir(OWN_CGROUP2_MOUNT, { recursive: true });
    await runChecked('mount', ['-t', 'cgroup2', 'none', OWN_CGROUP2_MOUNT]);
    mnt = OWN_CGROUP2_MOUNT;
  }
  if (!existsSync(join(mnt, 'cgroup.procs'))) {
    throw new SandboxError('NM_ERR_SANDBOX_CGROUP2_MISSING', `${mnt} is listed as cgroup2 in /proc/mounts but has no cgroup.procs; is it really mounted?`);
  }
  const root = join(mnt, cfg.cgroupDirName);
  await createCgroup(store, root);
  return root;
}

/** Creates a cgroup directory after recording it. */
export async function createCgroup(store: StateStore, path: string): Promise<void> {
  await store.record({ kind: 'cgroup', path });
  await mkdir(path, { recursive: true });
}

/** Moves a process (one the sandbox started) into a cgroup. */
export async function moveToCgroup(path: string, pid: number): Promise<void> {
  await writeFile(join(path, 'cgroup.procs'), `${pid}\n`);
}

/** PIDs in a cgroup and all below it. */
export async function listCgroupPids(path: string): Promise<number[]> {
  const pids: number[] = [];
  const walk = async (dir: string): Promise<void> => {
    let text = '';
    try {
      text = await readFile(join(dir, 'cgroup.procs'), 'utf8');
    } catch {
      return;
    }
    for (const l of text.split('\n')) if (l.trim()) pids.push(Number(l));
    let entries: Dirent[] = [];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) if (e.isDirectory()) await walk(join(dir, e.name));
  };
  await walk(path);
  return pids;
}

/** Whether any process is left in the cgroup's subtree (cgroup.events `populated`). */
export async function isCgroupPopulated(path: string): Promise<boolean> {
  try {
    return /populated 1/.test(await readFile(join(path, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

/** Sends a signal to every process in a cgroup's subtree: all of them were started by the sandbox. */
export async function signalCgroup(path: string, signal: NodeJS.Signals): Promise<number> {
  const pids = await listCgroupPids(path);
  for (const pid of pids) {
    try {
      process.kill(pid, signal);
    } catch {
      // Exited meanwhile.
    }
  }
  return pids.length;
}

/** SIGKILLs everything in a cgroup's subtree (cgroup.kill, or one by one on kernels without it) and waits until it is empty. */
export async function killCgroup(path: string, timeoutMs = 5000): Promise<void> {
  if (!existsSync(path)) return;
  try {
    await writeFile(join(path, 'cgroup.kill'), '1');
  } catch {
    await signalCgroup(path, 'SIGKILL');
  }
  const deadline = Date.now() + timeoutMs;
  while (await isCgroupPopulated(path)) {
    if (Date.now() > deadline) {
      throw new SandboxError('NM_ERR_SANDBOX_TIMEOUT', `cgroup ${path} still holds processes ${(await listCgroupPids(path)).join(',')} after SIGKILL; are they stuck in the kernel (D state)?`);
    }
    await signalCgroup(path, 'SIGKILL');
    await sleep(20);
  }
}

/** Removes a cgroup directory and everything below it, deepest first (cgroup directories are removed with rmdir). */
export async function removeCgroupTree(path: string): Promise<void> {
  let entries: Dirent[];
  try {
    entries = await readdir(path, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  for (const e of entries) if (e.isDirectory()) await removeCgroupTree(join(path, e.name));
  for (let i = 0; ; i++) {
    try {
      await rmdir(path);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      // EBUSY right after the last process exits: the kernel frees the cgroup asynchronously.
      if (code === 'EBUSY' && i < 100) {
        await sleep(20);
        continue;
      }
      throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `could not remove cgroup ${path}: ${(err as Error).message} (processes left: ${(await listCgroupPids(path)).join(',') || 'none'})`);
    }
  }
}
