/* The XDP program under BPF_PROG_TEST_RUN: a fixture table of crafted frames (IPv4, IPv6, VLAN,
 * QinQ, options, extension headers, fragments, truncated and malformed headers, non-listener
 * ports, each verdict), each with the expected XDP action and per-reason counter deltas.
 * Needs root (loads the program): fails without it (skips under `make test-fast`). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "precondition.h"

#include <arpa/inet.h>
#include <errno.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "flow_index.h"
#include "psd2edge_abi.h"
#include "psd2edge.skel.h"

#define LISTEN_PORT 8443 /* and LISTEN_PORT + 1 */
#define LOCAL_V4 "192.0.2.1"
#define LOCAL_V6 "2001:db8::1"

/* --- frame builder ---------------------------------------------------------------------- */

enum l3 { L3_ARP, L3_V4, L3_V6 };
enum frag { F_NONE, F_FIRST, F_LATER, F_ATOMIC };
enum flaw { OK, BAD_IHL, BAD_DOFF, TOTLEN_LONG };

struct spec {
	const char *src;     /* source address; family decides IPv4/IPv6 (NULL: ARP) */
	int vlans;           /* tags; from 2 on the outer one is 802.1ad (QinQ) */
	bool prio_tags;      /* VLAN id 0 (802.1p priority tags) instead of 100, 101... */
	int proto;           /* IPPROTO_TCP, _UDP, _ICMP */
	uint16_t sport, dport;
	uint8_t tcp_flags;   /* default (0) is ACK */
	int ip_opt_words;    /* IPv4 options, 4-byte words */
	const uint8_t *ext;  /* IPv6 extension header chain, EXT_END-terminated */
	enum frag frag;
	enum flaw flaw;
	int payload;         /* bytes after the L4 header */
	int cut;             /* bytes removed from the end of the frame */
	int vary_src;        /* add the repeat index to the last address byte */
};

#define EXT_END 0xff /* IPPROTO_HOPOPTS is 0 */
#define SYN 0x02
#define ACK 0x10

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static size_t build_l4(const struct spec *s, uint8_t *p)
{
	size_t n = 0;

	if (s->proto == IPPROTO_TCP) {
		memset(p, 0, 20);
		put16(p, s->sport);
		put16(p + 2, s->dport);
		p[12] = (s->flaw == BAD_DOFF ? 3 : 5) << 4;
		p[13] = s->tcp_flags ? s->tcp_flags : ACK;
		put16(p + 14, 65535);
		n = 20;
	} else if (s->proto == IPPROTO_UDP) {
		put16(p, s->sport);
		put16(p + 2, s->dport);
		put16(p + 4, 8 + s->payload);
		put16(p + 6, 0);
		n = 8;
	} else { /* ICMP echo */
		memset(p, 0, 8);
		p[0] = 8;
		n = 8;
	}
	memset(p + n, 0xab, s->payload);
	return n + s->payload;
}

/* Builds the frame for repeat `rep` into buf; returns its length. */
static size_t build(const struct spec *s, int rep, uint8_t *buf)
{
	uint8_t *p = buf;
	bool v6 = s->src && strchr(s->src, ':');
	uint16_t etype = !s->src ? ETH_P_ARP : v6 ? ETH_P_IPV6 : ETH_P_IP;
	size_t len;

	memcpy(p, "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02", 12);
	p += 12;
	for (int i = 0; i < s->vlans; i++) {
		put16(p, (s->vlans >= 2 && i == 0) ? ETH_P_8021AD : ETH_P_8021Q);
		put16(p + 2, s->prio_tags ? 0 : 100 + i);
		p += 4;
	}
	put16(p, etype);
	p += 2;

	if (etype == ETH_P_ARP) {
		memset(p, 0, 28);
		put16(p, 1);
		put16(p + 2, ETH_P_IP);
		p[4] = 6;
		p[5] = 4;
		put16(p + 6, 1);
		p += 28;
	} else if (!v6) {
		uint8_t *ip = p;
		int ihl = 5 + s->ip_opt_words;
		size_t l4;

		memset(ip, 0, ihl * 4);
		ip[0] = 0x40 | (s->flaw == BAD_IHL ? 4 : ihl);
		ip[8] = 64;
		ip[9] = s->proto;
		if (s->frag == F_FIRST)
			put16(ip + 6, 0x2000);
		else if (s->frag == F_LATER)
			put16(ip + 6, 185);
		inet_pton(AF_INET, s->src, ip + 12);
		ip[15] += s->vary_src ? rep : 0;
		inet_pton(AF_INET, LOCAL_V4, ip + 16);
		for (int i = 20; i < ihl * 4; i++)
			ip[i] = 1; /* NOP options */
		p += ihl * 4;
		l4 = s->frag == F_LATER ? (memset(p, 0xcd, 64), 64) : build_l4(s, p);
		put16(ip + 2, ihl * 4 + l4 + (s->flaw == TOTLEN_LONG ? 100 : 0));
		p += l4;
	} else {
		uint8_t *ip = p, next;
		size_t l4;

		memset(ip, 0, 40);
		ip[0] = 0x60;
		ip[7] = 64;
		inet_pton(AF_INET6, s->src, ip + 8);
		ip[23] += s->vary_src ? rep : 0;
		inet_pton(AF_INET6, LOCAL_V6, ip + 24);
		p += 40;
		next = 6; /* nexthdr field offset of the previous header */
		uint8_t *prev_next = ip + next;
		for (const uint8_t *e = s->ext; e && *e != EXT_END; e++) {
			*prev_next = *e;
			memset(p, 0, 16);
			prev_next = p;
			if (*e == IPPROTO_AH) {
				p[1] = 2; /* (2 + 2) * 4 = 16 bytes */
				p += 16;
			} else {
				p += 8;
			}
		}
		if (s->frag != F_NONE) {
			*prev_next = IPPROTO_FRAGMENT;
			memset(p, 0, 8);
			prev_next = p;
			if (s->frag == F_FIRST)
				put16(p + 2, 0x0001);
			else if (s->frag == F_LATER)
				put16(p + 2, 185 << 3);
			p += 8;
		}
		*prev_next = s->proto;
		l4 = s->frag == F_LATER ? (memset(p, 0xcd, 64), 64) : build_l4(s, p);
		p += l4;
		put16(ip + 4, p - (ip + 40));
	}
	len = p - buf;
	return len > (size_t)s->cut ? len - s->cut : 0;
}

