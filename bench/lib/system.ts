/** Benchmark helpers that read the machine: versions, load, per-CPU busy time, a process tree's CPU and memory. */
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';

/** What a result needs next to it to be comparable later. */
export type MachineInfo = {
  kernel: string;
  cpuModel: string;
  cpus: number;
  governor: string | undefined;
  memTotalMb: number;
  node: string;
  openssl: string;
  loadAvg: number[];
  gitSha: string | undefined;
  gitDirty: boolean | undefined;
  tools: Record<string, string>;
};

function tryRead(file: string): string | undefined {
  try { return readFileSync(file, 'utf8'); } catch { return undefined; }
}

/** First non-empty line of `cmd args`, stdout or stderr (nginx prints its version on stderr); `missing` when it cannot run. */
export function readToolVersion(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  if (r.error) return `missing (${(r.error as NodeJS.ErrnoException).code ?? 'error'})`;
  return `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? 'unknown';
}

/** Kernel, CPU, governor, Node/OpenSSL, git SHA, load average and the given tools' versions. */
export function readMachineInfo(tools: Record<string, [string, string[]]>, repoDir: string): MachineInfo {
  const cpuinfo = tryRead('/proc/cpuinfo') ?? '';
  const model = /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? os.cpus()[0]?.model ?? 'unknown';
  let gitSha: string | undefined; let gitDirty: boolean | undefined;
  try {
    gitSha = execFileSync('git', ['-C', repoDir, 'rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    gitDirty = execFileSync('git', ['-C', repoDir, 'status', '--porcelain'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim().length > 0;
  } catch { /* not a checkout */ }
  const versions: Record<string, string> = {};
  for (const [name, [cmd, args]] of Object.entries(tools)) versions[name] = readToolVersion(cmd, args);
  return {
    kernel: `${os.type()} ${os.release()}`,
    cpuModel: model,
    cpus: os.availableParallelism(),
    governor: tryRead('/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor')?.trim(),
    memTotalMb: Math.round(os.totalmem() / 2 ** 20),
    node: process.version,
    openssl: process.versions.openssl ?? 'unknown',
    loadAvg: os.loadavg().map((x) => Math.round(x * 100) / 100),
    gitSha, gitDirty,
    tools: versions,
  };
}

/** Busy and total jiffies per CPU from /proc/stat (busy = everything but idle and iowait). */
export function readCpuTimes(): { busy: number; total: number }[] {
  const out: { busy: number; total: number }[] = [];
  for (const line of (tryRead('/proc/stat') ?? '').split('\n')) {
    const m = /^cpu(\d+)\s+(.+)$/.exec(line);
    if (!m) continue;
    const f = m[2]!.trim().split(/\s+/).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    const idle = (f[3] ?? 0) + (f[4] ?? 0);
    out[Number(m[1])] = { busy: total - idle, total };
  }
  return out;
}

/** Percent busy per CPU between two readings. */
export function computeCpuBusy(before: { busy: number; total: number }[], after: { busy: number; total: number }[]): number[] {
  return after.map((a, i) => {
    const b = before[i];
    if (!b || a.total === b.total) return 0;
    return Math.round(((a.busy - b.busy) / (a.total - b.total)) * 1000) / 10;
  });
}

/** The pid and every descendant (scans /proc once). */
export function readProcessTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const stat = tryRead(`/proc/${name}/stat`);
    if (!stat) continue;
    // comm may hold spaces and parentheses: fields start after the last ')'.
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    const list = children.get(ppid) ?? [];
    list.push(Number(name));
    children.set(ppid, list);
  }
  const out: number[] = [];
  const walk = (pid: number): void => { out.push(pid); for (const c of children.get(pid) ?? []) walk(c); };
  walk(root);
  return out;
}

/** CPU time (user + system, seconds) of the processes. */
export function readCpuSeconds(pids: readonly number[]): number {
  const hz = 100; // USER_HZ on Linux
  let ticks = 0;
  for (const pid of pids) {
    const stat = tryRead(`/proc/${pid}/stat`);
    if (!stat) continue;
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(rest[11]) + Number(rest[12]); // utime, stime (fields 14, 15)
  }
  return ticks / hz;
}

/** Resident (VmRSS) and proportional (Pss) memory in MiB, summed over the processes, and per process. */
export function readMemory(pids: readonly number[]): { rssMb: number; pssMb: number; perProcess: { pid: number; name: string; rssMb: number }[] } {
  let rss = 0; let pss = 0;
  const perProcess: { pid: number; name: string; rssMb: number }[] = [];
  for (const pid of pids) {
    const status = tryRead(`/proc/${pid}/status`);
    if (!status) continue;
    const kb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
    rss += kb;
    perProcess.push({ pid, name: /^Name:\s+(.+)$/m.exec(status)?.[1] ?? '?', rssMb: Math.round(kb / 102.4) / 10 });
    pss += Number(/^Pss:\s+(\d+)/m.exec(tryRead(`/proc/${pid}/smaps_rollup`) ?? '')?.[1] ?? 0);
  }
  return { rssMb: Math.round(rss / 102.4) / 10, pssMb: Math.round(pss / 102.4) / 10, perProcess };
}

/** A free loopback TCP port (bound then released: fine for a benchmark that owns the machine's loopback ports briefly). */
export async function findFreePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Open file descriptors of the processes (entries of /proc/<pid>/fd; processes gone meanwhile count 0). */
export function readFdCount(pids: readonly number[]): number {
  let n = 0;
  for (const pid of pids) {
    try { n += readdirSync(`/proc/${pid}/fd`).length; } catch { /* exited */ }
  }
  return n;
}

/**
 * TCP sockets held by the processes, by what they connect: `downstream` has `listenPort` as its local port (clients
 * of the proxy), `upstream` has `upstreamPort` as its remote port, `other` is the rest (listeners, IPC, the
 * control port). Read from /proc/<pid>/fd and /proc/net/tcp{,6} (the processes' network namespace).
 */
export function readTcpSockets(pids: readonly number[], listenPort: number, upstreamPort: number): { downstream: number; upstream: number; other: number } {
  const byInode = new Map<string, { local: number; remote: number }>();
  for (const file of ['/proc/net/tcp', '/proc/net/tcp6']) {
    for (const line of (tryRead(file) ?? '').split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      byInode.set(f[9]!, { local: parseInt(f[1]!.split(':')[1]!, 16), remote: parseInt(f[2]!.split(':')[1]!, 16) });
    }
  }
  const out = { downstream: 0, upstream: 0, other: 0 };
  for (const pid of pids) {
    let fds: string[] = [];
    try { fds = readdirSync(`/proc/${pid}/fd`); } catch { continue; }
    for (const fd of fds) {
      let link = '';
      try { link = readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { continue; }
      const m = /^socket:\[(\d+)\]$/.exec(link);
      const s = m ? byInode.get(m[1]!) : undefined;
      if (!s) continue;
      if (s.local === listenPort && s.remote !== 0) out.downstream++;
      else if (s.remote === upstreamPort) out.upstream++;
      else out.other++;
    }
  }
  return out;
}
