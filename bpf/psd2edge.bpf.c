// SPDX-License-Identifier: GPL-2.0
/* psd2edge XDP data plane: enforces, at the driver, the verdicts psd2edged writes into the
 * pinned maps. Only packets to a listener port are acted on; everything else passes.
 *
 * Order for listener traffic: deny-list (LPM) -> SYN-without-ACK per-source bucket -> flow of a
 * revoked or freed client -> per-client packet/byte policing -> pass. Every packet is counted
 * under exactly one reason (enum psd2_stat_reason); the reason decides the XDP action. */
#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "psd2edge_abi.h"
#include "psd2edge_consts.h"
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

/* GCRA (virtual scheduling): the event conforms when, after charging `cost` nanoseconds, the
 * theoretical arrival time is at most `burst` ahead of now. Lock-free with compare-and-swap.
 * `now` is the coarse monotonic clock (one tick of resolution, a few ns to read against ~25
 * for bpf_ktime_get_ns under kvm-clock); the daemon keeps every burst at least
 * PSD2_MIN_BURST_NS so a stream at the rate is never dropped by the tick granularity. */
static __always_inline int gcra_take(__u64 *tat_p, __u64 now, __u64 cost, __u64 burst)
{
	__u64 tat = *(volatile __u64 *)tat_p;

	for (int i = 0; i < PSD2_GCRA_TRIES; i++) {
		__u64 next = (tat > now ? tat : now) + cost;
		__u64 seen;

		if (next - now > burst)
			return 0;
		seen = __sync_val_compare_and_swap(tat_p, tat, next);
		if (seen == tat)
			return 1;
		tat = seen;
	}
	return 0; /* contended beyond reason: fail closed */
}

/* --- verdict stages: each returns a reason, or PSD2_CONTINUE ------------------------------- */

static __always_inline int check_deny(struct pkt *p, const bool v6)
{
	struct psd2_deny *d;

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
	__sync_fetch_and_add(&d->packets, 1);
	__sync_fetch_and_add(&d->bytes, p->len);
	return PSD2_STAT_DROP_DENY;
}

static __always_inline int check_syn_rate(struct pkt *p, const bool v6)
{
	__u64 interval = src_cfg.interval_ns, burst = src_cfg.burst_ns;
	struct psd2_src_key k;
	struct psd2_src_bucket *b;
	__u32 *a = (__u32 *)p->key.saddr, *m = (__u32 *)k.addr;
	__u64 now;

	if ((p->tcp_flags & (TCP_BYTE_SYN | TCP_BYTE_ACK)) != TCP_BYTE_SYN ||
	    !interval)
		return PSD2_CONTINUE;

	if (v6) {
		m[0] = a[0] & src_mask_v6[0];
		m[1] = a[1] & src_mask_v6[1];
		m[2] = a[2] & src_mask_v6[2];
		m[3] = a[3] & src_mask_v6[3];
	} else {
		m[0] = a[0];
		m[1] = a[1];
		m[2] = a[2];
		m[3] = a[3] & src_mask_v4;
	}

	now = bpf_ktime_get_coarse_ns();
	b = bpf_map_lookup_elem(&src_rate, &k);
	if (!b) {
		struct psd2_src_bucket nb = { .tat_ns = now + interval, .syn_packets = 1 };

		/* A race with another CPU creating the same bucket loses one charge: fine. */
		if (bpf_map_update_elem(&src_rate, &k, &nb, BPF_NOEXIST) == 0)
			stat_count(PSD2_STAT_EVENT_SRC_NEW, 0);
		else
			stat_count(PSD2_STAT_EVENT_SRC_FAIL, 0);
		return PSD2_CONTINUE;
	}
	__sync_fetch_and_add(&b->syn_packets, 1);
	if (gcra_take(&b->tat_ns, now, interval, burst))
		return PSD2_CONTINUE;
	__sync_fetch_and_add(&b->syn_dropped, 1);
	return PSD2_STAT_DROP_SYN_RATE;
}

/* A bound flow: its client's state, then its client's rates. */
static __always_inline int check_flow(struct pkt *p)
{
	struct psd2_client *cl;
	struct psd2_flow *f;
	__u32 slot;
	__u64 now;

	f = bpf_map_lookup_elem(&flows, &p->key);
	if (!f)
		return PSD2_STAT_PASS;
	slot = f->slot;
	cl = bpf_map_lookup_elem(&clients, &slot);
	if (!cl)
		return PSD2_STAT_DROP_NO_CLIENT;

	switch (*(volatile enum psd2_client_state *)&cl->state) {
	case PSD2_CLIENT_ACTIVE:
		break;
	case PSD2_CLIENT_REVOKED:
		__sync_fetch_and_add(&cl->drop_revoked, 1);
		return PSD2_STAT_DROP_REVOKED;
	default:
		return PSD2_STAT_DROP_UNBOUND;
	}

	if (cl->pkt_interval_ns | cl->bytes_per_sec) {
		__u64 bps = cl->bytes_per_sec;

		now = bpf_ktime_get_coarse_ns();
		if ((cl->pkt_interval_ns &&
		     !gcra_take(&cl->pkt_tat_ns, now, cl->pkt_interval_ns, cl->pkt_burst_ns)) ||
		    (bps && !gcra_take(&cl->byte_tat_ns, now, p->len * NSEC_PER_SEC / bps,
				       cl->byte_burst_ns))) {
			__sync_fetch_and_add(&cl->drop_policed, 1);
			return PSD2_STAT_DROP_POLICED;
		}
	}
	__sync_fetch_and_add(&cl->pass_packets, 1);
	__sync_fetch_and_add(&cl->pass_bytes, p->len);
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
	p->key.proto = IPPROTO_TCP;
	r = check_syn_rate(p, v6);
	if (r != PSD2_CONTINUE)
		return r;
	return check_flow(p);
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
	if (proto == PARSE_TOO_DEEP)
		return PSD2_STAT_PASS_UNPARSED;
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
