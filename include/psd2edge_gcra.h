/* The one GCRA (generic cell rate algorithm, virtual scheduling form) of psd2edge: the XDP
 * program (bpf/psd2edge.bpf.c) polices SYNs, packets and bytes with it, and the daemon's spike
 * arrest shares it instead of keeping a second copy. Always-inline functions and nothing else;
 * the same text compiles for BPF (clang -target bpf) and for the daemon (gcc -std=gnu11).
 *
 * Usage: a bucket is one __u64, its theoretical arrival time (TAT) in ns, 0 when new. Every
 * charge to one bucket passes times of one clock; the bucket may be shared between CPUs or
 * threads (a charge is a compare-and-swap). Each call site picks the emission interval (the
 * cost of one event, in ns) and the burst (ns of credit a bucket may run ahead of the clock). */
#ifndef PSD2EDGE_GCRA_H
#define PSD2EDGE_GCRA_H

#include <linux/types.h>
#ifdef __bpf__
#include <bpf/bpf_helpers.h> /* __always_inline */
#else
#include <sys/cdefs.h> /* __always_inline */
#endif

#ifndef PSD2_GCRA_TRIES
#define PSD2_GCRA_TRIES 4 /* compare-and-swap attempts before a contended bucket says no */
#endif

/* GCRA (virtual scheduling): the event conforms when, after charging `cost` nanoseconds, the
 * theoretical arrival time is at most `burst` ahead of now. Lock-free with compare-and-swap.
 * In XDP `now` is coarse_now() (one tick of resolution, a few ns to read against ~25 for
 * bpf_ktime_get_ns under kvm-clock); the daemon keeps every burst at least
 * PSD2_MIN_BURST_NS so a stream at the rate is never dropped by the tick granularity.
 * Nothing here wraps, so no extreme value turns into a pass: a cost above the burst never
 * conforms; `limit`, the latest TAT that still takes the cost, is now + (burst - cost) worked
 * out once before the compare-and-swap loop and capped so that TAT + cost fits in 64 bits (a
 * wrapped TAT would make the bucket look rested; a clock of ns since boot reaches the cap after
 * 584 years); a clock that went back just finds TAT further ahead. */
static __always_inline int gcra_take(__u64 *tat_p, __u64 now, __u64 cost, __u64 burst)
{
	__u64 tat = *(volatile __u64 *)tat_p;
	__u64 last = ~0ULL - cost; /* the latest TAT that TAT + cost fits after */
	__u64 limit;

	if (cost > burst || now > last)
		return 0;
	limit = burst - cost > last - now ? last : now + (burst - cost);
	for (int i = 0; i < PSD2_GCRA_TRIES; i++) {
		__u64 seen;

		if (tat > limit)
			return 0;
		seen = __sync_val_compare_and_swap(tat_p, tat, (tat > now ? tat : now) + cost);
		if (seen == tat)
			return 1;
		tat = seen;
	}
	return 0; /* contended beyond reason: fail closed */
}

/* Charges `batch` events at once when they fit in the burst, else one: returns how many were
 * charged (batch, 1 or 0). The caller spends the extra ones without touching *tat_p. The batch
 * is asked first whether it fits (interval * batch <= burst, without the product, which could
 * wrap to a small cost). */
static __always_inline __u32 gcra_take_batch(__u64 *tat_p, __u64 now, __u64 interval,
					     __u64 burst, __u32 batch)
{
	if (batch > 1 && interval <= burst / batch &&
	    gcra_take(tat_p, now, interval * batch, burst))
		return batch;
	return gcra_take(tat_p, now, interval, burst);
}

#endif
