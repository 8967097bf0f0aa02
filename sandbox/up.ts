/**
 * `nodemesh sandbox up`: builds the network, cgroups and bpffs directories, starts the detached supervisor,
 * waits until the API server answers and every node is Ready, then creates the requested echo pods.
 * Refuses to build a second sandbox over a live or a dead one.
 */
import { CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, open, readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { ensureBpffs } from './bpffs.ts';
import { createCgroup, ensureCgroupRoot, locateCgroupRoot } from './cgroup.ts';
import { REPO_ROOT, sandboxPaths, type SandboxConfig } from './config.ts';
import { SandboxError } from './errors.ts';
import { sleep } from './exec.ts';
import { httpStatusOf, loadKubeConfig } from './kube.ts';
import { buildTopology, computeTopology, hasOurMarker, listSandboxNetns, type Topology } from './net/topology.ts';
import { isOurProcessAlive, readProcStat, requireRoot } from './process.ts';
import { createState, readState, StateStore, type SandboxState } from './state.ts';
import type { SupervisorReport } from './supervisor-main.ts';

/** Options of `sandbox up`. */
export type UpOptions = { nodes: number; podsPerNode: number; out: (line: string) => void; timeoutMs?: number };

/** The supervisor entry of a state, if any. */
export function supervisorOf(state: SandboxState): { pid: number; startTime: string } | undefined {
  const e = state.entries.find((x) => x.kind === 'process' && x.role === 'supervisor');
  return e && e.kind === 'process' ? { pid: e.pid, startTime: e.startTime } : undefined;
}

/** Whether the instance's supervisor is alive. */
export async function isSupervisorAlive(state: SandboxState | undefined): Promise<boolean> {
  const s = state && supervisorOf(state);
  return s !== undefined && (await isOurProcessAlive(s.pid, s.startTime));
}

/** Throws ALREADY_UP or STALE_STATE when anything of this instance exists. */
export async function assertNothingUp(cfg: SandboxConfig): Promise<void> {
  const paths = sandboxPaths(cfg);
  let state: SandboxState | undefined;
  try {
    state = await readState(paths.state);
  } catch (err) {
    throw new SandboxError('NM_ERR_SANDBOX_STALE_STATE', `${(err as Error).message}. Run \`nodemesh sandbox down\` first.`);
  }
  if (state && (await isSupervisorAlive(state))) {
    throw new SandboxError('NM_ERR_SANDBOX_ALREADY_UP', `a sandbox (instance ${cfg.instance}) is already up (supervisor pid ${supervisorOf(state)?.pid}); see \`nodemesh sandbox status\`, or \`nodemesh sandbox down\` to remove it`);
  }
  if (state) {
    throw new SandboxError('NM_ERR_SANDBOX_STALE_STATE', `a previous sandbox (instance ${cfg.instance}) left ${paths.state} but its supervisor is gone (crash or kill?); run \`nodemesh sandbox down\` to clean it up, then \`up\` again`);
  }
  const left: string[] = [];
  for (const ns of await listSandboxNetns(cfg)) if (await hasOurMarker(cfg, ns)) left.push(`network namespace ${ns}`);
  const cg = await locateCgroupRoot(cfg);
  if (cg && existsSync(cg)) left.push(`cgroup ${cg}`);
  if (existsSync(cfg.bpfDir)) left.push(`bpffs directory ${cfg.bpfDir}`);
  if (left.length) {
    throw new SandboxError('NM_ERR_SANDBOX_STALE_STATE', `leftovers of an earlier sandbox exist without a state file: ${left.join(', ')}; run \`nodemesh sandbox down\` to remove them`);
  }
}

/** Fails before anything is built when the API server's port is taken. */
export async function assertPortFree(port: number): Promise<void> {
  const server = createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => resolve());
    });
  } catch (err) {
    throw new SandboxError('NM_ERR_SANDBOX_PORT_IN_USE', `127.0.0.1:${port}, the sandbox API server's port, is taken (${(err as NodeJS.ErrnoException).code}): another API server or program listens there; stop it, or pick another port with NODEMESH_SANDBOX_API_PORT`);
  } finally {
    await new Promise<void>((r) => server.close(() => r()));
  }
}

