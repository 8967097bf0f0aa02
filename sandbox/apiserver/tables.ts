/**
 * Server-side printing: the meta.k8s.io/v1 Table kubectl asks for (`Accept: ...;as=Table`), with the
 * columns the real server prints per kind (pods READY/STATUS/RESTARTS, services CLUSTER-IP/PORT(S), ...)
 * and CRD additionalPrinterColumns evaluated with a small JSONPath.
 */

import type { JsonObject, JsonValue } from './json.ts';
import { asArray, asNumber, asObject, asString, isObject } from './json.ts';
import type { PrinterColumn, ResourceType } from './registry.ts';
import { formatLabelSelector, labelSelectorFromObject } from './selectors.ts';

/** A Table column definition. */
export interface Column {
  name: string;
  type: string;
  format: string;
  description: string;
  priority: number;
}

/** How much of the object each row carries (`includeObject` query parameter). */
export type IncludeObject = 'None' | 'Metadata' | 'Object';

/** Go's duration.HumanDuration, which kubectl shows in AGE columns. */
export function humanDuration(ms: number): string {
  const seconds = Math.floor(ms / 1000);
  if (seconds < -1) return '<invalid>';
  if (seconds < 0) return '0s';
  if (seconds < 120) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 10) {
    const s = seconds % 60;
    return s === 0 ? `${minutes}m` : `${minutes}m${s}s`;
  }
  if (minutes < 180) return `${minutes}m`;
  const hours = Math.floor(seconds / 3600);
  if (hours < 8) {
    const m = minutes % 60;
    return m === 0 ? `${hours}h` : `${hours}h${m}m`;
  }
  if (hours < 48) return `${hours}h`;
  if (hours < 24 * 8) {
    const h = hours % 24;
    return h === 0 ? `${Math.floor(hours / 24)}d` : `${Math.floor(hours / 24)}d${h}h`;
  }
  if (hours < 24 * 365 * 2) return `${Math.floor(hours / 24)}d`;
  if (hours < 24 * 365 * 8) {
    const dy = Math.floor(hours / 24) % 365;
    return dy === 0 ? `${Math.floor(hours / 24 / 365)}y` : `${Math.floor(hours / 24 / 365)}y${dy}d`;
  }
  return `${Math.floor(hours / 24 / 365)}y`;
}

function since(ts: unknown, now: number): string {
  const s = asString(ts);
  if (!s) return '<unknown>';
  const t = Date.parse(s);
  return Number.isNaN(t) ? '<unknown>' : humanDuration(now - t);
}

function col(name: string, type = 'string', priority = 0, format = '', description = ''): Column {
  return { name, type, format, description, priority };
}

const NAME = col('Name', 'string', 0, 'name', 'Name must be unique within a namespace.');
const AGE = col('Age', 'string', 0, '', 'CreationTimestamp is a timestamp representing the server time when this object was created.');

type RowFn = (o: JsonObject, now: number) => JsonValue[];

function meta(o: JsonObject): JsonObject {
  return asObject(o['metadata']) ?? {};
}
function spec(o: JsonObject): JsonObject {
  return asObject(o['spec']) ?? {};
}
function status(o: JsonObject): JsonObject {
  return asObject(o['status']) ?? {};
}
function age(o: JsonObject, now: number): string {
  return since(meta(o)['creationTimestamp'], now);
}

function podStatus(o: JsonObject): { ready: string; reason: string; restarts: number } {
  const st = status(o);
  const containers = asArray(spec(o)['containers']);
  const statuses = asArray(st['containerStatuses']).filter(isObject);
  let reason = asString(st['reason']) ?? asString(st['phase']) ?? 'Unknown';
  let restarts = 0;
  let ready = 0;
  const inits = asArray(st['initContainerStatuses']).filter(isObject);
  let initializing = false;
  inits.forEach((c, i) => {
    restarts += asNumber(c['restartCount']) ?? 0;
    const state = asObject(c['state']) ?? {};
    const term = asObject(state['terminated']);
    if (term && term['exitCode'] === 0) return;
    if (initializing) return;
    initializing = true;
    const waiting = asString(asObject(state['waiting'])?.['reason']);
    if (term) reason = `Init:${asString(term['reason']) ?? `ExitCode:${String(term['exitCode'])}`}`;
    else if (waiting && waiting !== 'PodInitializing') reason = `Init:${waiting}`;
    else reason = `Init:${i}/${asArray(spec(o)['initContainers']).length}`;
  });
  if (!initializing) {
    let hasRunning = false;
    for (const c of statuses) {
      restarts += asNumber(c['restartCount']) ?? 0;
      const state = asObject(c['state']) ?? {};
      const waiting = asString(asObject(state['waiting'])?.['reason']);
      const term = asObject(state['terminated']);
      if (waiting) reason = waiting;
      else if (term) reason = asString(term['reason']) ?? (term['signal'] ? `Signal:${String(term['signal'])}` : `ExitCode:${String(term['exitCode'])}`);
      else if (state['running'] && c['ready'] === true) {
        hasRunning = true;
        ready++;
      } else if (state['running']) hasRunning = true;
    }
    if (reason === 'Completed' && hasRunning) reason = 'Running';
  }
  if (meta(o)['deletionTimestamp']) reason = st['reason'] === 'NodeLost' ? 'Unknown' : 'Terminating';
  return { ready: `${ready}/${containers.length}`, reason, restarts };
}

