/** Joins metrics and the access log into the one TelemetrySink the agent hands to the proxy. */
import type { TelemetrySink } from '../../l7proxy/telemetry/records.ts';
import type { AccessLogWriter } from './access-log.ts';
import { recordConnectionClosed, recordConnectionOpened, recordRequest, type MeshMetrics } from './mesh-metrics.ts';

/** A sink that counts every record and logs those of opted-in namespaces; errors are swallowed (telemetry never fails a request). */
export function createTelemetrySink(metrics: MeshMetrics, accessLog?: AccessLogWriter, onError?: (err: unknown) => void): TelemetrySink {
  const guard = (fn: () => void): void => {
    try {
      fn();
    } catch (e) {
      onError?.(e);
    }
  };
  return {
    connectionOpened: (r) => guard(() => recordConnectionOpened(metrics, r)),
    connectionClosed: (r) => guard(() => {
      recordConnectionClosed(metrics, r);
      accessLog?.logConnection(r);
    }),
    requestFinished: (r) => guard(() => {
      recordRequest(metrics, r);
      accessLog?.logRequest(r);
    }),
  };
}
