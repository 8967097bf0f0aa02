/**
 * Run by proxy-oom.test.ts inside a private mount namespace (`unshare --mount`) with a tiny tmpfs at argv[2]: writes
 * the files an agent and a sandbox keep (the proxy pid file, a workload certificate, the sandbox state) with their
 * real writers, fills the file system, tries to replace each one, and prints one JSON line per file: the error code
 * of the failed write, whether the old content is intact, and temp files left behind.
 */
import { readdirSync, readFileSync, writeSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { AtomicWriteError, isAtomicTempName, writeFileAtomicSync } from '../../../agent/atomic-file.ts';
import { CertStore } from '../../../agent/certs/cert-store.ts';
import { writeFileAtomic as writeSandboxState } from '../../../sandbox/state.ts';

const dir = process.argv[2];
if (!dir) throw new Error('usage: full-disk-writes.ts <tmpfs dir>');

const pidFile = join(dir, 'run', 'proxy-node-1-0a1b2c3d.pid');
const stateFile = join(dir, 'state.json');
const certs = new CertStore(join(dir, 'certs'));
const certFile = join(dir, 'certs', 'shop_web.pem');

writeFileAtomicSync(pidFile, '4242\n', { mode: 0o644 });
await writeSandboxState(stateFile, JSON.stringify({ nodes: 2, entries: ['nm-x-node-1', 'nm-x-node-2'] }) + '\n');
await certs.write('shop_web', '-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n', '-----BEGIN PRIVATE KEY-----\nold\n-----END PRIVATE KEY-----\n');
const before = { pid: readFileSync(pidFile, 'utf8'), state: readFileSync(stateFile, 'utf8'), cert: readFileSync(certFile, 'utf8') };

// Fill the file system to the last byte.
const filler = openSync(join(dir, 'filler'), 'w');
let filled = 0;
try {
  const chunk = Buffer.alloc(4096, 0x61);
  for (;;) filled += writeSync(filler, chunk);
} catch (err) {
  if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
} finally {
  closeSync(filler);
}

const big = 'x'.repeat(64 * 1024);
const attempt = async (what: string, file: string, old: string, write: () => unknown): Promise<Record<string, unknown>> => {
  let code: string | undefined;
  try {
    await write();
  } catch (err) {
    // The system error's code, wherever the writer wrapped it (AtomicWriteError, CertsError's cause).
    for (let e: unknown = err; e && !code; e = (e as { cause?: unknown }).cause) {
      const c = e instanceof AtomicWriteError ? e.code : (e as NodeJS.ErrnoException).code;
      if (c && /^E[A-Z]+$/.test(c)) code = c;
    }
    code ??= (err as Error).message;
  }
  const dirOf = file.slice(0, file.lastIndexOf('/'));
  return { what, code, intact: readFileSync(file, 'utf8') === old, temps: readdirSync(dirOf).filter(isAtomicTempName) };
};
const results = [
  await attempt('proxy pid file', pidFile, before.pid, () => writeFileAtomicSync(pidFile, `${big}\n`, { mode: 0o644 })),
  await attempt('sandbox state', stateFile, before.state, () => writeSandboxState(stateFile, big)),
  await attempt('workload certificate', certFile, before.cert, () => certs.write('shop_web', big, big)),
];
process.stdout.write(JSON.stringify({ filled, results }) + '\n');
