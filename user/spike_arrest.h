/* Spike arrest: a route's rate and burst per client (config "spike_arrest"), enforced with the
 * GCRA of include/psd2edge_gcra.h on one __u64 TAT per client (ns of one clock, CLOCK_MONOTONIC
 * in the daemon). Header only: the conversion from the configuration and one charge.
 *
 * The emission interval is the period divided by the rate, rounded up to a whole ns: never
 * more than `rate` requests per period in the long run (under 0.1 % fewer: within the
 * configured bounds an interval is at least 1000 ns).
 * gcra_take's burst counts the request being charged, so burst * interval lets exactly `burst`
 * requests through back to back on a rested bucket and refuses the next until one interval has
 * passed. No PSD2_MIN_BURST_NS here: the daemon's clock has no tick to absorb. */
#ifndef PSD2EDGE_SPIKE_ARREST_H
#define PSD2EDGE_SPIKE_ARREST_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "psd2edge_gcra.h"

#define SPIKE_ARREST_NS_PER_MS 1000000ULL
#define SPIKE_ARREST_NS_PER_S 1000000000ULL

struct spike_arrest_rule {
	__u64 interval_ns; /* the cost of one request */
	__u64 burst_ns;    /* burst * interval_ns */
};

/* c: rate >= 1 (configured 1 .. 1e6), period_ms, burst >= 1 (1 .. 1e6). Beyond those bounds
 * nothing wraps: the interval is at least 1 ns, and a burst too large for 64 bits is capped. */
static inline void spike_arrest_rule_init(struct spike_arrest_rule *r,
					  const struct config_spike_arrest *c)
{
	__u64 period_ns = (__u64)c->period_ms * SPIKE_ARREST_NS_PER_MS;
	__u64 burst = c->burst ? c->burst : 1;

	r->interval_ns = period_ns / c->rate + (period_ns % c->rate != 0);
	if (!r->interval_ns)
		r->interval_ns = 1;
	r->burst_ns = burst > UINT64_MAX / r->interval_ns ? UINT64_MAX : burst * r->interval_ns;
}

/* Charges one request at now_ns: true when it conforms; else false and *retry_after_s, the
 * seconds (rounded up, >= 1) until one would. */
static inline bool spike_arrest_take(__u64 *tat, __u64 now_ns, const struct spike_arrest_rule *r,
				     uint32_t *retry_after_s)
{
	__u64 seen, tolerance = r->burst_ns - r->interval_ns, wait_ns = 0, wait_s;

	if (gcra_take(tat, now_ns, r->interval_ns, r->burst_ns))
		return true;
	/* one conforms from TAT - tolerance on (TAT read after the refusal: a charge by another
	 * thread in between is waited for too) */
	seen = __atomic_load_n(tat, __ATOMIC_RELAXED);
	if (seen > now_ns && seen - now_ns > tolerance)
		wait_ns = seen - now_ns - tolerance;
	wait_s = wait_ns / SPIKE_ARREST_NS_PER_S + (wait_ns % SPIKE_ARREST_NS_PER_S != 0);
	*retry_after_s = wait_s < 1 ? 1 : wait_s > UINT32_MAX ? UINT32_MAX : (uint32_t)wait_s;
	return false;
}

#endif
