/** Small helpers over @kubernetes/client-node for sandbox components: config, status codes, self-restarting informers. */
import { KubeConfig, ListWatch, PatchStrategy, Watch, setHeaderOptions, type KubernetesListObject, type KubernetesObject } from '@kubernetes/client-node';
import { describeError } from './errors.ts';
import type { Logger } from './logger.ts';

/** A KubeConfig loaded from a file. */
export function loadKubeConfig(path: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  return kc;
}

/** The HTTP status of a client-node error (ApiException.code), or undefined for network errors. */
export function httpStatusOf(err: unknown): number | undefined {
  const c = (err as { code?: unknown })?.code;
  return typeof c === 'number' ? c : undefined;
}

/** Options that send a body as a JSON merge patch. */
export const MERGE_PATCH = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** A list+watch cache that restarts itself after errors (client-node's stops on the first one). */
export type ResilientInformer<T extends KubernetesObject> = { list(): readonly T[]; get(name: string, namespace?: string): T | undefined; stop(): Promise<void>; synced: Promise<void> };

/**
 * Starts an informer on `path` (e.g. /api/v1/pods) with optional selectors. `onEvent` is called for add,
 * update and delete; after an error the informer lists again (with back-off) and carries on.
 */
export function startInformer<T extends KubernetesObject>(opts: {
  kc: KubeConfig;
  path: string;
  list: () => Promise<KubernetesListObject<T>>;
  fieldSelector?: string;
  labelSelector?: string;
  onEvent: (type: 'add' | 'update' | 'delete', obj: T) => void;
  log: Logger;
}): ResilientInformer<T> {
  const lw = new ListWatch<T>(opts.path, new Watch(opts.kc), opts.list, false, opts.labelSelector, opts.fieldSelector);
  let stopped = false;
  let backoff = 200;
  let timer: NodeJS.Timeout | undefined;
  let markSynced: () => void = () => {};
  const synced = new Promise<void>((r) => { markSynced = r; });
  lw.on('add', (o) => opts.onEvent('add', o));
  lw.on('update', (o) => opts.onEvent('update', o));
  lw.on('delete', (o) => opts.onEvent('delete', o));
  lw.on('connect', () => { backoff = 200; });
  const begin = (): void => {
    lw.start().then(markSynced, (err: unknown) => restart(err));
  };
  const restart = (err: unknown): void => {
    if (stopped) return;
    opts.log.debug('informer restarting', { path: opts.path, error: describeError(err), backoffMs: backoff });
    timer = setTimeout(begin, backoff);
    backoff = Math.min(backoff * 2, 5000);
  };
  lw.on('error', (err) => restart(err));
  begin();
  return {
    list: () => lw.list(),
    get: (name, namespace) => lw.get(name, namespace),
    synced,
    stop: async () => {
      stopped = true;
      if (timer) clearTimeout(timer);
      await lw.stop();
    },
  };
}