function servicePorts(o: JsonObject): string {
  const ports = asArray(spec(o)['ports']).filter(isObject);
  if (!ports.length) return '<none>';
  return ports.map((p) => `${String(p['port'])}${p['nodePort'] ? `:${String(p['nodePort'])}` : ''}/${asString(p['protocol']) ?? 'TCP'}`).join(',');
}

function serviceExternal(o: JsonObject): string {
  const s = spec(o);
  const type = asString(s['type']) ?? 'ClusterIP';
  const ext = asArray(s['externalIPs']).map(String);
  if (type === 'ExternalName') return asString(s['externalName']) ?? '<none>';
  if (type === 'LoadBalancer') {
    const ing = asArray(asObject(status(o)['loadBalancer'])?.['ingress'])
      .filter(isObject)
      .map((i) => asString(i['ip']) ?? asString(i['hostname']) ?? '');
    const all = [...ing, ...ext].filter(Boolean);
    return all.length ? all.join(',') : '<pending>';
  }
  return ext.length ? ext.join(',') : '<none>';
}

function containersAndImages(tplSpec: JsonObject): [string, string] {
  const cs = asArray(tplSpec['containers']).filter(isObject);
  return [cs.map((c) => asString(c['name']) ?? '').join(','), cs.map((c) => asString(c['image']) ?? '').join(',')];
}

function selectorString(sel: unknown): string {
  return formatLabelSelector(labelSelectorFromObject(sel));
}

function mapSelector(sel: unknown): string {
  const m = asObject(sel);
  if (!m || Object.keys(m).length === 0) return '<none>';
  return Object.entries(m)
    .map(([k, v]) => `${k}=${String(v)}`)
    .join(',');
}

function nodeStatus(o: JsonObject): string {
  const conds = asArray(status(o)['conditions']).filter(isObject);
  const ready = conds.find((c) => c['type'] === 'Ready');
  let s = ready ? (ready['status'] === 'True' ? 'Ready' : ready['status'] === 'False' ? 'NotReady' : 'Unknown') : 'Unknown';
  if (spec(o)['unschedulable'] === true) s += ',SchedulingDisabled';
  return s;
}

function nodeRoles(o: JsonObject): string {
  const labels = asObject(meta(o)['labels']) ?? {};
  const roles = Object.keys(labels)
    .filter((k) => k.startsWith('node-role.kubernetes.io/'))
    .map((k) => k.slice('node-role.kubernetes.io/'.length))
    .filter(Boolean);
  if (asString(labels['kubernetes.io/role'])) roles.push(asString(labels['kubernetes.io/role'])!);
  return roles.length ? roles.sort().join(',') : '<none>';
}

function nodeAddress(o: JsonObject, type: string): string {
  const a = asArray(status(o)['addresses'])
    .filter(isObject)
    .find((x) => x['type'] === type);
  return asString(a?.['address']) ?? '<none>';
}

function endpointsSummary(addrs: string[], total: number): string {
  if (!addrs.length) return '<none>';
  const shown = addrs.slice(0, 3).join(',');
  return total > 3 ? `${shown} + ${total - 3} more...` : shown;
}

interface Printer {
  columns: Column[];
  row: RowFn;
}

