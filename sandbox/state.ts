/**
 * state.json: every namespace, interface, cgroup, bpffs directory, process, mount and file the sandbox made.
 * An entry is written (atomically) BEFORE the thing is created, so `down` can remove it after any crash.
 */
import { readFile } from 'node:fs/promises';
import { writeFileAtomic as writeAtomic } from '../agent/atomic-file.ts';
import { SandboxError } from './errors.ts';

/** One thing the sandbox made. */
export type StateEntry =
  | { kind: 'netns'; name: string }
  | { kind: 'veth'; netns: string; name: string }
  | { kind: 'cgroup'; path: string }
  | { kind: 'bpfdir'; path: string }
  | { kind: 'dir'; path: string }
  | { kind: 'file'; path: string }
  | { kind: 'mount'; path: string }
  | { kind: 'process'; pid: number; startTime: string; role: string };

/** The whole state file. */
export type SandboxState = {
  version: 1;
  instance: string;
  /** Number of nodes `up` was asked for. */
  nodes: number;
  createdAt: string;
  entries: StateEntry[];
};

/** A fresh, empty state. */
export function createState(instance: string, nodes: number, now = new Date()): SandboxState {
  return { version: 1, instance, nodes, createdAt: now.toISOString(), entries: [] };
}

/** Whether two entries name the same thing (a process is the same only with the same start time). */
export function isSameEntry(a: StateEntry, b: StateEntry): boolean {
  return JSON.stringify(entryKey(a)) === JSON.stringify(entryKey(b));
}

function entryKey(e: StateEntry): unknown[] {
  switch (e.kind) {
    case 'netns': return [e.kind, e.name];
    case 'veth': return [e.kind, e.netns, e.name];
    case 'process': return [e.kind, e.pid, e.startTime];
    default: return [e.kind, e.path];
  }
}

/** The state with the entry added once. */
export function addEntry(state: SandboxState, entry: StateEntry): SandboxState {
  if (state.entries.some((e) => isSameEntry(e, entry))) return state;
  return { ...state, entries: [...state.entries, entry] };
}

/** The state without the entries the predicate picks. */
export function removeEntries(state: SandboxState, pick: (e: StateEntry) => boolean): SandboxState {
  return { ...state, entries: state.entries.filter((e) => !pick(e)) };
}

/** Parses and checks a state file's text; the error says what is wrong so the user knows `down` still works. */
export function parseState(text: string, path: string): SandboxState {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new SandboxError('NM_ERR_SANDBOX_STATE_CORRUPT', `${path} is not JSON (${(err as Error).message}); \`nodemesh sandbox down\` still removes what it can find by name`);
  }
  const s = raw as Partial<SandboxState>;
  if (s.version !== 1 || !Array.isArray(s.entries) || typeof s.instance !== 'string') {
    throw new SandboxError('NM_ERR_SANDBOX_STATE_CORRUPT', `${path}: field version must be 1 and entries an array (found version=${String(s.version)}); was it written by another nodemesh version?`);
  }
  return { version: 1, instance: s.instance, nodes: Number(s.nodes ?? 0), createdAt: String(s.createdAt ?? ''), entries: s.entries };
}

/** One step of tearing the sandbox down, in the order they must run. */
export type TeardownStep =
  | { op: 'kill-process'; pid: number; startTime: string; role: string }
  | { op: 'kill-cgroup'; path: string }
  | { op: 'delete-netns'; name: string }
  | { op: 'remove-cgroup'; path: string }
  | { op: 'remove-tree'; path: string }
  | { op: 'remove-file'; path: string }
  | { op: 'unmount'; path: string };

/**
 * The order `down` undoes things in: the supervisor first (so nothing restarts what we stop), then other
 * processes, then everything left in our cgroups (cgroup.kill), then pod namespaces before node namespaces
 * before the fabric, cgroups deepest first, bpffs and files, and mounts last. Veths go with their namespace.
 */
export function planTeardown(state: SandboxState): TeardownStep[] {
  const steps: TeardownStep[] = [];
  const procs = state.entries.filter((e): e is Extract<StateEntry, { kind: 'process' }> => e.kind === 'process');
  procs.sort((a, b) => Number(b.role === 'supervisor') - Number(a.role === 'supervisor'));
  for (const p of procs) steps.push({ op: 'kill-process', pid: p.pid, startTime: p.startTime, role: p.role });
  const cgroups = state.entries.filter((e) => e.kind === 'cgroup').map((e) => (e as { path: string }).path);
  // Killing the shallowest cgroups covers their subtrees (cgroup.kill is recursive).
  for (const c of [...cgroups].sort(byDepth)) steps.push({ op: 'kill-cgroup', path: c });
  const netns = state.entries.filter((e) => e.kind === 'netns').map((e) => (e as { name: string }).name);
  const rank = (n: string): number => (n.includes('pod-') ? 0 : n.includes('node-') ? 1 : 2);
  for (const n of [...netns].sort((a, b) => rank(a) - rank(b))) steps.push({ op: 'delete-netns', name: n });
  for (const c of [...cgroups].sort(byDepth).reverse()) steps.push({ op: 'remove-cgroup', path: c });
  const trees = state.entries.filter((e) => e.kind === 'bpfdir' || e.kind === 'dir').map((e) => (e as { path: string }).path);
  for (const t of [...trees].sort(byDepth).reverse()) steps.push({ op: 'remove-tree', path: t });
  for (const e of state.entries) if (e.kind === 'file') steps.push({ op: 'remove-file', path: e.path });
  for (const e of state.entries) if (e.kind === 'mount') steps.push({ op: 'unmount', path: e.path });
  return steps;
}

function byDepth(a: string, b: string): number {
  return a.split('/').length - b.split('/').length || a.localeCompare(b);
}

/** Reads state.json, or undefined when there is none. */
export async function readState(path: string): Promise<SandboxState | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  return parseState(text, path);
}

/**
 * Writes a file atomically (temp file, fsync, rename, directory fsync: agent/atomic-file.ts), so a crash or a full
 * disk leaves the old or the new, never half.
 */
export async function writeFileAtomic(path: string, text: string, mode = 0o600): Promise<void> {
  await writeAtomic(path, text, { mode, dirMode: 0o755 });
}

/** The state of one process's view, written through in order: one writer at a time per instance. */
export class StateStore {
  readonly path: string;
  private state: SandboxState;
  private chain: Promise<void> = Promise.resolve();

  constructor(path: string, state: SandboxState) {
    this.path = path;
    this.state = state;
  }

  /** The state as last written. */
  get current(): SandboxState {
    return this.state;
  }

  /** Records entries and waits until they are on disk; call BEFORE creating the things they name. */
  record(...entries: StateEntry[]): Promise<void> {
    return this.update((s) => entries.reduce(addEntry, s));
  }

  /** Forgets entries once the things they name are gone. */
  forget(pick: (e: StateEntry) => boolean): Promise<void> {
    return this.update((s) => removeEntries(s, pick));
  }

  /** Applies a change and writes the file; changes are serialised so none is lost. */
  update(change: (s: SandboxState) => SandboxState): Promise<void> {
    const next = this.chain.then(async () => {
      this.state = change(this.state);
      await writeFileAtomic(this.path, JSON.stringify(this.state, null, 2) + '\n');
    });
    this.chain = next.catch(() => {});
    return next;
  }
}
