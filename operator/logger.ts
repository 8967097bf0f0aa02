/** The operator runtime's logger: the process that hosts it decides where lines go (a stream it passes in). */
import type { Writable } from 'node:stream';

/** What every operator runtime module logs through. */
export interface OperatorLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): OperatorLogger;
}

/** A logger writing `time level component msg k=v` lines to `stream`; debug lines only when `debug` is set. */
export function createOperatorLogger(stream: Writable, component: string, opts: { debug?: boolean } = {}): OperatorLogger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>): void => {
    let line = `${new Date().toISOString()} ${level} ${component} ${msg}`;
    for (const [k, v] of Object.entries(fields ?? {})) {
      if (v === undefined) continue;
      line += ` ${k}=${typeof v === 'string' ? (/[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v) : JSON.stringify(v)}`;
    }
    stream.write(line + '\n');
  };
  return {
    debug: (m, f) => {
      if (opts.debug) write('DEBUG', m, f);
    },
    info: (m, f) => write('INFO', m, f),
    warn: (m, f) => write('WARN', m, f),
    error: (m, f) => write('ERROR', m, f),
    child: (c) => createOperatorLogger(stream, `${component}/${c}`, opts),
  };
}

/** A logger that drops everything (unit tests). */
export const silentOperatorLogger: OperatorLogger = {
  debug: () => {},
  info: () => {},
  warn: () => {},
  error: () => {},
  child: () => silentOperatorLogger,
};

/** The message of any thrown value, with the HTTP status and the API server's message when there is one. */
export function describeError(err: unknown): string {
  if (err === null || err === undefined) return String(err);
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown; message?: unknown; cause?: { code?: unknown } };
  const status = typeof e.code === 'number' ? e.code : typeof e.statusCode === 'number' ? e.statusCode : undefined;
  let apiMessage: string | undefined;
  if (typeof e.body === 'string') {
    try {
      apiMessage = (JSON.parse(e.body) as { message?: string }).message;
    } catch {
      apiMessage = e.body.slice(0, 300);
    }
  } else if (e.body && typeof e.body === 'object') {
    apiMessage = (e.body as { message?: string }).message;
  }
  const net = typeof e.cause?.code === 'string' ? ` (${e.cause.code})` : typeof e.code === 'string' ? ` (${e.code})` : '';
  const base = typeof e.message === 'string' ? e.message.split('\n')[0]! : String(err);
  if (status !== undefined) return `HTTP ${status}${apiMessage ? `: ${apiMessage}` : `: ${base.slice(0, 200)}`}`;
  return `${base}${net}`;
}
