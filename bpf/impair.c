/* SPDX-License-Identifier: Apache-2.0 */
/* Test-only link impairment: tc (sched_cls) on an interface of a sandbox node, ingress and egress,
 * dropping a configured fraction of IP packets at random. It stands in for `tc netem loss` on
 * kernels built without sch_netem; it cannot delay packets (no netem, no fq for EDT), so latency
 * is emulated elsewhere by the tests. Never attached by the agent: test/e2e/helpers/link-impair.ts
 * loads it on interfaces of nm-* namespaces only. Non-IP frames (ARP) pass, so neighbour
 * resolution does not add its own second-long retries to the loss under test. */
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include "nm_common.h"

char LICENSE[] SEC("license") = "Apache-2.0";

#define NM_IMPAIR_PPM_MAX 1000000 /* loss is given in parts per million */

/* Value of nm_impair_cfg[0], written by the loader before it attaches the programs. */
struct nm_impair_cfg {
	__u32 loss_ppm; /* IP packets dropped per million, 0..NM_IMPAIR_PPM_MAX */
	__u32 pad;
};

/* Counters of nm_impair_count (index). */
enum nm_impair_count {
	NM_IMPAIR_CNT_IN_PASSED = 0,  /* IP packets received that passed */
	NM_IMPAIR_CNT_IN_DROPPED = 1, /* IP packets received that were dropped */
	NM_IMPAIR_CNT_EG_PASSED = 2,  /* IP packets sent that passed */
	NM_IMPAIR_CNT_EG_DROPPED = 3, /* IP packets sent that were dropped */
	NM_IMPAIR_CNT_NON_IP = 4,     /* frames that are not IP, both directions: never dropped */
	NM_IMPAIR_CNT_MAX = 5,        /* array size */
};

struct {
	NM_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct nm_impair_cfg, 1);
} nm_impair_cfg SEC(".maps");

/* Outcomes, indexed by enum nm_impair_count; one __u64 per CPU. */
struct {
	NM_MAP(BPF_MAP_TYPE_PERCPU_ARRAY, __u32, __u64, NM_IMPAIR_CNT_MAX);
} nm_impair_count SEC(".maps");

static __always_inline void __nm_impair_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&nm_impair_count, &idx);

	if (c)
		*c += 1;
}

/* passed/dropped: the counters of this direction. */
static __always_inline int __nm_impair(struct __sk_buff *skb, __u32 passed, __u32 dropped)
{
	const struct nm_impair_cfg *cfg;
	__u32 zero = 0;

	if (skb->protocol != bpf_htons(ETH_P_IP) && skb->protocol != bpf_htons(ETH_P_IPV6)) {
		__nm_impair_count(NM_IMPAIR_CNT_NON_IP);
		return TC_ACT_OK;
	}
	cfg = bpf_map_lookup_elem(&nm_impair_cfg, &zero);
	/* The modulo bias of 2^32 over 10^6 is below 0.03 %: irrelevant for a loss rate. */
	if (cfg && bpf_get_prandom_u32() % NM_IMPAIR_PPM_MAX < cfg->loss_ppm) {
		__nm_impair_count(dropped);
		return TC_ACT_SHOT;
	}
	__nm_impair_count(passed);
	return TC_ACT_OK;
}

SEC("tc")
int nm_impair_ingress(struct __sk_buff *skb)
{
	return __nm_impair(skb, NM_IMPAIR_CNT_IN_PASSED, NM_IMPAIR_CNT_IN_DROPPED);
}

SEC("tc")
int nm_impair_egress(struct __sk_buff *skb)
{
	return __nm_impair(skb, NM_IMPAIR_CNT_EG_PASSED, NM_IMPAIR_CNT_EG_DROPPED);
}

/* Not a program: makes clang emit the BTF of this enum for bpf/gen-codecs.ts. */
struct nm_impair_btf_enums {
	enum nm_impair_count count;
};

__attribute__((noinline)) int nm_impair_btf_enums(struct nm_impair_btf_enums *e)
{
	return e != 0;
}