/* --- fixture table ------------------------------------------------------------------------ */

struct delta {
	enum psd2_stat_reason reason;
	int n;
};

struct fixture {
	const char *desc;
	struct spec pkt;
	int repeat;              /* frames sent (default 1) */
	int action;              /* expected XDP action of the last frame */
	struct delta deltas[3];  /* expected counter changes; none listed: {reason of action, repeat} */
	enum psd2_stat_reason reason; /* used when deltas is empty */
};

static const uint8_t ext4[] = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_ROUTING, IPPROTO_AH,
				EXT_END };
static const uint8_t ext9[] = { IPPROTO_HOPOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS,
				IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS, IPPROTO_DSTOPTS,
				IPPROTO_DSTOPTS, EXT_END };

#define TCP4(a) .src = a, .proto = IPPROTO_TCP, .sport = 40000, .dport = LISTEN_PORT
#define P XDP_PASS
#define D XDP_DROP

/* Map state (set up in setup()): deny 198.51.100.0/24 and 2001:db8:dead::/48; SYN bucket 1/s
 * burst 2; client slots 1 active, 2 revoked, 3 free, 4 active 1 pps burst 2, 5 active
 * 1000 B/s burst 1200 B; flows below. */
#define SRC_DENY4 "198.51.100.7"
#define SRC_DENY6 "2001:db8:dead::7"
#define SRC_OK4 "203.0.113.5"
#define SRC_OK6 "2001:db8:1::5"
#define FLOW_ACTIVE4 "203.0.113.11"
#define FLOW_ACTIVE6 "2001:db8:1::11"
#define FLOW_REVOKED4 "203.0.113.12"
#define FLOW_REVOKED6 "2001:db8:1::12"
#define FLOW_FREE4 "203.0.113.13"
#define FLOW_PPS4 "203.0.113.14"
#define FLOW_BPS4 "203.0.113.15"
#define FLOW_NOSLOT4 "203.0.113.16"
#define FLOW_REVOKED_DENIED4 "198.51.100.12"

