/* SPDX-License-Identifier: Apache-2.0 */
/* Node-wide datapath configuration written by the agent: feature flags and where the node proxy
 * listens. One entry (index 0) in an array map, read on every hook, so flags switch at run time
 * without reloading programs. */
#ifndef NM_CONFIG_H
#define NM_CONFIG_H

#include "nm_common.h"

/* Bits of nm_dp_cfg.flags. */
enum nm_cfg_flags {
	NM_CFG_F_SOCKMAP = 1 << 0,     /* same-node socket redirection (sockops + sk_msg) */
	NM_CFG_F_PROXY_CHECK = 1 << 1, /* mesh flows need the proxy listener in nm_pxy_sock */
};

/* The one entry of nm_dp_cfg. A zeroed entry (the state after load) means: no proxy, no
 * sockmap redirection, plain L4 balancing. */
struct nm_dp_cfg {
	__u32 flags; /* NM_CFG_F_* */
	/* SO_MARK of the proxy's upstream sockets, never sent back to the proxy; 0 = none */
	__u32 proxy_mark;
	/* netns cookie of the node's host netns, for NM_FE_F_HOSTNS frontends; 0 = unknown */
	__u64 host_netns;
	nm_ip4_t proxy4;       /* node proxy outbound listener address, IPv4; 0 = no proxy */
	nm_port_t proxy_port;  /* node proxy outbound listener port (both families); 0 = no proxy */
	__u16 pad;             /* must be 0 */
	struct nm_addr proxy6; /* node proxy outbound listener address, IPv6; all-zero = none */
};

struct {
	NM_MAP(BPF_MAP_TYPE_ARRAY, __u32, struct nm_dp_cfg, 1);
} nm_dp_cfg SEC(".maps");

/* Listening sockets of the node proxy (key 0 = IPv4 listener, 1 = IPv6). The kernel removes a
 * socket from a sockmap when it closes, so an empty slot proves the proxy is not listening: mesh
 * flows are then refused at connect time instead of leaking past the proxy (fail closed). */
struct {
	NM_MAP(BPF_MAP_TYPE_SOCKMAP, __u32, __u64, 2);
} nm_pxy_sock SEC(".maps");

static __always_inline const struct nm_dp_cfg *__nm_cfg(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&nm_dp_cfg, &zero);
}

#endif /* NM_CONFIG_H */
