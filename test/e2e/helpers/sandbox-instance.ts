/**
 * What the privileged end-to-end tests that run a sandbox of their own share: the root check (a FAIL, never a
 * skip: a skipped test looks like a pass), a named instance (NODEMESH_SANDBOX_INSTANCE, so a user's sandbox is never
 * touched), bin/nodemesh and kubectl run against it, its bring-up and its always-run teardown, and polling.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { resolveSandboxConfig, sandboxPaths, type SandboxConfig } from '../../../sandbox/config.ts';

export const ROOT = resolve(import.meta.dirname, '../../..');
export const NODEMESH = join(ROOT, 'bin/nodemesh');

/** Fails (never skips) the test when not root. */
export function requireRoot(message = 'this end-to-end test needs root (network namespaces, cgroups, bpffs); run it with sudo'): void {
  assert.equal(process.getuid?.(), 0, message);
}

export type Run = { code: number; stdout: string; stderr: string; ms: number };
export type RunOptions = { input?: string; timeoutMs?: number; env?: Record<string, string | undefined> };

/** The stdout of a run that must have succeeded; else an assertion with its exit code and output. */
export const ok = (r: Run, what: string): string => {
  assert.equal(r.code, 0, `${what} failed (exit ${r.code}):\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
};

export type Eventually = <T>(what: string, fn: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs?: number, everyMs?: number) => Promise<T>;

/** An `eventually(what, fn, timeoutMs?, everyMs?)`: polls fn until it returns neither undefined nor false. */
export function poller(defaults: { timeoutMs: number; everyMs: number }): Eventually {
  return async (what, fn, timeoutMs = defaults.timeoutMs, everyMs = defaults.everyMs) => {
    const deadline = Date.now() + timeoutMs;
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const v = await fn();
        if (v !== undefined && v !== false) return v;
      } catch (err) {
        last = err;
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
  };
}

export interface SandboxInstance {
  readonly instance: string;
  /** process.env with NODEMESH_SANDBOX_INSTANCE (and the extra variables asked for): what every command runs with. */
  readonly env: NodeJS.ProcessEnv;
  readonly cfg: SandboxConfig;
  readonly paths: ReturnType<typeof sandboxPaths>;
  /** The instance's kubeconfig, once `up` has run. */
  readonly kubeconfig: string;
  /** Runs a command with the instance's environment (stdin gets `input`, then EOF). */
  run(cmd: string, args: string[], opts?: RunOptions): Promise<Run>;
  nodemesh(...args: string[]): Promise<Run>;
  /** kubectl --kubeconfig <the instance's kubeconfig>. */
  kubectl(...args: string[]): Promise<Run>;
  /** `sandbox down` (a crashed earlier run must not fail this one), `sandbox up <args>`, and the kubeconfig. */
  up(...upArgs: string[]): Promise<void>;
  /** Always run from after(): `sandbox down`, then `dir` removed whatever happened, then the down must have worked. */
  teardown(opts?: { dir?: string; what?: string }): Promise<void>;
}

/**
 * A sandbox instance of the test's own. `extraEnv` is added to every command's environment; `nodemeshTimeoutMs`
 * bounds each bin/nodemesh run (other commands: 120 s unless a run says otherwise).
 */
export function sandboxInstance(instance: string, opts: { extraEnv?: Record<string, string>; nodemeshTimeoutMs?: number } = {}): SandboxInstance {
  const env: NodeJS.ProcessEnv = { ...process.env, NODEMESH_SANDBOX_INSTANCE: instance, ...opts.extraEnv };
  const cfg = resolveSandboxConfig(env);
  let kubeconfig = '';

  const run = (cmd: string, args: string[], o: RunOptions = {}): Promise<Run> =>
    new Promise((resolvePromise, reject) => {
      const t0 = Date.now();
      const child = spawn(cmd, args, { env: { ...env, ...o.env }, stdio: ['pipe', 'pipe', 'pipe'], timeout: o.timeoutMs ?? 120_000 });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
      child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
      child.on('error', reject);
      child.on('close', (code) => resolvePromise({ code: code ?? 1, stdout, stderr, ms: Date.now() - t0 }));
      child.stdin.on('error', () => {});
      child.stdin.end(o.input ?? '');
    });
  const nodemesh = (...args: string[]): Promise<Run> => run(NODEMESH, args, { timeoutMs: opts.nodemeshTimeoutMs ?? 120_000 });

  return {
    instance,
    env,
    cfg,
    paths: sandboxPaths(cfg),
    get kubeconfig() { return kubeconfig; },
    run,
    nodemesh,
    kubectl: (...args) => run('kubectl', ['--kubeconfig', kubeconfig, ...args]),
    async up(...upArgs) {
      // Only this test's own instance is ever brought down: other engineers' sandboxes are left alone; and a crashed
      // earlier run must not make this one fail for the wrong reason.
      await nodemesh('sandbox', 'down');
      ok(await nodemesh('sandbox', 'up', ...upArgs), 'nodemesh sandbox up');
      kubeconfig = ok(await nodemesh('sandbox', 'kubeconfig'), 'sandbox kubeconfig').trim();
    },
    async teardown({ dir, what = 'sandbox down' } = {}) {
      let down: Run;
      try {
        down = await nodemesh('sandbox', 'down');
      } finally {
        if (dir) await rm(dir, { recursive: true, force: true });
      }
      assert.equal(down.code, 0, `${what} failed:\n${down.stderr}`);
    },
  };
}

/** A fresh directory under the system's temporary one. */
export const tempDir = (prefix: string): Promise<string> => mkdtemp(join(tmpdir(), prefix));
