/* gcra: the one GCRA of the XDP program and the daemon (include/psd2edge_gcra.h), checked
 * against an independent model: fixture rows for the edges (first event, the exact burst
 * boundary, idle periods, a clock going backwards, values near UINT64_MAX, batches), a seeded
 * random run of 100k events, and two threads charging one bucket.
 *
 * The model is GCRA in its textbook virtual-scheduling form, in 128-bit arithmetic so that it
 * cannot overflow where the header might:
 *   emission interval T = cost; tolerance tau = burst - cost (the header's burst counts the
 *   event being charged: a rested bucket takes burst / cost events at once);
 *   an arrival at t conforms iff T <= burst and t >= TAT - tau; then TAT = max(t, TAT) + T.
 *   TAT is a time of the same 64-bit clock as t: a charge that would move it past UINT64_MAX
 *   does not conform.
 * A batch of n events (gcra_take_batch) is n arrivals at the same t, all charged when all
 * conform; else the first alone when it conforms; else none. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "psd2edge_gcra.h"

typedef unsigned __int128 u128;

/* --- the model ----------------------------------------------------------------------------- */

static int model_take(u128 *tat, __u64 t, __u64 cost, __u64 burst)
{
	u128 tau, next;

	if (cost > burst)
		return 0;
	tau = burst - cost;
	if ((u128)t + tau < *tat) /* t < TAT - tau, without a negative */
		return 0;
	next = (*tat > t ? *tat : t) + cost;
	if (next > UINT64_MAX)
		return 0;
	*tat = next;
	return 1;
}

static __u32 model_take_batch(u128 *tat, __u64 t, __u64 interval, __u64 burst, __u32 batch)
{
	u128 trial = *tat;
	__u32 i;

	for (i = 0; i < batch && model_take(&trial, t, interval, burst); i++)
		;
	if (batch > 1 && i == batch) {
		*tat = trial;
		return batch;
	}
	return model_take(tat, t, interval, burst);
}

/* --- fixture rows -------------------------------------------------------------------------- */

#define EVENTS_MAX 12
#define BIG UINT64_MAX /* short, for the tables */

struct event {
	__u64 now;
	__u64 cost;  /* the interval when batch > 0 */
	__u32 batch; /* 0: gcra_take; else gcra_take_batch with this batch */
	__u32 want;  /* gcra_take: 1 conforms, 0 refused; gcra_take_batch: events charged */
};

struct row {
	const char *what;
	__u64 tat;   /* the bucket before the first event */
	__u64 burst;
	struct event ev[EVENTS_MAX]; /* ends at the first event with cost 0 */
};

/* A batch event: `b` events of interval `c` at `t`, `w` charged. */
#define B(t, c, b, w) { t, c, b, w }

