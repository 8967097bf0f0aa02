/** The logger the binding reports through; the host process decides where lines go. */

/** Structured log sink: a message and optional fields. */
export interface BpfLogger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
}

/** A logger that drops everything (the default). */
export const silentLogger: BpfLogger = {
  debug() {},
  info() {},
  warn() {},
};
