/**
 * The components the supervisor hosts, loaded by path: the API server (sandbox/apiserver) and the controllers
 * (sandbox/controllers). Their contracts are written here, so the sandbox says clearly when one is missing.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { REPO_ROOT } from './config.ts';
import { SandboxError } from './errors.ts';
import type { Logger } from './logger.ts';

/** Options of startApiServer (sandbox/apiserver/server.ts). */
export type ApiServerOptions = {
  host?: string;
  port?: number;
  unixSocketPath?: string;
  stateDir?: string;
  crdDirs?: string[];
  serviceCIDR?: string;
  logger?: Logger;
};

/** A running API server. */
export type ApiServerHandle = { url: string; caPem: string; kubeconfig(): string; writeKubeconfig(path: string): Promise<void>; close(): Promise<void> };

/** A running set of controllers. */
export type ControllersHandle = { stop(): Promise<void> };

async function load<T>(rel: string, what: string): Promise<T> {
  const path = join(REPO_ROOT, rel);
  if (!existsSync(path)) {
    throw new SandboxError('NM_ERR_SANDBOX_APISERVER_MISSING', `${rel} does not exist: the ${what} is not built yet in this checkout`);
  }
  return (await import(pathToFileURL(path).href)) as T;
}

/** Starts the embedded API server. */
export async function startApiServerComponent(opts: ApiServerOptions): Promise<ApiServerHandle> {
  const mod = await load<{ startApiServer(o: ApiServerOptions): Promise<ApiServerHandle> }>('sandbox/apiserver/server.ts', 'embedded API server');
  return mod.startApiServer(opts);
}

/** Starts the scheduler, the deployment/replicaset controllers and the endpointslice controller. */
export async function startControllersComponent(opts: { kubeconfigPath: string; logger?: (line: string) => void }): Promise<ControllersHandle> {
  const mod = await load<{ startControllers(o: { kubeconfigPath: string; logger?: (line: string) => void }): Promise<ControllersHandle> }>('sandbox/controllers/index.ts', 'controllers');
  return mod.startControllers(opts);
}
