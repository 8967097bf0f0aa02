/* SPDX-License-Identifier: Apache-2.0 */
/* sk_msg on nm_sock4_hash: data sent on a same-node socket goes straight to the peer socket's
 * receive queue, skipping the TCP/IP stack on both sides. Sockets only enter the sockhash while
 * NM_CFG_F_SOCKMAP is set (see sock-ops.c); a peer not in the sockhash takes the normal path. */
#include "nm_common.h"
#include "nm_metrics.h"
#include "nm_sock.h"

char LICENSE[] SEC("license") = "Apache-2.0";

SEC("sk_msg")
int nm_sk_msg(struct sk_msg_md *msg)
{
	/* The peer socket's own view of the tuple: local and remote swapped. */
	struct nm_sock4_tuple peer = {
		.local = msg->remote_ip4,
		.remote = msg->local_ip4,
		.lport = __sock_rport(msg->remote_port),
		.rport = __sock_lport(msg->local_port),
	};

	if (msg->family != NM_AF_INET)
		return SK_PASS;
	/* On a miss the helper returns SK_DROP without arming a redirect; passing keeps the data
	 * on the normal path, so a stale or absent peer never loses bytes. */
	if (bpf_msg_redirect_hash(msg, &nm_sock4_hash, &peer, BPF_F_INGRESS) == SK_PASS)
		__nm_count(NM_CNT_SKMSG_REDIRECT);
	return SK_PASS;
}
