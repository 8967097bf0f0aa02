/**
 * A local OTLP/HTTP trace receiver: POST /v1/traces (protobuf or JSON, optionally gzip), one JSON line per
 * span appended to a file, and the spans kept in memory for tests. Not a collector: no auth, no retries.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { gunzipSync } from 'node:zlib';
import { decodeTraceRequestJson, decodeTraceRequestProtobuf, type DecodedSpan } from './decode-trace-request.ts';
import { OtlpReceiverError } from './errors.ts';

/** Options of startOtlpReceiver. */
export type OtlpReceiverOptions = {
  /** Listen address; default 127.0.0.1 (the sandbox passes a node-fabric address). */
  host?: string;
  /** Port; default 0 (ephemeral). 4318 is the OTLP/HTTP convention. */
  port?: number;
  /** When set, every span is appended to this file as one JSON line (DecodedSpan). */
  outFile?: string;
  /** Largest accepted request body in bytes (after gunzip); default 16 MiB, above it → 413. */
  maxBodyBytes?: number;
  /** Spans kept in memory for `spans`/`waitForSpans`; oldest dropped first; default 100000. */
  maxSpansInMemory?: number;
  /** Where the receiver reports bad requests; default: nowhere. */
  log?: (line: string) => void;
};

/** A running receiver. */
export type OtlpReceiver = {
  /** Base URL, e.g. http://127.0.0.1:4318 (the exporter's endpoint is `${url}/v1/traces`). */
  url: string;
  tracesUrl: string;
  port: number;
  /** Spans received so far, in arrival order. */
  spans(): readonly DecodedSpan[];
  /** Resolves with the spans once `predicate` holds for the received set; rejects after `timeoutMs` (default 5000). */
  waitForSpans(predicate: (spans: readonly DecodedSpan[]) => boolean, timeoutMs?: number): Promise<readonly DecodedSpan[]>;
  /** Requests refused (bad body, wrong path...), for tests. */
  rejected(): number;
  close(): Promise<void>;
};

const DEFAULT_MAX_BODY = 16 * 1024 * 1024;

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let over = false;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > limit) over = true;
      else chunks.push(c);
    });
    req.on('end', () => resolve(over ? 'too-large' : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

/** Decodes one export request body by its content type (protobuf unless it says JSON). */
export function decodeExportBody(contentType: string | undefined, body: Uint8Array): DecodedSpan[] {
  const ct = (contentType ?? '').toLowerCase();
  if (ct.includes('json')) return decodeTraceRequestJson(Buffer.from(body).toString('utf8'));
  return decodeTraceRequestProtobuf(body);
}

/** Starts the receiver; close() stops listening and flushes the output file. */
export async function startOtlpReceiver(opts: OtlpReceiverOptions = {}): Promise<OtlpReceiver> {
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY;
  const maxMem = opts.maxSpansInMemory ?? 100_000;
  const log = opts.log ?? ((): void => {});
  let out: WriteStream | undefined;
  if (opts.outFile) {
    const file = opts.outFile;
    out = createWriteStream(file, { flags: 'a' });
    await new Promise<void>((resolve, reject) => {
      out!.once('open', () => resolve());
      out!.once('error', (e) => reject(new OtlpReceiverError('NM_ERR_OTLP_BAD_ARGUMENT', `cannot open span output file ${file}: ${e.message}`, { cause: e })));
    });
  }
  const received: DecodedSpan[] = [];
  let rejected = 0;
  const waiters = new Set<() => void>();

  const append = (lines: string): Promise<void> =>
    new Promise((resolve, reject) => {
      if (!out) { resolve(); return; }
      out.write(lines, (err) => (err ? reject(err) : resolve()));
    });

  const reply = (res: ServerResponse, status: number, contentType: string, body: string | Buffer): void => {
    res.writeHead(status, { 'content-type': contentType, 'content-length': Buffer.byteLength(body) });
    res.end(body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/v1/traces') {
      rejected++;
      reply(res, 404, 'text/plain', `only POST /v1/traces is served here (got ${path}); metrics and logs are not collected\n`);
      return;
    }
    if (req.method !== 'POST') {
      rejected++;
      res.setHeader('allow', 'POST');
      reply(res, 405, 'text/plain', 'POST only\n');
      return;
    }
    const raw = await readBody(req, maxBody);
    if (raw === 'too-large') {
      rejected++;
      reply(res, 413, 'text/plain', `body larger than ${maxBody} bytes\n`);
      return;
    }
    const contentType = req.headers['content-type'];
    const isJson = (contentType ?? '').toLowerCase().includes('json');
    let spans: DecodedSpan[];
    try {
      const body = (req.headers['content-encoding'] ?? '').toLowerCase() === 'gzip' ? gunzipSync(raw, { maxOutputLength: maxBody }) : raw;
      spans = decodeExportBody(contentType, body);
    } catch (e) {
      rejected++;
      const msg = (e as Error).message;
      log(`otlp-receiver: refused a ${raw.length}-byte export: ${msg}`);
      // OTLP says 400 for bad data: the exporter must not retry it.
      reply(res, 400, 'text/plain', `${msg}\n`);
      return;
    }
    for (const s of spans) received.push(s);
    if (received.length > maxMem) received.splice(0, received.length - maxMem);
    if (spans.length > 0) await append(spans.map((s) => JSON.stringify(s)).join('\n') + '\n');
    for (const w of waiters) w();
    // A full success: an empty ExportTraceServiceResponse (no partial_success).
    if (isJson) reply(res, 200, 'application/json', '{}');
    else reply(res, 200, 'application/x-protobuf', Buffer.alloc(0));
  };

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((e: unknown) => {
      rejected++;
      log(`otlp-receiver: ${(e as Error).message}`);
      if (!res.headersSent) reply(res, 500, 'text/plain', `${(e as Error).message}\n`);
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new OtlpReceiverError('NM_ERR_OTLP_BAD_ARGUMENT', `cannot listen on ${opts.host ?? '127.0.0.1'}:${opts.port ?? 0}: ${e.message}`, { cause: e })));
    server.listen(opts.port ?? 0, opts.host ?? '127.0.0.1', () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const hostForUrl = addr.family === 'IPv6' ? `[${addr.address}]` : addr.address;
  const url = `http://${hostForUrl}:${addr.port}`;

  return {
    url,
    tracesUrl: `${url}/v1/traces`,
    port: addr.port,
    spans: () => received,
    rejected: () => rejected,
    waitForSpans(predicate, timeoutMs = 5000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          if (!predicate(received)) return false;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(received);
          return true;
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new OtlpReceiverError('NM_ERR_OTLP_BAD_ARGUMENT', `waited ${timeoutMs} ms for spans; have ${received.length}: ${received.map((s) => `${s.kind} ${s.name}`).join(', ') || 'none'} (is the exporter pointed at ${url}/v1/traces and flushed?)`));
        }, timeoutMs);
        waiters.add(check);
        check();
      });
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      if (out) await new Promise<void>((resolve) => out.end(() => resolve()));
    },
  };
}
