// SPDX-License-Identifier: GPL-2.0
/* psd2edge XDP data plane: enforces, at the driver, the verdicts psd2edged writes into the
 * pinned maps. Only packets to a listener port are acted on, and frames whose port cannot be
 * read (malformed headers, more VLAN tags than parsed); everything else passes.
 *
 * Order for listener traffic: deny-list (LPM, behind the deny_index prefilter) -> SYN-without-ACK
 * per-source bucket -> flow of a revoked or freed client -> per-client packet/byte policing ->
 * pass.
 * Every packet is counted under exactly one reason (enum psd2_stat_reason); the reason decides
 * the XDP action.
 *
 * Cost (bench/xdp_cost.c): the common paths avoid atomics (per-CPU counters for reasons and
 * clients; compare-and-swap only to charge a GCRA bucket) and trie walks (deny_index). */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "psd2edge_abi.h"
#include "psd2edge_consts.h"
#include "psd2edge_gcra.h"
#include "psd2edge_maps.h"
#include "psd2edge_parse.h"
#include "psd2edge_structs.h"

char LICENSE[] SEC("license") = "GPL";

/* --- configuration ------------------------------------------------------------------------- */

/* Set by the daemon before load (frozen afterwards). */
const volatile __u8 listen_ports[PSD2_PORT_BITMAP_LEN]; /* bit (port) set: a listener port */
const volatile __be32 src_mask_v4 = 0xffffffff;          /* source prefix of a SYN bucket */
const volatile __be32 src_mask_v6[4] = { 0xffffffff, 0xffffffff, 0, 0 }; /* /64 */

/* Written by the daemon at run time through the skeleton's mmap-ed .bss (limit changes). */
volatile struct psd2_src_cfg src_cfg;

/* --- helpers ------------------------------------------------------------------------------ */

extern unsigned int CONFIG_HZ __kconfig __weak; /* 0 when libbpf finds no kernel config */

/* The coarse monotonic clock in ns, which advances once a tick: jiffies times the tick length
 * when the kernel's HZ is one of the usual values (a load and a multiply; the verifier drops
 * the other cases, HZ being a constant of the loaded program), else bpf_ktime_get_coarse_ns
 * (a seqcount read, about 2 ns more per packet that needs the time). Only XDP reads this clock:
 * every GCRA time in the maps is on it. */
static __always_inline __u64 coarse_now(void)
{
	switch (CONFIG_HZ) {
	case 100:
		return bpf_jiffies64() * 10000000ULL;
	case 250:
		return bpf_jiffies64() * 4000000ULL;
	case 300:
		return bpf_jiffies64() * 3333333ULL; /* 1e-7 slow: a rate off by as much */
	case 1000:
		return bpf_jiffies64() * 1000000ULL;
	default:
		return bpf_ktime_get_coarse_ns();
	}
}

static __always_inline int port_is_listener(__be16 port_be)
{
	__u64 port = load_be16(&port_be);

	return listen_ports[port >> 3] & (1 << (port & 7));
}

static __always_inline int reason_drops(int reason)
{
	return reason >= PSD2_STAT_DROP_MALFORMED && reason <= PSD2_STAT_DROP_NO_CLIENT;
}

static __always_inline void stat_count(__u32 reason, __u64 len)
{
	struct psd2_stat *s = bpf_map_lookup_elem(&stats, &reason);

	if (s) {
		s->packets++;
		s->bytes += len;
	}
}

static __always_inline __u64 deny_word(__u32 i)
{
	__u64 *w = bpf_map_lookup_elem(&deny_index, &i);

	return w ? *w : ~0ULL; /* cannot fail (constant-bounded index): walk the trie then */
}

static __always_inline int deny_bit(__u32 base, __u32 bit)
{
	return (deny_word(base + (bit >> 6)) >> (bit & 63)) & 1;
}

