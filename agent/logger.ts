/** The agent's line logger: `time level component msg k=v`, written to a stream its host chooses. */
import type { Writable } from 'node:stream';

/** What every agent module logs through. */
export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return /[\s"=]/.test(v) || v === '' ? JSON.stringify(v) : v;
  if (typeof v === 'bigint') return v.toString();
  return JSON.stringify(v);
}

/** A logger writing one line per call to `stream`; debug lines only when `debug` is set. */
export function createLogger(stream: Writable, component: string, opts: { debug?: boolean } = {}): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>): void => {
    let line = `${new Date().toISOString()} ${level} ${component} ${msg}`;
    for (const [k, v] of Object.entries(fields ?? {})) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
    stream.write(`${line}\n`);
  };
  return {
    debug: (m, f) => {
      if (opts.debug) write('DEBUG', m, f);
    },
    info: (m, f) => write('INFO', m, f),
    warn: (m, f) => write('WARN', m, f),
    error: (m, f) => write('ERROR', m, f),
    child: (c) => createLogger(stream, `${component}/${c}`, opts),
  };
}

/** A logger that keeps its lines in memory: for tests that assert what was logged. */
export function createMemoryLogger(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const make = (component: string): Logger => {
    const write = (level: string, msg: string, fields?: Record<string, unknown>): void => {
      let line = `${level} ${component} ${msg}`;
      for (const [k, v] of Object.entries(fields ?? {})) if (v !== undefined) line += ` ${k}=${formatValue(v)}`;
      lines.push(line);
    };
    return { debug: (m, f) => write('DEBUG', m, f), info: (m, f) => write('INFO', m, f), warn: (m, f) => write('WARN', m, f), error: (m, f) => write('ERROR', m, f), child: (c) => make(`${component}/${c}`) };
  };
  return Object.assign(make('agent'), { lines });
}

/** A logger that drops everything. */
export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {}, child: () => silentLogger };
