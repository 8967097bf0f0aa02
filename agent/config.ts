/** The agent's settings, from flags first and environment second (a DaemonSet sets env, a person types flags). */
import { parseArgs } from 'node:util';
import { AgentError } from './errors.ts';

/**
 * Same-node socket redirection (sockops + sk_msg) is on by default: in docs/bench-l4.md (5
 * repetitions at N = 100, 1,000, 10,000 on the project's 2-vCPU VM) it halved established round
 * trips between pods of one node (RTT p50 ×0.50 against sockmap off) and did not slow connects
 * (×0.85). It only skips per-packet work of established connections: handshakes, and so connection
 * admission (STRICT pod ingress), still take the normal path. `--sockmap false` turns it off.
 */
export const SOCKMAP_DEFAULT = true;

/** kube-proxy's healthz port: whoever probes a node proxy already knows it. */
export const DEFAULT_HEALTH_PORT = 10256;

/**
 * The metrics-only listener's port: kube-proxy's metrics port, as the status port is its healthz port (whoever
 * scrapes a node proxy already knows it). Unlike the status port it is not closed to pods (agent/admin-guard.ts):
 * Prometheus usually runs as a pod.
 */
export const DEFAULT_METRICS_PORT = 10249;

/** Root of the per-node bpffs directories. */
export const DEFAULT_BPFFS_ROOT = '/sys/fs/bpf/nodemesh';

/** Everything the agent needs to run on one node. */
export interface AgentConfig {
  /** Node object name; the agent programs this node only and watches this node's pods. */
  nodeName: string;
  /** kubeconfig file; undefined = in-cluster service account, then ~/.kube/config. */
  kubeconfig: string | undefined;
  /** cgroup2 directory whose subtree the programs govern (the node's; never the machine's root in the sandbox). */
  cgroupPath: string;
  /** Per-node bpffs directory holding maps/ and links/ (default /sys/fs/bpf/nodemesh/<node>). */
  bpffsDir: string;
  /** Directory of the compiled BPF objects; undefined = bpf/build. */
  bpfObjectDir: string | undefined;
  /** TCP port of /healthz and /readyz, on every address of the node's network namespace. */
  healthPort: number;
  /** Address the health endpoint listens on. */
  healthHost: string;
  /**
   * TCP port of the metrics-only listener (GET /metrics, nothing else), on `healthHost`; reachable from pods, unlike
   * `healthPort`. Undefined = none (`--metrics-port none`); 0 = any free port (tests).
   */
  metricsPort: number | undefined;
  /** Also serve the health endpoint (and /metrics) on this unix socket; undefined = none. */
  statusSocket: string | undefined;
  /** Access-log lines go to this file (appended); undefined = stdout (the container log). */
  accessLogFile: string | undefined;
  /** Directory for the agent's runtime files (the node proxy's pid file, so a restarted agent replaces it). */
  runDir: string;
  /** Same-node socket redirection through the sockhash. */
  sockmap: boolean;
  /** Seconds between full resyncs (re-plan everything, re-read the maps, repair drift); 0 = never. */
  resyncSeconds: number;
  /** Allow attaching to the root of a cgroup2 mount (a real node); refused by default so a sandbox mistake cannot reach the machine. */
  allowRootCgroup: boolean;
  /**
   * Memory limit of the node proxy and its workers, in bytes (`--proxy-memory-max 512Mi`): they run in a cgroup of
   * their own and an OOM kill restarts the proxy (agent/proxy/proxy-cgroup.ts). Undefined = no limit of its own.
   */
  proxyMemoryMaxBytes: number | undefined;
  /**
   * The agent runs in the machine's own network namespace (a real node: the DaemonSet's hostNetwork). Needed for the
   * plaintext steering table there; refused by default so a sandbox mistake cannot steer the machine's traffic.
   */
  hostNetwork: boolean;
  /** Debug log lines. */
  debug: boolean;
}

const USAGE = `usage: agent --node NAME --cgroup DIR [--kubeconfig FILE] [--bpffs-dir DIR] [--health-port N]
             [--metrics-port N|none] [--sockmap true|false] [--resync-seconds N] [--bpf-objects DIR] [--status-socket PATH] [--access-log FILE] [--run-dir DIR] [--proxy-memory-max BYTES] [--allow-root-cgroup] [--host-network] [--debug]
environment: NODE_NAME, KUBECONFIG, NODEMESH_CGROUP, NODEMESH_BPFFS_DIR, NODEMESH_HEALTH_PORT,
             NODEMESH_METRICS_PORT, NODEMESH_SOCKMAP, NODEMESH_RESYNC_SECONDS, NODEMESH_BPF_OBJECTS, NODEMESH_STATUS_SOCKET, NODEMESH_ACCESS_LOG, NODEMESH_PROXY_MEMORY_MAX`;

function parseBool(text: string | undefined, what: string, dflt: boolean): boolean {
  if (text === undefined || text === '') return dflt;
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off)$/i.test(text)) return false;
  throw new AgentError('NM_ERR_AGENT_CONFIG', `${what}="${text}" is not a boolean: use true or false`);
}

function parseInteger(text: string | undefined, what: string, dflt: number, min: number, max: number): number {
  if (text === undefined || text === '') return dflt;
  const n = Number(text);
  if (!Number.isInteger(n) || n < min || n > max) throw new AgentError('NM_ERR_AGENT_CONFIG', `${what}="${text}" must be an integer from ${min} to ${max}`);
  return n;
}

