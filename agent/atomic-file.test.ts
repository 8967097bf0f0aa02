/** writeFileAtomic(Sync): the old file survives a full disk or any failed step, and no temp file is left behind. */
import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AtomicWriteError, isAtomicTempName, writeFileAtomic, writeFileAtomicSync, type AtomicFileOps } from './atomic-file.ts';

const enospc = (): NodeJS.ErrnoException => Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', errno: -28 });

/** Real file operations, with one step made to fail the way a full disk does. */
function failing(step: 'write-after-some' | 'fsync' | 'rename' | 'open'): AtomicFileOps {
  let written = 0;
  return {
    ...fs,
    openSync: ((...a: Parameters<typeof fs.openSync>) => {
      if (step === 'open' && String(a[0]).includes('.tmp-')) throw enospc();
      return fs.openSync(...a);
    }) as typeof fs.openSync,
    writeSync: ((fd: number, buf: Uint8Array, off: number, len: number) => {
      // The disk fills after 3 bytes: a partial write first, then ENOSPC (what write(2) does on a full tmpfs).
      if (step === 'write-after-some') {
        if (written >= 3) throw enospc();
        const n = fs.writeSync(fd, buf, off, Math.min(len, 3 - written));
        written += n;
        return n;
      }
      return fs.writeSync(fd, buf, off, len);
    }) as typeof fs.writeSync,
    fsyncSync: ((fd: number) => {
      if (step === 'fsync' && fs.fstatSync(fd).isFile()) throw enospc();
      fs.fsyncSync(fd);
    }) as typeof fs.fsyncSync,
    renameSync: ((a: fs.PathLike, b: fs.PathLike) => {
      if (step === 'rename') throw Object.assign(new Error('EIO'), { code: 'EIO' });
      fs.renameSync(a, b);
    }) as typeof fs.renameSync,
  };
}

describe('atomic file writes', () => {
  let dir = '';
  before(() => { dir = mkdtempSync(join(tmpdir(), 'nm-atomic-')); });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replaces the file with the mode asked for, creating the directory, and leaves no temp file', async () => {
    const path = join(dir, 'run', 'proxy-node-1.pid');
    writeFileAtomicSync(path, '123\n', { mode: 0o644 });
    assert.equal(readFileSync(path, 'utf8'), '123\n');
    assert.equal(statSync(path).mode & 0o777, 0o644);
    await writeFileAtomic(path, '456\n');
    assert.equal(readFileSync(path, 'utf8'), '456\n');
    assert.equal(statSync(path).mode & 0o777, 0o600, 'default mode: owner only');
    assert.deepEqual(readdirSync(join(dir, 'run')), ['proxy-node-1.pid']);
  });

  for (const step of ['write-after-some', 'fsync', 'rename', 'open'] as const) {
    it(`a failure at ${step} keeps the old content and removes the temp file`, () => {
      const path = join(dir, `state-${step}.json`);
      writeFileSync(path, '{"endpoints":["a","b"]}\n');
      const err = (() => { try { writeFileAtomicSync(path, '{"endpoints":["a","b","c"]}\n', { ops: failing(step) }); } catch (e) { return e; } return undefined; })();
      assert.ok(err instanceof AtomicWriteError, `expected an AtomicWriteError, got ${String(err)}`);
      assert.equal(err.code, step === 'rename' ? 'EIO' : 'ENOSPC');
      assert.equal(err.path, path);
      if (step !== 'rename') assert.match(err.message, new RegExp(`writing ${path} failed \\(ENOSPC\\): the file system is full; the previous content is kept`));
      assert.equal(readFileSync(path, 'utf8'), '{"endpoints":["a","b"]}\n', 'the old file is intact');
      assert.deepEqual(readdirSync(dir).filter(isAtomicTempName), [], 'no temp file left to fill the disk further');
    });
  }

  it('a first write that fails leaves no file at all (never a truncated one)', () => {
    const path = join(dir, 'fresh.pid');
    assert.throws(() => writeFileAtomicSync(path, '999999\n', { ops: failing('write-after-some') }), AtomicWriteError);
    assert.equal(fs.existsSync(path), false);
  });

  it('short writes are continued until everything is written', () => {
    const path = join(dir, 'short.txt');
    const ops: AtomicFileOps = { ...fs, writeSync: ((fd: number, buf: Uint8Array, off: number) => fs.writeSync(fd, buf, off, 1)) as typeof fs.writeSync };
    writeFileAtomicSync(path, 'a longer text written one byte at a time', { ops });
    assert.equal(readFileSync(path, 'utf8'), 'a longer text written one byte at a time');
  });

  it('temp names are recognised (for cleaning up after a crash) and unique per write', () => {
    assert.ok(isAtomicTempName('proxy-node-1.pid.tmp-4242-0a1b2c3d'));
    assert.ok(!isAtomicTempName('proxy-node-1.pid'));
    assert.ok(!isAtomicTempName('notes.tmp-x'));
  });
});
