/**
 * Cluster DNS by hosts files, until the datapath brings a UDP ClusterIP DNS service: every pod namespace has
 * /etc/netns/<netns>/hosts (bind-mounted over /etc/hosts by `ip netns exec`) naming every service and pod.
 * Files are rewritten in place, never renamed over, because a running pod sees the bind-mounted inode.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../logger.ts';

/** The cluster domain. */
export const CLUSTER_DOMAIN = 'cluster.local';
/** Where the cluster DNS service will live once the datapath serves it; glibc only asks it for names the hosts file lacks. */
export const CLUSTER_DNS_IP = '10.96.0.10';

/** A service as the hosts file needs it. */
export type HostsService = { name: string; namespace: string; clusterIP?: string };
/** A pod as the hosts file needs it. */
export type HostsPod = { name: string; namespace: string; ip?: string; hostname?: string; subdomain?: string };

/** `10.244.1.5` → `10-244-1-5`, the Kubernetes pod DNS label. */
export function dashedIp(ip: string): string {
  return ip.replace(/\./g, '-');
}

/**
 * The hosts file of one pod: itself, every service with a ClusterIP (`<svc>.<ns>.svc.cluster.local`,
 * `<svc>.<ns>.svc`, `<svc>.<ns>`, and `<svc>` in its own namespace), every pod with an address
 * (`<a-b-c-d>.<ns>.pod.cluster.local` and the sandbox's `<pod>.<ns>.pod.cluster.local`). Sorted, so the
 * text only changes when the cluster does.
 */
export function renderHostsFile(self: HostsPod, services: HostsService[], pods: HostsPod[]): string {
  const d = CLUSTER_DOMAIN;
  const lines = [
    '# Written by the nodemesh sandbox kubelet: cluster DNS as a hosts file. Rewritten when services or pods change.',
    '127.0.0.1\tlocalhost',
  ];
  if (self.ip) {
    const names = [self.hostname ?? self.name];
    if (self.hostname && self.subdomain) names.push(`${self.hostname}.${self.subdomain}.${self.namespace}.svc.${d}`);
    lines.push(`${self.ip}\t${names.join(' ')}`);
  }
  lines.push('# services');
  const svcs = services.filter((s) => s.clusterIP && s.clusterIP !== 'None').sort(byNsName);
  for (const s of svcs) {
    const names = [`${s.name}.${s.namespace}.svc.${d}`, `${s.name}.${s.namespace}.svc`, `${s.name}.${s.namespace}`];
    if (s.namespace === self.namespace) names.push(s.name);
    lines.push(`${s.clusterIP}\t${names.join(' ')}`);
  }
  lines.push('# pods');
  for (const p of pods.filter((x) => x.ip).sort(byNsName)) {
    lines.push(`${p.ip}\t${dashedIp(p.ip as string)}.${p.namespace}.pod.${d} ${p.name}.${p.namespace}.pod.${d}`);
  }
  return lines.join('\n') + '\n';
}

/** resolv.conf of a pod: the future cluster DNS, Kubernetes search path, and quick failure while it does not exist yet. */
export function renderResolvConf(namespace: string): string {
  return [
    '# Written by the nodemesh sandbox kubelet. Names are served from /etc/hosts until the cluster DNS service exists.',
    `search ${namespace}.svc.${CLUSTER_DOMAIN} svc.${CLUSTER_DOMAIN} ${CLUSTER_DOMAIN}`,
    `nameserver ${CLUSTER_DNS_IP}`,
    'options ndots:5 timeout:1 attempts:1',
  ].join('\n') + '\n';
}

function byNsName(a: { namespace: string; name: string }, b: { namespace: string; name: string }): number {
  return a.namespace.localeCompare(b.namespace) || a.name.localeCompare(b.name);
}

/**
 * Keeps the hosts files of every pod of the sandbox (all kubelets share one) in step with services and pods.
 * Writes are coalesced: many changes in a burst cause one pass.
 */
export class HostsFiles {
  private services: HostsService[] = [];
  private pods: HostsPod[] = [];
  private readonly registered = new Map<string, { dir: string; self: HostsPod }>();
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> = Promise.resolve();
  private readonly log: Logger;

  constructor(log: Logger) {
    this.log = log;
  }

  /** Replaces the known services (from an informer's cache). */
  setServices(services: HostsService[]): void {
    this.services = services;
    this.schedule();
  }

  /** Replaces the known pods (from an informer's cache). */
  setPods(pods: HostsPod[]): void {
    this.pods = pods;
    this.schedule();
  }

  /** Writes a pod's hosts and resolv.conf now and keeps them current; `dir` is its /etc/netns directory. */
  async register(key: string, dir: string, self: HostsPod): Promise<void> {
    this.registered.set(key, { dir, self });
    await this.writeOne(dir, self);
    await writeFile(join(dir, 'resolv.conf'), renderResolvConf(self.namespace));
  }

  /** Stops keeping a pod's files (they go with its /etc/netns directory). */
  unregister(key: string): void {
    this.registered.delete(key);
  }

  /** Waits for pending writes and stops. */
  async close(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.running = this.running.then(() => this.writeAll());
    }, 100);
  }

  private async writeAll(): Promise<void> {
    for (const { dir, self } of [...this.registered.values()]) await this.writeOne(dir, self);
  }

  private async writeOne(dir: string, self: HostsPod): Promise<void> {
    const path = join(dir, 'hosts');
    const text = renderHostsFile(self, this.services, this.pods);
    try {
      if ((await readFile(path, 'utf8').catch(() => '')) === text) return;
      await writeFile(path, text);
    } catch (err) {
      // The pod may have been deleted meanwhile; its directory is gone and so is the need.
      this.log.debug('hosts file not written', { path, error: (err as Error).message });
    }
  }
}
