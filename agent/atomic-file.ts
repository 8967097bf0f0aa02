/**
 * Atomic file replacement for state that must survive a crash or a full disk (pid files, certificates, tokens,
 * kubeconfigs): write a temp file beside the target, fsync it, rename it over the target, fsync the directory. A
 * crash or ENOSPC at any point leaves the old content or the new, never a truncated mix (cilium#15446: a crash
 * mid state-dir write lost endpoints). A failed write removes its temp file, so a full disk is not made fuller.
 */
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { dirname } from 'node:path';

/** The file operations the writers use; tests substitute one to fail a step (ENOSPC mid-write). */
export type AtomicFileOps = Pick<typeof fs, 'openSync' | 'writeSync' | 'fsyncSync' | 'closeSync' | 'renameSync' | 'rmSync' | 'mkdirSync'>;

/** Options of writeFileAtomic(Sync). */
export type AtomicWriteOptions = {
  /** Mode of the file (default 0600: most of what we write is a secret or only ours). */
  mode?: number;
  /** Mode of a directory that has to be created (default 0700). */
  dirMode?: number;
  ops?: AtomicFileOps;
};

/** An error of an atomic write: names the file and keeps the system error's `code` (ENOSPC, EACCES, …). */
export class AtomicWriteError extends Error {
  readonly code: string | undefined;
  readonly path: string;
  constructor(path: string, cause: unknown) {
    const code = (cause as NodeJS.ErrnoException).code;
    const hint = code === 'ENOSPC' || code === 'EDQUOT' ? ': the file system is full; the previous content is kept'
      : code === 'EACCES' || code === 'EPERM' || code === 'EROFS' ? ': the directory is not writable by this process'
        : '';
    super(`writing ${path} failed (${code ?? (cause as Error).message})${hint}`, { cause });
    this.name = 'AtomicWriteError';
    this.code = code;
    this.path = path;
  }
}

/** The temp file name beside `path` (unique per writer, so two writers never share one). */
export function atomicTempPath(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Whether a directory entry is a temp file one of our atomic writes left behind (a crash between write and rename). */
export function isAtomicTempName(name: string): boolean {
  return /\.tmp-\d+-[0-9a-f]{8}$/.test(name);
}

/** Replaces `path` with `data` atomically (see the module doc). Throws AtomicWriteError; the old file is then intact. */
export function writeFileAtomicSync(path: string, data: string | Uint8Array, o: AtomicWriteOptions = {}): void {
  const ops = o.ops ?? fs;
  const tmp = atomicTempPath(path);
  let fd: number | undefined;
  try {
    ops.mkdirSync(dirname(path), { recursive: true, mode: o.dirMode ?? 0o700 });
    fd = ops.openSync(tmp, 'wx', o.mode ?? 0o600);
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    // writeSync may write less than asked (a signal, a nearly full disk): loop until all is written or it throws.
    for (let off = 0; off < buf.length;) off += ops.writeSync(fd, buf, off, buf.length - off);
    ops.fsyncSync(fd);
    ops.closeSync(fd);
    fd = undefined;
    ops.renameSync(tmp, path);
  } catch (err) {
    if (fd !== undefined) try { ops.closeSync(fd); } catch { /* already failing */ }
    try { ops.rmSync(tmp, { force: true }); } catch { /* best effort: the error below matters */ }
    throw new AtomicWriteError(path, err);
  }
  syncDirectory(dirname(path), ops);
}

/** The asynchronous form (same steps, off the event loop for the data; the file system calls are short). */
export async function writeFileAtomic(path: string, data: string | Uint8Array, o: AtomicWriteOptions = {}): Promise<void> {
  if (o.ops) { writeFileAtomicSync(path, data, o); return; }
  const tmp = atomicTempPath(path);
  let fh: fs.promises.FileHandle | undefined;
  try {
    await fs.promises.mkdir(dirname(path), { recursive: true, mode: o.dirMode ?? 0o700 });
    fh = await fs.promises.open(tmp, 'wx', o.mode ?? 0o600);
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    fh = undefined;
    await fs.promises.rename(tmp, path);
  } catch (err) {
    await fh?.close().catch(() => {});
    await fs.promises.rm(tmp, { force: true }).catch(() => {});
    throw new AtomicWriteError(path, err);
  }
  syncDirectory(dirname(path), fs);
}

/** fsync of a directory: makes the rename itself durable. Best effort (some file systems refuse it). */
function syncDirectory(dir: string, ops: AtomicFileOps): void {
  let fd: number | undefined;
  try {
    fd = ops.openSync(dir, 'r');
    ops.fsyncSync(fd);
  } catch {
    // EINVAL/EISDIR on file systems without directory fsync: the rename is atomic anyway, only not yet durable.
  } finally {
    if (fd !== undefined) try { ops.closeSync(fd); } catch { /* nothing to do */ }
  }
}
