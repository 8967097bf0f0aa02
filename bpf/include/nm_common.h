/* SPDX-License-Identifier: Apache-2.0 */
/* Types and helpers every nodemesh BPF object shares: address types whose BTF names tell the
 * TypeScript codec generator how to render them, verdicts, map-definition macros. */
#ifndef NM_COMMON_H
#define NM_COMMON_H

#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/errno.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

/* The codec generator (bpf/gen-codecs.ts) keys on these BTF type names: nm_ip4_t renders as a
 * dotted quad, nm_port_t as a host-order number, struct nm_addr as an IPv6 or IPv4 string. Keep
 * addresses and ports in these types so byte order is decided once, in the codecs. */
typedef __be32 nm_ip4_t;  /* IPv4 address, network byte order */
typedef __be16 nm_port_t; /* L4 port, network byte order */

/* A 16-byte address shared by both families: IPv6, or IPv4-mapped IPv6 (::ffff:a.b.c.d). */
struct nm_addr {
	__be32 w[4]; /* network byte order; for IPv4, w[0..1] = 0, w[2] = htonl(0xffff), w[3] = addr */
};

/* Verdicts of cgroup sock_addr programs. */
#define NM_SYS_REJECT  0
#define NM_SYS_PROCEED 1

#define NM_AF_INET  2  /* AF_INET, without pulling in libc headers */
#define NM_AF_INET6 10 /* AF_INET6 */

#define NM_NSEC_PER_SEC 1000000000ULL

#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif

/* Map definitions: every map is defined once, in the header of its concern; objects that include
 * the same header share the map through its bpffs pin (the loader pins every map by name). */
#define NM_MAP(_type, _key, _value, _max)                                                          \
	__uint(type, _type);                                                                       \
	__type(key, _key);                                                                         \
	__type(value, _value);                                                                     \
	__uint(max_entries, _max)

static __always_inline bool __nm_ip4_is_loopback(nm_ip4_t addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

#endif /* NM_COMMON_H */
