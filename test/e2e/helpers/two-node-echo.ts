/**
 * The workload the sandbox mesh tests share: a client pod on node-1 and one echo pod on node-2 behind Service
 * `echo` (port 80 → 8080), an HTTPRoute bound to it and STRICT mTLS for the namespace. Each test adds its own
 * policies after this YAML.
 */

/**
 * YAML for `kubectl apply`: namespace `namespace` (with `annotations`), client pod and service account `client`, the
 * echo pod `echoPod` (default `echo-0`; `echoArgs` are added to its command line), and the HTTPRoute's `routeRules`
 * (YAML under `rules:`, at its indentation; default one rule to the echo Service).
 */
export function twoNodeEchoYaml(opts: { namespace: string; client: string; annotations?: Record<string, string>; echoPod?: string; echoArgs?: string[]; routeRules?: string }): string {
  const { namespace: ns, client } = opts;
  const args = ['--port', '8080', ...(opts.echoArgs ?? [])].map((a) => JSON.stringify(a)).join(', ');
  const rules = opts.routeRules ?? '  - backendRefs: [{name: echo, port: 80}]';
  const annotations = opts.annotations ? `, annotations: {${Object.entries(opts.annotations).map(([k, v]) => `${k}: ${v}`).join(', ')}}` : '';
  return `
apiVersion: v1
kind: Namespace
metadata: {name: ${ns}${annotations}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: ${client}, namespace: ${ns}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: echo, namespace: ${ns}}
---
apiVersion: v1
kind: Pod
metadata: {name: ${client}, namespace: ${ns}, labels: {app: ${client}}}
spec:
  nodeName: node-1
  serviceAccountName: ${client}
  containers: [{name: main, image: nodemesh/echo, args: ["--port", "8080"]}]
---
apiVersion: v1
kind: Pod
metadata: {name: ${opts.echoPod ?? 'echo-0'}, namespace: ${ns}, labels: {app: echo}}
spec:
  nodeName: node-2
  serviceAccountName: echo
  containers:
  - name: echo
    image: nodemesh/echo
    args: [${args}]
    ports: [{name: http, containerPort: 8080}]
    readinessProbe: {httpGet: {path: /ready, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: echo, namespace: ${ns}}
spec:
  selector: {app: echo}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo, namespace: ${ns}}
spec:
  parentRefs: [{group: "", kind: Service, name: echo, port: 80}]
  rules:
${rules}
---
apiVersion: nodemesh.io/v1alpha1
kind: MeshTLSPolicy
metadata: {name: default, namespace: ${ns}}
spec: {mode: STRICT}
`;
}
