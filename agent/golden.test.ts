/**
 * Golden scenarios: Kubernetes YAML in (testdata/golden/<name>/input.yaml), a text dump of the maps
 * out (expected.txt), through the real planner and reconciler on fake maps. A second agent that
 * adopts those maps must find nothing to change. UPDATE_GOLDEN=1 rewrites the expected files.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FakeMapSet, planServiceEntries } from '../bpf/index.ts';
import { dumpMaps } from './dump-maps.ts';
import { planDatapath } from './plan-datapath.ts';
import { isNoop, MapReconciler } from './reconcile-maps.ts';
import { ServiceIds } from './service-ids.ts';
import { loadScenario } from './testing/scenario.ts';

const DIR = join(import.meta.dirname, 'testdata', 'golden');

describe('golden datapath scenarios', () => {
  for (const name of readdirSync(DIR).sort()) {
    it(name, () => {
      const state = loadScenario(join(DIR, name, 'input.yaml'));
      const plan = planDatapath(state);
      const maps = new FakeMapSet(2);
      const rec = new MapReconciler(maps);
      rec.replaceAll(plan.services.map((s) => planServiceEntries(s.spec)));
      rec.reconcile({ prune: true });
      const names = new Map(plan.services.map((s) => [s.spec.id, s.key]));
      const text = dumpMaps(maps, names) + plan.problems.map((p) => `# problem: ${p}\n`).join('');
      const expectedPath = join(DIR, name, 'expected.txt');
      if (process.env.UPDATE_GOLDEN === '1' || !existsSync(expectedPath)) writeFileSync(expectedPath, text);
      assert.equal(text, readFileSync(expectedPath, 'utf8'));

      // A restarted agent: ids from the pinned maps, same cluster, nothing to write or delete.
      const again = planDatapath(state, ServiceIds.fromMaps(maps));
      assert.deepEqual(again.services.map((s) => [s.key, s.spec.id]), plan.services.map((s) => [s.key, s.spec.id]), 'ids survive a restart');
      const rec2 = new MapReconciler(maps);
      rec2.replaceAll(again.services.map((s) => planServiceEntries(s.spec)));
      const r = rec2.reconcile({ prune: true });
      assert.ok(isNoop(r), `adoption rewrote entries: ${JSON.stringify(r)}`);
    });
  }
});