static const struct row rows[] = {
	{ "first event on a new bucket", 0, 10, { { 1000, 4, 0, 1 } } },
	{ "first event at time 0", 0, 10, { { 0, 10, 0, 1 }, { 0, 1, 0, 0 } } },
	{ "a rested bucket takes burst / cost events at once, then refuses", 0, 10,
	  { { 100, 2, 0, 1 }, { 100, 2, 0, 1 }, { 100, 2, 0, 1 }, { 100, 2, 0, 1 },
	    { 100, 2, 0, 1 }, { 100, 2, 0, 0 } } },
	/* TAT is 110 after the first: for a cost of 2 tau is 8, so the next conforms from 102 */
	{ "conforms exactly at TAT - tau, refused one ns before", 0, 10,
	  { { 100, 10, 0, 1 }, { 101, 2, 0, 0 }, { 102, 2, 0, 1 }, { 102, 2, 0, 0 },
	    { 103, 2, 0, 0 }, { 104, 2, 0, 1 } } },
	{ "an event costing exactly the burst conforms on a rested bucket only", 0, 10,
	  { { 100, 10, 0, 1 }, { 109, 10, 0, 0 }, { 110, 10, 0, 1 } } },
	{ "idle until TAT restores the full burst", 0, 10,
	  { { 100, 10, 0, 1 }, { 110, 5, 0, 1 }, { 110, 5, 0, 1 }, { 110, 1, 0, 0 } } },
	{ "a long idle period restores no more than the burst", 0, 10,
	  { { 100, 10, 0, 1 }, { 1000000000000ULL, 5, 0, 1 }, { 1000000000000ULL, 5, 0, 1 },
	    { 1000000000000ULL, 1, 0, 0 } } },
	{ "a clock going back far is refused, not wrapped", 0, 10,
	  { { 1000, 4, 0, 1 }, { 0, 1, 0, 0 }, { 500, 1, 0, 0 }, { 1000, 6, 0, 1 } } },
	/* TAT 1004 after the first; at 999 the credit left is burst - (1004 - 999) = 5 ns */
	{ "a clock going back a little spends the same burst, no more", 0, 10,
	  { { 1000, 4, 0, 1 }, { 999, 2, 0, 1 }, { 999, 2, 0, 1 }, { 999, 2, 0, 0 },
	    { 1000, 2, 0, 1 }, { 1000, 1, 0, 0 } } },
	{ "a bucket far behind the clock (TAT 0, now near the end) is a rested bucket", 0, 10,
	  { { BIG - 20, 10, 0, 1 }, { BIG - 20, 1, 0, 0 } } },
	{ "a cost above the burst never conforms, even rested", 0, 10,
	  { { 1000, 11, 0, 0 }, { 1000, BIG, 0, 0 } } },
	/* old code: next = TAT + cost wrapped to exactly now, and next - now = 0 <= burst */
	{ "a cost near UINT64_MAX on a bucket ahead of the clock does not wrap into a pass", 1001,
	  10, { { 1000, BIG, 0, 0 }, { 1000, BIG - 5, 0, 0 }, { 1001, 10, 0, 1 } } },
	/* old code: the second charge wrapped TAT to 0 and admitted, and then everything did */
	{ "burst and cost near UINT64_MAX: TAT stops at the end of the clock", 0, BIG,
	  { { 1, BIG - 1, 0, 1 }, { 2, 1, 0, 0 }, { 3, BIG - 1, 0, 0 }, { BIG, 1, 0, 0 } } },
	/* old code: now + cost wrapped to 4, so the bucket looked rested again */
	{ "a clock near its end: a charge past UINT64_MAX is refused", 0, 100,
	  { { BIG - 5, 10, 0, 0 }, { BIG - 5, 5, 0, 1 }, { BIG - 5, 1, 0, 0 } } },
	{ "a batch that fits is charged whole", 0, 10,
	  { B(100, 2, 4, 4), B(100, 2, 4, 1), B(100, 2, 4, 0), { 100, 1, 0, 0 } } },
	{ "a batch that does not fit charges one event", 0, 10,
	  { B(100, 3, 4, 1), B(100, 3, 4, 1), B(100, 3, 4, 1), B(100, 3, 4, 0) } },
	{ "a batch larger than the burst never charges more than one at a time", 0, 10,
	  { B(100, 2, 6, 1), B(100, 2, 6, 1), B(100, 2, 6, 1), B(100, 2, 6, 1),
	    B(100, 2, 6, 1), B(100, 2, 6, 0) } },
	{ "a batch of one charges one event", 0, 10,
	  { B(100, 10, 1, 1), B(100, 10, 1, 0), B(110, 10, 1, 1) } },
	{ "a batch after idle gets the full burst again", 0, 10,
	  { B(100, 2, 5, 5), B(100, 2, 5, 0), B(110, 2, 5, 5) } },
	/* old code: interval * batch wrapped to 0, so every batch was free */
	{ "a batch whose cost overflows 64 bits charges one event", 0, 1ULL << 62,
	  { B(0, 1ULL << 62, 4, 1), B(0, 1ULL << 62, 4, 0), B(1ULL << 62, 1ULL << 62, 4, 1) } },
	{ "a batch against a clock going back is refused whole", 0, 10,
	  { B(1000, 2, 4, 4), B(990, 2, 4, 0), B(1000, 2, 4, 1) } },
};

static __u32 header_charge(__u64 *tat, const struct event *e, __u64 burst)
{
	if (!e->batch)
		return gcra_take(tat, e->now, e->cost, burst);
	return gcra_take_batch(tat, e->now, e->cost, burst, e->batch);
}

static __u32 model_charge(u128 *tat, const struct event *e, __u64 burst)
{
	if (!e->batch)
		return model_take(tat, e->now, e->cost, burst);
	return model_take_batch(tat, e->now, e->cost, burst, e->batch);
}

static void test_fixtures(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		__u64 tat = rows[r].tat;
		u128 model_tat = rows[r].tat;

		for (int i = 0; i < EVENTS_MAX && rows[r].ev[i].cost; i++) {
			const struct event *e = &rows[r].ev[i];
			__u32 got = header_charge(&tat, e, rows[r].burst);
			__u32 model = model_charge(&model_tat, e, rows[r].burst);

			if (got != e->want || model != e->want || tat != model_tat)
				failures++, print_error("%s: event %d (now %llu, cost %llu, batch %u): header %u, model "
					 "%u, want %u; TAT header %llu model %llu\n", rows[r].what, i,
					 (unsigned long long)e->now, (unsigned long long)e->cost,
					 e->batch, got, model, e->want, (unsigned long long)tat,
					 (unsigned long long)model_tat);
		}
	}
	assert_int_equal(failures, 0);
}

/* --- a seeded random run ------------------------------------------------------------------- */

static __u64 rng_state = 0x9e3779b97f4a7c15ULL;

static __u64 rng(void) /* xorshift64*: the same sequence on every run */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

/* A value of one of several scales, so that ordinary rates, the boundaries and the top of the
 * 64-bit range all come up. */
static __u64 rng_scaled(__u64 around)
{
	switch (rng() % 16) {
	case 0:
		return rng() % 4;
	case 1:
		return BIG - rng() % 4;
	case 2:
		return rng();
	default:
		return around / 2 + rng() % (around | 1); /* wraps near the top: fine here */
	}
}

