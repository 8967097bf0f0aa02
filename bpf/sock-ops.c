/* SPDX-License-Identifier: Apache-2.0 */
/* sockops: when a connection is established, (1) for flows connect4 sent to the node proxy, record
 * (client address, client port) -> original destination for the proxy to look up, matched through
 * the socket cookie saved at connect time; (2) with NM_CFG_F_SOCKMAP, add the socket to the
 * sockhash so sk_msg can hand data straight to a same-node peer socket; (3) when a translated
 * socket closes, drop its reverse-translation entry. */
#include "nm_common.h"
#include "nm_config.h"
#include "nm_metrics.h"
#include "nm_sock.h"

char LICENSE[] SEC("license") = "Apache-2.0";

/* The client side of a translated connection: if connect4 left a reverse-translation entry, ask
 * for the close callback so the entry goes when the socket does; and for flows sent to the node
 * proxy, record (client address, client port) -> original destination, which only this moment
 * knows both halves of (the port is chosen after connect4 ran). */
static __always_inline void __sockops4_active_established(struct bpf_sock_ops *skops)
{
	struct nm_sock4_key key = {
		.cookie = bpf_get_socket_cookie(skops),
		.addr = skops->remote_ip4,
		.port = __sock_rport(skops->remote_port),
	};
	struct nm_pxy4_key pkey = {};
	const struct nm_sock4_orig *orig;

	orig = bpf_map_lookup_elem(&nm_sock4_rnat, &key);
	if (!orig)
		return;
	bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	if (!(orig->flags & NM_SOCK_F_PROXIED))
		return;
	pkey.addr = skops->local_ip4;
	pkey.port = __sock_lport(skops->local_port);
	if (bpf_map_update_elem(&nm_pxy4_odst, &pkey, orig, BPF_ANY) < 0)
		__nm_count(NM_CNT_ODST_UPDATE_FAIL);
}

/* A translated socket closed: its reverse-translation entry is of no further use. */
static __always_inline void __sockops4_state_change(struct bpf_sock_ops *skops)
{
	struct nm_sock4_key key = {
		.cookie = bpf_get_socket_cookie(skops),
		.addr = skops->remote_ip4,
		.port = __sock_rport(skops->remote_port),
	};

	if (skops->args[1] != BPF_TCP_CLOSE)
		return;
	bpf_map_delete_elem(&nm_sock4_rnat, &key);
}

/* Loopback tuples repeat in every network namespace, so they could name another pod's socket:
 * only pod and node addresses, unique on the node, go into the sockhash. */
static __always_inline void __sockops4_sockhash_add(struct bpf_sock_ops *skops,
						    const struct nm_dp_cfg *cfg)
{
	struct nm_sock4_tuple key = {
		.local = skops->local_ip4,
		.remote = skops->remote_ip4,
		.lport = __sock_lport(skops->local_port),
		.rport = __sock_rport(skops->remote_port),
	};

	if (!cfg || !(cfg->flags & NM_CFG_F_SOCKMAP))
		return;
	if (__nm_ip4_is_loopback(key.local) || __nm_ip4_is_loopback(key.remote))
		return;
	if (bpf_sock_hash_update(skops, &nm_sock4_hash, &key, BPF_ANY) < 0)
		__nm_count(NM_CNT_SOCKHASH_ADD_FAIL);
	else
		__nm_count(NM_CNT_SOCKHASH_ADD);
}

SEC("sockops")
int nm_sock_ops(struct bpf_sock_ops *skops)
{
	const struct nm_dp_cfg *cfg;

	if (skops->family != NM_AF_INET)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		cfg = __nm_cfg();
		__sockops4_active_established(skops);
		__sockops4_sockhash_add(skops, cfg);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		cfg = __nm_cfg();
		__sockops4_sockhash_add(skops, cfg);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		__sockops4_state_change(skops);
		break;
	default:
		break;
	}
	return 1;
}