const PRINTERS: Record<string, Printer> = {
  Pod: {
    columns: [
      NAME,
      col('Ready', 'string', 0, '', 'The aggregate readiness state of this pod for accepting traffic.'),
      col('Status', 'string', 0, '', 'The aggregate status of the containers in this pod.'),
      col('Restarts', 'string', 0, '', 'The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.'),
      AGE,
      col('IP', 'string', 1, '', 'IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.'),
      col('Node', 'string', 1, '', 'Name of the Node to which this pod is assigned.'),
      col('Nominated Node', 'string', 1, '', 'Name of the node nominated by the scheduler.'),
      col('Readiness Gates', 'string', 1, '', 'Readiness gates of the pod.'),
    ],
    row: (o, now) => {
      const ps = podStatus(o);
      const gates = asArray(spec(o)['readinessGates']);
      return [
        asString(meta(o)['name']) ?? '',
        ps.ready,
        ps.reason,
        ps.restarts,
        age(o, now),
        asString(status(o)['podIP']) ?? '<none>',
        asString(spec(o)['nodeName']) ?? '<none>',
        asString(status(o)['nominatedNodeName']) ?? '<none>',
        gates.length ? `0/${gates.length}` : '<none>',
      ];
    },
  },
  Node: {
    columns: [
      NAME,
      col('Status', 'string', 0, '', 'The status of the node'),
      col('Roles', 'string', 0, '', 'The roles of the node'),
      AGE,
      col('Version', 'string', 0, '', 'Kubelet Version reported by the node.'),
      col('Internal-IP', 'string', 1, '', 'List of addresses reachable to the node'),
      col('External-IP', 'string', 1, '', 'List of addresses reachable to the node'),
      col('OS-Image', 'string', 1, '', 'OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).'),
      col('Kernel-Version', 'string', 1, '', "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
      col('Container-Runtime', 'string', 1, '', 'Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2).'),
    ],
    row: (o, now) => {
      const info = asObject(status(o)['nodeInfo']) ?? {};
      return [
        asString(meta(o)['name']) ?? '',
        nodeStatus(o),
        nodeRoles(o),
        age(o, now),
        asString(info['kubeletVersion']) ?? '',
        nodeAddress(o, 'InternalIP'),
        nodeAddress(o, 'ExternalIP'),
        asString(info['osImage']) ?? '<unknown>',
        asString(info['kernelVersion']) ?? '<unknown>',
        asString(info['containerRuntimeVersion']) ?? '<unknown>',
      ];
    },
  },
  Service: {
    columns: [
      NAME,
      col('Type', 'string', 0, '', 'The type of the service.'),
      col('Cluster-IP', 'string', 0, '', 'The cluster IP of the service.'),
      col('External-IP', 'string', 0, '', 'The external IP of the service.'),
      col('Port(s)', 'string', 0, '', 'The ports of the service.'),
      AGE,
      col('Selector', 'string', 1, '', 'Route service traffic to pods with label keys and values matching this selector.'),
    ],
    row: (o, now) => [
      asString(meta(o)['name']) ?? '',
      asString(spec(o)['type']) ?? 'ClusterIP',
      asString(spec(o)['clusterIP']) || '<none>',
      serviceExternal(o),
      servicePorts(o),
      age(o, now),
      mapSelector(spec(o)['selector']),
    ],
  },
  Deployment: {
    columns: [
      NAME,
      col('Ready', 'string', 0, '', 'Number of the pod with ready state'),
      col('Up-to-date', 'integer', 0, '', 'Total number of non-terminated pods targeted by this deployment that have the desired template spec.'),
      col('Available', 'integer', 0, '', 'Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.'),
      AGE,
      col('Containers', 'string', 1, '', 'Names of each container in the template.'),
      col('Images', 'string', 1, '', 'Images referenced by each container in the template.'),
      col('Selector', 'string', 1, '', 'Label selector for pods.'),
    ],
    row: (o, now) => {
      const st = status(o);
      const [cn, im] = containersAndImages(asObject(asObject(spec(o)['template'])?.['spec']) ?? {});
      return [
        asString(meta(o)['name']) ?? '',
        `${asNumber(st['readyReplicas']) ?? 0}/${asNumber(spec(o)['replicas']) ?? 0}`,
        asNumber(st['updatedReplicas']) ?? 0,
        asNumber(st['availableReplicas']) ?? 0,
        age(o, now),
        cn,
        im,
        selectorString(spec(o)['selector']),
      ];
    },
  },
  ReplicaSet: {
    columns: [
      NAME,
      col('Desired', 'integer', 0, '', 'Number of desired pods.'),
      col('Current', 'integer', 0, '', 'Number of actual replicas.'),
      col('Ready', 'integer', 0, '', 'The number of ready replicas.'),
      AGE,
      col('Containers', 'string', 1, '', 'Names of each container in the template.'),
      col('Images', 'string', 1, '', 'Images referenced by each container in the template.'),
      col('Selector', 'string', 1, '', 'Label selector for pods.'),
    ],
    row: (o, now) => {
      const st = status(o);
      const [cn, im] = containersAndImages(asObject(asObject(spec(o)['template'])?.['spec']) ?? {});
      return [asString(meta(o)['name']) ?? '', asNumber(spec(o)['replicas']) ?? 0, asNumber(st['replicas']) ?? 0, asNumber(st['readyReplicas']) ?? 0, age(o, now), cn, im, selectorString(spec(o)['selector'])];
    },
  },
  Namespace: {
    columns: [NAME, col('Status', 'string', 0, '', 'The status of the namespace'), AGE],
    row: (o, now) => [asString(meta(o)['name']) ?? '', asString(status(o)['phase']) ?? 'Active', age(o, now)],
  },
  ConfigMap: {
    columns: [NAME, col('Data', 'string'), AGE],
    row: (o, now) => [asString(meta(o)['name']) ?? '', Object.keys(asObject(o['data']) ?? {}).length + Object.keys(asObject(o['binaryData']) ?? {}).length, age(o, now)],
  },
  Secret: {
    columns: [NAME, col('Type', 'string'), col('Data', 'string'), AGE],
    row: (o, now) => [asString(meta(o)['name']) ?? '', asString(o['type']) ?? 'Opaque', Object.keys(asObject(o['data']) ?? {}).length, age(o, now)],
  },
  ServiceAccount: {
    columns: [NAME, col('Secrets', 'string'), AGE],
    row: (o, now) => [asString(meta(o)['name']) ?? '', asArray(o['secrets']).length, age(o, now)],
  },
  Endpoints: {
    columns: [NAME, col('Endpoints', 'string'), AGE],
    row: (o, now) => {
      const addrs: string[] = [];
      for (const s of asArray(o['subsets']).filter(isObject)) {
        const ports = asArray(s['ports']).filter(isObject);
        for (const a of asArray(s['addresses']).filter(isObject)) {
          if (ports.length) for (const p of ports) addrs.push(`${String(a['ip'])}:${String(p['port'])}`);
          else addrs.push(String(a['ip']));
        }
      }
      return [asString(meta(o)['name']) ?? '', endpointsSummary(addrs, addrs.length), age(o, now)];
    },
  },
  EndpointSlice: {
    columns: [NAME, col('AddressType', 'string'), col('Ports', 'string'), col('Endpoints', 'string'), AGE],
    row: (o, now) => {
      const ports = asArray(o['ports'])
        .filter(isObject)
        .map((p) => String(p['port'] ?? ''));
      const addrs = asArray(o['endpoints'])
        .filter(isObject)
        .flatMap((e) => asArray(e['addresses']).map(String));
      return [asString(meta(o)['name']) ?? '', asString(o['addressType']) ?? '', ports.length ? ports.join(',') : '<unset>', endpointsSummary(addrs, addrs.length), age(o, now)];
    },
  },
  Event: {
    columns: [
      col('Last Seen', 'string'),
      col('Type', 'string'),
      col('Reason', 'string'),
      col('Object', 'string'),
      col('Message', 'string'),
      col('Subobject', 'string', 1),
      col('Source', 'string', 1),
      col('First Seen', 'string', 1),
      col('Count', 'string', 1),
      col('Name', 'string', 1, 'name'),
    ],
    row: (o, now) => {
      const inv = asObject(o['involvedObject']) ?? {};
      const last = o['lastTimestamp'] ?? o['eventTime'] ?? meta(o)['creationTimestamp'];
      const src = asObject(o['source']) ?? {};
      return [
        since(last, now),
        asString(o['type']) ?? '',
        asString(o['reason']) ?? '',
        `${(asString(inv['kind']) ?? '').toLowerCase()}/${asString(inv['name']) ?? ''}`,
        asString(o['message']) ?? '',
        asString(inv['fieldPath']) ?? '',
        [asString(src['component']), asString(src['host'])].filter(Boolean).join(', '),
        since(o['firstTimestamp'] ?? o['eventTime'] ?? meta(o)['creationTimestamp'], now),
        asNumber(o['count']) ?? 1,
        asString(meta(o)['name']) ?? '',
      ];
    },
  },
  Lease: {
    columns: [NAME, col('Holder', 'string'), AGE],
    row: (o, now) => [asString(meta(o)['name']) ?? '', asString(spec(o)['holderIdentity']) ?? '', age(o, now)],
  },
  CustomResourceDefinition: {
    columns: [NAME, col('Created At', 'date')],
    row: (o) => [asString(meta(o)['name']) ?? '', asString(meta(o)['creationTimestamp']) ?? ''],
  },
};

/** Evaluates the small JSONPath subset printer columns use: `.a.b`, `[0]`, `[*]`, `[?(@.k=="v")]`. */
export function evalJsonPath(obj: JsonValue, path: string): JsonValue[] {
  let p = path.trim();
  if (p.startsWith('{') && p.endsWith('}')) p = p.slice(1, -1);
  if (p.startsWith('$')) p = p.slice(1);
  const tokens: string[] = [];
  const re = /\.([A-Za-z0-9_\-/]+)|\[\?\(([^)]*)\)\]|\[(\*|-?\d+)\]|\['([^']*)'\]/g;
  let m: RegExpExecArray | null;
  let pos = 0;
  while ((m = re.exec(p))) {
    if (m.index !== pos) return [];
    pos = re.lastIndex;
    if (m[1] !== undefined) tokens.push(`.${m[1]}`);
    else if (m[2] !== undefined) tokens.push(`?${m[2]}`);
    else if (m[3] !== undefined) tokens.push(`[${m[3]}`);
    else if (m[4] !== undefined) tokens.push(`.${m[4]}`);
  }
  if (pos !== p.length) return [];
  let cur: JsonValue[] = [obj];
  for (const t of tokens) {
    const next: JsonValue[] = [];
    for (const v of cur) {
      if (t.startsWith('.')) {
        if (isObject(v) && v[t.slice(1)] !== undefined) next.push(v[t.slice(1)]!);
      } else if (t === '[*') {
        if (Array.isArray(v)) next.push(...v);
        else if (isObject(v)) next.push(...Object.values(v));
      } else if (t.startsWith('[')) {
        const i = Number(t.slice(1));
        if (Array.isArray(v)) {
          const x = v[i < 0 ? v.length + i : i];
          if (x !== undefined) next.push(x);
        }
      } else if (t.startsWith('?')) {
        const f = t.slice(1).match(/^@\.([A-Za-z0-9_.]+)\s*(==|!=)\s*(?:"([^"]*)"|'([^']*)'|(\S+))$/);
        if (!f || !Array.isArray(v)) continue;
        const want = f[3] ?? f[4] ?? f[5] ?? '';
        for (const x of v) {
          const got = evalJsonPath(x, `.${f[1]!}`)[0];
          const gs = got === undefined ? undefined : typeof got === 'string' ? got : JSON.stringify(got);
          if (f[2] === '==' ? gs === want : gs !== want) next.push(x);
        }
      }
    }
    cur = next;
  }
  return cur;
}

