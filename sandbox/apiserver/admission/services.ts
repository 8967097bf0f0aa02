/**
 * Service admission: field defaults (type, sessionAffinity, port protocol/targetPort, IP families),
 * ClusterIP and NodePort allocation on create and update, and release of what a commit gave up.
 */

import type { FieldError } from '../errors.ts';
import { fieldForbidden, fieldInvalid } from '../errors.ts';
import type { JsonObject } from '../json.ts';
import { asArray, asNumber, asObject, asString, isObject } from '../json.ts';
import type { StoreEvent } from '../store.ts';
import { AllocationError, ClusterIpAllocator, NodePortAllocator } from './service-ips.ts';

/** What an admission step allocated, so a failed or dry-run write can give it back. */
export interface AdmissionResult {
  errors: FieldError[];
  rollback: () => void;
}

function goStrings(values: string[]): string {
  return `[]string{${values.map((v) => JSON.stringify(v)).join(', ')}}`;
}

function needsNodePorts(type: string): boolean {
  return type === 'NodePort' || type === 'LoadBalancer';
}

function heldIPs(svc: JsonObject | undefined): string[] {
  const spec = asObject(svc?.['spec']);
  return asArray(spec?.['clusterIPs'])
    .map(String)
    .filter((ip) => ip !== 'None' && ip !== '');
}

function heldPorts(svc: JsonObject | undefined): number[] {
  const spec = asObject(svc?.['spec']);
  return asArray(spec?.['ports'])
    .map((p) => asNumber(asObject(p)?.['nodePort']))
    .filter((n): n is number => !!n);
}

/** The ClusterIP and NodePort state of the server, kept in step with stored Services. */
export class ServiceAllocations {
  readonly ips: ClusterIpAllocator;
  readonly ports: NodePortAllocator;

  constructor(serviceCIDR: string, nodePortRange: [number, number]) {
    this.ips = new ClusterIpAllocator(serviceCIDR);
    this.ports = new NodePortAllocator(nodePortRange);
  }

  /** Defaults and allocates in place for a Service being created (old undefined) or updated. */
  admit(svc: JsonObject, old: JsonObject | undefined): AdmissionResult {
    const errors: FieldError[] = [];
    const gotIPs: string[] = [];
    const gotPorts: number[] = [];
    const rollback = (): void => {
      for (const ip of gotIPs) this.ips.release(ip);
      for (const p of gotPorts) this.ports.release(p);
    };
    const spec = isObject(svc['spec']) ? svc['spec'] : (svc['spec'] = {});
    const oldSpec = asObject(old?.['spec']);
    const type = asString(spec['type']) ?? 'ClusterIP';
    spec['type'] = type;
    if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(type)) {
      errors.push({ type: 'NotSupported', field: 'spec.type', message: `Unsupported value: ${JSON.stringify(type)}: supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort"` });
      return { errors, rollback };
    }
    spec['sessionAffinity'] ??= 'None';
    const ports = asArray(spec['ports']);
    ports.forEach((p, i) => {
      if (!isObject(p)) return;
      p['protocol'] ??= 'TCP';
      const port = asNumber(p['port']);
      if (port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) {
        errors.push(fieldInvalid(`spec.ports[${i}].port`, p['port'] ?? 0, 'must be between 1 and 65535, inclusive'));
      }
      if (p['targetPort'] === undefined && port !== undefined) p['targetPort'] = port;
      if (ports.length > 1 && !p['name']) errors.push({ type: 'Required', field: `spec.ports[${i}].name`, message: 'Required value' });
    });
    if (type === 'ExternalName') {
      if (spec['clusterIP'] && spec['clusterIP'] !== '' && spec['clusterIP'] !== oldSpec?.['clusterIP']) {
        errors.push(fieldForbidden('spec.clusterIP', 'may not be set for ExternalName services'));
      }
      delete spec['clusterIP'];
      delete spec['clusterIPs'];
      return { errors, rollback };
    }
    if (type !== 'ExternalName') {
      spec['internalTrafficPolicy'] ??= 'Cluster';
    }
    if (needsNodePorts(type)) spec['externalTrafficPolicy'] ??= 'Cluster';
    if (type === 'LoadBalancer') spec['allocateLoadBalancerNodePorts'] ??= true;

