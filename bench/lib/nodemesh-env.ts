/** The environment nodemesh processes run with in the benchmarks: as the agent starts them (proxy-supervisor.ts). */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { computeCompileCacheEnv } from '../../l7proxy/process-memory.ts';

const REPO = path.resolve(import.meta.dirname, '../..');

/** process.env plus Node's compile cache in `dir` (l7proxy/compile-cache.ts), as the agent sets it for the proxy. */
export function computeNodemeshEnv(dir: string): NodeJS.ProcessEnv {
  return { ...process.env, ...computeCompileCacheEnv(path.join(dir, 'compile-cache'), {}) };
}

/**
 * Loads the proxy's modules once with `env`, so every nodemesh process of a run starts from a warm compile cache,
 * as every proxy start on a node after its first does.
 */
export async function warmCompileCache(env: NodeJS.ProcessEnv): Promise<void> {
  const mods = ['l7proxy/workers.ts', 'l7proxy/proxy.ts', 'agent/proxy/worker-plugin.ts', 'bench/lib/nodemesh-proxy.ts', 'bench/lib/nodemesh-mesh.ts']
    .map((m) => pathToFileURL(path.join(REPO, m)).href);
  await new Promise<void>((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', `for (const m of ${JSON.stringify(mods)}) await import(m);`], { env, stdio: ['ignore', 'ignore', 'inherit'] });
    p.once('error', reject);
    p.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`compile cache warm-up exited with ${code}`))));
  });
}
