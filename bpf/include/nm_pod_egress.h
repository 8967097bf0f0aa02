/* SPDX-License-Identifier: Apache-2.0 */
/* Pod-side egress anti-spoofing: the one IPv4 source address each pod veth may send from. Checked
 * by tc on the pod's host-side veth, ingress (packets the pod sends), before the node routes them:
 * the node proxy names a connection's source workload by its address, so a pod sending with
 * another pod's (or the node's) address must never get that far. */
#ifndef NM_POD_EGRESS_H
#define NM_POD_EGRESS_H

#include "nm_common.h"

#define NM_POD_SRC_MAX 4096 /* pod veths on one node */

/* Bits of nm_pod4_src_val.flags. */
enum nm_pod_src_flags {
	NM_POD_SRC_F_IPV6 = 1 << 0, /* the pod has an IPv6 address too: its IPv6 passes unchecked */
};

/* Counters of nm_podeg_count (index). */
enum nm_podeg_count {
	NM_PODEG_CNT_PASSED = 0,   /* IPv4 from the pod's own address */
	NM_PODEG_CNT_SPOOFED = 1,  /* IPv4 from any other address: dropped */
	NM_PODEG_CNT_NO_ENTRY = 2, /* veth runs the program but has no entry: IPv4 dropped */
	NM_PODEG_CNT_IPV6 = 3,     /* IPv6 from a pod without an IPv6 address: dropped */
	NM_PODEG_CNT_MAX = 4,      /* array size */
};

/* Value of nm_pod4_src: the address the pod behind this veth owns. */
struct nm_pod4_src_val {
	nm_ip4_t addr; /* the pod's IPv4 address */
	__u32 flags;   /* NM_POD_SRC_F_* */
};

/* Host-side veth ifindex -> the pod's address, written by the agent from its Pod watch. */
struct {
	NM_MAP(BPF_MAP_TYPE_HASH, __u32, struct nm_pod4_src_val, NM_POD_SRC_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} nm_pod4_src SEC(".maps");

/* Outcomes, indexed by enum nm_podeg_count; one __u64 per CPU. */
struct {
	NM_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, NM_PODEG_CNT_MAX);
} nm_podeg_count SEC(".maps");

static __always_inline void __nm_podeg_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&nm_podeg_count, &idx);

	if (c)
		*c += 1;
}

#endif /* NM_POD_EGRESS_H */
