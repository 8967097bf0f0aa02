/* SPDX-License-Identifier: Apache-2.0 */
/* Counters: per service (translations, no-backend failures, affinity hits) and node-wide (drop
 * reasons, datapath events). Per-CPU maps, so the hot path never contends on a cache line; user
 * space sums the CPUs. Failures are counted here, never printed. */
#ifndef NM_METRICS_H
#define NM_METRICS_H

#include "nm_common.h"

#define NM_LB_SVC_MAX 65536 /* service ids are 1..NM_LB_SVC_MAX-1; 0 = none */

/* Per-service counters (value of nm_lb_stats, one copy per CPU). */
struct nm_lb_stat {
	__u64 translations; /* connects/datagrams rewritten to a backend or to the proxy */
	__u64 no_backend;   /* connects refused because no usable backend was left */
	__u64 aff_hits;     /* backend taken from a live sessionAffinity entry */
	__u64 proxied;      /* connects rewritten to the node proxy (mesh flows) */
};

/* Per-service counters indexed by service id. Preallocated at load (NM_LB_SVC_MAX x CPUs x 32 B:
 * 4 MiB on 2 CPUs), so a new service costs no write and no per-CPU allocation; user space never
 * creates entries, it zeroes a slot when its service id is released (a reused id starts at 0).
 * The per-CPU translation count doubles as that CPU's round-robin cursor (see nm_lb.h). */
struct {
	NM_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, struct nm_lb_stat, NM_LB_SVC_MAX);
} nm_lb_stats SEC(".maps");

/* Node-wide counters: drop reasons and datapath events (index of nm_dp_count). */
enum nm_count {
	NM_CNT_DROP_NO_BACKEND = 1,  /* service without a usable backend: connect refused */
	NM_CNT_DROP_NO_LOCAL = 2,    /* internalTrafficPolicy Local and no backend on this node */
	NM_CNT_DROP_SVC_MISSING = 3, /* frontend points at a service id with no entry: refused */
	NM_CNT_DROP_BE_MISSING = 4,  /* slot or backend entry missing (update in flight): refused */
	NM_CNT_DROP_PROXY_DOWN = 5,  /* mesh flow while the node proxy is not listening: refused */
	NM_CNT_RNAT_UPDATE_FAIL = 6, /* reverse-translation entry not stored (getpeername/UDP) */
	NM_CNT_AFF_UPDATE_FAIL = 7,  /* sessionAffinity entry not stored */
	NM_CNT_ODST_UPDATE_FAIL = 8, /* proxy original-destination entry not stored */
	NM_CNT_SOCKHASH_ADD = 9,     /* socket added to the same-node redirection sockhash */
	NM_CNT_SOCKHASH_ADD_FAIL = 10, /* socket could not be added to the sockhash */
	NM_CNT_SKMSG_REDIRECT = 11,    /* sendmsg redirected to the peer socket's ingress */
	NM_CNT_MAX = 16,               /* array size; indexes stay below it */
};

/* Node-wide counters, indexed by enum nm_count; one __u64 per CPU. */
struct {
	NM_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, NM_CNT_MAX);
} nm_dp_count SEC(".maps");

/* The service's counters on this CPU; NULL only for an id outside the array (the caller then
 * balances without a cursor). */
static __always_inline struct nm_lb_stat *__lb_stat_get(__u32 svc_id)
{
	if (svc_id >= NM_LB_SVC_MAX)
		return NULL;
	return bpf_map_lookup_elem(&nm_lb_stats, &svc_id);
}

static __always_inline void __nm_count(enum nm_count what)
{
	__u32 key = what;
	__u64 *val = bpf_map_lookup_elem(&nm_dp_count, &key);

	if (val)
		*val += 1;
}

#endif /* NM_METRICS_H */