static const struct fixture fixtures[] = {
	/* not ours: passes untouched */
	{ "ARP passes", { .src = NULL }, 1, P, {}, PSD2_STAT_PASS_NOT_IP },
	{ "IPv4 TCP to port 22", { .src = SRC_OK4, .proto = IPPROTO_TCP, .sport = 1, .dport = 22 },
	  1, P, {}, PSD2_STAT_PASS_NOT_LISTENER },
	{ "IPv6 TCP to port 22", { .src = SRC_OK6, .proto = IPPROTO_TCP, .sport = 1, .dport = 22 },
	  1, P, {}, PSD2_STAT_PASS_NOT_LISTENER },
	{ "IPv4 UDP to port 53 from a denied source",
	  { .src = SRC_DENY4, .proto = IPPROTO_UDP, .sport = 1, .dport = 53 }, 1, P, {},
	  PSD2_STAT_PASS_NOT_LISTENER },
	{ "IPv4 SYN to port 22 from a denied source",
	  { .src = SRC_DENY4, .proto = IPPROTO_TCP, .sport = 1, .dport = 22, .tcp_flags = SYN }, 1,
	  P, {}, PSD2_STAT_PASS_NOT_LISTENER },
	{ "IPv4 ICMP echo", { .src = SRC_DENY4, .proto = IPPROTO_ICMP }, 1, P, {},
	  PSD2_STAT_PASS_NOT_LISTENER },
	/* more VLAN tags than parsed: the port is unknown, dropped whatever it is */
	{ "three VLAN tags to the listener", { TCP4(SRC_OK4), .vlans = 3 }, 1, D, {},
	  PSD2_STAT_DROP_VLAN_DEPTH },
	{ "three VLAN tags from a denied source", { TCP4(SRC_DENY4), .vlans = 3 }, 1, D, {},
	  PSD2_STAT_DROP_VLAN_DEPTH },
	{ "three priority tags (VLAN 0, which the stack strips) from a denied source",
	  { TCP4(SRC_DENY4), .vlans = 3, .prio_tags = true, .tcp_flags = SYN }, 1, D, {},
	  PSD2_STAT_DROP_VLAN_DEPTH },
	{ "three VLAN tags, IPv6 packet of a revoked flow", { TCP4(FLOW_REVOKED6), .vlans = 3 }, 1,
	  D, {}, PSD2_STAT_DROP_VLAN_DEPTH },
	{ "three VLAN tags to port 22 (no port is read)", { .src = SRC_OK4, .proto = IPPROTO_TCP,
	  .sport = 1, .dport = 22, .vlans = 3 }, 1, D, {}, PSD2_STAT_DROP_VLAN_DEPTH },
	{ "six VLAN tags", { TCP4(SRC_OK6), .vlans = 6 }, 1, D, {}, PSD2_STAT_DROP_VLAN_DEPTH },
	{ "three VLAN tags, the third cut", { TCP4(SRC_OK4), .vlans = 3, .cut = 44 }, 1, D, {},
	  PSD2_STAT_DROP_VLAN_DEPTH },
	{ "two priority tags (VLAN 0) from a denied source are parsed",
	  { TCP4(SRC_DENY4), .vlans = 2, .prio_tags = true }, 1, D, {}, PSD2_STAT_DROP_DENY },
	{ "two priority tags (VLAN 0) to the listener pass", { TCP4(SRC_OK4), .vlans = 2,
	  .prio_tags = true }, 1, P, {}, PSD2_STAT_PASS },
	/* listener traffic outside any flow */
	{ "IPv4 ACK to the listener", { TCP4(SRC_OK4) }, 1, P, {}, PSD2_STAT_PASS },
	{ "IPv6 ACK to the listener", { TCP4(SRC_OK6) }, 1, P, {}, PSD2_STAT_PASS },
	{ "IPv4 UDP to the listener port", { .src = SRC_OK4, .proto = IPPROTO_UDP, .sport = 5,
	  .dport = LISTEN_PORT, .payload = 20 }, 1, P, {}, PSD2_STAT_PASS },
	{ "IPv4 with 40 bytes of options", { TCP4(SRC_OK4), .ip_opt_words = 10 }, 1, P, {},
	  PSD2_STAT_PASS },
	{ "IPv6 atomic fragment (offset 0, M=0) is a whole packet", { TCP4(SRC_OK6),
	  .frag = F_ATOMIC }, 1, P, {}, PSD2_STAT_PASS },
	/* deny-list */
	{ "IPv4 from a denied /24", { TCP4(SRC_DENY4) }, 1, D, {}, PSD2_STAT_DROP_DENY },
	{ "IPv6 from a denied /48", { TCP4(SRC_DENY6) }, 1, D, {}, PSD2_STAT_DROP_DENY },
	{ "IPv4 UDP to the listener from a denied source", { .src = SRC_DENY4,
	  .proto = IPPROTO_UDP, .sport = 5, .dport = LISTEN_PORT }, 1, D, {}, PSD2_STAT_DROP_DENY },
	{ "802.1Q IPv4 from a denied source", { TCP4(SRC_DENY4), .vlans = 1 }, 1, D, {},
	  PSD2_STAT_DROP_DENY },
	{ "QinQ IPv6 from a denied source", { TCP4(SRC_DENY6), .vlans = 2 }, 1, D, {},
	  PSD2_STAT_DROP_DENY },
	{ "IPv4 options + denied source", { TCP4(SRC_DENY4), .ip_opt_words = 10 }, 1, D, {},
	  PSD2_STAT_DROP_DENY },
	{ "IPv6 hop-by-hop, dstopts, routing, AH + denied source", { TCP4(SRC_DENY6),
	  .ext = ext4 }, 1, D, {}, PSD2_STAT_DROP_DENY },
	{ "QinQ IPv6 with extension headers + denied source", { TCP4(SRC_DENY6), .vlans = 2,
	  .ext = ext4 }, 1, D, {}, PSD2_STAT_DROP_DENY },
	{ "deny comes before a revoked flow", { TCP4(FLOW_REVOKED_DENIED4) }, 1, D, {},
	  PSD2_STAT_DROP_DENY },
	/* fragments */
	{ "IPv4 first fragment to the listener", { TCP4(SRC_OK4), .frag = F_FIRST }, 1, D, {},
	  PSD2_STAT_DROP_FRAGMENT },
	{ "IPv6 first fragment to the listener", { TCP4(SRC_OK6), .frag = F_FIRST }, 1, D, {},
	  PSD2_STAT_DROP_FRAGMENT },
	{ "IPv4 first fragment to port 22", { .src = SRC_OK4, .proto = IPPROTO_TCP, .sport = 1,
	  .dport = 22, .frag = F_FIRST }, 1, P, {}, PSD2_STAT_PASS_NOT_LISTENER },
	{ "IPv4 later fragment (no port)", { TCP4(SRC_DENY4), .frag = F_LATER }, 1, P, {},
	  PSD2_STAT_PASS_FRAGMENT },
	{ "IPv6 later fragment (no port)", { TCP4(SRC_DENY6), .frag = F_LATER }, 1, P, {},
	  PSD2_STAT_PASS_FRAGMENT },
	{ "802.1Q IPv6 later fragment after extension headers", { TCP4(SRC_OK6), .vlans = 1,
	  .ext = ext4, .frag = F_LATER }, 1, P, {}, PSD2_STAT_PASS_FRAGMENT },
	/* truncated and malformed */
	/* (a frame shorter than Ethernet cannot be fed: test_run refuses it with EINVAL) */
	{ "VLAN tag cut", { TCP4(SRC_OK4), .vlans = 1, .cut = 42 }, 1, D, {},
	  PSD2_STAT_DROP_MALFORMED },
	{ "IPv4 header cut", { TCP4(SRC_OK4), .cut = 30 }, 1, D, {}, PSD2_STAT_DROP_MALFORMED },
	{ "IPv4 options cut", { TCP4(SRC_OK4), .ip_opt_words = 10, .cut = 50 }, 1, D, {},
	  PSD2_STAT_DROP_MALFORMED },
	{ "IPv4 ihl 4", { TCP4(SRC_OK4), .flaw = BAD_IHL }, 1, D, {}, PSD2_STAT_DROP_MALFORMED },
	{ "IPv4 total length beyond the frame", { TCP4(SRC_OK4), .flaw = TOTLEN_LONG }, 1, D, {},
	  PSD2_STAT_DROP_MALFORMED },
	{ "IPv4 TCP data offset 3", { TCP4(SRC_OK4), .flaw = BAD_DOFF }, 1, D, {}, PSD2_STAT_DROP_MALFORMED },
	{ "IPv6 header cut", { TCP4(SRC_OK6), .cut = 50 }, 1, D, {}, PSD2_STAT_DROP_MALFORMED },
	{ "IPv6 TCP header cut", { TCP4(SRC_OK6), .cut = 10 }, 1, D, {}, PSD2_STAT_DROP_MALFORMED },
	{ "IPv6 extension header cut", { .src = SRC_OK6, .proto = IPPROTO_ICMP, .ext = ext4,
	  .cut = 36 }, 1, D, {}, PSD2_STAT_DROP_MALFORMED },
	{ "IPv6 chain of 9 extension headers", { TCP4(SRC_OK6), .ext = ext9 }, 1, D, {},
	  PSD2_STAT_DROP_MALFORMED },
	/* per-source SYN bucket: 1/s, burst 2 */
	{ "IPv4 SYN flood from one source: 2 pass, then drop",
	  { TCP4("203.0.113.100"), .tcp_flags = SYN }, 3, D,
	  { { PSD2_STAT_PASS, 2 }, { PSD2_STAT_DROP_SYN_RATE, 1 }, { PSD2_STAT_EVENT_SRC_NEW, 1 } }, 0 },
	{ "IPv6 SYNs from one /64 share a bucket",
	  { TCP4("2001:db8:2::100"), .tcp_flags = SYN, .vary_src = 1 }, 3, D,
	  { { PSD2_STAT_PASS, 2 }, { PSD2_STAT_DROP_SYN_RATE, 1 }, { PSD2_STAT_EVENT_SRC_NEW, 1 } }, 0 },
	{ "IPv4 SYNs from different /32s do not",
	  { TCP4("203.0.113.110"), .tcp_flags = SYN, .vary_src = 1 }, 3, P,
	  { { PSD2_STAT_PASS, 3 }, { PSD2_STAT_EVENT_SRC_NEW, 3 } }, 0 },
	{ "SYN+ACK is not a new connection", { TCP4("203.0.113.120"), .tcp_flags = SYN | ACK },
	  3, P, {}, PSD2_STAT_PASS },
	{ "802.1Q IPv4 SYN flood", { TCP4("203.0.113.130"), .tcp_flags = SYN, .vlans = 1 }, 4, D,
	  { { PSD2_STAT_PASS, 2 }, { PSD2_STAT_DROP_SYN_RATE, 2 }, { PSD2_STAT_EVENT_SRC_NEW, 1 } }, 0 },
	/* bound flows */
	{ "IPv4 packet of an active client's flow", { TCP4(FLOW_ACTIVE4) }, 1, P, {},
	  PSD2_STAT_PASS_FLOW },
	{ "IPv6 packet of an active client's flow", { TCP4(FLOW_ACTIVE6) }, 1, P, {},
	  PSD2_STAT_PASS_FLOW },
	{ "QinQ IPv6 with extension headers, active flow", { TCP4(FLOW_ACTIVE6), .vlans = 2,
	  .ext = ext4, .payload = 100 }, 1, P, {}, PSD2_STAT_PASS_FLOW },
	{ "same tuple on another local port is not the flow", { .src = FLOW_REVOKED4,
	  .proto = IPPROTO_TCP, .sport = 40000, .dport = LISTEN_PORT + 1 }, 1, P, {},
	  PSD2_STAT_PASS },
	{ "IPv4 flow of a revoked client", { TCP4(FLOW_REVOKED4), .payload = 100 }, 1, D, {},
	  PSD2_STAT_DROP_REVOKED },
	{ "802.1Q IPv6 flow of a revoked client", { TCP4(FLOW_REVOKED6), .vlans = 1 }, 1, D, {},
	  PSD2_STAT_DROP_REVOKED },
	{ "SYN reusing a revoked flow's tuple", { TCP4(FLOW_REVOKED4), .tcp_flags = SYN }, 1, D,
	  { { PSD2_STAT_DROP_REVOKED, 1 }, { PSD2_STAT_EVENT_SRC_NEW, 1 } }, 0 },
	{ "flow of a freed slot", { TCP4(FLOW_FREE4) }, 1, D, {}, PSD2_STAT_DROP_UNBOUND },
	{ "flow whose slot is out of range fails closed", { TCP4(FLOW_NOSLOT4) }, 1, D, {},
	  PSD2_STAT_DROP_NO_CLIENT },
	{ "client policed at 1 pps, burst 2", { TCP4(FLOW_PPS4) }, 3, D,
	  { { PSD2_STAT_PASS_FLOW, 2 }, { PSD2_STAT_DROP_POLICED, 1 } }, 0 },
	{ "client policed at 1000 B/s, burst 1200 B (554-byte frames)",
	  { TCP4(FLOW_BPS4), .payload = 500 }, 3, D,
	  { { PSD2_STAT_PASS_FLOW, 2 }, { PSD2_STAT_DROP_POLICED, 1 } }, 0 },
};

