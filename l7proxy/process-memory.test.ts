import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import test from 'node:test';
import { checkCompileCacheDir, computeCompileCacheEnv } from './process-memory.ts';

const dirStat = (uid: number, mode: number): { isDirectory(): boolean; uid: number; mode: number } => ({ isDirectory: () => true, uid, mode: 0o40000 | mode });

test('a compile cache directory must be ours and writable by nobody else', () => {
  assert.equal(checkCompileCacheDir(dirStat(0, 0o700), 0), undefined);
  assert.equal(checkCompileCacheDir(dirStat(0, 0o755), 0), undefined);
  assert.match(checkCompileCacheDir(dirStat(1000, 0o700), 0)!, /owned by uid 1000/);
  assert.match(checkCompileCacheDir(dirStat(0, 0o777), 0)!, /writable by group or others \(mode 777\)/);
  assert.match(checkCompileCacheDir(dirStat(0, 0o720), 0)!, /writable by group/);
  assert.equal(checkCompileCacheDir({ isDirectory: () => false, uid: 0, mode: 0o600 }, 0), 'not a directory');
});

test('computeCompileCacheEnv creates a private directory, and leaves an explicit choice alone', () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'nm-cc-'));
  try {
    const dir = path.join(base, 'compile-cache');
    assert.deepEqual(computeCompileCacheEnv(dir, {}), { NODE_COMPILE_CACHE: dir });
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    // Set already (to a path, or empty to turn it off): not overridden.
    assert.deepEqual(computeCompileCacheEnv(dir, { NODE_COMPILE_CACHE: '' }), {});
    // A directory others may write to is refused, with the reason.
    chmodSync(dir, 0o777);
    const skipped: string[] = [];
    assert.deepEqual(computeCompileCacheEnv(dir, {}, (why) => skipped.push(why)), {});
    assert.match(skipped[0]!, /writable by group or others/);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
});
