/**
 * The L4 benchmark's own node, built from namespaces prefixed `nmb-` (never the machine's): a node
 * namespace that routes, one client pod and four backend pods wired to it by veth pairs created
 * inside the namespaces, a cgroup2 subtree (`nmb-bench/node/{cli,srv}` under the programs,
 * `nmb-bench/plain` outside them) and a bpffs directory. Nothing routes out: the node has no uplink.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** Names and addresses of the benchmark node. */
export interface BenchTopology {
  nodeNs: string;
  clientNs: string;
  backendNs: string[];
  gateway: string;
  clientAddr: string;
  backendAddrs: string[];
  backendPort: number;
  cgroupRoot: string;
  /** Programs attach here; the nodemesh client and the backends run below it. */
  nodeCgroup: string;
  clientCgroup: string;
  serverCgroup: string;
  /** Outside the programs: the client of the other variants. */
  plainCgroup: string;
  pinDir: string;
  servers: ChildProcess[];
}

/** Runs a command; throws with its stderr. */
export function sh(cmd: string, args: string[], input?: string): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input, maxBuffer: 256 << 20 });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.slice(0, 6).join(' ')}${args.length > 6 ? ' …' : ''} failed: ${e.stderr?.trim().slice(0, 500) || e.message}`, { cause: err });
  }
}

function cgroup2Mount(): string {
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    const [, mnt, fstype] = line.split(' ');
    if (fstype === 'cgroup2' && mnt) return mnt;
  }
  throw new Error('no cgroup2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified): the socket programs need one');
}

/** The topology's names (pure). */
export function computeBenchTopology(): BenchTopology {
  const root = join(cgroup2Mount(), 'nmb-bench');
  return {
    nodeNs: 'nmb-node',
    clientNs: 'nmb-cli',
    backendNs: ['nmb-be1', 'nmb-be2', 'nmb-be3', 'nmb-be4'],
    gateway: '10.253.0.1',
    clientAddr: '10.253.0.2',
    backendAddrs: ['10.253.0.11', '10.253.0.12', '10.253.0.13', '10.253.0.14'],
    backendPort: 8080,
    cgroupRoot: root,
    nodeCgroup: join(root, 'node'),
    clientCgroup: join(root, 'node', 'cli'),
    serverCgroup: join(root, 'node', 'srv'),
    plainCgroup: join(root, 'plain'),
    pinDir: '/sys/fs/bpf/nmb-bench',
    servers: [],
  };
}

function pod(t: BenchTopology, ns: string, addr: string, hostIf: string): void {
  sh('ip', ['netns', 'add', ns]);
  sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  sh('ip', ['link', 'add', 'name', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', hostIf, 'netns', t.nodeNs]);
  sh('ip', ['-n', ns, 'addr', 'add', `${addr}/32`, 'dev', 'eth0']);
  sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
  sh('ip', ['-n', ns, 'route', 'add', t.gateway, 'dev', 'eth0', 'scope', 'link']);
  sh('ip', ['-n', ns, 'route', 'add', 'default', 'via', t.gateway, 'dev', 'eth0', 'src', addr]);
  sh('ip', ['-n', t.nodeNs, 'link', 'set', hostIf, 'up']);
  sh('ip', ['-n', t.nodeNs, 'route', 'add', `${addr}/32`, 'dev', hostIf, 'scope', 'link', 'src', t.gateway]);
  sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=1024 65535']);
  sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.tcp_tw_reuse=1']);
}

/** Removes whatever an earlier (crashed) run of the benchmark left: only `nmb-` names. */
export function destroyBenchTopology(t: BenchTopology): string[] {
  const problems: string[] = [];
  for (const c of t.servers) {
    if (c.pid && c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(c.pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  for (const ns of [t.clientNs, ...t.backendNs, t.nodeNs]) {
    if (existsSync(`/run/netns/${ns}`)) {
      try {
        sh('ip', ['netns', 'del', ns]);
      } catch (err) {
        problems.push((err as Error).message);
      }
    }
  }
  const rmTree = (dir: string): void => {
    if (!existsSync(dir)) return;
    for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmTree(join(dir, e.name));
    for (let i = 0; i < 50; i++) {
      const procs = readFileSync(join(dir, 'cgroup.procs'), 'utf8').trim();
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
    try {
      rmdirSync(dir);
    } catch (err) {
      problems.push(`cgroup ${dir}: ${(err as Error).message}`);
    }
  };
  rmTree(t.cgroupRoot);
  return problems;
}

/** Builds the node, the pods and the cgroups. */
export function buildBenchTopology(t: BenchTopology): void {
  sh('ip', ['netns', 'add', t.nodeNs]);
  sh('ip', ['-n', t.nodeNs, 'link', 'set', 'lo', 'up']);
  sh('ip', ['-n', t.nodeNs, 'addr', 'add', `${t.gateway}/32`, 'dev', 'lo']);
  sh('ip', ['netns', 'exec', t.nodeNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1']);
  pod(t, t.clientNs, t.clientAddr, 'vcli');
  t.backendNs.forEach((ns, i) => pod(t, ns, t.backendAddrs[i] as string, `vbe${i + 1}`));
  // Conntrack in every variant (kube-proxy's need it; the baseline must pay the same), with short
  // TIME_WAIT so 10^5 connections do not fill the machine-wide table.
  sh('ip', ['netns', 'exec', t.nodeNs, 'nft', '-f', '-'], 'add table ip nmb_ct\nadd chain ip nmb_ct forwarding { type filter hook forward priority 0 ; }\nadd rule ip nmb_ct forwarding ct state established,related counter\n');
  sh('ip', ['netns', 'exec', t.nodeNs, 'sysctl', '-qw', 'net.netfilter.nf_conntrack_tcp_timeout_time_wait=1']);
  for (const d of [t.cgroupRoot, t.nodeCgroup, t.clientCgroup, t.serverCgroup, t.plainCgroup]) mkdirSync(d, { recursive: true });
}

/** A shell line that joins `cgroup`, then execs the command in `ns` (nsenter keeps /sys/fs/bpf visible). */
export function inNetnsArgv(cgroup: string, ns: string, argv: readonly string[]): string[] {
  const quoted = argv.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return ['sh', '-c', `echo $$ > ${cgroup}/cgroup.procs && exec nsenter --net=/run/netns/${ns} -- ${quoted}`];
}

/** Starts the four backends; resolves when each prints READY. */
export async function startBackends(t: BenchTopology, tool: string): Promise<void> {
  await Promise.all(
    t.backendNs.map(
      (ns, i) =>
        new Promise<void>((resolve, reject) => {
          const argv = inNetnsArgv(t.serverCgroup, ns, [tool, 'server', t.backendAddrs[i] as string, String(t.backendPort)]);
          const c = spawn(argv[0] as string, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
          t.servers.push(c);
          let err = '';
          c.stderr?.on('data', (d: Buffer) => (err += d.toString()));
          c.stdout?.on('data', (d: Buffer) => {
            if (d.toString().includes('READY')) resolve();
          });
          c.on('exit', (code) => reject(new Error(`backend ${ns} exited (${code}): ${err}`)));
        }),
    ),
  );
}

/** Runs the tool as a client in the client pod, in the given cgroup; returns its JSON line. */
export function runClient<T>(t: BenchTopology, cgroup: string, tool: string, args: readonly string[]): T {
  const argv = inNetnsArgv(cgroup, t.clientNs, [tool, ...args]);
  const out = sh(argv[0] as string, argv.slice(1));
  const line = out.trim().split('\n').pop() ?? '';
  const parsed = JSON.parse(line) as T & { error?: string };
  if (parsed.error) throw new Error(`l4-tool ${args.join(' ')}: ${parsed.error}`);
  return parsed;
}

/** Writes a file and returns its path (rule sets for iptables-restore / nft -f). */
export function writeTemp(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}
