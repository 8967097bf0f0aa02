/**
 * The `pods/log` subresource: reads the CRI-format files the sandbox kubelet writes per container run
 * (`<pod log dir>/<container>/<run>.log`) and answers what `kubectl logs` expects — container choice,
 * `previous`, `timestamps`, `tailLines`, `sinceSeconds`/`sinceTime`, `limitBytes`, and `follow`, which
 * streams new output until the container stops or restarts, the pod goes, or the client leaves.
 */

import type { FileHandle } from 'node:fs/promises';
import { open, readdir } from 'node:fs/promises';
import type { ServerResponse } from 'node:http';
import { join } from 'node:path';
import { parseCriRecord, sortRunFiles } from '../kubelet/cri-log.ts';
import { StatusError, badRequest } from './errors.ts';
import type { JsonObject } from './json.ts';
import { asArray, asObject, asString, isObject } from './json.ts';

/** Where the log files of a pod live, or undefined when no kubelet of this server keeps them. */
export type PodLogDirectory = (namespace: string, name: string, uid: string) => string | undefined;

/** A parsed `pods/log` request. */
export interface PodLogRequest {
  container: string;
  follow: boolean;
  previous: boolean;
  timestamps: boolean;
  tailLines?: number;
  /** Only records at or after this time (milliseconds since the epoch). */
  sinceMs?: number;
  limitBytes?: number;
}

function containerNames(pod: JsonObject, field: string): string[] {
  return asArray(asObject(pod['spec'])?.[field])
    .filter(isObject)
    .map((c) => asString(c['name']) ?? '');
}

