/* spike arrest (user/spike_arrest.h): the conversion of (rate, per, burst) into the GCRA's
 * interval and burst, and the charge with its Retry-After. Rows across the configured bounds
 * (rate 1 .. 1e6 per second or minute, burst 1 .. 1e6) and beyond them; for each: `burst`
 * requests back to back conform and the next waits one interval; a seeded run against a token
 * bucket in exact rational arithmetic (equal verdicts where the period divides by the rate;
 * where it does not, never more than burst + rate * elapsed / period requests in any span, and
 * a stream at the rounded interval always conforms); and every Retry-After exact to the
 * second (refused one second before it, conforming at it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "spike_arrest.h"

typedef unsigned __int128 u128;

#define NS_PER_S 1000000000ULL
#define START_NS 1000000000000ULL /* a monotonic clock 1000 s after boot */

struct row {
	struct config_spike_arrest c;
	__u64 interval_ns, burst_ns; /* want */
	bool exact;                  /* the period divides by the rate */
};

static const struct row rows[] = {
	{ { 10, 1000, 1 }, 100000000, 100000000, true },
	{ { 10, 1000, 20 }, 100000000, 2000000000, true },
	{ { 1, 60000, 1 }, 60000000000, 60000000000, true },
	{ { 1, 1000, 3 }, 1000000000, 3000000000, true },
	{ { 1000000, 1000, 1 }, 1000, 1000, true },
	{ { 1000000, 1000, 1000000 }, 1000, 1000000000, true },
	{ { 1000000, 60000, 1 }, 60000, 60000, true },
	{ { 1, 60000, 1000000 }, 60000000000, 60000000000000000, true },
	{ { 3, 1000, 2 }, 333333334, 666666668, false },        /* rounded up */
	{ { 7, 60000, 5 }, 8571428572, 42857142860, false },
	{ { 999999, 1000, 1 }, 1001, 1001, false },
};

static void test_conversion(void **state)
{
	static const struct row beyond[] = {
		{ { UINT64_MAX, 1000, 1 }, 1, 1, false },      /* an interval below 1 ns */
		{ { 1, UINT32_MAX, UINT64_MAX }, UINT32_MAX * 1000000ULL, UINT64_MAX, false },
		{ { 10, 1000, 0 }, 100000000, 100000000, true }, /* burst 0: 1 */
	};

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]) + 3; i++) {
		const struct row *r = i < sizeof(rows) / sizeof(rows[0]) ? &rows[i] :
				      &beyond[i - sizeof(rows) / sizeof(rows[0])];
		struct spike_arrest_rule rule;

		spike_arrest_rule_init(&rule, &r->c);
		if (rule.interval_ns != r->interval_ns || rule.burst_ns != r->burst_ns)
			fail_msg("%llu per %u ms, burst %llu: interval %llu burst %llu; want %llu %llu",
				 (unsigned long long)r->c.rate, r->c.period_ms,
				 (unsigned long long)r->c.burst, (unsigned long long)rule.interval_ns,
				 (unsigned long long)rule.burst_ns, (unsigned long long)r->interval_ns,
				 (unsigned long long)r->burst_ns);
	}
}

/* `burst` back to back, the next refused until exactly one interval later. */
static void test_burst_then_one_interval(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct spike_arrest_rule rule;
		__u64 tat = 0, probe;
		uint32_t retry = 0;

		spike_arrest_rule_init(&rule, &r->c);
		for (__u64 n = 0; n < r->c.burst; n++)
			if (!spike_arrest_take(&tat, START_NS, &rule, &retry))
				fail_msg("%llu per %u ms, burst %llu: request %llu of the burst refused",
					 (unsigned long long)r->c.rate, r->c.period_ms,
					 (unsigned long long)r->c.burst, (unsigned long long)n + 1);
		assert_false(spike_arrest_take(&tat, START_NS, &rule, &retry));
		assert_int_equal(retry, (r->interval_ns + NS_PER_S - 1) / NS_PER_S);
		probe = tat;
		assert_false(spike_arrest_take(&probe, START_NS + r->interval_ns - 1, &rule, &retry));
		probe = tat;
		assert_true(spike_arrest_take(&probe, START_NS + r->interval_ns, &rule, &retry));
	}
}

/* --- a seeded run against a token bucket ----------------------------------------------------- */

/* Counted in units that keep everything whole: a request costs period_ns units, `rate` units
 * flow in per ns, the bucket holds burst * period_ns and starts full. */
struct bucket {
	u128 tokens, cap, cost;
	__u64 rate, last;
};

static void bucket_init(struct bucket *b, const struct config_spike_arrest *c)
{
	b->cost = (u128)c->period_ms * 1000000;
	b->cap = b->cost * c->burst;
	b->tokens = b->cap;
	b->rate = c->rate;
	b->last = 0;
}

