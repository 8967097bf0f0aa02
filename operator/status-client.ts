/**
 * Reading a running operator's /status from outside it (sandbox status, tests): over the unix socket it
 * serves next to its TCP health port. Deliberately light: no operator modules are imported.
 */
import { request } from 'node:http';

/** File name of the operator's status socket in the sandbox state directory. */
export const OPERATOR_STATUS_SOCKET = 'operator.sock';

/** Port of the CA signing service (istiod's CA port, for familiarity). */
export const OPERATOR_CA_PORT = 15012;

/** The parts of /status a summary needs (see OperatorStatus in main.ts for the whole document). */
export interface OperatorStatusSummary {
  version: string;
  identity: string;
  leader: boolean;
  leaderIdentity?: string;
  lastReconcileAt?: string;
  lagMs?: number;
  pendingMs: number;
  synced: boolean;
  unhealthyInformers: string[];
  reconcile: { nodes: number; nodeStates: number; lastOutcome?: string; lastError?: string };
  ca: { url?: string; state?: string; issued?: number };
}

/** GET /status over `socketPath`; rejects when nothing answers within `timeoutMs`. */
export function readOperatorStatus(socketPath: string, timeoutMs = 2_000): Promise<OperatorStatusSummary> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/status', timeout: timeoutMs }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(text) as OperatorStatusSummary);
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** One line for `sandbox status`: whether it leads, when it last reconciled, how far behind it is. */
export function formatOperatorStatus(s: OperatorStatusSummary, now = Date.now()): string {
  const role = s.leader ? 'leader' : `follower (leader: ${s.leaderIdentity ?? 'none'})`;
  const last = s.lastReconcileAt ? `last reconcile ${Math.max(0, Math.round((now - Date.parse(s.lastReconcileAt)) / 1000))} s ago (lag ${s.lagMs ?? '?'} ms)` : 'no reconcile yet';
  const pending = s.pendingMs > 0 ? `, changes pending ${s.pendingMs} ms` : '';
  const sync = !s.synced ? ', informers not synced yet' : s.unhealthyInformers.length ? `, failing informers: ${s.unhealthyInformers.join(',')}` : '';
  const outcome = s.reconcile.lastOutcome && s.reconcile.lastOutcome !== 'ok' ? `, last outcome ${s.reconcile.lastOutcome}${s.reconcile.lastError ? `: ${s.reconcile.lastError}` : ''}` : '';
  const ca = s.ca.url ? `CA ${s.ca.url} (${s.ca.issued ?? 0} issued)` : `CA ${s.ca.state ?? 'unknown'}`;
  return `operator: ${role} ${s.identity} v${s.version}; ${last}${pending}${sync}${outcome}; ${s.reconcile.nodeStates} NodeStates for ${s.reconcile.nodes} nodes; ${ca}`;
}
