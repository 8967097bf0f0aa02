/* SPDX-License-Identifier: Apache-2.0 */
/* Per-socket state: reverse translation (what the application dialled, for getpeername and UDP
 * replies), the original destination of flows sent to the node proxy, and the sockhash used for
 * same-node socket-to-socket redirection. */
#ifndef NM_SOCK_H
#define NM_SOCK_H

#include "nm_common.h"
#include "nm_metrics.h"

/* Live translated TCP sockets (sockops deletes their entry at close) and UDP (socket, backend)
 * pairs. LRU: an entry left behind (a connect that never established) ages out. */
#define NM_SOCK_RNAT_MAX 65536
#define NM_PXY_ODST_MAX  16384 /* connections to the proxy not yet looked up; LRU */
#define NM_SOCK_HASH_MAX 65536 /* established same-node sockets in the redirection sockhash */

/* Bits of nm_sock4_orig.flags / nm_sock6_orig.flags. */
enum nm_sock_flags {
	NM_SOCK_F_PROXIED = 1 << 0, /* the socket was rewritten to the node proxy (mesh flow) */
};

/* Reverse-translation key, IPv4 (nm_sock4_rnat): a socket and the address it was sent to. */
struct nm_sock4_key {
	__u64 cookie;   /* socket cookie (bpf_get_socket_cookie) */
	nm_ip4_t addr;  /* backend (or proxy) address the socket was rewritten to */
	nm_port_t port; /* backend (or proxy) port */
	__u16 pad;      /* must be 0 */
};

/* Reverse-translation key, IPv6 (nm_sock6_rnat). */
struct nm_sock6_key {
	__u64 cookie;        /* socket cookie */
	struct nm_addr addr; /* backend (or proxy) address the socket was rewritten to */
	nm_port_t port;      /* backend (or proxy) port */
	__u16 pad;           /* must be 0 */
	__u32 pad2;          /* must be 0 */
};

/* The destination the application dialled, IPv4 (values of nm_sock4_rnat and nm_pxy4_odst). */
struct nm_sock4_orig {
	nm_ip4_t addr;  /* service frontend address */
	nm_port_t port; /* service frontend port */
	__u16 flags;    /* NM_SOCK_F_* */
	__u32 svc_id;   /* key of nm_lb_svc; 0 = not a service (a meshed pod dialled directly) */
};

/* The destination the application dialled, IPv6 (values of nm_sock6_rnat and nm_pxy6_odst). */
struct nm_sock6_orig {
	struct nm_addr addr; /* service frontend address */
	nm_port_t port;      /* service frontend port */
	__u16 flags;         /* NM_SOCK_F_* */
	__u32 svc_id;        /* key of nm_lb_svc; 0 = not a service */
};

/* Proxy lookup key, IPv4 (nm_pxy4_odst): the peer of a connection the proxy accepted. */
struct nm_pxy4_key {
	nm_ip4_t addr;  /* client address (the accepted socket's peer address) */
	nm_port_t port; /* client port */
	__u16 pad;      /* must be 0 */
};

/* Proxy lookup key, IPv6 (nm_pxy6_odst). */
struct nm_pxy6_key {
	struct nm_addr addr; /* client address */
	nm_port_t port;      /* client port */
	__u16 pad;           /* must be 0 */
};

/* Sockhash key, IPv4 (nm_sock4_hash): an established socket as seen from its own side. */
struct nm_sock4_tuple {
	nm_ip4_t local;  /* local address */
	nm_ip4_t remote; /* remote address */
	nm_port_t lport; /* local port */
	nm_port_t rport; /* remote port */
};

/* Written at connect/sendmsg, read by getpeername/recvmsg and by sockops (proxied flows). */
struct {
	NM_MAP(BPF_MAP_TYPE_LRU_HASH, struct nm_sock4_key, struct nm_sock4_orig, NM_SOCK_RNAT_MAX);
} nm_sock4_rnat SEC(".maps");

struct {
	NM_MAP(BPF_MAP_TYPE_LRU_HASH, struct nm_sock6_key, struct nm_sock6_orig, NM_SOCK_RNAT_MAX);
} nm_sock6_rnat SEC(".maps");

/* Written by sockops when a proxied connection is established; the proxy looks up (and may
 * delete) the entry for each accepted connection. */
struct {
	NM_MAP(BPF_MAP_TYPE_LRU_HASH, struct nm_pxy4_key, struct nm_sock4_orig, NM_PXY_ODST_MAX);
} nm_pxy4_odst SEC(".maps");

struct {
	NM_MAP(BPF_MAP_TYPE_LRU_HASH, struct nm_pxy6_key, struct nm_sock6_orig, NM_PXY_ODST_MAX);
} nm_pxy6_odst SEC(".maps");

/* Established same-node sockets; sk_msg redirects a send to the peer socket found here. */
struct {
	NM_MAP(BPF_MAP_TYPE_SOCKHASH, struct nm_sock4_tuple, __u64, NM_SOCK_HASH_MAX);
} nm_sock4_hash SEC(".maps");

/* sock_ops and sk_msg hand the remote port as a __u32 holding the network-order port in its upper
 * 16 bits on little-endian machines (a uapi quirk kept for compatibility). */
static __always_inline nm_port_t __sock_rport(__u32 remote_port)
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	return (nm_port_t)(remote_port >> 16);
#else
	return (nm_port_t)remote_port;
#endif
}

/* ... while the local port arrives in host order. */
static __always_inline nm_port_t __sock_lport(__u32 local_port)
{
	return bpf_htons((__u16)local_port);
}

#endif /* NM_SOCK_H */