/* The prefilter: 0 when no deny prefix can cover the source (psd2edge_abi.h, deny_index). */
static __always_inline int deny_maybe(const struct pkt *p, const bool v6)
{
	if (v6) {
		__u32 w0 = *(const __u32 *)p->key.saddr;
		__u16 h2 = *(const __u16 *)&p->key.saddr[4];

		return deny_bit(PSD2_DENY_INDEX_V6_48, PSD2_DENY_H48(w0, h2)) ||
		       deny_bit(PSD2_DENY_INDEX_V6_32, PSD2_DENY_H32(w0)) ||
		       (deny_word(PSD2_DENY_INDEX_FLAGS) & PSD2_DENY_F_V6_SHORT);
	}
	return deny_bit(PSD2_DENY_INDEX_V4, *(const __u16 *)&p->key.saddr[12]);
}

/* --- verdict stages: each returns a reason, or PSD2_CONTINUE ------------------------------- */

static __always_inline int check_deny(struct pkt *p, const bool v6)
{
	struct psd2_deny *d;

	if (!deny_maybe(p, v6))
		return PSD2_CONTINUE;
	if (v6) {
		struct psd2_deny_v6_key k = { .prefixlen = 128 };

		__builtin_memcpy(k.addr, p->key.saddr, 16);
		d = bpf_map_lookup_elem(&deny_v6, &k);
	} else {
		struct psd2_deny_v4_key k = { .prefixlen = 32 };

		__builtin_memcpy(k.addr, &p->key.saddr[12], 4);
		d = bpf_map_lookup_elem(&deny_v4, &k);
	}
	if (!d)
		return PSD2_CONTINUE;
	/* Plain increments: the entry is shared by every CPU, and a lock-prefixed add costs more
	 * than the rest of the drop. Under a flood spread over CPUs these per-prefix hit counters
	 * can miss increments; the per-CPU drop_deny reason counter stays exact. */
	d->packets++;
	d->bytes += p->len;
	return PSD2_STAT_DROP_DENY;
}

static __always_inline void prepaid_set(struct psd2_src_prepaid *pp, __u32 src, __u32 tokens,
					__u64 until_ns, __u32 gen)
{
	*(__u32 *)pp->addr = src;
	pp->tokens = tokens;
	pp->until_ns = until_ns;
	pp->cfg_gen = gen;
}

static __always_inline int check_syn_rate(struct pkt *p, const bool v6)
{
	__u64 interval = src_cfg.interval_ns, burst = src_cfg.burst_ns;
	__u32 batch = src_cfg.batch, gen = src_cfg.gen, src = 0, taken;
	const __u32 *a = (const __u32 *)p->key.saddr;
	struct psd2_src_prepaid *pp = NULL;
	struct psd2_src_v6_key k6;
	struct psd2_src_v4_key k4;
	struct psd2_src_bucket *b;
	void *map, *key;
	__u64 now;

	if (!interval)
		return PSD2_CONTINUE;

	if (v6) {
		__u32 *m = (__u32 *)k6.addr;

		m[0] = a[0] & src_mask_v6[0];
		m[1] = a[1] & src_mask_v6[1];
		m[2] = a[2] & src_mask_v6[2];
		m[3] = a[3] & src_mask_v6[3];
		map = &src_rate_v6;
		key = &k6;
	} else {
		__u32 i;

		src = a[3] & src_mask_v4;
		i = (src * 0x9E3779B1u) >> (32 - PSD2_SRC_PREPAID_BITS);
		pp = bpf_map_lookup_elem(&src_prepaid, &i);
		if (pp && *(__u32 *)pp->addr == src && pp->cfg_gen == gen) {
			if (pp->tokens) {
				pp->tokens--;
				return PSD2_CONTINUE;
			}
			if (pp->until_ns && coarse_now() < pp->until_ns)
				return PSD2_STAT_DROP_SYN_RATE;
		}
		*(__u32 *)k4.addr = src;
		map = &src_rate;
		key = &k4;
	}

	now = coarse_now();
	b = bpf_map_lookup_elem(map, key);
	if (!b) {
		struct psd2_src_bucket nb = { .tat_ns = now + interval, .syn_packets = 1 };

		/* A race with another CPU creating the same bucket loses one charge: fine. */
		if (bpf_map_update_elem(map, key, &nb, BPF_NOEXIST) == 0)
			stat_count(PSD2_STAT_EVENT_SRC_NEW, 0);
		else
			stat_count(PSD2_STAT_EVENT_SRC_FAIL, 0);
		return PSD2_CONTINUE;
	}
	/* Plain increments: a SYN counted twice or not at all when two CPUs race on one source
	 * is fine for these two informative counters; the charge itself is a compare-and-swap. */
	b->syn_packets++;
	taken = gcra_take_batch(&b->tat_ns, now, interval, burst, pp ? batch : 1);
	if (taken) {
		if (taken > 1)
			prepaid_set(pp, src, taken - 1, 0, gen);
		return PSD2_CONTINUE;
	}
	b->syn_dropped++;
	/* Refused until the theoretical arrival time is within the burst of the clock again. */
	if (pp)
		prepaid_set(pp, src, 0, *(volatile __u64 *)&b->tat_ns + interval - burst, gen);
	return PSD2_STAT_DROP_SYN_RATE;
}

