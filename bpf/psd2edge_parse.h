/* Packet parsing on a cursor. Each parse_* helper checks `ptr + 1 > end` before touching a
 * header, advances the cursor past it, and returns the next protocol (>= 0, host order) or a
 * PARSE_* error. Loops are bounded by the constants in psd2edge_consts.h. */
#ifndef PSD2EDGE_PARSE_H
#define PSD2EDGE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "psd2edge_consts.h"
#include "psd2edge_structs.h"

/* A big-endian 16-bit field in host order, with bounds the verifier can see: kernels before
 * 6.x (Debian's 6.1) do not track the range through a byte swap, so a swapped length added to a
 * packet pointer is refused there ("math between pkt pointer and register with unbounded min
 * value"). The mask is written in asm so that clang cannot drop it as redundant. */
static __always_inline __u64 load_be16(const __be16 *field)
{
	__u64 v = bpf_ntohs(*field);

	asm volatile("%0 &= 0xffff" : "+r"(v));
	return v;
}

static __always_inline int proto_is_vlan(__u16 proto)
{
	return proto == ETH_P_8021Q || proto == ETH_P_8021AD;
}

/* Ethernet and up to PSD2_VLAN_MAX tags; returns the EtherType of the payload. */
static __always_inline int parse_eth(struct cursor *c)
{
	struct ethhdr *eth = c->pos;
	__u16 proto;

	if ((void *)(eth + 1) > c->end)
		return PARSE_TRUNCATED;
	c->pos = eth + 1;
	proto = bpf_ntohs(eth->h_proto);

#pragma unroll
	for (int i = 0; i < PSD2_VLAN_MAX; i++) {
		struct vlan_hdr *vh = c->pos;

		if (!proto_is_vlan(proto))
			break;
		if ((void *)(vh + 1) > c->end)
			return PARSE_TRUNCATED;
		proto = bpf_ntohs(vh->encap_proto);
		c->pos = vh + 1;
	}
	if (proto_is_vlan(proto))
		return PARSE_TOO_DEEP;
	return proto;
}

/* Writes the IPv4-mapped form of a (network order) IPv4 address. */
static __always_inline void addr_map_v4(__u8 out[16], __be32 a)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = a;
}

/* IPv4 with options; returns the L4 protocol. Fills addresses and the fragment kind. */
static __always_inline int parse_ipv4(struct cursor *c, struct pkt *p)
{
	struct iphdr *ip = c->pos;
	__u32 hlen;
	__u64 tot_len;
	__u16 frag;

	if ((void *)(ip + 1) > c->end)
		return PARSE_TRUNCATED;
	if (ip->version != 4 || ip->ihl < 5)
		return PARSE_MALFORMED;
	hlen = ip->ihl * 4;
	if (c->pos + hlen > c->end)
		return PARSE_TRUNCATED;
	tot_len = load_be16(&ip->tot_len);
	if (tot_len < hlen)
		return PARSE_MALFORMED;
	if (c->pos + tot_len > c->end)
		return PARSE_TRUNCATED;

	frag = bpf_ntohs(ip->frag_off);
	if (frag & IP4_OFFSET)
		p->frag = FRAG_LATER;
	else if (frag & IP4_MF)
		p->frag = FRAG_FIRST;

	addr_map_v4(p->key.saddr, ip->saddr);
	addr_map_v4(p->key.daddr, ip->daddr);
	c->pos += hlen;
	return ip->protocol;
}

/* IPv6 and its extension headers (at most PSD2_IPV6_EXT_MAX); returns the upper-layer
 * protocol. A longer chain is malformed. */
static __always_inline int parse_ipv6(struct cursor *c, struct pkt *p)
{
	struct ipv6hdr *ip6 = c->pos;
	__u8 next;

	if ((void *)(ip6 + 1) > c->end)
		return PARSE_TRUNCATED;
	if (ip6->version != 6)
		return PARSE_MALFORMED;
	if ((void *)(ip6 + 1) + load_be16(&ip6->payload_len) > c->end)
		return PARSE_TRUNCATED;

	__builtin_memcpy(p->key.saddr, &ip6->saddr, 16);
	__builtin_memcpy(p->key.daddr, &ip6->daddr, 16);
	c->pos = ip6 + 1;
	next = ip6->nexthdr;

	for (int i = 0; i < PSD2_IPV6_EXT_MAX; i++) {
		struct ipv6_opt_hdr *oh = c->pos;
		struct ipv6_frag_hdr *fh = c->pos;
		__u16 off;

		switch (next) {
		case IPPROTO_HOPOPTS:
		case IPPROTO_ROUTING:
		case IPPROTO_DSTOPTS:
			if ((void *)(oh + 1) > c->end)
				return PARSE_TRUNCATED;
			next = oh->nexthdr;
			c->pos += (oh->hdrlen + 1) * 8;
			break;
		case IPPROTO_AH:
			if ((void *)(oh + 1) > c->end)
				return PARSE_TRUNCATED;
			next = oh->nexthdr;
			c->pos += (oh->hdrlen + 2) * 4;
			break;
		case IPPROTO_FRAGMENT:
			if ((void *)(fh + 1) > c->end)
				return PARSE_TRUNCATED;
			off = bpf_ntohs(fh->frag_off);
			if (off & IP6_OFFSET)
				p->frag = FRAG_LATER;
			else if (off & IP6_MF)
				p->frag = FRAG_FIRST;
			/* offset 0 without M is an atomic fragment: a whole packet */
			next = fh->nexthdr;
			c->pos = fh + 1;
			break;
		default:
			return next;
		}
		if (p->frag == FRAG_LATER)
			return next; /* what follows is payload, not a header */
	}
	return PARSE_MALFORMED;
}

/* TCP: ports and flags; the data offset must be sane and inside the frame. */
static __always_inline int parse_tcp(struct cursor *c, struct pkt *p)
{
	struct tcphdr *th = c->pos;

	if ((void *)(th + 1) > c->end)
		return PARSE_TRUNCATED;
	if (th->doff < 5)
		return PARSE_MALFORMED;
	if (c->pos + th->doff * 4 > c->end)
		return PARSE_TRUNCATED;
	p->key.sport = th->source;
	p->key.dport = th->dest;
	p->tcp_flags = ((__u8 *)th)[13];
	c->pos += th->doff * 4;
	return 0;
}

static __always_inline int parse_udp(struct cursor *c, struct pkt *p)
{
	struct udphdr *uh = c->pos;

	if ((void *)(uh + 1) > c->end)
		return PARSE_TRUNCATED;
	p->key.sport = uh->source;
	p->key.dport = uh->dest;
	c->pos = uh + 1;
	return 0;
}

#endif