/* --- map setup ---------------------------------------------------------------------------- */

struct env {
	struct psd2edge_bpf *skel;
	struct flow_index *flow_index;
	int prog_fd;
	int ncpu;
};

static void addr_mapped(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	if (strchr(text, ':')) {
		assert_int_equal(inet_pton(AF_INET6, text, out), 1);
	} else {
		out[10] = out[11] = 0xff;
		assert_int_equal(inet_pton(AF_INET, text, out + 12), 1);
	}
}

/* The IPv4 flow key of src:sport -> LOCAL_V4:LISTEN_PORT. */
static struct psd2_flow_key key_v4(const char *src, uint16_t sport)
{
	struct psd2_flow_key k = { .sport = htons(sport), .dport = htons(LISTEN_PORT) };

	assert_int_equal(inet_pton(AF_INET, src, k.saddr), 1);
	assert_int_equal(inet_pton(AF_INET, LOCAL_V4, k.daddr), 1);
	return k;
}

/* As the daemon does: into the hash, then into the index. */
static void put_flow_port(struct env *e, const char *src, uint16_t sport, uint32_t slot)
{
	struct psd2_flow6_key k = { .sport = htons(sport), .dport = htons(LISTEN_PORT) };
	struct psd2_flow v = { .slot = slot };

	if (strchr(src, ':')) {
		addr_mapped(src, k.saddr);
		addr_mapped(LOCAL_V6, k.daddr);
		assert_int_equal(bpf_map__update_elem(e->skel->maps.flows_v6, &k, sizeof(k), &v,
						      sizeof(v), BPF_NOEXIST), 0);
		flow_index_update_v6(e->flow_index, &k, slot, FLOW_INDEX_ADD);
		return;
	}
	struct psd2_flow_key k4 = key_v4(src, sport);

	assert_int_equal(bpf_map__update_elem(e->skel->maps.flows, &k4, sizeof(k4), &v, sizeof(v),
					      BPF_NOEXIST), 0);
	flow_index_update_v4(e->flow_index, &k4, slot, FLOW_INDEX_ADD);
}

