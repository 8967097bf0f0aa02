/**
 * One pod on one node: sets up its network namespace, cgroup and hosts files, runs its containers with
 * restarts and probes, reports its status, and tears everything down when the pod is deleted.
 * All changes to a pod go through one queue, so set-up and tear-down never interleave.
 */
import type { CoreV1Api, V1Container, V1Pod } from '@kubernetes/client-node';
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync, type WriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { constants as osConstants } from 'node:os';
import { dirname, join } from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import { REPO_ROOT, type SandboxConfig } from '../config.ts';
import { createCgroup, isCgroupPopulated, killCgroup, removeCgroupTree, signalCgroup } from '../cgroup.ts';
import { describeError } from '../errors.ts';
import { sleep } from '../exec.ts';
import { httpStatusOf, MERGE_PATCH } from '../kube.ts';
import type { Logger } from '../logger.ts';
import { readProcStat } from '../process.ts';
import type { StateStore } from '../state.ts';
import type { PodIpAllocator } from '../net/ipam.ts';
import { computePodNetNames, createPodNetwork, deletePodNetwork, ensureEtcNetnsDir, type NodeNet, type PodNetNames } from '../net/topology.ts';
import { planContainer, type ContainerPlan } from './container-plan.ts';
import { containerRunLogPath, CriStreamSplitter } from './cri-log.ts';
import type { HostsFiles } from './hosts.ts';
import { podWrapperArgv } from './pod-exec.ts';
import { computePodStatus, computeRestartDelayMs, shouldRestart, type ContainerRuntimeState } from './pod-status.ts';
import { runProbe, type ProbeTarget } from './probes.ts';

/** What a pod worker needs from its kubelet. */
export type PodWorkerDeps = {
  cfg: SandboxConfig;
  node: NodeNet;
  store: StateStore;
  /** The node's cgroup; pods get a sub-cgroup each. */
  nodeCgroup: string;
  ipam: PodIpAllocator;
  hosts: HostsFiles;
  core: CoreV1Api;
  log: Logger;
  /** Directory for container output files. */
  podLogDir: string;
  /** Upper bound on any grace period, so `down` and tests never wait minutes. */
  maxGraceSeconds: number;
};

/** A pod's log directory: `<container>.log` (all runs, plain) and `<container>/<run>.log` (CRI format, read by `pods/log`). */
export function computePodLogDir(podLogRoot: string, cfg: SandboxConfig, namespace: string, name: string, uid: string): string {
  return join(podLogRoot, `${namespace}_${name}_${computePodNetNames(cfg, uid).hash}`);
}

/** Dates as Kubernetes writes them (RFC 3339, whole seconds), so reports compare equal when nothing changed. */
function toWireJson(value: unknown): string {
  return JSON.stringify(value, function (this: unknown, key: string, v: unknown) {
    const raw = (this as Record<string, unknown>)[key];
    return raw instanceof Date ? raw.toISOString().replace(/\.\d{3}Z$/, 'Z') : v;
  });
}

/** A pod's lifecycle on its node. */
export class PodWorker {
  readonly uid: string;
  readonly key: string;
  private pod: V1Pod;
  private readonly d: PodWorkerDeps;
  private readonly log: Logger;
  private readonly hostNetwork: boolean;
  readonly names: PodNetNames;
  readonly cgroupPath: string;
  private ip: string | undefined;
  private readonly startTime = new Date();
  private setupError: string | undefined;
  private containers: ContainerRunner[] = [];
  private queue: Promise<void> = Promise.resolve();
  private phase: 'new' | 'running' | 'terminating' | 'gone' = 'new';
  private lastReported = '';
  private statusTimer: NodeJS.Timeout | undefined;
  private readonly logDir: string;
  /** Resolves once the pod is torn down. */
  readonly done: Promise<void>;
  private markDone: () => void = () => {};

