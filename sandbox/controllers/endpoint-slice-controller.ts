/**
 * The EndpointSlice controller: for each Service, computeEndpointSlices over the cached pods and the
 * slices it manages, then the writes. Slice creates are remembered until the cache shows them (a
 * generateName create has no precondition to stop a second one); updates carry the resourceVersion.
 */
import type { V1EndpointSlice, V1Node, V1Pod } from '@kubernetes/client-node';
import { ControllerError, ControllerErrorCode } from './errors.ts';
import type { Reconciler } from './controller-runner.ts';
import { computeEndpointSlices, serviceNameLabel, zoneLabel } from './compute-endpoint-slices.ts';
import { byNode, byService, bySelector, labelPairKey, selectByLabels, type Informers } from './informers.ts';
import { isConflict, isNotFound, mergePatchOptions, patchBody, type KubeClients } from './kube-api.ts';
import { matchLabelMap } from './label-selector.ts';
import { keyOf, splitKey } from './object-meta.ts';
import type { WorkQueue } from './work-queue.ts';
import { WriteExpectations } from './write-expectations.ts';

/** EndpointSlice reconciler over Service keys. */
export class EndpointSliceController implements Reconciler {
  readonly name = 'endpointslice';
  private readonly expectations = new WriteExpectations();
  /** Services each pod was last seen to match: a pod whose labels change must update the old ones too. */
  private readonly podServices = new Map<string, string[]>();
  private readonly nodeZones = new Map<string, string | undefined>();
  private readonly informers: Informers;
  private readonly clients: KubeClients;
  private readonly queue: WorkQueue;
  private readonly log: (line: string) => void;

  constructor(deps: { informers: Informers; clients: KubeClients; queue: WorkQueue; log: (line: string) => void }) {
    this.informers = deps.informers;
    this.clients = deps.clients;
    this.queue = deps.queue;
    this.log = deps.log;
    const { informers, queue } = deps;
    informers.services.on((_event, svc) => queue.add(keyOf(svc)));
    informers.endpointSlices.on((event, slice) => {
      this.expectations.observe(slice, event === 'delete');
      const svc = slice.metadata?.labels?.[serviceNameLabel];
      if (svc) queue.add(`${slice.metadata?.namespace}/${svc}`);
    });
    informers.pods.on((event, pod) => this.onPod(event, pod));
    informers.nodes.on((event, node) => this.onNode(event, node));
  }

  private onPod(event: string, pod: V1Pod): void {
    const key = keyOf(pod);
    const now: string[] = [];
    if (event !== 'delete') {
      // Candidates through the selector index (any one shared pair), then the full match.
      const seen = new Set<string>();
      for (const [k, v] of Object.entries(pod.metadata?.labels ?? {})) {
        for (const svc of this.informers.services.byIndex(bySelector, labelPairKey(pod.metadata?.namespace, k, v))) {
          const svcKey = keyOf(svc);
          if (seen.has(svcKey)) continue;
          seen.add(svcKey);
          if (matchLabelMap(svc.spec?.selector ?? {}, pod.metadata?.labels)) now.push(svcKey);
        }
      }
    }
    for (const k of this.podServices.get(key) ?? []) this.queue.add(k);
    for (const k of now) this.queue.add(k);
    if (now.length > 0) this.podServices.set(key, now);
    else this.podServices.delete(key);
  }

  private onNode(event: string, node: V1Node): void {
    // Only a zone change matters to endpoints; resync the Services with pods on that node then.
    const name = node.metadata?.name ?? '';
    const zone = event === 'delete' ? undefined : node.metadata?.labels?.[zoneLabel];
    const known = this.nodeZones.has(name);
    const before = this.nodeZones.get(name);
    if (event === 'delete') this.nodeZones.delete(name);
    else this.nodeZones.set(name, zone);
    if ((!known && zone === undefined) || before === zone) return;
    for (const pod of this.informers.pods.byIndex(byNode, name)) {
      for (const k of this.podServices.get(keyOf(pod)) ?? []) this.queue.add(k);
    }
  }

  async sync(key: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    const pending = this.expectations.pending(key, (k) => {
      const p = splitKey(k);
      return this.informers.endpointSlices.get(p.name, p.namespace);
    });
    if (pending.length > 0) throw new ControllerError(ControllerErrorCode.staleCache, `Service ${key}: waiting for the cache to show EndpointSlices ${pending.slice(0, 3).join(', ')}`);

    const existing = this.informers.endpointSlices.byIndex(byService, key);
    const svc = this.informers.services.get(name, namespace);
    if (!svc) {
      // The Service is gone: its slices go too (the garbage collector would, by ownerReference).
      this.expectations.forgetOwner(key);
      for (const slice of existing) await this.deleteSlice(key, slice);
      if (existing.length > 0) this.log(`endpointslice ${key}: Service deleted, removed ${existing.length} slice(s)`);
      return;
    }
    const nodes = new Map(this.informers.nodes.list().map((n) => [n.metadata?.name ?? '', n]));
    const selector = svc.spec?.selector ?? {};
    const pods = Object.keys(selector).length > 0 ? selectByLabels(this.informers.pods, namespace, selector) : [];
    const changes = computeEndpointSlices(svc, pods, existing, { nodes });
    if (changes.create.length + changes.update.length + changes.delete.length === 0) return;
    try {
      for (const slice of changes.create) {
        const out = await this.clients.discovery.createNamespacedEndpointSlice({ namespace, body: slice });
        this.expectations.expectPresent(key, out);
      }
      for (const slice of changes.update) await this.updateSlice(key, slice, existing);
      for (const slice of changes.delete) await this.deleteSlice(key, slice);
    } catch (err) {
      if (isConflict(err)) throw new ControllerError(ControllerErrorCode.api, `Service ${key}: an EndpointSlice changed under this sync; recomputing`, { cause: err });
      throw err;
    }
    const endpoints = [...changes.create, ...changes.update].reduce((n, s) => n + (s.endpoints?.length ?? 0), 0);
    this.log(`endpointslice ${key}: ${changes.create.length} created, ${changes.update.length} updated, ${changes.delete.length} deleted (${endpoints} endpoints written)`);
  }

  private async updateSlice(key: string, slice: V1EndpointSlice, existing: readonly V1EndpointSlice[]): Promise<void> {
    const before = existing.find((s) => s.metadata?.name === slice.metadata?.name);
    // Merge patch: labels that went away must be sent as null; arrays are replaced whole.
    const labels: Record<string, string | null> = { ...slice.metadata?.labels };
    for (const k of Object.keys(before?.metadata?.labels ?? {})) if (!(k in labels)) labels[k] = null;
    const body = patchBody(
      { metadata: { labels, ownerReferences: slice.metadata?.ownerReferences }, addressType: slice.addressType, ports: slice.ports ?? [], endpoints: slice.endpoints ?? [] },
      slice.metadata?.resourceVersion,
    );
    const out = await this.clients.discovery.patchNamespacedEndpointSlice({ name: slice.metadata?.name ?? '', namespace: slice.metadata?.namespace ?? '', body }, mergePatchOptions);
    this.expectations.expectPresent(key, out);
  }

  private async deleteSlice(key: string, slice: V1EndpointSlice): Promise<void> {
    try {
      await this.clients.discovery.deleteNamespacedEndpointSlice({ name: slice.metadata?.name ?? '', namespace: slice.metadata?.namespace ?? '', body: { preconditions: { uid: slice.metadata?.uid } } });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    this.expectations.expectAbsent(key, keyOf(slice));
  }
}
