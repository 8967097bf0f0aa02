/**
 * The sandbox's control-plane controllers: scheduler, Deployment, ReplicaSet and EndpointSlice, talking
 * to the API server through a kubeconfig like any controller would. Garbage collection (dependents of a
 * deleted owner) is the API server's, as kube-controller-manager's collector is in a real cluster.
 * Started in order (informers, wait for their first lists, then workers) and stopped in reverse.
 */
import { ControllerError, ControllerErrorCode } from './errors.ts';
import { runWorkers, type Reconciler } from './controller-runner.ts';
import { DeploymentController } from './deployment-controller.ts';
import { EndpointSliceController } from './endpoint-slice-controller.ts';
import { allInformers, makeInformers } from './informers.ts';
import { coreHasResource, describeApiError, makeKubeClients } from './kube-api.ts';
import { ReplicaSetController } from './replica-set-controller.ts';
import { SchedulerController } from './scheduler-controller.ts';
import { WorkQueue } from './work-queue.ts';

/** Errors startControllers may throw, with their codes. */
export { ControllerError, ControllerErrorCode } from './errors.ts';

/** Options of startControllers. */
export interface StartControllersOptions {
  /** Kubeconfig of the API server to control (its current context). */
  kubeconfigPath: string;
  /** Receives one line per notable action or failure; silent when absent. */
  logger?: (line: string) => void;
  /** How long to wait for the informers' first lists before giving up (ms; default 60 s). */
  syncTimeoutMs?: number;
}

/** Running controllers; stop() ends the workers, then the watches. */
export interface RunningControllers {
  stop(): Promise<void>;
}

/** Starts every controller; resolves once the caches are synced and the workers run. */
export async function startControllers(opts: StartControllersOptions): Promise<RunningControllers> {
  const log = opts.logger ?? ((): void => {});
  const clients = makeKubeClients(opts.kubeconfigPath);
  const informers = makeInformers(clients, (line) => log(`controllers: ${line}`));
  const deps = (queue: WorkQueue): { informers: typeof informers; clients: typeof clients; queue: WorkQueue; log: (line: string) => void } => ({ informers, clients, queue, log });

  const queues = { scheduler: new WorkQueue(), replicaSet: new WorkQueue(), deployment: new WorkQueue(), endpointSlice: new WorkQueue() };
  const scheduler = new SchedulerController(deps(queues.scheduler));
  // Workers per controller: the scheduler runs one at a time, as its assumptions need.
  const controllers: Array<{ reconciler: Reconciler; queue: WorkQueue; workers: number }> = [
    { reconciler: scheduler, queue: queues.scheduler, workers: 1 },
    { reconciler: new ReplicaSetController(deps(queues.replicaSet)), queue: queues.replicaSet, workers: 4 },
    { reconciler: new DeploymentController(deps(queues.deployment)), queue: queues.deployment, workers: 4 },
    { reconciler: new EndpointSliceController(deps(queues.endpointSlice)), queue: queues.endpointSlice, workers: 4 },
  ];

  const all = allInformers(informers);
  const stopInformers = async (): Promise<void> => {
    await Promise.all(all.map(({ cache }) => cache.stop()));
  };
  for (const { cache } of all) cache.start();
  const timeoutMs = opts.syncTimeoutMs ?? 60_000;
  let timer: NodeJS.Timeout | undefined;
  const timedOut = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), timeoutMs);
  });
  const synced = await Promise.race([Promise.all(all.map(({ cache }) => cache.synced)).then(() => 'synced' as const), timedOut]);
  clearTimeout(timer);
  if (synced === 'timeout') {
    const missing = all.filter(({ cache }) => !cache.hasSynced()).map(({ name }) => name);
    for (const { queue } of controllers) queue.shutDown();
    await stopInformers();
    clients.close();
    throw new ControllerError(ControllerErrorCode.notSynced, `informers for ${missing.join(', ')} did not finish their first list within ${timeoutMs} ms; is the API server at ${clients.kc.getCurrentCluster()?.server} up and serving those resources?`);
  }

  try {
    scheduler.useBinding = await coreHasResource(clients.core, 'pods/binding');
  } catch (err) {
    log(`controllers: API discovery failed (${describeApiError(err)}); binding pods by setting spec.nodeName`);
    scheduler.useBinding = false;
  }
  if (!scheduler.useBinding) log('controllers: the API server has no pods/binding subresource; binding pods by setting spec.nodeName');

  const workers = controllers.map(({ reconciler, queue, workers: n }) => runWorkers({ queue, reconciler, workers: n, log }));
  log(`controllers: started (${controllers.map((c) => c.reconciler.name).join(', ')})`);

  let stopping: Promise<void> | undefined;
  return {
    stop(): Promise<void> {
      stopping ??= (async () => {
        for (const { queue } of [...controllers].reverse()) queue.shutDown();
        await Promise.all(workers);
        await stopInformers();
        clients.close();
        log('controllers: stopped');
      })();
      return stopping;
    },
  };
}
