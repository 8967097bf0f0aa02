/**
 * How the proxy's processes are started to stay small: Node's on-disk compile cache (NODE_COMPILE_CACHE: the
 * type-stripped sources and V8 code of every module, reused by the next process that loads them), and the heap
 * flags of the pool's primary.
 */
// Why: each proxy process (the pool's primary and every worker) otherwise strips the TypeScript of every module
// at start, which loads Node's type stripper (amaro: ~4 MB of JS plus a WebAssembly instance) and keeps it for
// the life of the process. Measured on Node 24.21 (bench/l7-quick.ts): ~20-25 MB of RSS per process, and a
// faster start. Node keys each entry by the source's hash, so an edited file is compiled afresh.
// The cache holds code the process will run: it must be ours alone (a directory others can write to would let
// them inject code), so an unsafe directory turns the cache off rather than being used.
import { mkdirSync, statSync } from 'node:fs';

/**
 * Node flags of the pool's primary (agent/proxy/main.ts). It accepts connections and relays config and telemetry
 * but runs no request path; V8 sizes its young generation from the machine's memory (up to 3 × 16 MB on 64-bit),
 * which the burst of a 10,000-service config push fills and keeps. 1 MB semi-spaces: ~10-14 MB less RSS with that
 * config (bench/l7-quick.ts --services 10000), for scavenges of a few hundred µs off the request path.
 */
export const PRIMARY_EXEC_ARGV: readonly string[] = ['--max-semi-space-size=1'];

/** Environment variable Node reads at start-up (children inherit it, cluster workers included). */
export const COMPILE_CACHE_ENV = 'NODE_COMPILE_CACHE';

/**
 * Why `dir` cannot hold a compile cache, or undefined when it can: it must be a directory owned by this user and
 * writable by nobody else.
 */
export function checkCompileCacheDir(st: { isDirectory(): boolean; uid: number; mode: number }, uid: number): string | undefined {
  if (!st.isDirectory()) return 'not a directory';
  if (st.uid !== uid) return `owned by uid ${st.uid}, not ${uid}`;
  if ((st.mode & 0o022) !== 0) return `writable by group or others (mode ${(st.mode & 0o777).toString(8)})`;
  return undefined;
}

/**
 * The environment entries that turn the compile cache on in `dir` (created 0700 if missing) for a child process;
 * none when the environment already chooses (`NODE_COMPILE_CACHE` set, also to disable it with an empty value)
 * or when `dir` is unsafe or cannot be made (`onSkip` says why; the child then strips types itself, as before).
 */
export function computeCompileCacheEnv(dir: string, env: NodeJS.ProcessEnv = process.env, onSkip?: (why: string) => void): Record<string, string> {
  if (env[COMPILE_CACHE_ENV] !== undefined) return {};
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const why = checkCompileCacheDir(statSync(dir), process.getuid?.() ?? -1);
    if (why) { onSkip?.(`compile cache ${dir} not used: ${why}`); return {}; }
  } catch (err) {
    onSkip?.(`compile cache ${dir} not used: ${(err as Error).message}`);
    return {};
  }
  return { [COMPILE_CACHE_ENV]: dir };
}
