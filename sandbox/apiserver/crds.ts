/**
 * CustomResourceDefinitions: validation of the CRD object, its translation into served resource types
 * (one per served version, with compiled schema and printer columns), and the status the real server
 * writes (NamesAccepted, Established, acceptedNames, storedVersions).
 */

import type { FieldError } from './errors.ts';
import { fieldInvalid, fieldNotSupported, fieldRequired } from './errors.ts';
import type { JsonObject } from './json.ts';
import { asArray, asObject, asString, isObject } from './json.ts';
import type { PrinterColumn, ResourceType } from './registry.ts';
import { compileSchema } from './validation/openapi.ts';

/** Checks the CRD fields the server depends on; returns field errors in the real server's wording. */
export function validateCrd(crd: JsonObject): FieldError[] {
  const errs: FieldError[] = [];
  const name = asString(asObject(crd['metadata'])?.['name']) ?? '';
  const spec = asObject(crd['spec']);
  if (!spec) return [fieldRequired('spec')];
  const group = asString(spec['group']) ?? '';
  const names = asObject(spec['names']);
  const plural = asString(names?.['plural']) ?? '';
  if (!group) errs.push(fieldRequired('spec.group'));
  else if (!group.includes('.')) errs.push(fieldInvalid('spec.group', group, 'should be a domain with at least one dot'));
  if (!plural) errs.push(fieldRequired('spec.names.plural'));
  if (!asString(names?.['kind'])) errs.push(fieldRequired('spec.names.kind'));
  if (plural && group && name !== `${plural}.${group}`) errs.push(fieldInvalid('metadata.name', name, 'must be spec.names.plural+"."+spec.group'));
  const scope = asString(spec['scope']);
  if (!scope) errs.push(fieldRequired('spec.scope'));
  else if (scope !== 'Namespaced' && scope !== 'Cluster') errs.push(fieldNotSupported('spec.scope', scope, ['Cluster', 'Namespaced']));
  const versions = asArray(spec['versions']).filter(isObject);
  if (versions.length === 0) errs.push(fieldInvalid('spec.versions', [], 'must have exactly one version marked as storage version'));
  else if (versions.filter((v) => v['storage'] === true).length !== 1) {
    errs.push(fieldInvalid('spec.versions', versions.map((v) => v['name']), 'must have exactly one version marked as storage version'));
  }
  versions.forEach((v, i) => {
    if (!asString(v['name'])) errs.push(fieldRequired(`spec.versions[${i}].name`));
    if (typeof v['served'] !== 'boolean') errs.push(fieldRequired(`spec.versions[${i}].served`));
    const schema = asObject(asObject(v['schema'])?.['openAPIV3Schema']);
    if (!schema) errs.push(fieldRequired(`spec.versions[${i}].schema.openAPIV3Schema`, 'schemas are required'));
    else if (schema['type'] !== 'object' && schema['x-kubernetes-preserve-unknown-fields'] !== true) {
      errs.push(fieldInvalid(`spec.versions[${i}].schema.openAPIV3Schema.type`, schema['type'] ?? '', 'must be object at the root'));
    }
  });
  return errs;
}