  constructor(pod: V1Pod, deps: PodWorkerDeps) {
    this.pod = pod;
    this.d = deps;
    this.uid = pod.metadata?.uid ?? '';
    this.key = `${pod.metadata?.namespace ?? 'default'}/${pod.metadata?.name ?? ''}`;
    this.log = deps.log.child(this.key);
    this.hostNetwork = pod.spec?.hostNetwork === true;
    const names = computePodNetNames(deps.cfg, this.uid);
    this.names = this.hostNetwork ? { ...names, netns: deps.node.netns } : names;
    this.cgroupPath = join(deps.nodeCgroup, `pod-${names.hash}`);
    this.logDir = computePodLogDir(deps.podLogDir, deps.cfg, pod.metadata?.namespace ?? 'default', pod.metadata?.name ?? '', this.uid);
    this.done = new Promise((r) => { this.markDone = r; });
  }

  /** The pod's address, once it has one. */
  get podIp(): string | undefined {
    return this.ip;
  }

  /** The netns, cgroup and address of the pod (for `sandbox exec` and status). */
  describe(): { key: string; uid: string; netns: string; cgroup: string; ip?: string; phase: string; containers: { name: string; pid?: number; restarts: number }[] } {
    return {
      key: this.key, uid: this.uid, netns: this.names.netns, cgroup: this.cgroupPath, ip: this.ip, phase: this.phase,
      containers: this.containers.map((c) => ({ name: c.name, pid: c.pid, restarts: c.rt.restartCount })),
    };
  }

  /** Takes a newer version of the pod object; starts it the first time, terminates it when it is being deleted. */
  update(pod: V1Pod): void {
    if (pod.metadata?.uid !== this.uid) return;
    this.pod = pod;
    if (pod.metadata?.deletionTimestamp) {
      this.terminate(this.graceSeconds(pod), true);
      return;
    }
    if (this.phase === 'new') {
      this.phase = 'running';
      this.enqueue(() => this.setUp());
    }
  }

  /** Stops the pod and removes everything it had; `deleteObject` finishes the API deletion as a kubelet does. */
  terminate(graceSeconds: number, deleteObject: boolean): void {
    if (this.phase === 'terminating' || this.phase === 'gone') return;
    this.phase = 'terminating';
    this.enqueue(() => this.tearDown(graceSeconds, deleteObject));
  }

  private graceSeconds(pod: V1Pod): number {
    const g = pod.metadata?.deletionGracePeriodSeconds ?? pod.spec?.terminationGracePeriodSeconds ?? 30;
    return Math.min(Math.max(g, 0), this.d.maxGraceSeconds);
  }

  private enqueue(step: () => Promise<void>): void {
    this.queue = this.queue.then(step).catch((err: unknown) => this.log.error('pod step failed', { error: describeError(err) }));
  }

  private async setUp(): Promise<void> {
    const d = this.d;
    try {
      await mkdir(this.logDir, { recursive: true });
      await createCgroup(d.store, this.cgroupPath);
      if (this.hostNetwork) {
        this.ip = d.node.fabricAddr;
      } else {
        this.ip = d.ipam.allocate(this.uid);
        await createPodNetwork(d.cfg, d.node, this.names, this.ip, d.store);
        const dir = await ensureEtcNetnsDir(d.store, this.names.netns);
        await d.hosts.register(this.uid, dir, {
          name: this.pod.metadata?.name ?? '', namespace: this.pod.metadata?.namespace ?? 'default', ip: this.ip,
          hostname: this.pod.spec?.hostname, subdomain: this.pod.spec?.subdomain,
        });
      }
      const ctx = { nodeName: d.node.name, podIp: this.ip, hostIp: d.node.fabricAddr, nodeExecPath: process.execPath, repoRoot: REPO_ROOT };
      const specs = this.pod.spec?.containers ?? [];
      const plans = specs.map((c) => planContainer(this.pod, c, ctx));
      for (const p of plans) for (const w of p.warnings) this.log.warn(w);
      this.containers = specs.map((c, i) => new ContainerRunner(this, c, plans[i] as ContainerPlan));
      if (this.phase !== 'running') return;
      for (const c of this.containers) c.start();
      this.log.info('pod started', { ip: this.ip, netns: this.names.netns });
    } catch (err) {
      this.setupError = describeError(err);
      this.log.error('pod set-up failed', { error: this.setupError });
      if (this.containers.length === 0) {
        this.containers = (this.pod.spec?.containers ?? []).map((c) => new ContainerRunner(this, c, undefined));
      }
    }
    this.reportStatus();
  }

