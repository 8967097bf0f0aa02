import { test } from 'node:test';
import assert from 'node:assert/strict';
import { isBpffsMounted } from './bpffs.ts';
import { findCgroup2Mount } from './cgroup.ts';

const mounts = `tmpfs /sys/fs/cgroup tmpfs rw 0 0
cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
bpf /sys/fs/bpf bpf rw 0 0`;

test('finds the cgroup2 mount among v1 ones, and bpffs', () => {
  assert.equal(findCgroup2Mount(mounts), '/sys/fs/cgroup/unified');
  assert.equal(findCgroup2Mount('cgroup /sys/fs/cgroup/cpu cgroup rw 0 0'), undefined);
  assert.equal(isBpffsMounted(mounts), true);
  assert.equal(isBpffsMounted('tmpfs /sys/fs/bpf tmpfs rw 0 0'), false);
});
