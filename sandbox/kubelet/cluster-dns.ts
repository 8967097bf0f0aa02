/** Feeds the shared hosts files from cluster-wide Service and Pod watches (one for all kubelets). */
import { CoreV1Api, type KubeConfig, type V1Pod, type V1Service } from '@kubernetes/client-node';
import { startInformer } from '../kube.ts';
import type { Logger } from '../logger.ts';
import type { HostsFiles } from './hosts.ts';

/** Starts the watches; returns a stop function. */
export function startClusterDns(kc: KubeConfig, hosts: HostsFiles, log: Logger): { stop(): Promise<void> } {
  const core = kc.makeApiClient(CoreV1Api);
  const services = startInformer<V1Service>({
    kc, path: '/api/v1/services', list: () => core.listServiceForAllNamespaces(), log,
    onEvent: () => hosts.setServices(services.list().map((s) => ({ name: s.metadata?.name ?? '', namespace: s.metadata?.namespace ?? 'default', clusterIP: s.spec?.clusterIP }))),
  });
  const pods = startInformer<V1Pod>({
    kc, path: '/api/v1/pods', list: () => core.listPodForAllNamespaces(), log,
    onEvent: () => hosts.setPods(pods.list().filter((p) => !p.spec?.hostNetwork).map((p) => ({ name: p.metadata?.name ?? '', namespace: p.metadata?.namespace ?? 'default', ip: p.status?.podIP }))),
  });
  return {
    stop: async () => {
      await services.stop();
      await pods.stop();
      await hosts.close();
    },
  };
}