/** `--metrics-port`: a port, `none`, or the default; never the status port (that one is closed to pods). */
function parseMetricsPort(text: string | undefined, healthPort: number): number | undefined {
  if (text !== undefined && /^(none|off)$/i.test(text)) return undefined;
  const port = parseInteger(text, '--metrics-port', DEFAULT_METRICS_PORT, 0, 65535);
  if (port !== 0 && port === healthPort) {
    throw new AgentError('NM_ERR_AGENT_CONFIG', `--metrics-port ${port} is also the --health-port: the metrics port stays open to pods (Prometheus) while the status port is closed to them, so they must differ`);
  }
  return port;
}

/** `--proxy-memory-max`: bytes, or with a Ki/Mi/Gi suffix (as a container's memory limit is written); `none` = no limit. */
export function parseMemorySize(text: string | undefined, what: string): number | undefined {
  if (text === undefined || text === '' || /^(none|off)$/i.test(text)) return undefined;
  const m = /^(\d+)(Ki|Mi|Gi)?$/.exec(text.trim());
  const bytes = m ? Number(m[1]) * (m[2] === 'Gi' ? 2 ** 30 : m[2] === 'Mi' ? 2 ** 20 : m[2] === 'Ki' ? 2 ** 10 : 1) : NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 16 * 2 ** 20) {
    throw new AgentError('NM_ERR_AGENT_CONFIG', `${what}="${text}" is not a memory size of at least 16Mi: use bytes or a Ki/Mi/Gi suffix (e.g. 512Mi), or none`);
  }
  return bytes;
}

/** Parses argv (without node and script) and env into a config; throws NM_ERR_AGENT_CONFIG with the usage on mistakes. */
export function parseAgentConfig(argv: readonly string[], env: NodeJS.ProcessEnv): AgentConfig {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({
      args: [...argv],
      options: {
        node: { type: 'string' },
        kubeconfig: { type: 'string' },
        cgroup: { type: 'string' },
        'bpffs-dir': { type: 'string' },
        'bpf-objects': { type: 'string' },
        'health-port': { type: 'string' },
        'health-host': { type: 'string' },
        'metrics-port': { type: 'string' },
        'status-socket': { type: 'string' },
        'access-log': { type: 'string' },
        'run-dir': { type: 'string' },
        'proxy-memory-max': { type: 'string' },
        sockmap: { type: 'string' },
        'resync-seconds': { type: 'string' },
        'allow-root-cgroup': { type: 'boolean' },
        'host-network': { type: 'boolean' },
        debug: { type: 'boolean' },
      },
      allowPositionals: false,
    }).values;
  } catch (err) {
    throw new AgentError('NM_ERR_AGENT_CONFIG', `${(err as Error).message}\n${USAGE}`);
  }
  const str = (flag: string, envName: string): string | undefined => {
    const v = values[flag];
    return typeof v === 'string' && v !== '' ? v : env[envName] || undefined;
  };
  const nodeName = str('node', 'NODE_NAME');
  if (!nodeName) throw new AgentError('NM_ERR_AGENT_CONFIG', `the node name is missing: give --node or NODE_NAME (the DaemonSet sets it from spec.nodeName)\n${USAGE}`);
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(nodeName) || nodeName.length > 253) {
    throw new AgentError('NM_ERR_AGENT_CONFIG', `--node "${nodeName}" is not a valid Node name (lowercase DNS subdomain)`);
  }
  const cgroupPath = str('cgroup', 'NODEMESH_CGROUP');
  if (!cgroupPath) throw new AgentError('NM_ERR_AGENT_CONFIG', `the cgroup is missing: give --cgroup (the node's cgroup2 directory) or NODEMESH_CGROUP\n${USAGE}`);
  const healthPort = parseInteger(str('health-port', 'NODEMESH_HEALTH_PORT'), '--health-port', DEFAULT_HEALTH_PORT, 0, 65535);
  return {
    nodeName,
    kubeconfig: str('kubeconfig', 'KUBECONFIG'),
    cgroupPath,
    bpffsDir: str('bpffs-dir', 'NODEMESH_BPFFS_DIR') ?? `${DEFAULT_BPFFS_ROOT}/${nodeName}`,
    bpfObjectDir: str('bpf-objects', 'NODEMESH_BPF_OBJECTS'),
    healthPort,
    healthHost: str('health-host', 'NODEMESH_HEALTH_HOST') ?? '0.0.0.0',
    metricsPort: parseMetricsPort(str('metrics-port', 'NODEMESH_METRICS_PORT'), healthPort),
    statusSocket: str('status-socket', 'NODEMESH_STATUS_SOCKET'),
    accessLogFile: str('access-log', 'NODEMESH_ACCESS_LOG'),
    runDir: str('run-dir', 'NODEMESH_RUN_DIR') ?? '/run/nodemesh',
    sockmap: parseBool(str('sockmap', 'NODEMESH_SOCKMAP'), '--sockmap', SOCKMAP_DEFAULT),
    resyncSeconds: parseInteger(str('resync-seconds', 'NODEMESH_RESYNC_SECONDS'), '--resync-seconds', 300, 0, 86400),
    allowRootCgroup: values['allow-root-cgroup'] === true,
    proxyMemoryMaxBytes: parseMemorySize(str('proxy-memory-max', 'NODEMESH_PROXY_MEMORY_MAX'), '--proxy-memory-max'),
    hostNetwork: values['host-network'] === true,
    debug: values.debug === true || env.NODEMESH_DEBUG === '1',
  };
}