static void put_flow(struct env *e, const char *src, uint32_t slot)
{
	put_flow_port(e, src, 40000, slot);
}

static void put_client(struct env *e, uint32_t slot, const char *id, enum psd2_client_state st,
		       uint64_t pps, uint64_t bps, uint64_t burst_pkts, uint64_t burst_bytes)
{
	struct psd2_client c = { .state = st, .pps = pps, .bytes_per_sec = bps,
				 .burst_pkts = burst_pkts, .burst_bytes = burst_bytes };

	snprintf(c.client_id, sizeof(c.client_id), "%s", id);
	memset(c.thumb, slot, sizeof(c.thumb));
	if (pps) {
		c.pkt_interval_ns = 1000000000ULL / pps;
		c.pkt_burst_ns = burst_pkts * c.pkt_interval_ns;
	}
	if (bps)
		c.byte_burst_ns = burst_bytes * 1000000000ULL / bps;
	assert_int_equal(bpf_map__update_elem(e->skel->maps.clients, &slot, sizeof(slot), &c,
					      sizeof(c), 0), 0);
}

/* Sets one bit of deny_index (read-modify-write of its word). */
static void index_set(struct env *e, uint32_t word, uint64_t bits)
{
	uint64_t v;

	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.deny_index, &word, 4, &v, 8, 0), 0);
	v |= bits;
	assert_int_equal(bpf_map__update_elem(e->skel->maps.deny_index, &word, 4, &v, 8, 0), 0);
}

static void index_bit(struct env *e, uint32_t base, uint32_t bit)
{
	index_set(e, base + (bit >> 6), 1ULL << (bit & 63));
}

/* A deny entry as the daemon writes it: the trie entry, then its deny_index bits
 * (include/psd2edge_abi.h; written here from the ABI's definition, independently of
 * user/dataplane.c). index false leaves the index alone. */
static void put_deny_idx(struct env *e, const char *addr, uint32_t plen, bool index)
{
	struct psd2_deny v = { 0 };

	if (strchr(addr, ':')) {
		struct psd2_deny_v6_key k = { .prefixlen = plen };
		uint32_t w0;
		uint16_t h2;

		inet_pton(AF_INET6, addr, k.addr);
		assert_int_equal(bpf_map__update_elem(e->skel->maps.deny_v6, &k, sizeof(k), &v,
						      sizeof(v), 0), 0);
		memcpy(&w0, k.addr, 4);
		memcpy(&h2, k.addr + 4, 2);
		if (!index)
			return;
		if (plen < 32)
			index_set(e, PSD2_DENY_INDEX_FLAGS, PSD2_DENY_F_V6_SHORT);
		else if (plen < 48)
			index_bit(e, PSD2_DENY_INDEX_V6_32, PSD2_DENY_H32(w0));
		else
			index_bit(e, PSD2_DENY_INDEX_V6_48, PSD2_DENY_H48(w0, h2));
	} else {
		struct psd2_deny_v4_key k = { .prefixlen = plen };
		uint32_t first, n;

		inet_pton(AF_INET, addr, k.addr);
		assert_int_equal(bpf_map__update_elem(e->skel->maps.deny_v4, &k, sizeof(k), &v,
						      sizeof(v), 0), 0);
		first = (uint32_t)k.addr[0] << 8 | k.addr[1];
		n = plen >= 16 ? 1 : 1u << (16 - plen);
		for (uint32_t i = first; index && i < first + n; i++)
			index_bit(e, PSD2_DENY_INDEX_V4, htons((uint16_t)i));
	}
}