function customCell(obj: JsonObject, c: PrinterColumn, now: number): JsonValue {
  const vals = evalJsonPath(obj, c.jsonPath);
  if (vals.length === 0) return c.type === 'date' ? '<unknown>' : null;
  if (c.type === 'date') return since(vals[0], now);
  if (vals.length === 1) {
    const v = vals[0]!;
    if (c.type === 'integer' || c.type === 'number' || c.type === 'boolean') return v;
    return typeof v === 'string' ? v : JSON.stringify(v);
  }
  return vals.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(',');
}

function printerFor(rt: ResourceType): Printer {
  if (rt.custom) {
    const cols = rt.custom.printerColumns;
    if (cols.length === 0) return { columns: [NAME, AGE], row: (o, now) => [asString(meta(o)['name']) ?? '', age(o, now)] };
    return {
      columns: [NAME, ...cols.map((c) => ({ name: c.name, type: c.type, format: c.format ?? '', description: c.description ?? '', priority: c.priority }))],
      row: (o, now) => [asString(meta(o)['name']) ?? '', ...cols.map((c) => customCell(o, c, now))],
    };
  }
  return PRINTERS[rt.kind] ?? { columns: [NAME, AGE], row: (o, now) => [asString(meta(o)['name']) ?? '', age(o, now)] };
}

function rowObject(o: JsonObject, include: IncludeObject): JsonObject | undefined {
  if (include === 'None') return undefined;
  if (include === 'Object') return o;
  return { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: meta(o) };
}

/** Renders objects as a meta.k8s.io/v1 Table. */
export function toTable(rt: ResourceType, objs: JsonObject[], listMeta: JsonObject, include: IncludeObject, withColumns = true): JsonObject {
  const p = printerFor(rt);
  const now = Date.now();
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: listMeta,
    ...(withColumns ? { columnDefinitions: p.columns as unknown as JsonValue } : { columnDefinitions: [] }),
    rows: objs.map((o) => {
      const ro = rowObject(o, include);
      return { cells: p.row(o, now), ...(ro ? { object: ro } : {}) };
    }),
  };
}