static bool bucket_take(struct bucket *b, __u64 now)
{
	if (now > b->last) {
		b->tokens += (u128)(now - b->last) * b->rate;
		if (b->tokens > b->cap)
			b->tokens = b->cap;
		b->last = now;
	}
	if (b->tokens < b->cost)
		return false;
	b->tokens -= b->cost;
	return true;
}

static __u64 rng_state = 0x9e3779b97f4a7c15ULL;

static __u64 rng(void) /* xorshift64*: the same sequence on every run */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

#define RUN_EVENTS 4000

static __u64 admitted[RUN_EVENTS];

static void run_row(const struct row *r)
{
	struct spike_arrest_rule rule;
	struct bucket model;
	__u64 tat = 0, now = START_NS, n = 0, refused = 0;

	spike_arrest_rule_init(&rule, &r->c);
	bucket_init(&model, &r->c);
	for (int i = 0; i < RUN_EVENTS; i++) {
		uint32_t retry = 0;
		bool got, want;

		switch (rng() % 16) { /* mostly faster than the rate, sometimes idle */
		case 0:
			now += rng() % (4 * rule.burst_ns + 1);
			break;
		case 1:
		case 2:
			now += rule.interval_ns - 1 + rng() % 3;
			break;
		default:
			now += rng() % (rule.interval_ns / 2 + 1);
		}
		got = spike_arrest_take(&tat, now, &rule, &retry);
		want = bucket_take(&model, now);
		if (r->exact && got != want)
			fail_msg("%llu per %u ms, burst %llu, event %d at %llu: %s, the model says %s",
				 (unsigned long long)r->c.rate, r->c.period_ms,
				 (unsigned long long)r->c.burst, i, (unsigned long long)now,
				 got ? "conforms" : "refused", want ? "conforms" : "refused");
		if (got) {
			admitted[n++] = now;
			continue;
		}
		refused++;
		/* the Retry-After: refused a second before it, conforming at it */
		__u64 probe = tat;
		uint32_t ignored;
		if (retry > 1 &&
		    spike_arrest_take(&probe, now + (retry - 1) * NS_PER_S, &rule, &ignored))
			fail_msg("event %d: conforms a second before its Retry-After %u", i, retry);
		probe = tat;
		if (!spike_arrest_take(&probe, now + (__u64)retry * NS_PER_S, &rule, &ignored))
			fail_msg("event %d: refused at its Retry-After %u", i, retry);
	}
	/* never more than burst + rate * elapsed / period in any span of admitted requests:
	 * (count - burst) * period <= elapsed * rate, without a division */
	for (__u64 k = 0; k < n; k++)
		for (__u64 j = 0; j + r->c.burst <= k; j++) {
			u128 over = k - j + 1 - r->c.burst;

			if (over * r->c.period_ms * 1000000 > (u128)(admitted[k] - admitted[j]) * r->c.rate)
				fail_msg("%llu per %u ms, burst %llu: %llu admitted within %llu ns",
					 (unsigned long long)r->c.rate, r->c.period_ms,
					 (unsigned long long)r->c.burst, (unsigned long long)(k - j + 1),
					 (unsigned long long)(admitted[k] - admitted[j]));
		}
	if (n < 20 || refused < 20)
		fail_msg("%llu per %u ms, burst %llu: %llu conformed, %llu refused",
			 (unsigned long long)r->c.rate, r->c.period_ms, (unsigned long long)r->c.burst,
			 (unsigned long long)n, (unsigned long long)refused);
}

static void test_random_against_token_bucket(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		if (rows[i].c.burst <= 1000) /* a bucket of 1e6 is never emptied by a few thousand */
			run_row(&rows[i]);
}

/* A stream at the (rounded) interval conforms for ever, after the burst was spent. */
static void test_stream_at_the_rate_conforms(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		struct spike_arrest_rule rule;
		__u64 tat = 0, now = START_NS;
		uint32_t retry;

		spike_arrest_rule_init(&rule, &rows[i].c);
		tat = START_NS + rule.burst_ns; /* the burst spent at START_NS */
		for (int k = 0; k < 1000; k++) {
			now += rule.interval_ns;
			if (!spike_arrest_take(&tat, now, &rule, &retry))
				fail_msg("%llu per %u ms: refused at the rate, request %d",
					 (unsigned long long)rows[i].c.rate, rows[i].c.period_ms, k);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conversion),
		cmocka_unit_test(test_burst_then_one_interval),
		cmocka_unit_test(test_random_against_token_bucket),
		cmocka_unit_test(test_stream_at_the_rate_conforms),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