  private async tearDown(graceSeconds: number, deleteObject: boolean): Promise<void> {
    const d = this.d;
    for (const c of this.containers) c.stopping();
    if (await isCgroupPopulated(this.cgroupPath)) {
      await signalCgroup(this.cgroupPath, 'SIGTERM');
      const deadline = Date.now() + graceSeconds * 1000;
      while (Date.now() < deadline && (await isCgroupPopulated(this.cgroupPath))) await sleep(50);
    }
    await killCgroup(this.cgroupPath);
    for (const c of this.containers) await c.closeLog();
    if (!this.hostNetwork) {
      d.hosts.unregister(this.uid);
      await deletePodNetwork(this.names, d.store);
      d.ipam.release(this.uid);
    }
    await removeCgroupTree(this.cgroupPath);
    await d.store.forget((e) => (e.kind === 'cgroup' && e.path === this.cgroupPath) || (e.kind === 'process' && e.role.startsWith(`pod:${this.uid}:`)));
    await rm(this.logDir, { recursive: true, force: true });
    if (this.statusTimer) clearTimeout(this.statusTimer);
    this.phase = 'gone';
    if (deleteObject) {
      const ns = this.pod.metadata?.namespace ?? 'default';
      const name = this.pod.metadata?.name ?? '';
      try {
        await d.core.deleteNamespacedPod({ name, namespace: ns, gracePeriodSeconds: 0, body: { preconditions: { uid: this.uid } } });
      } catch (err) {
        const code = httpStatusOf(err);
        if (code !== 404 && code !== 409) this.log.warn('final pod delete failed', { error: describeError(err) });
      }
    }
    this.log.info('pod removed', { ip: this.ip });
    this.markDone();
  }

  /** Schedules a status report (coalesced); containers call it on every change. */
  reportStatus(): void {
    if (this.phase === 'gone' || this.phase === 'terminating' || this.statusTimer) return;
    this.statusTimer = setTimeout(() => {
      this.statusTimer = undefined;
      this.sendStatus().catch((err: unknown) => this.log.warn('status report failed', { error: describeError(err) }));
    }, 50);
  }

  private async sendStatus(): Promise<void> {
    if (this.phase !== 'running') return;
    const status = computePodStatus({
      podIp: this.ip, hostIp: this.d.node.fabricAddr, startTime: this.startTime, now: new Date(),
      containers: this.containers.map((c) => c.rt), previous: this.pod.status?.conditions, setupError: this.setupError,
    });
    const body = toWireJson({ status });
    if (body === this.lastReported) return;
    try {
      const updated = await this.d.core.patchNamespacedPodStatus(
        { name: this.pod.metadata?.name ?? '', namespace: this.pod.metadata?.namespace ?? 'default', body: JSON.parse(body) as object },
        MERGE_PATCH,
      );
      this.lastReported = body;
      if (updated.metadata?.uid === this.uid) this.pod = updated;
    } catch (err) {
      if (httpStatusOf(err) === 404) return;
      this.log.warn('status patch failed, retrying', { error: describeError(err) });
      setTimeout(() => this.reportStatus(), 1000);
    }
  }

  /** Where a container's output goes (all runs, as the processes wrote it). */
  logPath(container: string): string {
    return join(this.logDir, `${container}.log`);
  }

  /** The CRI-format file of one run of a container. */
  runLogPath(container: string, run: number): string {
    return containerRunLogPath(this.logDir, container, run);
  }

  /** The probe target of this pod for a container. */
  probeTarget(c: V1Container, env: Record<string, string>): ProbeTarget {
    return { netns: this.names.netns, cgroupPath: this.cgroupPath, podIp: this.ip ?? '127.0.0.1', ports: c.ports ?? [], env };
  }

  /** The pod's restartPolicy. */
  get restartPolicy(): string {
    return this.pod.spec?.restartPolicy ?? 'Always';
  }

  /** The pod's logger. */
  get logger(): Logger {
    return this.log;
  }