function nonNegativeInt(q: URLSearchParams, name: string, min = 0): number | undefined {
  const raw = q.get(name);
  if (raw === null || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw badRequest(`${name}: Invalid value: ${JSON.stringify(raw)}: must be ${min === 0 ? 'a non-negative' : 'a positive'} integer`);
  return n;
}

/** Validates the query of a `pods/log` request against the pod (the real server's wording for each refusal). */
export function parsePodLogRequest(pod: JsonObject, q: URLSearchParams, nowMs: number): PodLogRequest {
  const name = asString(asObject(pod['metadata'])?.['name']) ?? '';
  const containers = containerNames(pod, 'containers');
  const inits = containerNames(pod, 'initContainers');
  let container = q.get('container') ?? '';
  if (!container) {
    if (containers.length !== 1) {
      const initPart = inits.length ? ` or one of the init containers: [${inits.join(' ')}]` : '';
      throw badRequest(`a container name must be specified for pod ${name}, choose one of: [${containers.join(' ')}]${initPart}`);
    }
    container = containers[0]!;
  } else if (!containers.includes(container) && !inits.includes(container)) {
    throw badRequest(`container ${container} is not valid for pod ${name}`);
  }
  const flag = (k: string): boolean => q.get(k) === 'true' || q.get(k) === '1';
  const req: PodLogRequest = { container, follow: flag('follow'), previous: flag('previous'), timestamps: flag('timestamps') };
  const tail = nonNegativeInt(q, 'tailLines');
  if (tail !== undefined) req.tailLines = tail;
  const limit = nonNegativeInt(q, 'limitBytes', 1);
  if (limit !== undefined) req.limitBytes = limit;
  const sinceSeconds = nonNegativeInt(q, 'sinceSeconds', 1);
  const sinceTime = q.get('sinceTime');
  if (sinceSeconds !== undefined && sinceTime) throw badRequest('at most one of `sinceTime` or `sinceSeconds` may be specified');
  if (sinceSeconds !== undefined) req.sinceMs = nowMs - sinceSeconds * 1000;
  if (sinceTime) {
    const t = Date.parse(sinceTime);
    if (Number.isNaN(t)) throw badRequest(`sinceTime: Invalid value: ${JSON.stringify(sinceTime)}: must be an RFC 3339 time`);
    req.sinceMs = t;
  }
  return req;
}

/** One log line of a container, partial records joined. */
export interface LogLine {
  time: string;
  text: string;
}

/** Joins CRI records into lines; `rest` is an unterminated last file line to carry into the next read. */
export function parseLogLines(text: string): { lines: LogLine[]; rest: string; pendingPartial: LogLine | undefined } {
  const lines: LogLine[] = [];
  let partial: LogLine | undefined;
  const fileLines = text.split('\n');
  const rest = fileLines.pop() ?? '';
  for (const fl of fileLines) {
    const r = parseCriRecord(fl);
    if (!r) continue;
    if (partial) partial.text += r.content;
    else partial = { time: r.time, text: r.content };
    if (!r.partial) {
      lines.push(partial);
      partial = undefined;
    }
  }
  return { lines, rest, pendingPartial: partial };
}

function timeMs(rfc3339Nano: string): number {
  return Date.parse(rfc3339Nano.replace(/\.(\d{3})\d*Z$/, '.$1Z'));
}

/** Renders lines as `kubectl logs` prints them (time-filtered, tail, timestamps); a partial last line keeps no newline. */
export function renderLogLines(lines: LogLine[], req: Pick<PodLogRequest, 'timestamps' | 'tailLines' | 'sinceMs'>, pendingPartial?: LogLine): string {
  let all = pendingPartial ? [...lines, pendingPartial] : lines;
  if (req.sinceMs !== undefined) all = all.filter((l) => timeMs(l.time) >= req.sinceMs!);
  if (req.tailLines !== undefined) all = req.tailLines === 0 ? [] : all.slice(-req.tailLines);
  return all.map((l) => `${req.timestamps ? `${l.time} ` : ''}${l.text}${l === pendingPartial ? '' : '\n'}`).join('');
}

/** The run files of a container, oldest first; empty when there is no output yet. */
async function runNumbers(dir: string, container: string): Promise<number[]> {
  try {
    return sortRunFiles(await readdir(join(dir, container)));
  } catch {
    return [];
  }
}

function containerStatus(pod: JsonObject, container: string): JsonObject | undefined {
  const status = asObject(pod['status']);
  const all = [...asArray(status?.['containerStatuses']), ...asArray(status?.['initContainerStatuses'])];
  return all.filter(isObject).find((s) => s['name'] === container);
}

/** Whether the pod's status says the container runs now. */
export function isContainerRunning(pod: JsonObject | undefined, container: string): boolean {
  if (!pod) return false;
  return isObject(asObject(containerStatus(pod, container)?.['state'])?.['running']);
}

/** What servePodLog needs besides the request. */
export interface PodLogSource {
  dir: string;
  pod: JsonObject;
  /** The pod as stored now (undefined once gone or replaced by another with the same name). */
  current: () => JsonObject | undefined;
  pollMs?: number;
}

/** Answers a `pods/log` request, streaming when `follow`. */
export async function servePodLog(res: ServerResponse, source: PodLogSource, req: PodLogRequest): Promise<void> {
  const podName = asString(asObject(source.pod['metadata'])?.['name']) ?? '';
  const runs = await runNumbers(source.dir, req.container);
  let run: number | undefined;
  if (req.previous) {
    run = runs.length >= 2 ? runs[runs.length - 2] : undefined;
    if (run === undefined) throw badRequest(`previous terminated container "${req.container}" in pod "${podName}" not found`);
  } else {
    run = runs[runs.length - 1];
    if (run === undefined) {
      const waiting = asObject(asObject(containerStatus(source.pod, req.container)?.['state'])?.['waiting']);
      const reason = asString(waiting?.['reason']) ?? 'ContainerCreating';
      throw badRequest(`container "${req.container}" in pod "${podName}" is waiting to start: ${reason}`);
    }
  }
  let file: FileHandle;
  try {
    file = await open(join(source.dir, req.container, `${run}.log`), 'r');
  } catch (e) {
    throw new StatusError(500, 'InternalError', `reading the log of container "${req.container}" in pod "${podName}" failed: ${(e as Error).message}`);
  }
  try {
    const initial = await file.readFile('utf8');
    let offset = Buffer.byteLength(initial);
    const first = parseLogLines(initial);
    let rest = first.rest;
    let limitLeft = req.limitBytes ?? Infinity;
    const cut = (text: string): string => {
      if (limitLeft === Infinity) return text;
      const b = Buffer.from(text);
      const out = b.subarray(0, Math.max(0, limitLeft));
      limitLeft -= out.length;
      return out.toString('utf8');
    };
    if (!req.follow || req.previous) {
      const text = cut(renderLogLines(first.lines, req, first.pendingPartial));
      res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-cache, private', 'Content-Length': String(Buffer.byteLength(text)) });
      res.end(text);
      return;
    }
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-cache, private', 'Transfer-Encoding': 'chunked' });
    // A partial record at the end of the file waits for the rest of its line, as long as the container runs.
    let pending = first.pendingPartial;
    res.write(cut(renderLogLines(first.lines, req)));
    let closed = false;
    res.on('close', () => (closed = true));
    const sinceFilter = { timestamps: req.timestamps, ...(req.sinceMs !== undefined ? { sinceMs: req.sinceMs } : {}) };
    let quietPolls = 0;
    while (!closed && limitLeft > 0) {
      await new Promise((r) => setTimeout(r, source.pollMs ?? 200));
      const buf = Buffer.alloc(64 * 1024);
      let got = '';
      for (;;) {
        const { bytesRead } = await file.read(buf, 0, buf.length, offset);
        if (bytesRead === 0) break;
        offset += bytesRead;
        got += buf.subarray(0, bytesRead).toString('utf8');
      }
      if (got) {
        quietPolls = 0;
        const parsed = parseLogLines(rest + got);
        rest = parsed.rest;
        let lines = parsed.lines;
        let partial = parsed.pendingPartial;
        if (pending) {
          if (lines.length > 0) lines = [{ time: pending.time, text: pending.text + lines[0]!.text }, ...lines.slice(1)];
          else partial = partial ? { time: pending.time, text: pending.text + partial.text } : pending;
        }
        pending = partial;
        if (lines.length > 0 && !res.write(cut(renderLogLines(lines, sinceFilter)))) {
          // A slow reader holds us here; one that leaves must not (the file handle would stay open).
          await new Promise((r) => {
            res.once('drain', r);
            res.once('close', r);
          });
        }
        continue;
      }
      const now = source.current();
      const newer = (await runNumbers(source.dir, req.container)).some((n) => n > run!);
      // Stop once the container is no longer running (or ran again) and its file has been quiet twice.
      if (!now || newer || !isContainerRunning(now, req.container)) {
        if (++quietPolls >= 2) break;
      } else {
        quietPolls = 0;
      }
    }
    if (!closed) res.end(pending ? cut(renderLogLines([], sinceFilter, pending)) : undefined);
  } finally {
    await file.close();
  }
}
