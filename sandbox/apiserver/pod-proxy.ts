/**
 * `pods/proxy`: `/api/v1/namespaces/<ns>/pods/[<scheme>:]<name>[:<port>]/proxy[/<path>][?<query>]` forwards the
 * request (any method but connection upgrades) to the pod's address and port, as the real API server does for
 * `kubectl get --raw`, `kubectl proxy` and `kubectl mesh` reaching the agents. The upstream's status, headers and
 * body come back as they are, streamed, minus hop-by-hop headers; the caller's credentials are not passed on (the
 * API server consumed them).
 *
 * This server never routes anywhere by itself: its host hands it a dialer (`PodProxyDialer`) that opens the byte
 * stream to a pod. The sandbox supervisor's reaches into node network namespaces through unix sockets in its state
 * directory; a server without a dialer, a pod without an IP, or a failed dial is a 503 `Status`, as the real
 * server's "error trying to reach service".
 */

import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import { request as httpRequest } from 'node:http';
import type { Duplex } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { StatusError, badRequest } from './errors.ts';
import type { JsonObject } from './json.ts';
import { asArray, asNumber, asObject, asString } from './json.ts';

/** Where a proxied request goes: the pod (for the dialer's choice of route) and the address and port. */
export interface PodProxyTarget {
  namespace: string;
  name: string;
  /** spec.nodeName (undefined: not scheduled). */
  nodeName: string | undefined;
  /** spec.hostNetwork: the pod's ports are its node's. */
  hostNetwork: boolean;
  /** status.podIP. */
  podIP: string;
  port: number;
  scheme: 'http' | 'https';
}

/**
 * Opens a byte stream to `target` (plain TCP-like; TLS for `https:` targets is layered on top here). Throws (or
 * rejects) with a message saying why there is no way to the pod; that message reaches the client in a 503.
 */
export type PodProxyDialer = (target: PodProxyTarget) => Duplex | Promise<Duplex>;

/** Headers that describe one connection, never forwarded by a proxy (RFC 9110 §7.6.1), plus the caller's credentials. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** How long a dial and the upstream's response headers may take. */
const DIAL_TIMEOUT_MS = 10_000;

/** Splits the `[scheme:]name[:port]` path segment (Kubernetes' SplitSchemeNamePort); undefined when malformed. */
export function parsePodProxyId(id: string): { scheme: 'http' | 'https' | undefined; name: string; port: string | undefined } | undefined {
  const parts = id.split(':');
  let scheme: string | undefined;
  let name: string;
  let port: string | undefined;
  if (parts.length === 1) name = parts[0]!;
  else if (parts.length === 2) [name, port] = parts as [string, string];
  else if (parts.length === 3) [scheme, name, port] = parts as [string, string, string];
  else return undefined;
  if (name === '' || (scheme !== undefined && scheme !== 'http' && scheme !== 'https')) return undefined;
  return { scheme: scheme as 'http' | 'https' | undefined, name, port: port === '' ? undefined : port };
}

/**
 * The target of a proxied request to `pod` (pure): the pod's IP; the port asked for (a number, or a container port's
 * name), else the first declared container port, else the scheme's default. A pod without an IP is a 503.
 */
export function planPodProxyTarget(pod: JsonObject, id: { scheme: 'http' | 'https' | undefined; name: string; port: string | undefined }): PodProxyTarget {
  const meta = asObject(pod['metadata']) ?? {};
  const spec = asObject(pod['spec']) ?? {};
  const status = asObject(pod['status']) ?? {};
  const namespace = asString(meta['namespace']) ?? '';
  const name = asString(meta['name']) ?? id.name;
  const scheme = id.scheme ?? 'http';
  const ports = asArray(spec['containers']).flatMap((c) => asArray(asObject(c)?.['ports']).map((p) => asObject(p) ?? {}));
  let port: number;
  if (id.port === undefined) {
    port = asNumber(ports[0]?.['containerPort']) ?? (scheme === 'https' ? 443 : 80);
  } else if (/^\d+$/.test(id.port)) {
    port = Number(id.port);
    if (port < 1 || port > 65535) throw badRequest(`pods/proxy: port ${id.port} of pod ${namespace}/${name} is out of range 1-65535`);
  } else {
    const named = ports.find((p) => p['name'] === id.port);
    const n = asNumber(named?.['containerPort']);
    if (n === undefined) throw badRequest(`pods/proxy: pod ${namespace}/${name} has no container port named "${id.port}" (ports: ${ports.map((p) => `${asString(p['name']) ?? '-'}=${String(p['containerPort'])}`).join(', ') || 'none'})`);
    port = n;
  }
  const podIP = asString(status['podIP']) ?? '';
  if (podIP === '') {
    throw new StatusError(503, 'ServiceUnavailable', `pod ${namespace}/${name} has no IP address yet (phase ${asString(status['phase']) ?? 'unknown'}): nothing to proxy to`, { name, kind: 'pods' });
  }
  return { namespace, name, nodeName: asString(spec['nodeName']), hostNetwork: spec['hostNetwork'] === true, podIP, port, scheme };
}

