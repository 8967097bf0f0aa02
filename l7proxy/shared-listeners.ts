/**
 * Listening sockets a proxy worker takes from its primary instead of binding by port (see listen-socket.ts for why:
 * SO_REUSEPORT, so a new proxy process can bind next to the old one during a graceful restart). The pool opens them
 * and tells each worker at init; every listener of the worker (outbound, HBONE, plaintext inbound) asks here with
 * the address it would have bound, and listens on the primary's descriptor when there is one.
 */

/** `host:port` → descriptor in the primary (the cluster module serves it to the worker). */
let shared: ReadonlyMap<string, number> = new Map();

const keyOf = (host: string, port: number): string => `${host}:${port}`;

/** Set by the worker at init (l7proxy/workers.ts). */
export function setSharedListeners(byAddress: Record<string, number> | undefined): void {
  shared = new Map(Object.entries(byAddress ?? {}));
}

/** What to pass to `server.listen` for `host:port`: the primary's socket when it opened one, else the address. */
export function listenOptionsFor(host: string, port: number): { fd: number } | { host: string; port: number } {
  const fd = shared.get(keyOf(host, port));
  return fd !== undefined ? { fd } : { host, port };
}

/** The key the pool uses for an address. */
export function sharedListenerKey(host: string, port: number): string {
  return keyOf(host, port);
}
