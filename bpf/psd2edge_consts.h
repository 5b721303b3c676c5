/* Constants of the XDP program that the daemon does not share: parsing bounds and the internal
 * "keep going" sentinel. Bounds are #ifndef so tests can shrink them. */
#ifndef PSD2EDGE_CONSTS_H
#define PSD2EDGE_CONSTS_H

#ifndef PSD2_VLAN_MAX
#define PSD2_VLAN_MAX 2 /* 802.1Q, or 802.1ad + 802.1Q (QinQ); frames with more are dropped */
#endif
#ifndef PSD2_IPV6_EXT_MAX
#define PSD2_IPV6_EXT_MAX 8 /* longer extension chains are malformed for a listener */
#endif

#define NSEC_PER_SEC 1000000000ULL

/* Returned by verdict helpers that did not decide: the next stage runs. */
#define PSD2_CONTINUE (-1)

/* Parse results besides a protocol number (protocols are >= 0). */
#define PARSE_TRUNCATED (-1) /* a header runs past the end of the frame */
#define PARSE_MALFORMED (-2) /* a header field is impossible */
#define PARSE_TOO_DEEP (-3)  /* more VLAN tags than PSD2_VLAN_MAX */

/* TCP flags in byte 13 of the header. */
#define TCP_BYTE_SYN 0x02
#define TCP_BYTE_ACK 0x10

/* IPv4 fragment bits (host order of iphdr.frag_off). */
#define IP4_MF 0x2000
#define IP4_OFFSET 0x1fff
/* IPv6 fragment header bits (host order of frag_off). */
#define IP6_MF 0x0001
#define IP6_OFFSET 0xfff8

#endif
