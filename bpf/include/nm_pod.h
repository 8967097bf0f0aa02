/* SPDX-License-Identifier: Apache-2.0 */
/* Pod-side ingress enforcement for workloads under mTLS STRICT: the pod ports the kernel guards and
 * the one source allowed to open connections to them (the node proxy, which carries the verified
 * mesh traffic). Checked by tc on the pod's host-side veth, egress (towards the pod), so a client
 * that bypasses the socket datapath (no cgroup program, raw sockets, another node) is dropped too. */
#ifndef NM_POD_H
#define NM_POD_H

#include "nm_common.h"

#define NM_POD_INGRESS_MAX 65536 /* guarded (pod address, port) pairs on one node */

/* Bits of nm_pod4_policy.flags. */
enum nm_pod_flags {
	NM_POD_F_STRICT = 1 << 0, /* only allow_src may reach the port */
};

/* Counters of nm_pod_count (index). */
enum nm_pod_count {
	NM_POD_CNT_ALLOWED = 0, /* packet to a guarded port from the node proxy */
	NM_POD_CNT_DROPPED = 1, /* packet to a guarded port from anyone else: dropped */
	NM_POD_CNT_MAX = 2,     /* array size */
};

/* Key of nm_pod4_ingress: one guarded port of a pod, IPv4, TCP. */
struct nm_pod4_key {
	nm_ip4_t addr;  /* pod address */
	nm_port_t port; /* pod (container) port */
	__u16 pad;      /* must be 0 */
};

/* Value of nm_pod4_ingress: who may connect. */
struct nm_pod4_policy {
	nm_ip4_t allow_src; /* the node proxy's address: the only source let through */
	__u32 flags;        /* NM_POD_F_* */
};

/* Guarded pod ports, written by the agent from the NodeState (STRICT workloads' ports). */
struct {
	NM_MAP(BPF_MAP_TYPE_HASH, struct nm_pod4_key, struct nm_pod4_policy, NM_POD_INGRESS_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nm_pod4_ingress SEC(".maps");

/* Allowed and dropped packets, indexed by enum nm_pod_count; one __u64 per CPU. */
struct {
	NM_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, NM_POD_CNT_MAX);
} nm_pod_count SEC(".maps");

static __always_inline void __nm_pod_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&nm_pod_count, &idx);

	if (c)
		*c += 1;
}

#endif /* NM_POD_H */