static void put_deny(struct env *e, const char *addr, uint32_t plen)
{
	put_deny_idx(e, addr, plen, true);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	int err;

	if (geteuid() != 0) {
		free(e);
		*state = NULL;
		return 0;
	}
	e->skel = psd2edge_bpf__open();
	assert_non_null(e->skel);
	e->skel->rodata->listen_ports[LISTEN_PORT >> 3] |= 1 << (LISTEN_PORT & 7);
	e->skel->rodata->listen_ports[(LISTEN_PORT + 1) >> 3] |= 1 << ((LISTEN_PORT + 1) & 7);
	err = psd2edge_bpf__load(e->skel);
	if (err) {
		fprintf(stderr, "load: %s\n", strerror(-err));
		return -1;
	}
	e->prog_fd = bpf_program__fd(e->skel->progs.psd2edge_xdp);
	e->flow_index = flow_index_open(bpf_map__fd(e->skel->maps.flow_index),
					bpf_map__fd(e->skel->maps.flow_index_v6));
	assert_non_null(e->flow_index);
	e->ncpu = libbpf_num_possible_cpus();
	e->skel->bss->src_cfg.interval_ns = 1000000000ULL;
	e->skel->bss->src_cfg.burst_ns = 2000000000ULL;
	e->skel->bss->src_cfg.gen = 1;

	put_deny(e, "198.51.100.0", 24);
	put_deny(e, "2001:db8:dead::", 48);
	put_client(e, 1, "tpp-active", PSD2_CLIENT_ACTIVE, 0, 0, 0, 0);
	put_client(e, 2, "tpp-revoked", PSD2_CLIENT_REVOKED, 0, 0, 0, 0);
	put_client(e, 4, "tpp-pps", PSD2_CLIENT_ACTIVE, 1, 0, 2, 0);
	put_client(e, 5, "tpp-bps", PSD2_CLIENT_ACTIVE, 0, 1000, 0, 1200);
	put_flow(e, FLOW_ACTIVE4, 1);
	put_flow(e, FLOW_ACTIVE6, 1);
	put_flow(e, FLOW_REVOKED4, 2);
	put_flow(e, FLOW_REVOKED6, 2);
	put_flow(e, FLOW_REVOKED_DENIED4, 2);
	put_flow(e, FLOW_FREE4, 3);
	put_flow(e, FLOW_PPS4, 4);
	put_flow(e, FLOW_BPS4, 5);
	put_flow(e, FLOW_NOSLOT4, PSD2_MAX_CLIENTS + 7);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e) {
		flow_index_close(e->flow_index);
		psd2edge_bpf__destroy(e->skel);
		free(e);
	}
	return 0;
}

/* --- running ------------------------------------------------------------------------------ */

static void read_stats(struct env *e, uint64_t out[PSD2_STAT_MAX])
{
	struct psd2_stat v[e->ncpu];

	for (uint32_t r = 0; r < PSD2_STAT_MAX; r++) {
		assert_int_equal(bpf_map__lookup_elem(e->skel->maps.stats, &r, sizeof(r), v,
						      sizeof(v), 0), 0);
		out[r] = 0;
		for (int c = 0; c < e->ncpu; c++)
			out[r] += v[c].packets;
	}
}

static int run_frame(struct env *e, const uint8_t *frame, size_t len)
{
	uint8_t out[2048];
	LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = len,
		    .data_out = out, .data_size_out = sizeof(out), .repeat = 1);

	assert_int_equal(bpf_prog_test_run_opts(e->prog_fd, &opts), 0);
	return opts.retval;
}

static const char *const reason_names[] = {
#define NAME(name, text) text,
	PSD2_STAT_REASONS(NAME)
#undef NAME
};

static void test_fixtures(void **state)
{
	struct env *e = *state;
	int failures = 0;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
		const struct fixture *f = &fixtures[i];
		uint64_t before[PSD2_STAT_MAX], after[PSD2_STAT_MAX];
		int64_t want[PSD2_STAT_MAX] = { 0 };
		int repeat = f->repeat ? f->repeat : 1, action = -1;
		uint8_t frame[2048];

		read_stats(e, before);
		for (int r = 0; r < repeat; r++) {
			size_t len = build(&f->pkt, r, frame);

			action = run_frame(e, frame, len);
		}
		read_stats(e, after);

		if (f->deltas[0].n == 0)
			want[f->reason] = repeat;
		for (int d = 0; d < 3 && f->deltas[d].n; d++)
			want[f->deltas[d].reason] = f->deltas[d].n;

		if (action != f->action) {
			print_error("FAIL %s: action %d, want %d\n", f->desc, action, f->action);
			failures++;
		}
		for (int r = 0; r < PSD2_STAT_MAX; r++) {
			int64_t got = after[r] - before[r];

			if (got != want[r]) {
				print_error("FAIL %s: %s %+lld, want %+lld\n", f->desc, reason_names[r],
					    (long long)got, (long long)want[r]);
				failures++;
			}
		}
	}
	assert_int_equal(failures, 0);
}

/* A client's per-CPU counters (client_stats), summed. */
static void client_stats_sum(struct env *e, uint32_t slot, struct psd2_client_stats *out)
{
	struct psd2_client_stats v[e->ncpu];

	memset(out, 0, sizeof(*out));
	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.client_stats, &slot, 4, v, sizeof(v),
					      0), 0);
	for (int c = 0; c < e->ncpu; c++) {
		out->pass_packets += v[c].pass_packets;
		out->pass_bytes += v[c].pass_bytes;
		out->drop_revoked += v[c].drop_revoked;
		out->drop_policed += v[c].drop_policed;
	}
}

