/**
 * Runs a reconciler's workers over its queue: take a key, sync it, forget it on success, retry it with
 * per-key backoff on failure, and sync it again later when the reconciler asks (a deadline to check).
 */
import { ControllerError, ControllerErrorCode } from './errors.ts';
import { describeApiError } from './kube-api.ts';
import type { WorkQueue } from './work-queue.ts';

/** What a sync may ask for besides success. */
export interface SyncResult {
  /** Sync this key again after this long (ms) even without events. */
  requeueAfterMs?: number;
}

/** A level-triggered reconciler: given a key, make the world match the desired state of that object. */
export interface Reconciler {
  /** Short name for log lines (`deployment`, `replicaset`, ...). */
  readonly name: string;
  sync(key: string): Promise<SyncResult | void>;
}

/** Starts `workers` loops; resolves when the queue is shut down and every loop has finished its key. */
export async function runWorkers(opts: { queue: WorkQueue; reconciler: Reconciler; workers: number; log: (line: string) => void }): Promise<void> {
  const { queue, reconciler, log } = opts;
  const loop = async (): Promise<void> => {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      try {
        const result = await reconciler.sync(key);
        queue.forget(key);
        if (result?.requeueAfterMs !== undefined) queue.addAfter(key, result.requeueAfterMs);
      } catch (err) {
        if (err instanceof ControllerError && err.code === ControllerErrorCode.staleCache) {
          // Our own write has not reached the cache yet: look again shortly, this is not a failure.
          queue.addAfter(key, 100);
        } else {
          const delay = queue.addRateLimited(key);
          log(`${reconciler.name} ${key}: sync failed, retry ${queue.numRequeues(key)} in ${delay} ms: ${describeApiError(err)}`);
        }
      } finally {
        queue.done(key);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, opts.workers) }, loop));
}
