/**
 * `nodemesh sandbox down`: removes everything the state lists, then sweeps for anything of this instance it
 * can prove it made (namespaces carrying our marker, our cgroup directory, our bpffs directory, /etc/netns
 * entries of our namespaces), and finally the state directory. Idempotent; works after any crash.
 */
import { existsSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { removeBpfDir } from './bpffs.ts';
import { killCgroup, locateCgroupRoot, removeCgroupTree } from './cgroup.ts';
import { sandboxPaths, type SandboxConfig } from './config.ts';
import { describeError } from './errors.ts';
import { runCommand } from './exec.ts';
import { deleteNetns, etcNetnsDir, hasOurMarker, isInstanceName, listSandboxNetns } from './net/topology.ts';
import { stopOurProcess } from './process.ts';
import { planTeardown, readState, type SandboxState, type TeardownStep } from './state.ts';

/** What down did. */
export type DownResult = { found: boolean; removed: string[]; problems: string[] };

/** Takes the instance down; `problems` lists what could not be removed (the caller exits non-zero then). */
export async function downSandbox(cfg: SandboxConfig, out: (line: string) => void = () => {}): Promise<DownResult> {
  const paths = sandboxPaths(cfg);
  const removed: string[] = [];
  const problems: string[] = [];
  let state: SandboxState | undefined;
  try {
    state = await readState(paths.state);
  } catch (err) {
    problems.push(`${describeError(err)} (continuing with a sweep by name)`);
  }
  const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn();
      removed.push(what);
    } catch (err) {
      problems.push(`${what}: ${describeError(err)}`);
    }
  };
  const cgRoot = await locateCgroupRoot(cfg);
  const unmounts: string[] = [];
  if (state) {
    out(`taking down sandbox instance ${cfg.instance} (${state.entries.length} recorded items)`);
    for (const step of planTeardown(state)) {
      if (step.op === 'unmount') {
        unmounts.push(step.path);
        continue;
      }
      await attempt(describeStep(step), () => runStep(step));
    }
  }
  // The sweep: anything of this instance that the state missed (or a state that is gone).
  if (cgRoot && existsSync(cgRoot)) {
    await attempt(`cgroup ${cgRoot}`, async () => {
      await killCgroup(cgRoot);
      await removeCgroupTree(cgRoot);
    });
  }
  for (const ns of await listSandboxNetns(cfg)) {
    const recorded = state?.entries.some((e) => e.kind === 'netns' && e.name === ns) ?? false;
    if (!recorded && !(await hasOurMarker(cfg, ns))) {
      problems.push(`network namespace ${ns} looks like ours by name but carries no marker "${cfg.marker}"; left alone (remove it with \`ip netns del ${ns}\` if it is)`);
      continue;
    }
    await attempt(`network namespace ${ns}`, async () => {
      await killNetnsProcesses(ns);
      await deleteNetns(ns);
    });
  }
  for (const dir of await listEtcNetns(cfg)) await attempt(`directory ${dir}`, () => rm(dir, { recursive: true, force: true }));
  if (existsSync(cfg.bpfDir)) await attempt(`bpffs directory ${cfg.bpfDir}`, () => removeBpfDir(cfg.bpfDir));
  for (const m of unmounts) await attempt(`mount ${m}`, async () => { await runCommand('umount', [m]); await rm(m, { recursive: true, force: true }); });
  const found = state !== undefined || removed.length > 0 || existsSync(cfg.stateDir);
  if (existsSync(cfg.stateDir)) {
    await attempt(`state directory ${cfg.stateDir}`, () => rm(cfg.stateDir, { recursive: true, force: true }));
  }
  return { found, removed, problems };
}

function describeStep(s: TeardownStep): string {
  switch (s.op) {
    case 'kill-process': return `process ${s.pid} (${s.role})`;
    case 'kill-cgroup': return `processes in cgroup ${s.path}`;
    case 'delete-netns': return `network namespace ${s.name}`;
    case 'remove-cgroup': return `cgroup ${s.path}`;
    case 'remove-tree': return `directory ${s.path}`;
    case 'remove-file': return `file ${s.path}`;
    case 'unmount': return `mount ${s.path}`;
  }
}

async function runStep(s: TeardownStep): Promise<void> {
  switch (s.op) {
    // The supervisor stops its pods and daemons itself on SIGTERM; give it time before the cgroup kill.
    case 'kill-process': return stopOurProcess(s.pid, s.startTime, s.role === 'supervisor' ? 15_000 : 2000);
    case 'kill-cgroup': return killCgroup(s.path);
    case 'delete-netns': {
      await killNetnsProcesses(s.name);
      return deleteNetns(s.name);
    }
    case 'remove-cgroup': return removeCgroupTree(s.path);
    case 'remove-tree': return rm(s.path, { recursive: true, force: true });
    case 'remove-file': return rm(s.path, { force: true });
    case 'unmount': return;
  }
}

/** SIGKILLs processes inside one of our namespaces (anything there was started by the sandbox). */
async function killNetnsProcesses(netns: string): Promise<void> {
  if (!existsSync(`/run/netns/${netns}`)) return;
  const r = await runCommand('ip', ['netns', 'pids', netns]);
  for (const l of r.stdout.split('\n')) {
    const pid = Number(l.trim());
    if (!pid) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

async function listEtcNetns(cfg: SandboxConfig): Promise<string[]> {
  try {
    return (await readdir('/etc/netns')).filter((n) => isInstanceName(cfg, n)).map((n) => etcNetnsDir(n));
  } catch {
    return [];
  }
}

/** What of an instance still exists (for tests and `status`): namespaces, cgroup, bpffs, /etc/netns, state. */
export async function findLeftovers(cfg: SandboxConfig): Promise<string[]> {
  const left: string[] = [];
  for (const ns of await listSandboxNetns(cfg)) left.push(`netns ${ns}`);
  const cg = await locateCgroupRoot(cfg);
  if (cg && existsSync(cg)) left.push(`cgroup ${cg}`);
  if (existsSync(cfg.bpfDir)) left.push(`bpffs ${cfg.bpfDir}`);
  for (const d of await listEtcNetns(cfg)) left.push(`dir ${d}`);
  if (existsSync(cfg.stateDir)) left.push(`state ${cfg.stateDir}`);
  return left;
}
