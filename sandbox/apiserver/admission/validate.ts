/**
 * Validation of built-in kinds: object names and labels, and the few spec rules users hit first
 * (a Deployment's selector must match its template, a Pod needs containers with name and image).
 */

import type { FieldError } from '../errors.ts';
import { fieldInvalid, fieldRequired } from '../errors.ts';
import type { JsonObject } from '../json.ts';
import { asArray, asObject, asString, isObject } from '../json.ts';
import { labelSelectorFromObject, matchLabels } from '../selectors.ts';

const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

const SUBDOMAIN_MSG =
  "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG =
  "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG =
  "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/** Name rule of a kind: most use DNS-1123 subdomains; Services DNS-1035 labels; Namespaces DNS-1123 labels. */
export function validateName(kind: string, name: string): FieldError[] {
  if (kind === 'Service') {
    if (name.length > 63 || !DNS1035_LABEL.test(name)) return [fieldInvalid('metadata.name', name, DNS1035_MSG)];
    return [];
  }
  if (kind === 'Namespace') {
    if (name.length > 63 || !DNS1123_LABEL.test(name)) return [fieldInvalid('metadata.name', name, LABEL_MSG)];
    return [];
  }
  if (kind === 'Event' || kind === 'TokenReview') return [];
  if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) return [fieldInvalid('metadata.name', name, SUBDOMAIN_MSG)];
  return [];
}

/** Checks label keys and values. */
export function validateLabels(labels: unknown): FieldError[] {
  const out: FieldError[] = [];
  const l = asObject(labels);
  if (!l) return out;
  for (const [k, v] of Object.entries(l)) {
    const slash = k.lastIndexOf('/');
    const prefix = slash >= 0 ? k.slice(0, slash) : '';
    const nm = slash >= 0 ? k.slice(slash + 1) : k;
    if ((prefix && (!DNS1123_SUBDOMAIN.test(prefix) || prefix.length > 253)) || nm.length > 63 || !LABEL_NAME.test(nm)) {
      out.push(fieldInvalid('metadata.labels', k, "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
    }
    if (typeof v !== 'string') out.push(fieldInvalid(`metadata.labels`, v, 'label values must be strings'));
    else if (v.length > 63 || !LABEL_VALUE.test(v)) {
      out.push(fieldInvalid('metadata.labels', v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
    }
  }
  return out;
}

function validateContainers(list: unknown, path: string, required: boolean): FieldError[] {
  const out: FieldError[] = [];
  const cs = asArray(list);
  if (required && cs.length === 0) out.push(fieldRequired(path));
  const names = new Set<string>();
  cs.forEach((c, i) => {
    if (!isObject(c)) return;
    const name = asString(c['name']);
    if (!name) out.push(fieldRequired(`${path}[${i}].name`));
    else if (names.has(name)) out.push({ type: 'Duplicate', field: `${path}[${i}].name`, message: `Duplicate value: ${JSON.stringify(name)}` });
    else names.add(name);
    if (!asString(c['image'])) out.push(fieldRequired(`${path}[${i}].image`));
  });
  return out;
}

/** Spec checks of built-in kinds (beyond names and labels). */
export function validateBuiltin(kind: string, obj: JsonObject): FieldError[] {
  const out: FieldError[] = [];
  const spec = asObject(obj['spec']);
  switch (kind) {
    case 'Pod':
      out.push(...validateContainers(spec?.['containers'], 'spec.containers', true));
      out.push(...validateContainers(spec?.['initContainers'], 'spec.initContainers', false));
      break;
    case 'Deployment':
    case 'ReplicaSet': {
      const sel = asObject(spec?.['selector']);
      if (!sel) {
        out.push(fieldRequired('spec.selector'));
        break;
      }
      const tpl = asObject(spec?.['template']);
      const labels = asObject(asObject(tpl?.['metadata'])?.['labels']) ?? {};
      const req = labelSelectorFromObject(sel);
      if (req.length === 0) out.push(fieldInvalid('spec.selector', sel, 'empty selector is invalid for deployment'));
      else if (!matchLabels(req, labels as Record<string, string>)) {
        const rendered = `map[string]string{${Object.entries(labels)
          .map(([k, v]) => `${JSON.stringify(k)}:${JSON.stringify(v)}`)
          .join(', ')}}`;
        out.push({ type: 'Invalid', field: 'spec.template.metadata.labels', message: `Invalid value: ${rendered}: \`selector\` does not match template \`labels\`` });
      }
      const replicas = spec?.['replicas'];
      if (typeof replicas === 'number' && replicas < 0) out.push(fieldInvalid('spec.replicas', replicas, 'must be greater than or equal to 0'));
      out.push(...validateContainers(asObject(tpl?.['spec'])?.['containers'], 'spec.template.spec.containers', true));
      break;
    }
    case 'EndpointSlice': {
      const at = asString(obj['addressType']);
      if (!at) out.push(fieldRequired('addressType'));
      else if (!['IPv4', 'IPv6', 'FQDN'].includes(at)) out.push({ type: 'NotSupported', field: 'addressType', message: `Unsupported value: ${JSON.stringify(at)}: supported values: "IPv4", "IPv6", "FQDN"` });
      asArray(obj['endpoints']).forEach((e, i) => {
        if (isObject(e) && asArray(e['addresses']).length === 0) out.push(fieldRequired(`endpoints[${i}].addresses`));
      });
      break;
    }
    case 'ConfigMap':
    case 'Secret': {
      const data = asObject(obj['data']);
      for (const k of Object.keys(data ?? {})) {
        if (!/^[-._a-zA-Z0-9]+$/.test(k) || k.length > 253) out.push(fieldInvalid(`data[${k}]`, k, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'"));
      }
      break;
    }
  }
  return out;
}
