/** Optional on-disk copy of workload certificates: one file per identity, written atomically (agent/atomic-file.ts). */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isAtomicTempName, writeFileAtomic } from '../atomic-file.ts';
import { CertsError } from './errors.ts';

/** File name suffix; temp files of an interrupted write carry `.tmp-<pid>-<random>` after it (agent/atomic-file.ts). */
const SUFFIX = '.pem';

/** Reads and writes `<dir>/<ns>_<sa>.pem` holding the certificate chain followed by the private key. */
export class CertStore {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
  }

  /**
   * Writes atomically: a reader (or a restart after a crash) sees the old file or the new one, never a chain
   * from one renewal with the key of another. Mode 0600: the file holds a private key.
   */
  async write(key: string, certChainPem: string, keyPem: string): Promise<void> {
    const path = join(this.dir, key + SUFFIX);
    try {
      await writeFileAtomic(path, certChainPem + keyPem, { mode: 0o600, dirMode: 0o700 });
    } catch (err) {
      throw new CertsError('NM_ERR_CERTS_STORE', `${(err as Error).message} (is the directory writable by the agent?)`, { cause: err });
    }
  }

  /** The file's content, or undefined when it does not exist. */
  async read(key: string): Promise<string | undefined> {
    try {
      return await readFile(join(this.dir, key + SUFFIX), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw new CertsError('NM_ERR_CERTS_STORE', `reading ${join(this.dir, key + SUFFIX)}: ${(err as Error).message}`, { cause: err });
    }
  }

  /** Deletes an identity's file (no error when absent). */
  async remove(key: string): Promise<void> {
    await rm(join(this.dir, key + SUFFIX), { force: true });
  }

  /** Removes temp files a crash left behind. */
  async cleanTemp(): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return;
    }
    await Promise.all(names.filter((n) => n.includes(`${SUFFIX}.tmp-`) && isAtomicTempName(n)).map((n) => rm(join(this.dir, n), { force: true })));
  }
}

/** Splits a stored file into the certificate chain and the key PEM. */
export function splitStored(text: string): { certChainPem: string; keyPem: string } | undefined {
  const keyStart = text.indexOf('-----BEGIN PRIVATE KEY-----');
  if (keyStart <= 0) return undefined;
  return { certChainPem: text.slice(0, keyStart), keyPem: text.slice(keyStart) };
}
