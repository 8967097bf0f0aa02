/**
 * Content negotiation of responses: picks, from a client's Accept header, the first media range (by
 * q-value, then order) that we can produce — JSON (plain, `as=Table`, `as=PartialObjectMetadata[List]`,
 * `as=APIGroupDiscoveryList`) or YAML — and answers 406 when none is. We never encode protobuf or CBOR:
 * kubectl and client-go list JSON after protobuf, so skipping protobuf ranges gives them JSON, with a
 * JSON Content-Type, as they expect.
 */

import { StatusError } from './errors.ts';

/** What a response is rendered as. */
export type Rendering = 'json' | 'yaml' | 'table' | 'metadata' | 'discovery';

/** Which renderings an endpoint can offer. */
export interface Offers {
  yaml?: boolean;
  table?: boolean;
  metadata?: boolean;
  discovery?: boolean;
}

/** One media range of an Accept header. */
export interface MediaRange {
  type: string;
  params: Record<string, string>;
  q: number;
}

/** Parses an Accept header into media ranges, best first (q-value, then the client's order). */
export function parseAccept(accept: string | undefined): MediaRange[] {
  if (!accept) return [];
  const ranges: (MediaRange & { order: number })[] = [];
  accept.split(',').forEach((part, order) => {
    const [type, ...rawParams] = part.split(';').map((s) => s.trim());
    if (!type) return;
    const params: Record<string, string> = {};
    let q = 1;
    for (const p of rawParams) {
      const eq = p.indexOf('=');
      if (eq < 0) continue;
      const k = p.slice(0, eq).trim().toLowerCase();
      const v = p.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
      if (k === 'q') q = Number.isFinite(Number(v)) ? Number(v) : 0;
      else params[k] = v;
    }
    ranges.push({ type: type.toLowerCase(), params, q, order });
  });
  return ranges
    .filter((r) => r.q > 0)
    .sort((a, b) => b.q - a.q || a.order - b.order)
    .map(({ type, params, q }) => ({ type, params, q }));
}

/** Media types we can produce, for the 406 message. */
export const PRODUCED_MEDIA_TYPES = ['application/json', 'application/yaml'];

function renderingOf(r: MediaRange, offers: Offers): Rendering | undefined {
  const json = r.type === 'application/json' || r.type === 'application/*' || r.type === '*/*';
  const as = r.params['as'];
  if (json && as !== undefined) {
    const { g, v } = r.params;
    if (as === 'Table' && offers.table && g === 'meta.k8s.io' && (v === 'v1' || v === 'v1beta1')) return 'table';
    if ((as === 'PartialObjectMetadata' || as === 'PartialObjectMetadataList') && offers.metadata && g === 'meta.k8s.io' && (v === 'v1' || v === 'v1beta1')) return 'metadata';
    if (as === 'APIGroupDiscoveryList' && offers.discovery && g === 'apidiscovery.k8s.io' && v === 'v2') return 'discovery';
    return undefined;
  }
  if (json) return 'json';
  if (r.type === 'application/yaml' && offers.yaml && as === undefined) return 'yaml';
  return undefined;
}

/** The rendering for an Accept header; a 406 `Status` when we can produce none of what it lists. */
export function negotiateRendering(accept: string | undefined, offers: Offers): Rendering {
  const ranges = parseAccept(accept);
  if (ranges.length === 0) return 'json';
  for (const r of ranges) {
    const rendering = renderingOf(r, offers);
    if (rendering) return rendering;
  }
  const accepted = offers.yaml ? PRODUCED_MEDIA_TYPES : ['application/json'];
  throw new StatusError(406, 'NotAcceptable', `only the following media types are accepted: ${accepted.join(', ')} (the nodemesh sandbox API server does not encode protobuf or CBOR; got Accept: ${accept})`);
}