/** Builds and starts a sandbox; resolves once nodes are Ready and the requested pods Running. */
export async function upSandbox(cfg: SandboxConfig, o: UpOptions): Promise<{ topology: Topology; kubeconfig: string }> {
  requireRoot('nodemesh sandbox up');
  await assertNothingUp(cfg);
  await assertPortFree(cfg.apiPort);
  const paths = sandboxPaths(cfg);
  const topology = computeTopology(cfg, o.nodes);
  if (!Number.isInteger(o.podsPerNode) || o.podsPerNode < 0 || o.podsPerNode > 50) {
    throw new SandboxError('NM_ERR_SANDBOX_BAD_ARGUMENT', `--pods-per-node ${o.podsPerNode}: give 0 to 50`);
  }
  await mkdir(cfg.stateDir, { recursive: true, mode: 0o700 });
  const store = new StateStore(paths.state, createState(cfg.instance, o.nodes));
  await store.update((s) => s);
  o.out(`building ${o.nodes} node(s): fabric ${topology.fabricNetns}, ${topology.nodes.map((n) => `${n.netns} ${n.fabricAddr}`).join(', ')}`);
  await buildTopology(cfg, topology, store);
  const cgRoot = await ensureCgroupRoot(cfg, store);
  await createCgroup(store, join(cgRoot, 'supervisor'));
  await ensureBpffs(cfg, topology.nodes.map((n) => n.name), store);
  await mkdir(paths.podLogs, { recursive: true });

  const logFd = await open(paths.supervisorLog, 'a', 0o600);
  const child = spawn(process.execPath, [join(REPO_ROOT, 'sandbox/supervisor-main.ts')], {
    detached: true,
    stdio: ['ignore', logFd.fd, logFd.fd],
    env: { ...process.env, NODEMESH_SANDBOX_INSTANCE: cfg.instance, NODEMESH_SANDBOX_API_PORT: String(cfg.apiPort) },
    cwd: REPO_ROOT,
  });
  child.unref();
  await logFd.close();
  const pid = child.pid;
  const st = pid !== undefined ? await readProcStat(pid) : undefined;
  if (pid === undefined || !st) throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `the supervisor did not start; see ${paths.supervisorLog}`);
  await store.record({ kind: 'process', pid, startTime: st.startTime, role: 'supervisor' });
  o.out(`supervisor started (pid ${pid}, log ${paths.supervisorLog}); waiting for the API server and the nodes`);
  await waitForSupervisor(cfg, pid, st.startTime, o.timeoutMs ?? 60_000);
  const kc = loadKubeConfig(paths.hostKubeconfig);
  const core = kc.makeApiClient(CoreV1Api);
  await waitFor(async () => {
    const nodes = await core.listNode();
    const ready = nodes.items.filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
    return ready.length >= o.nodes;
  }, o.timeoutMs ?? 60_000, 'every node to be Ready');
  if (o.podsPerNode > 0) {
    const names: string[] = [];
    for (const n of topology.nodes) {
      for (let j = 1; j <= o.podsPerNode; j++) {
        const name = `echo-${n.index}-${j}`;
        names.push(name);
        await createPod(core, computeEchoPod(name, n.name));
      }
    }
    await waitForPodsReady(core, 'default', names, o.timeoutMs ?? 60_000);
  }
  return { topology, kubeconfig: paths.hostKubeconfig };
}

/** A plain echo pod bound to a node, with a readiness probe so Ready means it answers. */
export function computeEchoPod(name: string, nodeName: string): V1Pod {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'default', labels: { app: 'sandbox-echo', version: 'v1' } },
    spec: {
      nodeName,
      containers: [{
        name: 'echo',
        image: 'nodemesh/echo',
        ports: [{ name: 'http', containerPort: 8080 }],
        readinessProbe: { httpGet: { path: '/healthz', port: 'http' }, periodSeconds: 2, timeoutSeconds: 1 },
      }],
      terminationGracePeriodSeconds: 5,
    },
  };
}

async function createPod(core: CoreV1Api, pod: V1Pod): Promise<void> {
  const namespace = pod.metadata?.namespace ?? 'default';
  try {
    await core.createNamespacedPod({ namespace, body: pod });
  } catch (err) {
    if (httpStatusOf(err) === 404) {
      await core.createNamespace({ body: { metadata: { name: namespace } } }).catch(() => {});
      await core.createNamespacedPod({ namespace, body: pod });
    } else if (httpStatusOf(err) !== 409) throw err;
  }
}

/** Waits until the named pods are Running and Ready. */
export async function waitForPodsReady(core: CoreV1Api, namespace: string, names: string[], timeoutMs: number): Promise<void> {
  await waitFor(async () => {
    const pods = await core.listNamespacedPod({ namespace });
    return names.every((n) => {
      const p = pods.items.find((x) => x.metadata?.name === n);
      return p?.status?.phase === 'Running' && p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True');
    });
  }, timeoutMs, `pods ${names.join(', ')} to be Running and Ready`);
}

/** Polls until `check` is true; the timeout error says what was awaited. */
export async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    await sleep(250);
  }
  throw new SandboxError('NM_ERR_SANDBOX_TIMEOUT', `timed out after ${timeoutMs / 1000}s waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

async function waitForSupervisor(cfg: SandboxConfig, pid: number, startTime: string, timeoutMs: number): Promise<void> {
  const paths = sandboxPaths(cfg);
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let report: SupervisorReport | undefined;
    try {
      report = JSON.parse(await readFile(paths.supervisorStatus, 'utf8')) as SupervisorReport;
    } catch {
      // Not written yet.
    }
    if (report?.pid === pid && report.ready) return;
    if (report?.pid === pid && report.error) throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `the supervisor failed to start: ${report.error}\n${await tail(paths.supervisorLog)}\nrun \`nodemesh sandbox down\` to clean up`);
    if (!(await isOurProcessAlive(pid, startTime))) {
      throw new SandboxError('NM_ERR_SANDBOX_COMMAND_FAILED', `the supervisor exited during start; last lines of ${paths.supervisorLog}:\n${await tail(paths.supervisorLog)}\nrun \`nodemesh sandbox down\` to clean up`);
    }
    await sleep(200);
  }
  throw new SandboxError('NM_ERR_SANDBOX_TIMEOUT', `the supervisor was not ready after ${timeoutMs / 1000}s; see ${paths.supervisorLog}`);
}

/** The last lines of a log file. */
export async function tail(path: string, lines = 15): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).map((l) => `  | ${l}`).join('\n');
  } catch {
    return `  (no log at ${path})`;
  }
}