/** The headers a proxy sends on (pure): hop-by-hop ones and those the Connection header names removed, no credentials, Host set to the target. */
export function computeUpstreamRequestHeaders(headers: IncomingHttpHeaders, target: Pick<PodProxyTarget, 'podIP' | 'port'>): OutgoingHttpHeaders {
  const named = connectionTokens(headers['connection']);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    const key = k.toLowerCase();
    if (v === undefined || HOP_BY_HOP.has(key) || named.has(key) || key === 'authorization' || key === 'host') continue;
    out[key] = v;
  }
  out['host'] = `${target.podIP.includes(':') ? `[${target.podIP}]` : target.podIP}:${target.port}`;
  return out;
}

/** The upstream's response headers as the client gets them (pure): hop-by-hop ones removed, everything else as sent (Date included). */
export function computeDownstreamResponseHeaders(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const named = connectionTokens(headers['connection']);
  const out: OutgoingHttpHeaders = {};
  for (const [k, v] of Object.entries(headers)) {
    const key = k.toLowerCase();
    if (v === undefined || HOP_BY_HOP.has(key) || named.has(key)) continue;
    out[key] = v;
  }
  return out;
}

function connectionTokens(value: string | string[] | undefined): Set<string> {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return new Set(text.split(',').map((t) => t.trim().toLowerCase()).filter((t) => t !== ''));
}

function unreachable(target: PodProxyTarget, why: string): StatusError {
  return new StatusError(503, 'ServiceUnavailable', `error trying to reach pod ${target.namespace}/${target.name} at ${target.podIP}:${target.port}: ${why}`, { name: target.name, kind: 'pods' });
}

/**
 * Forwards `req` to the pod and streams the answer back. `upstreamPath` is the raw (still percent-encoded) path after
 * `/proxy`, `search` the raw query with its `?`. Errors before the upstream answers become 503 Status answers; after
 * it started answering, a broken stream ends the response abruptly (the client sees a truncated body, as with any proxy).
 */
export async function servePodProxy(req: IncomingMessage, res: ServerResponse, opts: { target: PodProxyTarget; upstreamPath: string; search: string; dialer: PodProxyDialer | undefined }): Promise<void> {
  const { target } = opts;
  if (req.headers['upgrade'] !== undefined) throw badRequest('pods/proxy: connection upgrades (websockets, exec streams) are not supported by this API server');
  if (!opts.dialer) throw unreachable(target, 'this API server has no route into pod networks (it runs without a dialer)');
  let socket: Duplex;
  try {
    socket = await opts.dialer(target);
  } catch (e) {
    throw unreachable(target, (e as Error).message);
  }
  // Pods serve self-signed certificates; the real API server does not verify them either.
  if (target.scheme === 'https') socket = tlsConnect({ socket, rejectUnauthorized: false });
  const path = (opts.upstreamPath === '' ? '/' : opts.upstreamPath) + opts.search;
  await new Promise<void>((resolve, reject) => {
    let answered = false;
    const up = httpRequest({ method: req.method ?? 'GET', path, headers: computeUpstreamRequestHeaders(req.headers, target), createConnection: () => socket, timeout: DIAL_TIMEOUT_MS }, (ur) => {
      answered = true;
      up.setTimeout(0);
      res.writeHead(ur.statusCode ?? 502, ur.statusMessage, computeDownstreamResponseHeaders(ur.headers));
      ur.pipe(res);
      ur.on('error', () => res.destroy());
      ur.on('end', () => resolve());
    });
    up.on('timeout', () => up.destroy(new Error(`no answer within ${DIAL_TIMEOUT_MS / 1000} s`)));
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (answered || res.headersSent) {
        res.destroy();
        resolve();
        return;
      }
      reject(unreachable(target, err.code ? `${err.code} (${err.message})` : err.message));
    });
    // The client went away: stop talking to the pod too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
      resolve();
    });
    req.pipe(up);
  });
}
