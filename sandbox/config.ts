/** Sandbox instance settings: where the state lives, what its namespaces are called, which addresses it uses. */
import { createHash } from 'node:crypto';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root, so the sandbox can start its own entry points wherever the CLI is called from. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** ClusterIPs, allocated by the API server; reached through the eBPF datapath once it lands. */
export const SERVICE_PREFIX = '10.96.0.0/16';
/** Port of the per-node forwarder to the API server, inside each node namespace. */
export const NODE_APISERVER_PORT = 6443;
/** Upper bound on nodes: 10.200.0.(10+i) and 10.244.i.0/24 must stay valid, and a sandbox is one machine. */
export const MAX_NODES = 50;

/** One sandbox instance: names and paths are all derived from its name so two instances never collide. */
export type SandboxConfig = {
  /** Instance name: `default`, or a test's own (`e2e`). */
  instance: string;
  /** Prefix of every network namespace and /etc/netns directory: `nm-` or `nm-<instance>-`. */
  prefix: string;
  /** state.json, logs, kubeconfigs, the API server's unix socket and its data. */
  stateDir: string;
  /** TCP port of the API server on 127.0.0.1 in the machine's own namespace. */
  apiPort: number;
  /** Directory name under the cgroup2 mount that holds every node's and pod's cgroup. */
  cgroupDirName: string;
  /** bpffs directory that holds one sub-directory per node. */
  bpfDir: string;
  /** Marker written as the alias of interfaces we make, so `down` can prove an orphan namespace is ours. */
  marker: string;
};

/**
 * The instance chosen by NODEMESH_SANDBOX_INSTANCE (default `default`); NODEMESH_SANDBOX_API_PORT overrides the
 * port. Tests pick their own instance so they never touch a user's sandbox.
 */
export function resolveSandboxConfig(env: NodeJS.ProcessEnv = process.env): SandboxConfig {
  const instance = env.NODEMESH_SANDBOX_INSTANCE?.trim() || 'default';
  if (!/^[a-z][a-z0-9]{0,7}$/.test(instance)) {
    throw new Error(`NODEMESH_SANDBOX_INSTANCE="${instance}" is not a valid instance name: use 1-8 lowercase letters/digits, starting with a letter`);
  }
  const isDefault = instance === 'default';
  const portText = env.NODEMESH_SANDBOX_API_PORT?.trim();
  const apiPort = portText ? Number(portText) : isDefault ? 16443 : 16443 + 100 + (parseInt(sha8(instance), 16) % 800);
  if (!Number.isInteger(apiPort) || apiPort < 1 || apiPort > 65535) {
    throw new Error(`NODEMESH_SANDBOX_API_PORT="${portText}" is not a TCP port`);
  }
  const suffix = isDefault ? '' : `-${instance}`;
  return {
    instance,
    prefix: isDefault ? 'nm-' : `nm-${instance}-`,
    stateDir: `/run/nodemesh/sandbox${suffix}`,
    apiPort,
    cgroupDirName: `nodemesh-sandbox${suffix}`,
    bpfDir: `/sys/fs/bpf/nodemesh${suffix}`,
    marker: `nodemesh-sandbox:${instance}`,
  };
}

/** Paths of the files an instance keeps in its state directory. */
export function sandboxPaths(cfg: SandboxConfig): {
  state: string; supervisorLog: string; supervisorStatus: string; apiSocket: string; apiData: string;
  hostKubeconfig: string; nodeKubeconfig: string; podLogs: string;
} {
  const d = cfg.stateDir;
  return {
    state: join(d, 'state.json'),
    supervisorLog: join(d, 'supervisor.log'),
    supervisorStatus: join(d, 'supervisor-status.json'),
    apiSocket: join(d, 'apiserver.sock'),
    apiData: join(d, 'apiserver'),
    hostKubeconfig: join(d, 'kubeconfig'),
    nodeKubeconfig: join(d, 'kubeconfig-node'),
    podLogs: join(d, 'pods'),
  };
}

/** First 8 hex digits of sha256: short, stable names for pods in interface and namespace names. */
export function sha8(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}
