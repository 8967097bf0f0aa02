/**
 * Defaulting of built-in kinds the way the real server's defaulters fill fields (Pod, pod templates,
 * Deployment, ReplicaSet, Namespace, Secret, EndpointSlice), so objects read back look familiar.
 */

import type { JsonObject } from '../json.ts';
import { asArray, asObject, asString, isObject } from '../json.ts';

function defaultProbe(p: unknown): void {
  if (!isObject(p)) return;
  p['timeoutSeconds'] ??= 1;
  p['periodSeconds'] ??= 10;
  p['successThreshold'] ??= 1;
  p['failureThreshold'] ??= 3;
  const http = asObject(p['httpGet']);
  if (http) {
    http['scheme'] ??= 'HTTP';
    http['path'] ??= '/';
  }
}

function defaultContainer(c: unknown): void {
  if (!isObject(c)) return;
  const image = asString(c['image']) ?? '';
  if (c['imagePullPolicy'] === undefined) {
    const tagged = /:[^/]+$/.test(image) && !image.endsWith(':latest');
    c['imagePullPolicy'] = tagged || image.includes('@') ? 'IfNotPresent' : 'Always';
  }
  c['terminationMessagePath'] ??= '/dev/termination-log';
  c['terminationMessagePolicy'] ??= 'File';
  c['resources'] ??= {};
  for (const p of asArray(c['ports'])) if (isObject(p)) p['protocol'] ??= 'TCP';
  defaultProbe(c['readinessProbe']);
  defaultProbe(c['livenessProbe']);
  defaultProbe(c['startupProbe']);
}

/** Defaults a PodSpec in place (also used for the templates of Deployments and ReplicaSets). */
export function defaultPodSpec(spec: JsonObject): void {
  spec['restartPolicy'] ??= 'Always';
  spec['dnsPolicy'] ??= 'ClusterFirst';
  spec['schedulerName'] ??= 'default-scheduler';
  spec['terminationGracePeriodSeconds'] ??= 30;
  spec['securityContext'] ??= {};
  spec['enableServiceLinks'] ??= true;
  const sa = asString(spec['serviceAccountName']) ?? asString(spec['serviceAccount']) ?? 'default';
  spec['serviceAccountName'] = sa;
  spec['serviceAccount'] = sa;
  for (const c of asArray(spec['containers'])) defaultContainer(c);
  for (const c of asArray(spec['initContainers'])) defaultContainer(c);
}

function qosClass(spec: JsonObject): string {
  let any = false;
  let guaranteed = true;
  for (const c of asArray(spec['containers'])) {
    const r = asObject(asObject(c)?.['resources']);
    const req = asObject(r?.['requests']) ?? {};
    const lim = asObject(r?.['limits']) ?? {};
    if (Object.keys(req).length || Object.keys(lim).length) any = true;
    for (const res of ['cpu', 'memory']) {
      if (lim[res] === undefined || (req[res] !== undefined && req[res] !== lim[res])) guaranteed = false;
    }
  }
  if (!any) return 'BestEffort';
  return guaranteed ? 'Guaranteed' : 'Burstable';
}

function defaultTemplate(spec: JsonObject): void {
  const tpl = asObject(spec['template']);
  const ps = asObject(tpl?.['spec']);
  if (ps) defaultPodSpec(ps);
}

/** Applies the defaults of `kind` in place; `isCreate` also resets status fields a create may not set. */
export function defaultBuiltin(kind: string, obj: JsonObject, isCreate: boolean): void {
  const spec = asObject(obj['spec']);
  const meta = asObject(obj['metadata'])!;
  switch (kind) {
    case 'Pod': {
      const s = spec ?? (obj['spec'] = {});
      defaultPodSpec(s);
      if (isCreate) {
        const status = asObject(obj['status']) ?? {};
        status['phase'] ??= 'Pending';
        status['qosClass'] ??= qosClass(s);
        obj['status'] = status;
      }
      break;
    }
    case 'Deployment': {
      const s = spec ?? (obj['spec'] = {});
      s['replicas'] ??= 1;
      s['revisionHistoryLimit'] ??= 10;
      s['progressDeadlineSeconds'] ??= 600;
      const strategy = asObject(s['strategy']) ?? (s['strategy'] = {});
      strategy['type'] ??= 'RollingUpdate';
      if (strategy['type'] === 'RollingUpdate') {
        const ru = asObject(strategy['rollingUpdate']) ?? (strategy['rollingUpdate'] = {});
        ru['maxUnavailable'] ??= '25%';
        ru['maxSurge'] ??= '25%';
      }
      defaultTemplate(s);
      if (isCreate) obj['status'] = {};
      break;
    }
    case 'ReplicaSet': {
      const s = spec ?? (obj['spec'] = {});
      s['replicas'] ??= 1;
      defaultTemplate(s);
      if (isCreate) obj['status'] = { replicas: 0 };
      break;
    }
    case 'Namespace': {
      const s = spec ?? (obj['spec'] = {});
      s['finalizers'] ??= ['kubernetes'];
      const labels = asObject(meta['labels']) ?? (meta['labels'] = {});
      labels['kubernetes.io/metadata.name'] = asString(meta['name']) ?? '';
      if (isCreate) obj['status'] = { phase: 'Active' };
      break;
    }
    case 'Secret': {
      obj['type'] ??= 'Opaque';
      const sd = asObject(obj['stringData']);
      if (sd) {
        const data = asObject(obj['data']) ?? (obj['data'] = {});
        for (const [k, v] of Object.entries(sd)) data[k] = Buffer.from(String(v)).toString('base64');
        delete obj['stringData'];
      }
      break;
    }
    case 'EndpointSlice': {
      for (const p of asArray(obj['ports'])) if (isObject(p)) p['protocol'] ??= 'TCP';
      break;
    }
    case 'Service':
      if (isCreate) obj['status'] = { loadBalancer: {} };
      break;
    case 'CustomResourceDefinition': {
      const s = spec ?? (obj['spec'] = {});
      s['conversion'] ??= { strategy: 'None' };
      break;
    }
  }
}
