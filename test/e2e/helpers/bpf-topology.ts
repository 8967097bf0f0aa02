/**
 * The BPF datapath e2e test's own topology: two network namespaces joined by a veth pair (created
 * inside them, so the host never sees the interfaces), a cgroup2 subtree for the client side, and
 * a bpffs directory for the pins. Everything is named nmt-bpf-<pid> and removed by destroyTopology.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';

/** Names and addresses of one test topology. */
export interface BpfTopology {
  id: string;
  clientNs: string;
  serverNs: string;
  cgroup: string;
  pinDir: string;
  clientAddr: string;
  backendAddrs: string[];
  children: ChildProcess[];
}

const HELPERS = import.meta.dirname;

/** Runs a command, returning stdout; throws with stderr in the message. */
export function sh(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`, { cause: err });
  }
}

/** The cgroup2 mount point (this machine keeps v1 at /sys/fs/cgroup and v2 elsewhere). */
export function findCgroup2Mount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, mnt, fstype] = line.split(' ');
    if (fstype === 'cgroup2' && mnt) return mnt;
  }
  throw new Error('no cgroup2 hierarchy mounted: mount one (mount -t cgroup2 none /sys/fs/cgroup/unified) to run this test');
}

/** Mounts bpffs at /sys/fs/bpf when it is not (the machine may boot without it). */
export function ensureBpffs(): void {
  const mounted = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => l.split(' ')[1] === '/sys/fs/bpf' && l.split(' ')[2] === 'bpf');
  if (!mounted) sh('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf']);
}

/** Creates the namespaces, veth, addresses and cgroup. */
export function createTopology(): BpfTopology {
  const id = `nmt-bpf-${process.pid}`;
  const t: BpfTopology = {
    id,
    clientNs: `${id}-c`,
    serverNs: `${id}-s`,
    cgroup: join(findCgroup2Mount(), id),
    pinDir: `/sys/fs/bpf/${id}`,
    clientAddr: '10.251.0.1',
    backendAddrs: ['10.251.0.2', '10.251.0.3', '10.251.0.4', '10.251.0.5'],
    children: [],
  };
  sh('ip', ['netns', 'add', t.clientNs]);
  sh('ip', ['netns', 'add', t.serverNs]);
  sh('ip', ['link', 'add', 'name', 'vc', 'netns', t.clientNs, 'type', 'veth', 'peer', 'name', 'vs', 'netns', t.serverNs]);
  sh('ip', ['-n', t.clientNs, 'addr', 'add', `${t.clientAddr}/24`, 'dev', 'vc']);
  for (const a of t.backendAddrs) sh('ip', ['-n', t.serverNs, 'addr', 'add', `${a}/24`, 'dev', 'vs']);
  for (const [ns, dev] of [[t.clientNs, 'vc'], [t.serverNs, 'vs']] as const) {
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    sh('ip', ['-n', ns, 'link', 'set', dev, 'up']);
  }
  mkdirSync(t.cgroup);
  return t;
}

/** Removes everything createTopology made; returns the errors instead of throwing, so every step runs. */
export function destroyTopology(t: BpfTopology): string[] {
  const errors: string[] = [];
  const attempt = (what: string, fn: () => void) => {
    try {
      fn();
    } catch (err) {
      errors.push(`${what}: ${(err as Error).message}`);
    }
  };
  for (const c of t.children) {
    if (c.pid && c.exitCode === null && c.signalCode === null) attempt(`kill ${c.pid}`, () => process.kill(c.pid as number, 'SIGKILL'));
  }
  for (const ns of [t.clientNs, t.serverNs]) attempt(`netns ${ns}`, () => sh('ip', ['netns', 'del', ns]));
  attempt(`cgroup ${t.cgroup}`, () => {
    if (!existsSync(t.cgroup)) return;
    // Processes leave the cgroup when they are reaped; give the kernel a moment.
    for (let i = 0; i < 50; i++) {
      const procs = readFileSync(join(t.cgroup, 'cgroup.procs'), 'utf8').trim();
      if (!procs) break;
      for (const pid of procs.split('\n')) {
        try {
          process.kill(Number(pid), 'SIGKILL');
        } catch {
          // already gone
        }
      }
      execFileSync('sleep', ['0.1']);
    }
    rmdirSync(t.cgroup);
  });
  return errors;
}

/** How a helper process enters the client side. */
export type Entry = 'ip-netns-exec' | 'nsenter';

/**
 * Spawns a helper script inside the test cgroup and a namespace: the shell puts itself in the
 * cgroup, then execs into the netns, so every socket the script opens is governed by the programs
 * attached to the test cgroup (and only those). `nsenter --net` keeps the mount namespace, for
 * helpers that open pins under /sys/fs/bpf (ip netns exec remounts /sys).
 */
export function spawnHelper(t: BpfTopology, opts: { ns: string; cgroup: boolean; entry?: Entry }, script: string, args: string[]): ChildProcess {
  const node = process.execPath;
  const path = join(HELPERS, script);
  const quoted = [node, path, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const enter = opts.entry === 'nsenter' ? `nsenter --net=/var/run/netns/${opts.ns} --` : `ip netns exec ${opts.ns}`;
  const join_ = opts.cgroup ? `echo $$ > ${t.cgroup}/cgroup.procs && ` : '';
  const child = spawn('sh', ['-c', `${join_}exec ${enter} ${quoted}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  t.children.push(child);
  return child;
}

/** Resolves with the first stdout line that satisfies `match`; rejects on exit or timeout, with stderr. */
export function waitForLine(child: ChildProcess, match: (line: string) => boolean, timeoutMs = 10_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`helper gave no matching line in ${timeoutMs} ms; stdout: ${out} stderr: ${err}`)), timeoutMs);
    child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      for (const line of out.split('\n')) {
        if (match(line)) {
          clearTimeout(timer);
          resolve(line);
          return;
        }
      }
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`helper exited (${code ?? signal}) before a matching line; stdout: ${out} stderr: ${err}`));
    });
  });
}

/** Runs the client helper inside the test cgroup and client netns; returns its JSON answer. */
export async function runClient<T>(t: BpfTopology, args: string[], timeoutMs = 60_000): Promise<T> {
  const child = spawnHelper(t, { ns: t.clientNs, cgroup: true }, 'bpf-client.ts', args);
  const line = await waitForLine(child, (l) => l.startsWith('{'), timeoutMs);
  const parsed = JSON.parse(line) as T & { error?: string };
  if (parsed.error) throw new Error(`client ${args.join(' ')}: ${parsed.error}`);
  return parsed;
}