  /** Records a container process in the state (it is also covered by the pod's cgroup). */
  recordProcess(pid: number, startTime: string, container: string): void {
    this.d.store.record({ kind: 'process', pid, startTime, role: `pod:${this.uid}:${container}` }).catch(() => {});
  }

  /** Forgets a container process that exited. */
  forgetProcess(pid: number): void {
    this.d.store.forget((e) => e.kind === 'process' && e.pid === pid && e.role.startsWith(`pod:${this.uid}:`)).catch(() => {});
  }
}

/** One container: its process, restarts with back-off, and probes. */
class ContainerRunner {
  readonly name: string;
  readonly rt: ContainerRuntimeState;
  pid: number | undefined;
  private readonly pod: PodWorker;
  private readonly spec: V1Container;
  private readonly plan: ContainerPlan | undefined;
  private child: ChildProcess | undefined;
  private out: WriteStream | undefined;
  private runOut: WriteStream | undefined;
  private restartTimer: NodeJS.Timeout | undefined;
  private probeTimers: NodeJS.Timeout[] = [];
  private stopped = false;
  private lastStart = 0;

  constructor(pod: PodWorker, spec: V1Container, plan: ContainerPlan | undefined) {
    this.pod = pod;
    this.spec = spec;
    this.plan = plan;
    this.name = spec.name;
    this.rt = { name: spec.name, image: spec.image ?? '', state: 'waiting', reason: 'ContainerCreating', restartCount: 0, ready: false, done: false };
  }

  /** Spawns the container's process inside the pod. */
  start(): void {
    if (this.stopped || !this.plan) return;
    this.out ??= createWriteStream(this.pod.logPath(this.name), { flags: 'a' });
    const argv = podWrapperArgv(this.pod.cgroupPath, this.pod.names.netns, this.plan.argv);
    const child = spawn(argv[0] as string, argv.slice(1), { env: this.plan.env, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    this.lastStart = Date.now();
    child.stdout?.pipe(this.out, { end: false });
    child.stderr?.pipe(this.out, { end: false });
    this.captureRun(child);
    child.on('error', (err) => this.exited(127, `could not start: ${err.message}`));
    child.on('exit', (code, signal) => this.exited(code ?? 128 + (signal ? osConstants.signals[signal] : 0), signal ? `killed by ${signal}` : undefined));
    this.pid = child.pid;
    this.rt.state = 'running';
    this.rt.reason = undefined;
    this.rt.message = undefined;
    this.rt.startedAt = new Date();
    this.rt.ready = !this.spec.readinessProbe;
    const pid = child.pid;
    if (pid !== undefined) {
      readProcStat(pid).then((st) => { if (st && this.pid === pid) this.pod.recordProcess(pid, st.startTime, this.name); }, () => {});
    }
    this.startProbes();
    this.pod.reportStatus();
  }

  /**
   * Writes this run's stdout and stderr as CRI records to `<container>/<restartCount>.log`, keeping the
   * current and the previous run only (what `kubectl logs` and `kubectl logs --previous` read).
   */
  private captureRun(child: ChildProcess): void {
    const run = this.rt.restartCount;
    const path = this.pod.runLogPath(this.name, run);
    try {
      mkdirSync(dirname(path), { recursive: true });
      if (run >= 2) rmSync(this.pod.runLogPath(this.name, run - 2), { force: true });
    } catch (err) {
      this.pod.logger.warn('container log file not prepared', { container: this.name, error: describeError(err) });
      return;
    }
    const out = createWriteStream(path, { flags: 'a' });
    out.on('error', (err) => this.pod.logger.warn('container log write failed', { container: this.name, error: describeError(err) }));
    this.runOut = out;
    let open = 0;
    const follow = (stream: NodeJS.ReadableStream | null, name: 'stdout' | 'stderr'): void => {
      if (!stream) return;
      open++;
      const decoder = new StringDecoder('utf8');
      const splitter = new CriStreamSplitter(name);
      const write = (text: string): void => {
        if (text && !out.writableEnded) out.write(text);
      };
      stream.on('data', (b: Buffer) => write(splitter.push(decoder.write(b))));
      stream.once('close', () => {
        write(splitter.push(decoder.end()) + splitter.flush());
        if (--open === 0 && !out.writableEnded) out.end();
      });
    };
    follow(child.stdout, 'stdout');
    follow(child.stderr, 'stderr');
  }

  private exited(exitCode: number, message: string | undefined): void {
    if (this.rt.state !== 'running' && this.child === undefined) return;
    if (this.pid !== undefined) this.pod.forgetProcess(this.pid);
    this.child = undefined;
    this.pid = undefined;
    this.clearProbes();
    const finishedAt = new Date();
    const reason = exitCode === 0 ? 'Completed' : 'Error';
    this.rt.ready = false;
    if (this.stopped) return;
    this.pod.logger.info('container exited', { container: this.name, exitCode, message });
    if (!shouldRestart(this.pod.restartPolicy, exitCode)) {
      Object.assign(this.rt, { state: 'terminated', exitCode, reason, message, finishedAt, done: true });
      this.pod.reportStatus();
      return;
    }
    // A container that ran for a while starts its back-off afresh, as the kubelet does.
    const ranMs = Date.now() - this.lastStart;
    const delay = ranMs > 60_000 ? 0 : computeRestartDelayMs(this.rt.restartCount);
    this.rt.lastTerminated = { exitCode, reason, startedAt: this.rt.startedAt, finishedAt };
    Object.assign(this.rt, { state: 'waiting', reason: 'CrashLoopBackOff', message: `back-off ${Math.round(delay / 1000)}s restarting failed container ${this.name}`, exitCode: undefined });
    this.pod.reportStatus();
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      this.rt.restartCount++;
      this.start();
    }, delay);
  }

