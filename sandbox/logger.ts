/** A small line logger for sandbox components: the process that hosts them decides where lines go. */
import type { Writable } from 'node:stream';

/** What every sandbox component logs through. */
export type Logger = {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(component: string): Logger;
};

/** A logger writing `time level component msg k=v` lines to a stream; debug lines only when `debug` is set. */
export function createStreamLogger(stream: Writable, component: string, opts: { debug?: boolean } = {}): Logger {
  const write = (level: string, msg: string, fields?: Record<string, unknown>): void => {
    let line = `${new Date().toISOString()} ${level} ${component} ${msg}`;
    for (const [k, v] of Object.entries(fields ?? {})) {
      line += ` ${k}=${typeof v === 'string' ? (/\s/.test(v) ? JSON.stringify(v) : v) : JSON.stringify(v)}`;
    }
    stream.write(line + '\n');
  };
  return {
    debug: (m, f) => { if (opts.debug) write('DEBUG', m, f); },
    info: (m, f) => write('INFO', m, f),
    warn: (m, f) => write('WARN', m, f),
    error: (m, f) => write('ERROR', m, f),
    child: (c) => createStreamLogger(stream, `${component}/${c}`, opts),
  };
}

/** A logger that drops everything (tests, quiet commands). */
export const silentLogger: Logger = {
  debug: () => {}, info: () => {}, warn: () => {}, error: () => {}, child: () => silentLogger,
};