    // ClusterIP: keep what the old object holds (a PUT or an apply that omits it keeps the address).
    const oldIP = asString(oldSpec?.['clusterIP']);
    let requested = asString(spec['clusterIP']) ?? '';
    const requestedList = asArray(spec['clusterIPs']).map(String);
    if (!requested && requestedList[0]) requested = requestedList[0];
    if (requestedList[0] && requested && requestedList[0] !== requested) {
      errors.push(fieldInvalid('spec.clusterIPs[0]', requestedList[0], 'must match `clusterIP` when both are specified'));
      return { errors, rollback };
    }
    if (oldIP && oldSpec?.['type'] !== 'ExternalName') {
      if (!requested) requested = oldIP;
      if (requested !== oldIP) {
        errors.push(fieldInvalid('spec.clusterIP', requested, 'field is immutable'));
        return { errors, rollback };
      }
      spec['clusterIP'] = oldIP;
      spec['clusterIPs'] = asArray(oldSpec?.['clusterIPs']).length ? asArray(oldSpec?.['clusterIPs']) : [oldIP];
    } else if (requested === 'None') {
      spec['clusterIP'] = 'None';
      spec['clusterIPs'] = ['None'];
    } else {
      try {
        const ip = this.ips.allocate(requested || undefined);
        gotIPs.push(ip);
        spec['clusterIP'] = ip;
        spec['clusterIPs'] = [ip];
      } catch (e) {
        if (!(e instanceof AllocationError)) throw e;
        errors.push({ type: 'Invalid', field: 'spec.clusterIPs', message: `Invalid value: ${goStrings([requested])}: ${e.message}` });
        return { errors, rollback };
      }
    }
    spec['ipFamilies'] ??= ['IPv4'];
    spec['ipFamilyPolicy'] ??= 'SingleStack';

    // NodePorts.
    const oldPorts = asArray(oldSpec?.['ports']).filter(isObject);
    const oldHeld = new Set(needsNodePorts(asString(oldSpec?.['type']) ?? '') ? heldPorts(old) : []);
    if (!needsNodePorts(type)) {
      // Changing away from NodePort drops the node ports, as the real server does when they were unchanged.
      ports.forEach((p, i) => {
        if (!isObject(p)) return;
        const np = asNumber(p['nodePort']);
        if (np && !oldHeld.has(np)) errors.push(fieldForbidden(`spec.ports[${i}].nodePort`, `may not be used when \`type\` is '${type}'`));
        delete p['nodePort'];
      });
      if (errors.length) rollback();
      return { errors, rollback };
    }
    const usedHere = new Set<number>();
    ports.forEach((p, i) => {
      if (!isObject(p)) return;
      let np = asNumber(p['nodePort']) ?? 0;
      if (!np) {
        const match = oldPorts.find((o) => o['port'] === p['port'] && (o['protocol'] ?? 'TCP') === p['protocol']);
        const reuse = asNumber(match?.['nodePort']);
        if (reuse && oldHeld.has(reuse) && !usedHere.has(reuse)) np = reuse;
      }
      if (np && oldHeld.has(np)) {
        p['nodePort'] = np;
        usedHere.add(np);
        return;
      }
      if (np && usedHere.has(np)) {
        // Same node port for another protocol of the same service is allowed.
        p['nodePort'] = np;
        return;
      }
      try {
        const got = this.ports.allocate(np || undefined);
        gotPorts.push(got);
        usedHere.add(got);
        p['nodePort'] = got;
      } catch (e) {
        if (!(e instanceof AllocationError)) throw e;
        errors.push(fieldInvalid(`spec.ports[${i}].nodePort`, np, e.message));
      }
    });
    if (errors.length) rollback();
    return { errors, rollback };
  }

  /** Releases what a committed change gave up (called for every store event on services). */
  observe(ev: StoreEvent): void {
    if (ev.type === 'ADDED') {
      // Objects created outside admit (a later file-backed store replaying its data) are marked here.
      for (const ip of heldIPs(ev.object)) this.ips.mark(ip);
      for (const port of heldPorts(ev.object)) this.ports.mark(port);
      return;
    }
    const keepIPs = ev.type === 'DELETED' ? new Set<string>() : new Set(heldIPs(ev.object));
    const keepPorts = ev.type === 'DELETED' ? new Set<number>() : new Set(heldPorts(ev.object));
    for (const ip of heldIPs(ev.previous)) if (!keepIPs.has(ip)) this.ips.release(ip);
    for (const p of heldPorts(ev.previous)) if (!keepPorts.has(p)) this.ports.release(p);
  }
}
