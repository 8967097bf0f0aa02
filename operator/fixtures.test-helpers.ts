/** Small builders for operator unit tests (not a test file itself: no *.test.ts suffix). */
import type { HTTPRoute } from '../crds/index.ts';

/** A Node. */
export const node = (name: string) => ({ apiVersion: 'v1', kind: 'Node', metadata: { name } });

/** A running pod on a node. */
export const pod = (ns: string, name: string, nodeName: string, labels: Record<string, string>, ip: string, sa = 'default') => ({
  apiVersion: 'v1',
  kind: 'Pod',
  metadata: { name, namespace: ns, uid: `pod-${ns}-${name}`, labels },
  spec: { nodeName, serviceAccountName: sa, containers: [{ name: 'c', image: 'i' }] },
  status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] },
});

/** A ClusterIP Service with one TCP port 80. */
export const service = (ns: string, name: string, selector: Record<string, string>, ip: string) => ({
  apiVersion: 'v1',
  kind: 'Service',
  metadata: { name, namespace: ns },
  spec: { selector, clusterIP: ip, clusterIPs: [ip], ports: [{ name: 'http', port: 80, protocol: 'TCP' }] },
});

/** An HTTPRoute on Service `parent` port 80. */
export const httpRoute = (ns: string, name: string, parent: string, rules: unknown[], generation = 1, created = '2026-11-01T00:00:00Z'): HTTPRoute => ({
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'HTTPRoute',
  metadata: { name, namespace: ns, uid: `route-${ns}-${name}`, generation, creationTimestamp: created as unknown as Date },
  spec: { parentRefs: [{ group: '', kind: 'Service', name: parent, port: 80 }], rules: rules as NonNullable<HTTPRoute['spec']['rules']> },
});
