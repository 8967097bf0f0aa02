/* SPDX-License-Identifier: Apache-2.0 */
/* tc (sched_cls) on a pod's host-side veth, ingress: every packet the pod sends. An IPv4 packet
 * passes only when its source is the pod's own address (nm_pod4_src, by the veth's ifindex); any
 * other source is a spoof and is dropped and counted. IPv6 passes only for a pod that has an IPv6
 * address (the mesh is IPv4 for now). ARP and other non-IP frames pass: they cannot claim an
 * address beyond this veth (the node reaches each pod through its own /32 route). */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include "nm_common.h"
#include "nm_pod_egress.h"

char LICENSE[] SEC("license") = "Apache-2.0";

SEC("tc")
int nm_pod_egress(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	const struct nm_pod4_src_val *src;
	__u32 ifindex = skb->ifindex;
	struct iphdr *ip;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	src = bpf_map_lookup_elem(&nm_pod4_src, &ifindex);
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if (src && (src->flags & NM_POD_SRC_F_IPV6))
			return TC_ACT_OK;
		__nm_podeg_count(NM_PODEG_CNT_IPV6);
		return TC_ACT_SHOT;
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK;
	/* The agent removes an entry only together with the filter: a veth still running the
	 * program without one is a pod it no longer vouches for. Fail closed. */
	if (!src) {
		__nm_podeg_count(NM_PODEG_CNT_NO_ENTRY);
		return TC_ACT_SHOT;
	}
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end)
		return TC_ACT_SHOT;
	if (ip->saddr != src->addr) {
		__nm_podeg_count(NM_PODEG_CNT_SPOOFED);
		return TC_ACT_SHOT;
	}
	__nm_podeg_count(NM_PODEG_CNT_PASSED);
	return TC_ACT_OK;
}

/* Not a program: makes clang emit the BTF of these enums for bpf/gen-codecs.ts. */
struct nm_podeg_btf_enums {
	enum nm_pod_src_flags flags;
	enum nm_podeg_count count;
};

__attribute__((noinline)) int nm_podeg_btf_enums(struct nm_podeg_btf_enums *e)
{
	return e != 0;
}