/* Per-entry counters: the deny hit counters and the client's own counters. */
static void test_entry_counters(void **state)
{
	struct env *e = *state;
	struct psd2_deny_v4_key dk = { .prefixlen = 24, .addr = { 198, 51, 100, 0 } };
	struct psd2_deny d0, d1;
	struct psd2_client_stats c0, c1;
	uint32_t slot_active = 1, slot_revoked = 2;
	struct spec deny = { TCP4(SRC_DENY4), .payload = 10 };
	struct spec active = { TCP4(FLOW_ACTIVE4), .payload = 100 };
	struct spec revoked = { TCP4(FLOW_REVOKED4) };
	uint8_t frame[2048];
	size_t len;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.deny_v4, &dk, sizeof(dk), &d0,
					      sizeof(d0), 0), 0);
	len = build(&deny, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.deny_v4, &dk, sizeof(dk), &d1,
					      sizeof(d1), 0), 0);
	assert_int_equal(d1.packets - d0.packets, 1);
	assert_int_equal(d1.bytes - d0.bytes, len);

	client_stats_sum(e, slot_active, &c0);
	len = build(&active, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS);
	client_stats_sum(e, slot_active, &c1);
	assert_int_equal(c1.pass_packets - c0.pass_packets, 1);
	assert_int_equal(c1.pass_bytes - c0.pass_bytes, len);

	client_stats_sum(e, slot_revoked, &c0);
	len = build(&revoked, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
	client_stats_sum(e, slot_revoked, &c1);
	assert_int_equal(c1.drop_revoked - c0.drop_revoked, 1);
}

/* Revoking is a single map write: the next packet of the live flow is dropped. */
static void test_revoke_flips_live_flow(void **state)
{
	struct env *e = *state;
	struct spec pkt = { .src = "203.0.113.50", .proto = IPPROTO_TCP, .sport = 40000,
			    .dport = LISTEN_PORT };
	uint8_t frame[2048];
	size_t len;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	put_client(e, 9, "tpp-live", PSD2_CLIENT_ACTIVE, 0, 0, 0, 0);
	put_flow(e, "203.0.113.50", 9);
	len = build(&pkt, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS);
	put_client(e, 9, "tpp-live", PSD2_CLIENT_REVOKED, 0, 0, 0, 0);
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
	put_client(e, 9, "", PSD2_CLIENT_FREE, 0, 0, 0, 0);
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
}

/* The per-source rate is runtime-tunable through .bss: 0 turns the bucket off. */
static void test_src_rate_off(void **state)
{
	struct env *e = *state;
	struct spec syn = { TCP4("203.0.113.140"), .tcp_flags = SYN };
	uint8_t frame[2048];
	size_t len;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	e->skel->bss->src_cfg.interval_ns = 0;
	len = build(&syn, 0, frame);
	for (int i = 0; i < 10; i++)
		assert_int_equal(run_frame(e, frame, len), XDP_PASS);
	e->skel->bss->src_cfg.interval_ns = 1000000000ULL;
	e->skel->bss->src_cfg.burst_ns = 1000000000ULL;
	assert_int_equal(run_frame(e, frame, len), XDP_PASS); /* creates the bucket */
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
}

/* An IPv4 source's bucket in src_rate (0 fields when there is none). */
static struct psd2_src_bucket src_bucket(struct env *e, const char *src)
{
	struct psd2_src_v4_key k;
	struct psd2_src_bucket b = { 0 };

	assert_int_equal(inet_pton(AF_INET, src, k.addr), 1);
	bpf_map__lookup_elem(e->skel->maps.src_rate, &k, sizeof(k), &b, sizeof(b), 0);
	return b;
}

/* SYNs charged in batches per CPU (src_prepaid): a source gets exactly its burst, refusals are
 * repeated from the CPU's entry without the bucket, and a new rate voids both. */
static void test_syn_batch(void **state)
{
	struct env *e = *state;
	struct spec syn = { TCP4("203.0.113.150"), .tcp_flags = SYN };
	struct psd2_src_cfg saved;
	uint8_t frame[2048];
	size_t len;
	int passed = 0;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	saved = e->skel->bss->src_cfg;
	e->skel->bss->src_cfg.burst_ns = 8000000000ULL; /* 1/s, burst 8 */
	e->skel->bss->src_cfg.batch = 2;
	e->skel->bss->src_cfg.gen = 2;
	len = build(&syn, 0, frame);
	for (int i = 0; i < 11; i++)
		passed += run_frame(e, frame, len) == XDP_PASS;
	/* the first SYN creates the bucket (charged 1), then batches of 2: 8 pass, 3 dropped */
	assert_int_equal(passed, 8);
	assert_int_equal(src_bucket(e, "203.0.113.150").syn_dropped, 1); /* the rest: cached */

	e->skel->bss->src_cfg.gen = 3; /* a new rate: the bucket decides again */
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
	assert_int_equal(src_bucket(e, "203.0.113.150").syn_dropped, 2);
	e->skel->bss->src_cfg = saved;
}

/* deny_index is a prefilter: the trie is walked only when the source's bit is set. Each
 * IPv6 class (>= /48, /32../47, shorter than /32) and a short IPv4 prefix marking a range. */
static void test_deny_index(void **state)
{
	struct env *e = *state;
	static const struct {
		const char *prefix;
		uint32_t plen;
		const char *inside, *outside;
	} rows[] = {
		{ "2001:db8:beef::", 48, "2001:db8:beef:1::5", "2001:db8:bee0::5" },
		{ "2001:db9::", 32, "2001:db9:77::5", "2001:dba::5" },
		{ "3000::", 8, "30ff:1::5", "3100::5" },
		{ "100.0.0.0", 10, "100.63.200.1", "100.64.0.1" },
	};
	uint8_t frame[2048];
	size_t len;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct spec in = { TCP4(rows[i].inside) }, out = { TCP4(rows[i].outside) };

		len = build(&out, 0, frame);
		assert_int_equal(run_frame(e, frame, len), XDP_PASS);
		/* in the trie but not in the index: the prefilter lets it through */
		put_deny_idx(e, rows[i].prefix, rows[i].plen, false);
		len = build(&in, 0, frame);
		if (strchr(rows[i].prefix, ':') && rows[i].plen >= 32)
			assert_int_equal(run_frame(e, frame, len), XDP_PASS);
		put_deny(e, rows[i].prefix, rows[i].plen);
		assert_int_equal(run_frame(e, frame, len), XDP_DROP);
		len = build(&out, 0, frame);
		assert_int_equal(run_frame(e, frame, len), XDP_PASS);
	}
}

