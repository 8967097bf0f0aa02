/** Errors of the node agent: one class, stable codes NM_ERR_AGENT_*, messages that name the object, the field and the likely cause. */

/** Every code the agent raises. */
export type AgentErrorCode =
  | 'NM_ERR_AGENT_CONFIG' // a flag or environment variable is missing or malformed
  | 'NM_ERR_AGENT_CGROUP' // the cgroup to attach to is missing or is the machine's root
  | 'NM_ERR_AGENT_DATAPATH' // loading, attaching or adopting the BPF datapath failed
  | 'NM_ERR_AGENT_RECONCILE' // writing the maps failed (full map, kernel error)
  | 'NM_ERR_AGENT_PLAN' // the cluster state cannot be turned into map entries (id space exhausted)
  | 'NM_ERR_AGENT_HEALTH'; // the health endpoint could not listen

/** An agent error with a stable code. */
export class AgentError extends Error {
  readonly code: AgentErrorCode;

  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(`${code}: ${message}`, options);
    this.name = 'AgentError';
    this.code = code;
  }
}

/** A one-line description of any thrown value, for log fields. */
export function describeError(err: unknown): string {
  if (err instanceof Error) {
    const code = (err as { code?: unknown }).code;
    const body = (err as { body?: unknown }).body;
    const extra = typeof body === 'string' && body.length < 300 ? ` (${body})` : '';
    return err.message.startsWith(String(code)) || code === undefined ? `${err.message}${extra}` : `${String(code)}: ${err.message}${extra}`;
  }
  return String(err);
}
