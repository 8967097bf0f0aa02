/* SPDX-License-Identifier: Apache-2.0 */
/* Socket-level load balancing, IPv4: a connect() or sendmsg() to a service frontend is rewritten
 * to one backend (or to the node proxy for mesh flows) once, before the kernel routes anything,
 * so established flows pay nothing per packet; recvmsg() and getpeername() translate back so the
 * application only ever sees the address it dialled. */
#include "nm_common.h"
#include "nm_config.h"
#include "nm_lb.h"
#include "nm_metrics.h"
#include "nm_sock.h"

char LICENSE[] SEC("license") = "Apache-2.0";

static __always_inline bool __sock_in_hostns(struct bpf_sock_addr *ctx, const struct nm_dp_cfg *cfg)
{
	return cfg && cfg->host_netns && bpf_get_netns_cookie(ctx) == cfg->host_netns;
}

/* The proxy's own upstream connects carry its mark: sending them back to the proxy would loop. */
static __always_inline bool __sock_is_proxy(struct bpf_sock_addr *ctx, const struct nm_dp_cfg *cfg)
{
	struct bpf_sock *sk = ctx->sk;

	return cfg && cfg->proxy_mark && sk && sk->mark == cfg->proxy_mark;
}

/* Where mesh flows go: the node proxy, if configured and (with NM_CFG_F_PROXY_CHECK) listening.
 * Returns 0 or -ENOTCONN, which the caller turns into ECONNREFUSED: fail closed. */
static __always_inline int __sock4_proxy_dst(const struct nm_dp_cfg *cfg, nm_ip4_t *addr,
					     nm_port_t *port)
{
	if (!cfg || !cfg->proxy4 || !cfg->proxy_port)
		return -ENOTCONN;
	if (cfg->flags & NM_CFG_F_PROXY_CHECK) {
		__u32 key = 0;
		struct bpf_sock *sk = bpf_map_lookup_elem(&nm_pxy_sock, &key);

		if (!sk)
			return -ENOTCONN;
		bpf_sk_release(sk);
	}
	*addr = cfg->proxy4;
	*port = cfg->proxy_port;
	return 0;
}

/* Backend for a service: the live sessionAffinity entry if any, else the next slot. Returns 0,
 * -ENOENT (no usable backend) or -ESRCH (tables mid-update). */
static __always_inline int __sock4_backend_dst(struct bpf_sock_addr *ctx, __u32 svc_id,
					       const struct nm_lb_svc *svc, struct nm_lb_stat *stat,
					       nm_ip4_t *addr, nm_port_t *port)
{
	struct nm_lb_aff_key akey = {.svc_id = svc_id};
	const struct nm_lb_be *be = 0;
	bool affinity = __lb_svc_has_affinity(svc);
	__u32 backend_id = 0;
	__u64 now = 0;
	int err;

	if (affinity) {
		akey.client = bpf_get_netns_cookie(ctx);
		now = bpf_ktime_get_ns();
		be = __lb_affinity_backend(&akey, svc, now);
		if (be && stat)
			stat->aff_hits += 1;
	}
	if (!be) {
		err = __lb_pick_backend(svc_id, svc, stat, &backend_id, &be);
		if (err < 0)
			return err;
		if (affinity)
			__lb_affinity_store(&akey, backend_id, now);
	}
	/* An IPv6 backend behind an IPv4 frontend is an agent bug; refuse rather than misroute. */
	if (be->addr.w[2] != bpf_htonl(0xffff))
		return -ESRCH;
	*addr = be->addr.w[3];
	*port = be->port;
	return 0;
}

/* Remember what the socket dialled, keyed by (socket, new destination). UDP sockets send many
 * datagrams to the same backend: skip the write when the entry is already right. */
static __always_inline void __sock4_rnat_store(struct bpf_sock_addr *ctx, nm_ip4_t addr,
					       nm_port_t port, const struct nm_sock4_orig *orig,
					       bool check_first)
{
	struct nm_sock4_key key = {
		.cookie = bpf_get_socket_cookie(ctx), .addr = addr, .port = port};
	const struct nm_sock4_orig *cur;

	if (check_first) {
		cur = bpf_map_lookup_elem(&nm_sock4_rnat, &key);
		if (cur && cur->addr == orig->addr && cur->port == orig->port &&
		    cur->flags == orig->flags && cur->svc_id == orig->svc_id)
			return;
	}
	if (bpf_map_update_elem(&nm_sock4_rnat, &key, orig, BPF_ANY) < 0)
		__nm_count(NM_CNT_RNAT_UPDATE_FAIL);
}

/* Translate the destination in ctx if it is a service frontend. Returns 0 (translated or not a
 * service) or -ECONNREFUSED when the service exists but cannot be reached. */
