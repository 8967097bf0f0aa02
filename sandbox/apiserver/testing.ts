/** Test helpers: start a server on an ephemeral port and talk to it (requests and watch streams). */

import type { ApiServer, ApiServerOptions } from './server.ts';
import { startApiServer } from './server.ts';

/** A decoded HTTP answer. */
export interface ApiResponse {
  status: number;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests poke into arbitrary JSON
  body: any;
  headers: Headers;
}

/** One watch event as received. */
export interface WatchEvent {
  type: string;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- tests poke into arbitrary JSON
  object: any;
}

/** A running server plus request helpers. */
export interface TestServer {
  server: ApiServer;
  /** Lines the server logged. */
  logs: string[];
  request(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse>;
  watch(path: string): Promise<WatchStream>;
  close(): Promise<void>;
}

/** An open watch: received events and a way to wait for more. */
export interface WatchStream {
  events: WatchEvent[];
  /** Resolves when the stream has ended (server closed it). */
  ended: Promise<void>;
  waitFor(pred: (events: WatchEvent[]) => boolean, timeoutMs?: number): Promise<void>;
  close(): void;
}

/** Starts a plain-HTTP server (unless opts say otherwise) with quiet logs. */
export async function startTestServer(opts: Partial<ApiServerOptions> = {}): Promise<TestServer> {
  const logs: string[] = [];
  const server = await startApiServer({ tls: false, logger: (l) => logs.push(l), ...opts });
  const auth = { authorization: `Bearer ${server.token}` };
  const request = async (method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<ApiResponse> => {
    const init: RequestInit = { method, headers: { ...auth, ...headers } };
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body);
      (init.headers as Record<string, string>)['content-type'] ??= 'application/json';
    }
    const res = await fetch(server.url + path, init);
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = JSON.parse(text);
    } catch {
      // keep text
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  const watch = async (path: string): Promise<WatchStream> => {
    const ac = new AbortController();
    const res = await fetch(server.url + path, { headers: auth, signal: ac.signal });
    const events: WatchEvent[] = [];
    const waiters = new Set<() => void>();
    const ended = (async () => {
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let buf = '';
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let nl: number;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.trim()) events.push(JSON.parse(line) as WatchEvent);
          }
          for (const w of waiters) w();
        }
      } catch {
        // aborted
      }
      for (const w of waiters) w();
    })();
    return {
      events,
      ended,
      close: () => ac.abort(),
      waitFor: (pred, timeoutMs = 5000) =>
        new Promise<void>((resolve, reject) => {
          if (pred(events)) {
            resolve();
            return;
          }
          const t = setTimeout(() => {
            waiters.delete(check);
            reject(new Error(`timed out waiting for watch events; got ${JSON.stringify(events.map((e) => [e.type, e.object?.metadata?.name]))}`));
          }, timeoutMs);
          const check = (): void => {
            if (pred(events)) {
              clearTimeout(t);
              waiters.delete(check);
              resolve();
            }
          };
          waiters.add(check);
        }),
    };
  };
  return { server, logs, request, watch, close: () => server.close() };
}
