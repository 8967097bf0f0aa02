/** Running this machine's tools (ip, sysctl, mount) with their output captured and failures explained. */
import { spawn } from 'node:child_process';
import { SandboxError } from './errors.ts';

/** What a finished command printed and how it ended. */
export type CommandResult = { code: number; stdout: string; stderr: string };

/** Runs a command to completion; never throws for a non-zero exit (the caller decides). */
export function runCommand(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], timeout: opts.timeoutMs ?? 30_000 });
    let stdout = '';
    let stderr = '';
    child.stdout?.setEncoding('utf8').on('data', (d: string) => { stdout += d; });
    child.stderr?.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
    child.on('error', (err) => reject(new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `could not start ${cmd}: ${err.message} (is it installed? scripts/setup.sh installs iproute2)`, { cause: err })));
    child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr }));
    if (child.stdin) {
      // A command may exit before reading its input; that is its answer, not our failure.
      child.stdin.on('error', () => {});
      child.stdin.end(opts.input);
    }
  });
}

/** Runs a command and throws, naming the command line and its stderr, when it fails. */
export async function runChecked(cmd: string, args: readonly string[], opts: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await runCommand(cmd, args, opts);
  if (r.code !== 0) {
    throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `${cmd} ${args.join(' ')} failed (exit ${r.code}): ${r.stderr.trim() || r.stdout.trim()}`);
  }
  return r.stdout;
}

/** `ip` with arguments, checked. */
export function ip(...args: string[]): Promise<string> {
  return runChecked('ip', args);
}

/** `ip` inside a named network namespace (`ip -n NS ...`), checked. */
export function ipIn(netns: string, ...args: string[]): Promise<string> {
  return runChecked('ip', ['-n', netns, ...args]);
}

/** A sysctl set inside a network namespace only: net.* sysctls are per namespace, so the machine's stay as they are. */
export function sysctlIn(netns: string, key: string, value: string): Promise<string> {
  return runChecked('ip', ['netns', 'exec', netns, 'sysctl', '-qw', `${key}=${value}`]);
}

/** Sleeps. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
