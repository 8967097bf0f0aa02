/** Processes by PID, proven ours by their start time, so a reused PID is never signalled. */
import { readFile } from 'node:fs/promises';
import { SandboxError } from './errors.ts';
import { sleep } from './exec.ts';

/** The fields of /proc/PID/stat the sandbox needs. */
export type ProcStat = { pid: number; state: string; ppid: number; pgid: number; startTime: string };

/** Parses /proc/PID/stat; the command name may hold spaces and parentheses, so fields count from the last ')'. */
export function parseProcStat(text: string): ProcStat | undefined {
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const pid = Number(text.slice(0, text.indexOf('(')).trim());
  const rest = text.slice(close + 2).trim().split(/\s+/);
  // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
  const [state, ppid, pgid] = [rest[0], Number(rest[1]), Number(rest[2])];
  const startTime = rest[19];
  if (!state || startTime === undefined || !Number.isFinite(pid)) return undefined;
  return { pid, state, ppid, pgid, startTime };
}

/** /proc/PID/stat of a live process, or undefined when it is gone. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/** Whether the process with this PID is still the one we started (same start time) and not a zombie. */
export async function isOurProcessAlive(pid: number, startTime: string): Promise<boolean> {
  const st = await readProcStat(pid);
  return st !== undefined && st.startTime === startTime && st.state !== 'Z';
}

/**
 * Stops a process we started: SIGTERM to it (and its process group when it leads one), SIGKILL after the
 * grace period. Resolves once it is gone.
 */
export async function stopOurProcess(pid: number, startTime: string, graceMs: number): Promise<void> {
  const st = await readProcStat(pid);
  if (!st || st.startTime !== startTime) return;
  const leadsGroup = st.pgid === pid;
  const send = (sig: NodeJS.Signals): void => {
    try {
      process.kill(leadsGroup ? -pid : pid, sig);
    } catch {
      // Already gone.
    }
  };
  send('SIGTERM');
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline) {
    if (!(await isOurProcessAlive(pid, startTime))) return;
    await sleep(50);
  }
  send('SIGKILL');
  for (let i = 0; i < 100 && (await isOurProcessAlive(pid, startTime)); i++) await sleep(20);
}

/** Fails unless running as root: namespaces, cgroups and bpffs need it. */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0) {
    throw new SandboxError('NM_ERR_SANDBOX_NOT_ROOT', `${what} needs root (network namespaces, cgroups, bpffs); run it with sudo`);
  }
}
