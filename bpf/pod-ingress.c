/* SPDX-License-Identifier: Apache-2.0 */
/* tc (sched_cls) on a pod's host-side veth, egress: every packet the node sends towards the pod.
 * A TCP packet to a guarded (pod address, port) passes only when it comes from the node proxy's
 * address; anything else is dropped and counted. Under mTLS STRICT this makes "only authenticated
 * mesh traffic reaches the workload" hold in the kernel, whatever the client did to get there. */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include "nm_common.h"
#include "nm_pod.h"

char LICENSE[] SEC("license") = "Apache-2.0";

/* The guard for the packet's (destination, port), or NULL when the packet is not IPv4 TCP to a
 * guarded port. Sets *saddr to the packet's source address. */
static __always_inline const struct nm_pod4_policy *__pod4_guard(struct __sk_buff *skb,
								 nm_ip4_t *saddr)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct nm_pod4_key key = {};
	struct iphdr *ip;
	struct tcphdr *tcp;
	__u32 ihl;

	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return 0;
	ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
		return 0;
	ihl = (__u32)ip->ihl * 4;
	if (ihl < sizeof(*ip))
		return 0;
	/* A non-first fragment carries no TCP header; without the first one it opens nothing. */
	if (ip->frag_off & bpf_htons(0x1fff))
		return 0;
	tcp = (void *)ip + ihl;
	if ((void *)(tcp + 1) > end)
		return 0;
	key.addr = ip->daddr;
	key.port = tcp->dest;
	*saddr = ip->saddr;
	return bpf_map_lookup_elem(&nm_pod4_ingress, &key);
}

SEC("tc")
int nm_pod_ingress(struct __sk_buff *skb)
{
	const struct nm_pod4_policy *guard;
	nm_ip4_t saddr = 0;

	guard = __pod4_guard(skb, &saddr);
	if (!guard || !(guard->flags & NM_POD_F_STRICT))
		return TC_ACT_OK;
	if (saddr == guard->allow_src) {
		__nm_pod_count(NM_POD_CNT_ALLOWED);
		return TC_ACT_OK;
	}
	__nm_pod_count(NM_POD_CNT_DROPPED);
	return TC_ACT_SHOT;
}

/* Not a program: makes clang emit the BTF of these enums for bpf/gen-codecs.ts. */
struct nm_pod_btf_enums {
	enum nm_pod_flags flags;
	enum nm_pod_count count;
};

__attribute__((noinline)) int nm_pod_btf_enums(struct nm_pod_btf_enums *e)
{
	return e != 0;
}