#define NO_SLOT 0xffffffffu

/* What both flow_index entry types start with; the key follows at offset 12. */
struct flow_index_head {
	__u32 seq;
	__u32 overflow;
	__u32 slot;
};

/* Keys are 12 (IPv4) or 36 bytes (IPv6), compared a word at a time. */
static __always_inline bool key_eq(const void *entry_key, const void *key, const int len)
{
	const volatile __u32 *a = entry_key;
	const __u32 *b = key;
	__u32 diff = 0;

#pragma unroll
	for (int i = 0; i < len / 4; i++)
		diff |= a[i] ^ b[i];
	return diff == 0;
}

/* The slot of the flow with this key, or NO_SLOT: from its flow_index entry when the entry
 * holds it and was not being rewritten while read, else from the hash when the entry says the
 * flow may be there (psd2edge_abi.h). The key, slot and overflow are read between two reads of
 * the sequence count, through volatile so the compiler keeps them there. */
static __always_inline __u32 flow_slot(const void *key, const bool v6)
{
	const int len = v6 ? sizeof(struct psd2_flow6_key) : sizeof(struct psd2_flow_key);
	__u32 i = v6 ? psd2_flow_hash_v6(key) : psd2_flow_hash_v4(key);
	struct flow_index_head *e = v6 ? bpf_map_lookup_elem(&flow_index_v6, &i)
				       : bpf_map_lookup_elem(&flow_index, &i);
	struct psd2_flow *f;

	if (e) {
		__u32 seq = *(volatile __u32 *)&e->seq;

		if (!(seq & 1)) {
			bool same = key_eq(e + 1, key, len);
			__u32 slot = *(volatile __u32 *)&e->slot;
			__u32 overflow = *(volatile __u32 *)&e->overflow;

			if (*(volatile __u32 *)&e->seq == seq) {
				if (same)
					return slot;
				if (!overflow)
					return NO_SLOT;
			}
		}
	}
	f = v6 ? bpf_map_lookup_elem(&flows_v6, key) : bpf_map_lookup_elem(&flows, key);
	return f ? f->slot : NO_SLOT;
}

/* Charges one packet to the client: from the packets this CPU prepaid, else by charging a batch
 * (or, when the batch does not fit in the burst, one packet) to the shared GCRA. */
static __always_inline bool take_packet(struct psd2_client *cl, struct psd2_client_stats *cs)
{
	__u32 taken;

	if (cs->limit_gen != cl->limit_gen) {
		cs->limit_gen = cl->limit_gen;
		cs->pkt_prepaid = 0;
	}
	if (cs->pkt_prepaid) {
		cs->pkt_prepaid--;
		return true;
	}
	taken = gcra_take_batch(&cl->pkt_tat_ns, coarse_now(), cl->pkt_interval_ns,
				cl->pkt_burst_ns, cl->pkt_batch);
	if (taken > 1)
		cs->pkt_prepaid = taken - 1;
	return taken;
}