  private startProbes(): void {
    const env = this.plan?.env ?? {};
    const loop = (probe: NonNullable<V1Container['readinessProbe']>, onResult: (ok: boolean, streak: number) => void): void => {
      let streakOk = 0;
      let streakBad = 0;
      const tick = (): void => {
        runProbe(probe, this.pod.probeTarget(this.spec, env)).then((ok) => {
          if (this.stopped || this.child === undefined) return;
          if (ok) { streakOk++; streakBad = 0; } else { streakBad++; streakOk = 0; }
          onResult(ok, ok ? streakOk : streakBad);
          this.probeTimers.push(setTimeout(tick, (probe.periodSeconds ?? 10) * 1000));
        }, () => {});
      };
      this.probeTimers.push(setTimeout(tick, (probe.initialDelaySeconds ?? 0) * 1000));
    };
    const rp = this.spec.readinessProbe;
    if (rp) {
      loop(rp, (ok, streak) => {
        const next = ok ? (streak >= (rp.successThreshold ?? 1) ? true : this.rt.ready) : streak >= (rp.failureThreshold ?? 3) ? false : this.rt.ready;
        if (next !== this.rt.ready) {
          this.rt.ready = next;
          this.pod.reportStatus();
        }
      });
    }
    const lp = this.spec.livenessProbe;
    if (lp) {
      loop(lp, (ok, streak) => {
        if (!ok && streak >= (lp.failureThreshold ?? 3) && this.pid !== undefined) {
          this.pod.logger.info('liveness probe failed, killing container', { container: this.name });
          try {
            process.kill(-this.pid, 'SIGKILL');
          } catch {
            // Already exited.
          }
        }
      });
    }
  }

  private clearProbes(): void {
    for (const t of this.probeTimers) clearTimeout(t);
    this.probeTimers = [];
  }

  /** Marks the container as stopping: no restarts, no probes (the pod kills the processes through its cgroup). */
  stopping(): void {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.clearProbes();
  }

  /** Closes the output file. */
  closeLog(): Promise<void> {
    const out = this.out;
    const runOut = this.runOut;
    this.out = undefined;
    this.runOut = undefined;
    const end = (s: WriteStream | undefined): Promise<void> => new Promise((r) => (s && !s.writableEnded ? s.end(() => r()) : r()));
    return Promise.all([end(out), end(runOut)]).then(() => {});
  }
}

