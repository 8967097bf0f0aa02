/**
 * The components the supervisor hosts besides the kubelets: the embedded API server (sandbox/apiserver) and
 * the controllers (sandbox/controllers), with their log lines routed into the supervisor's logger.
 */
import { startControllers, type RunningControllers } from './controllers/index.ts';
import { startApiServer, type ApiServer, type ApiServerOptions } from './apiserver/server.ts';
import type { Logger } from './logger.ts';

/** A running API server. */
export type ApiServerHandle = ApiServer;
/** Running controllers. */
export type ControllersHandle = RunningControllers;

/** Starts the embedded API server, logging through `log`. */
export function startApiServerComponent(opts: Omit<ApiServerOptions, 'logger'>, log: Logger): Promise<ApiServerHandle> {
  return startApiServer({ ...opts, logger: (line) => log.info(line) });
}

/** Starts the scheduler, the deployment/replicaset controllers and the endpointslice controller (the API server collects garbage itself). */
export function startControllersComponent(kubeconfigPath: string, log: Logger): Promise<ControllersHandle> {
  return startControllers({ kubeconfigPath, logger: (line) => log.info(line) });
}
