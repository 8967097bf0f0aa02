/**
 * bpffs for the sandbox: /sys/fs/bpf must be a bpf mount (mounted when it is not), and each node gets an
 * empty directory under the instance's bpffs directory where the datapath pins its maps and programs.
 */
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { SandboxConfig } from './config.ts';
import { runChecked } from './exec.ts';
import type { StateStore } from './state.ts';

/** The machine's bpffs mount point. */
export const BPFFS_MOUNT = '/sys/fs/bpf';

/** Whether a /proc/mounts text shows `path` mounted as bpf. */
export function isBpffsMounted(procMounts: string, path = BPFFS_MOUNT): boolean {
  return procMounts.split('\n').some((l) => {
    const [, mnt, fs] = l.split(' ');
    return mnt === path && fs === 'bpf';
  });
}

/**
 * Mounts bpffs at /sys/fs/bpf when it is not, then creates the instance's directory and one per node.
 * The mount itself is left in place by `down`: other programs of this machine may pin there too.
 */
export async function ensureBpffs(cfg: SandboxConfig, nodeNames: string[], store: StateStore): Promise<string[]> {
  if (!isBpffsMounted(await readFile('/proc/mounts', 'utf8'))) {
    await mkdir(BPFFS_MOUNT, { recursive: true });
    await runChecked('mount', ['-t', 'bpf', 'bpf', BPFFS_MOUNT]);
  }
  await store.record({ kind: 'bpfdir', path: cfg.bpfDir });
  await mkdir(cfg.bpfDir, { recursive: true });
  const dirs: string[] = [];
  for (const n of nodeNames) {
    const d = join(cfg.bpfDir, n);
    await store.record({ kind: 'bpfdir', path: d });
    await mkdir(d, { recursive: true });
    dirs.push(d);
  }
  return dirs;
}

/** Removes a bpffs directory with every pin in it (unlinking a pin drops the kernel's reference). */
export async function removeBpfDir(path: string): Promise<void> {
  await rm(path, { recursive: true, force: true });
}