static __always_inline int __sock4_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto, bool is_udp_msg)
{
	struct nm_lb4_key key = {
		.addr = ctx->user_ip4,
		.port = (nm_port_t)ctx->user_port,
		.proto = proto,
	};
	struct nm_sock4_orig orig = {.addr = key.addr, .port = key.port};
	const struct nm_dp_cfg *cfg;
	const struct nm_lb_fe *fe;
	const struct nm_lb_svc *svc;
	struct nm_lb_stat *stat;
	nm_ip4_t addr = 0;
	nm_port_t port = 0;
	__u32 svc_id;
	int err;

	fe = bpf_map_lookup_elem(&nm_lb4_fe, &key);
	if (!fe)
		return 0;
	cfg = __nm_cfg();
	if ((fe->flags & NM_FE_F_HOSTNS) && !__sock_in_hostns(ctx, cfg))
		return 0;
	svc_id = fe->svc_id;
	svc = bpf_map_lookup_elem(&nm_lb_svc, &svc_id);
	if (!svc) {
		__nm_count(NM_CNT_DROP_SVC_MISSING);
		return -ECONNREFUSED;
	}
	stat = __lb_stat_get(svc_id);
	orig.svc_id = svc_id;

	if ((svc->flags & NM_SVC_F_L7) && proto == IPPROTO_TCP && !__sock_is_proxy(ctx, cfg)) {
		if (__sock4_proxy_dst(cfg, &addr, &port) < 0) {
			__nm_count(NM_CNT_DROP_PROXY_DOWN);
			return -ECONNREFUSED;
		}
		orig.flags = NM_SOCK_F_PROXIED;
		if (stat)
			stat->proxied += 1;
	} else {
		err = __sock4_backend_dst(ctx, svc_id, svc, stat, &addr, &port);
		if (err < 0) {
			if (stat)
				stat->no_backend += 1;
			if (err == -ESRCH)
				__nm_count(NM_CNT_DROP_BE_MISSING);
			else if (svc->flags & NM_SVC_F_LOCAL)
				__nm_count(NM_CNT_DROP_NO_LOCAL);
			else
				__nm_count(NM_CNT_DROP_NO_BACKEND);
			return -ECONNREFUSED;
		}
	}

	__sock4_rnat_store(ctx, addr, port, &orig, is_udp_msg);
	ctx->user_ip4 = addr;
	ctx->user_port = (__u32)port;
	if (stat)
		stat->translations += 1;
	return 0;
}

/* Make the socket see the service address again, for replies and getpeername(). */
static __always_inline void __sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct nm_sock4_key key = {
		.cookie = bpf_get_socket_cookie(ctx),
		.addr = ctx->user_ip4,
		.port = (nm_port_t)ctx->user_port,
	};
	const struct nm_sock4_orig *orig = bpf_map_lookup_elem(&nm_sock4_rnat, &key);

	if (!orig)
		return;
	ctx->user_ip4 = orig->addr;
	ctx->user_port = (__u32)orig->port;
}

/* Returning 0 alone would fail the call with EPERM; the application must see ECONNREFUSED at
 * once, as from a closed port, never a timeout. bpf_set_retval serves these hooks since 5.18. */
static __always_inline int __sock_verdict(int err)
{
	if (err == -ECONNREFUSED) {
		bpf_set_retval(-ECONNREFUSED);
		return NM_SYS_REJECT;
	}
	return NM_SYS_PROCEED;
}

SEC("cgroup/connect4")
int nm_sk4_connect(struct bpf_sock_addr *ctx)
{
	__u32 proto = ctx->protocol;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return NM_SYS_PROCEED;
	return __sock_verdict(__sock4_xlate_fwd(ctx, (__u8)proto, false));
}

SEC("cgroup/sendmsg4")
int nm_sk4_sendmsg(struct bpf_sock_addr *ctx)
{
	return __sock_verdict(__sock4_xlate_fwd(ctx, IPPROTO_UDP, true));
}

SEC("cgroup/recvmsg4")
int nm_sk4_recvmsg(struct bpf_sock_addr *ctx)
{
	__sock4_xlate_rev(ctx);
	return NM_SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int nm_sk4_getpeer(struct bpf_sock_addr *ctx)
{
	__sock4_xlate_rev(ctx);
	return NM_SYS_PROCEED;
}

/* Not a program (libbpf loads only functions a program calls): its parameter makes clang emit the
 * BTF of these enums, from which bpf/gen-codecs.ts generates the TypeScript constants. */
struct nm_btf_enums {
	enum nm_cfg_flags cfg;
	enum nm_fe_kind fe_kind;
	enum nm_fe_flags fe;
	enum nm_svc_flags svc;
	enum nm_be_flags be;
	enum nm_count count;
	enum nm_sock_flags sock;
};

__attribute__((noinline)) int nm_btf_enums(struct nm_btf_enums *e)
{
	return e != 0;
}
