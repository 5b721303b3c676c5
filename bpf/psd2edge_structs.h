/* Structures private to the XDP program: wire headers that uapi lacks and the per-packet state
 * the parsers fill in. Map keys and values live in include/psd2edge_abi.h. */
#ifndef PSD2EDGE_STRUCTS_H
#define PSD2EDGE_STRUCTS_H

#include <linux/types.h>

#include "psd2edge_abi.h"

/* 802.1Q / 802.1ad tag, after the outer MAC addresses. */
struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* IPv6 fragment extension header (RFC 8200 4.5). */
struct ipv6_frag_hdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* Parsing cursor: the next unread byte and the end of the frame. */
struct cursor {
	void *pos;
	void *end;
};

enum frag_kind { FRAG_NONE = 0, FRAG_FIRST, FRAG_LATER };

/* What the parsers learned about one packet. The flow key doubles as the source/destination
 * store for both families, so the flow lookup needs no copy. */
struct pkt {
	struct psd2_flow6_key key; /* saddr/daddr IPv4-mapped for IPv4, ports */
	__u64 len;                /* whole frame, for byte counters and policing */
	enum frag_kind frag;
	__u8 tcp_flags;           /* byte 13 of the TCP header, 0 for UDP */
};

#endif
