/** Start, pin and stop the processes of a benchmark; each is stopped by its own PID, never by name. */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import net from 'node:net';

/** A process this benchmark started. */
export type ManagedProcess = {
  name: string;
  pid: number;
  child: ChildProcess;
  /** Resolves when the process has exited. */
  exited: Promise<void>;
};

const started = new Set<ManagedProcess>();

/**
 * Start `cmd args`, pinned to `cpus` (a taskset list like "1" or "0-1") when given; `taskset` execs the command, so
 * the PID is the command's own. Output goes to `logFile` (the bench keeps stdout for its table); `stdin` gives the
 * process a pipe to talk to (child.stdin).
 */
export function startProcess(name: string, cmd: string, args: string[], opts: { cpus?: string; logFile: string; env?: NodeJS.ProcessEnv; onStdout?: (line: string) => void; stdin?: boolean }): ManagedProcess {
  const argv = opts.cpus ? ['taskset', '-c', opts.cpus, cmd, ...args] : [cmd, ...args];
  const child = spawn(argv[0]!, argv.slice(1), { stdio: [opts.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'], env: opts.env ?? process.env });
  if (child.pid === undefined) throw new Error(`${name}: could not start ${argv.join(' ')} (is ${argv[0]} installed?)`);
  const log = createWriteStream(opts.logFile, { flags: 'a' });
  let buf = '';
  child.stdout!.on('data', (d: Buffer) => {
    log.write(d);
    if (!opts.onStdout) return;
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) { opts.onStdout(buf.slice(0, i)); buf = buf.slice(i + 1); }
  });
  child.stderr!.on('data', (d: Buffer) => log.write(d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => { log.end(); resolve(); }));
  const p: ManagedProcess = { name, pid: child.pid, child, exited };
  started.add(p);
  void exited.then(() => started.delete(p));
  return p;
}

/** Wait until something accepts TCP connections on 127.0.0.1:port, or fail after `timeoutMs` naming the process. */
export async function waitForPort(port: number, p: ManagedProcess, timeoutMs = 10_000, logFile = ''): Promise<void> {
  const until = Date.now() + timeoutMs;
  let gone = false;
  void p.exited.then(() => { gone = true; });
  while (Date.now() < until) {
    if (gone) throw new Error(`${p.name} (pid ${p.pid}) exited before listening on ${port}; see ${logFile}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${p.name} (pid ${p.pid}) not listening on 127.0.0.1:${port} after ${timeoutMs} ms; see ${logFile}`);
}

/** Send `signal` to the process by PID, then SIGKILL after `graceMs`; resolves when it is gone. */
export async function stopProcess(p: ManagedProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 3000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return;
  try { process.kill(p.pid, signal); } catch { return; }
  const timer = setTimeout(() => { try { process.kill(p.pid, 'SIGKILL'); } catch { /* gone */ } }, graceMs);
  await p.exited;
  clearTimeout(timer);
}

/** Stop everything this module started and is still running (cleanup on success, error or Ctrl-C). */
export async function stopAllProcesses(): Promise<void> {
  await Promise.all([...started].map((p) => stopProcess(p)));
}

/** Run a command to completion, pinned when asked; resolves with its stdout (rejects with stderr on failure). */
export function runCommand(cmd: string, args: string[], opts: { cpus?: string; timeoutMs: number }): Promise<string> {
  const argv = opts.cpus ? ['taskset', '-c', opts.cpus, cmd, ...args] : [cmd, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = ''; let err = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); });
    const timer = setTimeout(() => { child.kill('SIGKILL'); }, opts.timeoutMs);
    child.once('error', (e) => { clearTimeout(timer); reject(e); });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out); else reject(new Error(`${argv.join(' ')} failed (${code ?? signal}): ${err.trim() || out.trim()}`));
    });
  });
}

/**
 * What the L7 benches need before anything starts: Linux (taskset, /proc) and the peers and load tools on PATH,
 * named with the command that installs them.
 */
export async function requireL7BenchTools(bench: string): Promise<void> {
  if (process.platform !== 'linux') throw new Error(`${bench} runs on Linux only (taskset, /proc)`);
  for (const [tool, args] of [['nginx', ['-v']], ['haproxy', ['-v']], ['wrk', ['--version']], ['taskset', ['--version']]] as const) {
    try { await runCommand(tool, [...args], { timeoutMs: 5000 }); } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error(`${tool} is not installed; run scripts/setup.sh (it installs nginx-light, haproxy and wrk)`, { cause: err });
    }
  }
}