/** The served resource types of a CRD; `log` receives notes about CEL rules that were skipped. */
export function crdResourceTypes(crd: JsonObject, log: (line: string) => void): ResourceType[] {
  const crdName = asString(asObject(crd['metadata'])?.['name']) ?? '';
  const spec = asObject(crd['spec']) ?? {};
  const names = asObject(spec['names']) ?? {};
  const group = asString(spec['group']) ?? '';
  const kind = asString(names['kind']) ?? '';
  const plural = asString(names['plural']) ?? '';
  const versions = asArray(spec['versions']).filter(isObject);
  const storage = asString(versions.find((v) => v['storage'] === true)?.['name']) ?? '';
  const out: ResourceType[] = [];
  for (const v of versions) {
    if (v['served'] !== true) continue;
    const version = asString(v['name']) ?? '';
    const schema = asObject(asObject(v['schema'])?.['openAPIV3Schema']);
    let validator: unknown;
    if (schema) {
      const compiled = compileSchema(schema);
      for (const s of compiled.skipped) log(`CRD ${crdName} ${version}: x-kubernetes-validations ${s}`);
      validator = compiled;
    }
    const sub = asObject(v['subresources']) ?? {};
    const scale = asObject(sub['scale']);
    const columns: PrinterColumn[] = asArray(v['additionalPrinterColumns'])
      .filter(isObject)
      .map((c) => ({
        name: asString(c['name']) ?? '',
        type: asString(c['type']) ?? 'string',
        ...(asString(c['format']) ? { format: asString(c['format'])! } : {}),
        ...(asString(c['description']) ? { description: asString(c['description'])! } : {}),
        priority: typeof c['priority'] === 'number' ? c['priority'] : 0,
        jsonPath: asString(c['jsonPath']) ?? '',
      }));
    out.push({
      group,
      version,
      kind,
      listKind: asString(names['listKind']) ?? `${kind}List`,
      plural,
      singular: asString(names['singular']) ?? kind.toLowerCase(),
      namespaced: spec['scope'] !== 'Cluster',
      shortNames: asArray(names['shortNames']).map(String),
      categories: asArray(names['categories']).map(String),
      verbs: ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'],
      storageKey: `${group}/${plural}`,
      status: isObject(sub['status']),
      scale: scale
        ? {
            specReplicasPath: asString(scale['specReplicasPath']) ?? '.spec.replicas',
            statusReplicasPath: asString(scale['statusReplicasPath']) ?? '.status.replicas',
            ...(asString(scale['labelSelectorPath']) ? { labelSelectorPath: asString(scale['labelSelectorPath'])! } : {}),
          }
        : undefined,
      extraSubresources: [],
      fieldLabels: asArray(v['selectableFields'])
        .map((f) => asString(asObject(f)?.['jsonPath']))
        .filter((p): p is string => !!p)
        .map((p) => p.replace(/^\./, '')),
      custom: { crdName, storageVersion: storage, schema, printerColumns: columns, validator },
    });
  }
  return out;
}

/** The status a served CRD carries (names accepted, established). */
export function crdStatus(crd: JsonObject, previous: JsonObject | undefined, now: string): JsonObject {
  const spec = asObject(crd['spec']) ?? {};
  const names = asObject(spec['names']) ?? {};
  const kind = asString(names['kind']) ?? '';
  const storage = asString(asArray(spec['versions']).filter(isObject).find((v) => v['storage'] === true)?.['name']);
  const prevStored = asArray(asObject(previous?.['status'])?.['storedVersions']).map(String);
  const stored = [...new Set([...prevStored, ...(storage ? [storage] : [])])];
  const prevConds = asArray(asObject(previous?.['status'])?.['conditions']).filter(isObject);
  const since = (type: string): string => asString(prevConds.find((c) => c['type'] === type)?.['lastTransitionTime']) ?? now;
  return {
    conditions: [
      { type: 'NamesAccepted', status: 'True', reason: 'NoConflicts', message: 'no conflicts found', lastTransitionTime: since('NamesAccepted') },
      { type: 'Established', status: 'True', reason: 'InitialNamesAccepted', message: 'the initial names have been accepted', lastTransitionTime: since('Established') },
    ],
    acceptedNames: {
      plural: names['plural'] ?? '',
      singular: names['singular'] ?? kind.toLowerCase(),
      kind,
      listKind: names['listKind'] ?? `${kind}List`,
      ...(asArray(names['shortNames']).length ? { shortNames: names['shortNames']! } : {}),
      ...(asArray(names['categories']).length ? { categories: names['categories']! } : {}),
    },
    storedVersions: stored,
  };
}
