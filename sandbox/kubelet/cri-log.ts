/**
 * Container log files in the CRI logging format the real kubelet reads
 * (`<RFC 3339 nano time> <stdout|stderr> <F|P> <content>`, one line per record; `P` marks a piece of a
 * longer line that continues in the next record), one file per container run:
 * `<pod log dir>/<container>/<restart count>.log`. The kubelet writes them; the API server's
 * `pods/log` reads them (current run, or the previous one with `previous=true`).
 */

import { join } from 'node:path';

/** Longest record; longer lines are split into `P` records, as container runtimes do (16 KiB). */
export const MAX_RECORD_BYTES = 16 * 1024;

/** One parsed record. */
export interface CriRecord {
  time: string;
  stream: 'stdout' | 'stderr';
  partial: boolean;
  content: string;
}

/** Nanosecond RFC 3339 time of an epoch in nanoseconds (what `kubectl logs --timestamps` prints). */
export function formatNanoTime(epochNs: bigint): string {
  const ms = Number(epochNs / 1_000_000n);
  const nanos = (epochNs % 1_000_000_000n).toString().padStart(9, '0');
  return `${new Date(ms).toISOString().slice(0, 19)}.${nanos}Z`;
}

/** The current time in nanoseconds since the epoch (sub-millisecond from the monotonic clock). */
export function nowEpochNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}

/** One record as a file line. */
export function formatCriRecord(r: CriRecord): string {
  return `${r.time} ${r.stream} ${r.partial ? 'P' : 'F'} ${r.content}\n`;
}

/** Parses one file line (without its newline); undefined for a line that is not a CRI record. */
export function parseCriRecord(line: string): CriRecord | undefined {
  const m = /^(\S+) (stdout|stderr) ([FP]) ?(.*)$/s.exec(line);
  if (!m) return undefined;
  return { time: m[1]!, stream: m[2] as 'stdout' | 'stderr', partial: m[3] === 'P', content: m[4]! };
}

/**
 * Splits one output stream into records: complete lines become `F` records; a line longer than
 * MAX_RECORD_BYTES, or the unterminated tail left when the stream ends, becomes `P` records.
 */
export class CriStreamSplitter {
  private pending = '';
  private readonly stream: 'stdout' | 'stderr';
  private readonly clock: () => bigint;

  constructor(stream: 'stdout' | 'stderr', clock: () => bigint = nowEpochNs) {
    this.stream = stream;
    this.clock = clock;
  }

  /** Records for a chunk of output. */
  push(chunk: string): string {
    let out = '';
    const time = formatNanoTime(this.clock());
    let text = this.pending + chunk;
    let nl: number;
    while ((nl = text.indexOf('\n')) >= 0) {
      out += this.records(text.slice(0, nl), time, false);
      text = text.slice(nl + 1);
    }
    while (Buffer.byteLength(text) > MAX_RECORD_BYTES) {
      const piece = text.slice(0, MAX_RECORD_BYTES);
      out += formatCriRecord({ time, stream: this.stream, partial: true, content: piece });
      text = text.slice(piece.length);
    }
    this.pending = text;
    return out;
  }

  /** The unterminated tail, as a final partial record (the process ended mid-line). */
  flush(): string {
    if (!this.pending) return '';
    const r = formatCriRecord({ time: formatNanoTime(this.clock()), stream: this.stream, partial: true, content: this.pending });
    this.pending = '';
    return r;
  }

  private records(line: string, time: string, partial: boolean): string {
    let out = '';
    let rest = line;
    while (Buffer.byteLength(rest) > MAX_RECORD_BYTES) {
      const piece = rest.slice(0, MAX_RECORD_BYTES);
      out += formatCriRecord({ time, stream: this.stream, partial: true, content: piece });
      rest = rest.slice(piece.length);
    }
    return out + formatCriRecord({ time, stream: this.stream, partial, content: rest });
  }
}

/** The file of one container run. */
export function containerRunLogPath(podLogDir: string, container: string, restartCount: number): string {
  return join(podLogDir, container, `${restartCount}.log`);
}

/** Run numbers of a container's log files, oldest first (file names `<n>.log`). */
export function sortRunFiles(names: string[]): number[] {
  return names
    .map((n) => /^(\d+)\.log$/.exec(n)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => a - b);
}
