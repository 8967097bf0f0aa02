import assert from 'node:assert/strict';
import test from 'node:test';
import { mapSpecs, type MapName } from './codecs.generated.ts';
import { DATAPATH_OBJECTS, datapathMapNames } from './datapath.ts';

test('an agent opens exactly the maps of the objects it loads (a map of another object never blocks its start)', () => {
  const names = datapathMapNames();
  const loaded = new Set<string>(DATAPATH_OBJECTS);
  for (const name of Object.keys(mapSpecs) as MapName[]) {
    const ours = mapSpecs[name].objects.some((o) => loaded.has(o));
    assert.equal(names.includes(name), ours, `${name} (objects ${mapSpecs[name].objects.join(', ')})`);
  }
});