static void test_random_against_model(void **state)
{
	(void)state;
	__u64 tat = 0, now = 1000000, conforming = 0;
	u128 model_tat = 0;

	for (int i = 0; i < 100000; i++) {
		struct event e = { .batch = rng() % 3 ? 0 : (__u32)(rng() % 18) };
		__u64 burst, step = rng() % 32;
		__u32 got, model;

		if (i % 5000 == 0) { /* a fresh bucket now and then: low, near the clock's end, or
				      * (a clock gone back) far ahead of it */
			now = rng() % 2 ? rng() % 1000000 : BIG - rng() % (1ULL << 26);
			tat = now >= 1000 ? now - rng() % 1000 : 0;
			if (rng() % 8 == 0)
				tat = now + rng() % ((BIG - now) | 1);
			model_tat = tat;
		}
		switch (rng() % 32) { /* mostly forward, sometimes back, sometimes idle */
		case 0:
		case 1:
			now -= now < step * 4 ? now : step * 4;
			break;
		case 2:
			step = rng() % 100000;
			/* fall through */
		default:
			now += BIG - now < step ? BIG - now : step;
		}
		e.now = now;
		e.cost = rng_scaled(8);
		burst = rng_scaled(40);
		got = header_charge(&tat, &e, burst);
		model = model_charge(&model_tat, &e, burst);
		if (got != model || tat != model_tat)
			fail_msg("event %d (now %llu, cost %llu, batch %u, burst %llu): header %u, "
				 "model %u; TAT header %llu model %llu", i, (unsigned long long)now,
				 (unsigned long long)e.cost, e.batch, (unsigned long long)burst, got,
				 model, (unsigned long long)tat, (unsigned long long)model_tat);
		conforming += got != 0;
	}
	/* the run is not degenerate: both verdicts came up often */
	assert_true(conforming > 10000 && conforming < 90000);
}

/* --- two threads on one bucket ------------------------------------------------------------- */

#define RACE_ATTEMPTS 200000 /* per thread */
#define RACE_COST 2
#define RACE_BURST 20
#define RACE_TICK 1  /* attempts (of both threads together) per ns of the shared clock */
#define RACE_LEAD 64 /* attempts a thread may be ahead of the other: they run side by side,
		      * whatever the scheduler does */

static struct race {
	__u64 tat;
	__u64 clock; /* attempts so far; now = clock / RACE_TICK */
	__u64 done[2];
	__u64 admitted_at[2 * RACE_ATTEMPTS]; /* each thread's, then both sorted */
	__u64 admitted[2];
} race;

static void *race_run(void *arg)
{
	int me = *(const int *)arg;
	__u64 *mine = &race.admitted_at[me * RACE_ATTEMPTS];

	for (__u64 i = 0; i < RACE_ATTEMPTS; i++) {
		__u64 now;

		while (i > __atomic_load_n(&race.done[!me], __ATOMIC_ACQUIRE) + RACE_LEAD)
			sched_yield();
		now = __atomic_fetch_add(&race.clock, 1, __ATOMIC_RELAXED) / RACE_TICK;
		if (gcra_take(&race.tat, now, RACE_COST, RACE_BURST))
			mine[race.admitted[me]++] = now;
		__atomic_store_n(&race.done[me], i + 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	__u64 x = *(const __u64 *)a, y = *(const __u64 *)b;

	return (x > y) - (x < y);
}

/* Any window of the clock [a, a + w] holds at most (w + burst) / cost admitted events: each
 * admitted charge leaves TAT at most `burst` past its own now and raises TAT by at least `cost`,
 * whatever order the threads' charges land in. */
static void test_two_threads(void **state)
{
	(void)state;
	static const __u64 windows[] = { 0, RACE_COST, RACE_BURST, 10 * RACE_BURST, 100000 };
	static const int ids[2] = { 0, 1 };
	__u64 *all = race.admitted_at, n, end;
	pthread_t th[2];

	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, race_run, (void *)&ids[i]), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);

	n = race.admitted[0] + race.admitted[1];
	memmove(&all[race.admitted[0]], &all[RACE_ATTEMPTS], race.admitted[1] * sizeof(*all));
	qsort(all, n, sizeof(*all), cmp_u64);

	end = 2 * RACE_ATTEMPTS / RACE_TICK;
	assert_true(n * RACE_COST <= race.tat); /* no charge lost to the other thread */
	assert_true(race.tat <= end + RACE_BURST);
	/* contention fails closed, but not most of the time */
	assert_true(n >= end / RACE_COST / 2);
	for (size_t w = 0; w < sizeof(windows) / sizeof(windows[0]); w++) {
		__u64 limit = (windows[w] + RACE_BURST) / RACE_COST;

		for (__u64 i = 0, j = 0; i < n; i++) {
			while (j < n && all[j] <= all[i] + windows[w])
				j++;
			if (j - i > limit)
				fail_msg("%llu admitted in [%llu, %llu], the model allows %llu",
					 (unsigned long long)(j - i), (unsigned long long)all[i],
					 (unsigned long long)(all[i] + windows[w]),
					 (unsigned long long)limit);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_random_against_model),
		cmocka_unit_test(test_two_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