/* The flow index in front of the flow hash: a flow that collides with an indexed one is found
 * in the hash (overflow), and an entry being rewritten (odd sequence count) is not trusted. */
static void test_flow_index(void **state)
{
	struct env *e = *state;
	struct psd2_flow_key active = key_v4(FLOW_ACTIVE4, 40000), other;
	struct spec active_pkt = { TCP4(FLOW_ACTIVE4) }, other_pkt = { TCP4(NULL) };
	struct psd2_flow_index_v4 entry, saved;
	uint32_t want = psd2_flow_hash_v4(&active), i = want;
	char src[32] = "";
	uint8_t frame[2048];
	size_t len;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	/* another peer whose key lands on the active flow's entry */
	for (int host = 21; host < 255 && !other_pkt.src; host++) {
		snprintf(src, sizeof(src), "203.0.113.%d", host);
		for (uint32_t port = 1024; port < 65536 && !other_pkt.src; port++) {
			other = key_v4(src, (uint16_t)port);
			if (psd2_flow_hash_v4(&other) == want) {
				other_pkt.src = src;
				other_pkt.sport = (uint16_t)port;
			}
		}
	}
	assert_non_null(other_pkt.src);
	len = build(&other_pkt, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS); /* no flow yet */
	put_flow_port(e, src, other_pkt.sport, 2);            /* revoked client, hash only */
	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.flow_index, &i, 4, &entry,
					      sizeof(entry), 0), 0);
	assert_int_equal(entry.overflow, 1);
	assert_int_equal(entry.slot, 1);
	assert_int_equal(run_frame(e, frame, len), XDP_DROP); /* found in the hash */
	len = build(&active_pkt, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS); /* the indexed flow is unchanged */

	/* an entry caught mid-rewrite: XDP asks the hash (slot 1, active) */
	saved = entry;
	entry.seq |= 1;
	entry.slot = 2;
	assert_int_equal(bpf_map__update_elem(e->skel->maps.flow_index, &i, 4, &entry,
					      sizeof(entry), 0), 0);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS);
	entry.seq++; /* the same entry, complete: trusted */
	assert_int_equal(bpf_map__update_elem(e->skel->maps.flow_index, &i, 4, &entry,
					      sizeof(entry), 0), 0);
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
	assert_int_equal(bpf_map__update_elem(e->skel->maps.flow_index, &i, 4, &saved,
					      sizeof(saved), 0), 0);

	/* the overflowed flow closes: the entry stops sending XDP to the hash */
	assert_int_equal(bpf_map__delete_elem(e->skel->maps.flows, &other, sizeof(other), 0), 0);
	flow_index_update_v4(e->flow_index, &other, 0, FLOW_INDEX_DEL);
	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.flow_index, &i, 4, &entry,
					      sizeof(entry), 0), 0);
	assert_int_equal(entry.overflow, 0);
	len = build(&other_pkt, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS);
	len = build(&active_pkt, 0, frame);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS);
}

/* Sets a client's packet burst, batch and limit generation, as a limit change does. */
static void set_batch(struct env *e, uint32_t slot, uint64_t burst, uint32_t batch, uint32_t gen)
{
	struct psd2_client c;

	assert_int_equal(bpf_map__lookup_elem(e->skel->maps.clients, &slot, 4, &c, sizeof(c), 0), 0);
	c.burst_pkts = burst;
	c.pkt_burst_ns = burst * c.pkt_interval_ns;
	c.pkt_batch = batch;
	c.limit_gen = gen;
	c.pkt_tat_ns = 0;
	assert_int_equal(bpf_map__update_elem(e->skel->maps.clients, &slot, 4, &c, sizeof(c), 0), 0);
}

/* Packets charged in batches per CPU: a client gets exactly its burst, as without batches, and
 * packets prepaid under an older limit are void once the limit changes. */
static void test_packet_batch(void **state)
{
	struct env *e = *state;
	struct spec pkt = { TCP4("203.0.113.30") };
	uint8_t frame[2048];
	size_t len;
	int passed = 0;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	put_client(e, 10, "tpp-batch", PSD2_CLIENT_ACTIVE, 1, 0, 8, 0);
	set_batch(e, 10, 8, 2, 1);
	put_flow(e, "203.0.113.30", 10);
	len = build(&pkt, 0, frame);
	for (int i = 0; i < 10; i++)
		passed += run_frame(e, frame, len) == XDP_PASS;
	assert_int_equal(passed, 8); /* 1 pps, burst 8: 8 pass in batches of 2, then drops */

	set_batch(e, 10, 8, 2, 2);
	assert_int_equal(run_frame(e, frame, len), XDP_PASS); /* charges 2, one prepaid */
	set_batch(e, 10, 1, 1, 3);                             /* burst 1 now */
	assert_int_equal(run_frame(e, frame, len), XDP_PASS);  /* the new burst, not the prepaid */
	assert_int_equal(run_frame(e, frame, len), XDP_DROP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_entry_counters),
		cmocka_unit_test(test_revoke_flips_live_flow),
		cmocka_unit_test(test_src_rate_off),
		cmocka_unit_test(test_deny_index),
		cmocka_unit_test(test_flow_index),
		cmocka_unit_test(test_packet_batch),
		cmocka_unit_test(test_syn_batch),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