/* A bound flow: its client's state, then its client's rates. */
static __always_inline int check_flow(struct pkt *p, const bool v6)
{
	struct psd2_client_stats *cs;
	struct psd2_client *cl;
	__u32 slot;

	if (v6) {
		slot = flow_slot(&p->key, true);
	} else {
		struct psd2_flow_key k __attribute__((aligned(4))); /* read as words by key_eq */

		__builtin_memcpy(k.saddr, &p->key.saddr[12], 4);
		__builtin_memcpy(k.daddr, &p->key.daddr[12], 4);
		k.sport = p->key.sport;
		k.dport = p->key.dport;
		slot = flow_slot(&k, false);
	}
	if (slot == NO_SLOT)
		return PSD2_STAT_PASS;
	cl = bpf_map_lookup_elem(&clients, &slot);
	cs = bpf_map_lookup_elem(&client_stats, &slot);
	if (!cl || !cs)
		return PSD2_STAT_DROP_NO_CLIENT;

	switch (*(volatile enum psd2_client_state *)&cl->state) {
	case PSD2_CLIENT_ACTIVE:
		break;
	case PSD2_CLIENT_REVOKED:
		cs->drop_revoked++;
		return PSD2_STAT_DROP_REVOKED;
	default:
		return PSD2_STAT_DROP_UNBOUND;
	}

	if ((cl->pkt_interval_ns && !take_packet(cl, cs)) ||
	    (cl->bytes_per_sec &&
	     !gcra_take(&cl->byte_tat_ns, coarse_now(),
			p->len * NSEC_PER_SEC / cl->bytes_per_sec, cl->byte_burst_ns))) {
		cs->drop_policed++;
		return PSD2_STAT_DROP_POLICED;
	}
	cs->pass_packets++;
	cs->pass_bytes += p->len;
	return PSD2_STAT_PASS_FLOW;
}

/* IPv4 and IPv6 share this path; `v6` is a constant at each call site. */
static __always_inline int process_ip(struct cursor *c, struct pkt *p, const bool v6)
{
	int proto, r;

	proto = v6 ? parse_ipv6(c, p) : parse_ipv4(c, p);
	if (proto < 0)
		return PSD2_STAT_DROP_MALFORMED;
	if (p->frag == FRAG_LATER)
		return PSD2_STAT_PASS_FRAGMENT;
	if (proto == IPPROTO_TCP)
		r = parse_tcp(c, p);
	else if (proto == IPPROTO_UDP)
		r = parse_udp(c, p);
	else
		return PSD2_STAT_PASS_NOT_LISTENER;
	if (r < 0)
		return PSD2_STAT_DROP_MALFORMED;
	if (!port_is_listener(p->key.dport))
		return PSD2_STAT_PASS_NOT_LISTENER;
	if (p->frag == FRAG_FIRST)
		return PSD2_STAT_DROP_FRAGMENT;

	r = check_deny(p, v6);
	if (r != PSD2_CONTINUE)
		return r;
	if (proto != IPPROTO_TCP)
		return PSD2_STAT_PASS;
	if ((p->tcp_flags & (TCP_BYTE_SYN | TCP_BYTE_ACK)) == TCP_BYTE_SYN) {
		r = check_syn_rate(p, v6);
		if (r != PSD2_CONTINUE)
			return r;
	}
	return check_flow(p, v6); /* a SYN reusing a revoked flow's 4-tuple is dropped too */
}

static __always_inline int process(struct xdp_md *ctx, struct pkt *p)
{
	struct cursor c = {
		.pos = (void *)(long)ctx->data,
		.end = (void *)(long)ctx->data_end,
	};
	int proto;

	p->len = c.end - c.pos;
	proto = parse_eth(&c);
	/* More tags than parsed: the port is unknown, and passing would let any source past every
	 * check (the stack itself strips stacked priority tags, VID 0, one by one, so even a host
	 * without VLAN devices delivers such a frame to the listener). Dropped whatever the port;
	 * this never cuts off SSH: a host's own traffic carries at most two tags (802.1Q, QinQ). */
	if (proto == PARSE_TOO_DEEP)
		return PSD2_STAT_DROP_VLAN_DEPTH;
	if (proto < 0)
		return PSD2_STAT_DROP_MALFORMED;
	if (proto == ETH_P_IP)
		return process_ip(&c, p, false);
	if (proto == ETH_P_IPV6)
		return process_ip(&c, p, true);
	return PSD2_STAT_PASS_NOT_IP;
}

SEC("xdp")
int psd2edge_xdp(struct xdp_md *ctx)
{
	struct pkt p = {};
	int reason = process(ctx, &p);

	stat_count(reason, p.len);
	return reason_drops(reason) ? XDP_DROP : XDP_PASS;
}
