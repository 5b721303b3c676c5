/* quota: window arithmetic on one counter (user/quota.c). Fixture rows at the UTC edges of a
 * day, an hour and a minute, rolling windows, a clock stepping back, entries holding values
 * that could wrap (counts near UINT64_MAX, window starts at the ends of time), a rule that
 * changed, quota_peek and quota_clear; then seeded random runs checked against brute-force
 * models: a fixed window counts exactly the requests of its UTC slot; a rolling window never
 * lets more than `limit` requests into any period of window_seconds and refuses only when the
 * period stretched by one sub-window already holds `limit`; every reset is exact (one second
 * earlier the request is still refused, at the reset it passes); and a clock that steps back
 * decides exactly as if it had stood still at the latest time it showed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "quota.h"

#define DAY 86400
#define DAY0 1796342400LL /* 2026-12-04T00:00:00Z */
#define AT(h, m, s) (DAY0 + (h) * 3600LL + (m) * 60LL + (s)) /* AT(24, 0, 0): the next midnight */
#define SUB_3600 225 /* a rolling hour's sub-window: 3600 / PSD2_QUOTA_SUBWINDOWS */
#define SPAN_3600 (SUB_3600 * (PSD2_QUOTA_SUBWINDOWS + 1)) /* a sub-window leaves this late */

enum op { END, TAKE, PEEK, CLEAR };

struct step {
	enum op op;
	int64_t now;
	bool pass; /* TAKE only */
	uint64_t used, remaining;
	uint32_t reset;
};

#define STEPS_MAX 10

struct row {
	const char *what;
	struct quota_rule rule;
	struct psd2_quota entry; /* before the first step */
	struct step steps[STEPS_MAX];
};

#define PASS(t, u, rem, rs) { TAKE, t, true, u, rem, rs }
#define REFUSE(t, u, rs) { TAKE, t, false, u, 0, rs }
#define SEE(t, u, rem, rs) { PEEK, t, false, u, rem, rs }
#define WIPE { CLEAR, 0, false, 0, 0, 0 }

static const struct quota_rule day4 = { 4, PSD2_QUOTA_DAY, DAY };
static const struct quota_rule rolling_hour3 = { 3, PSD2_QUOTA_ROLLING, 3600 };

/* An entry already counting in the fixed window that starts at `start`. */
#define FIXED(w, ws, start, n, lim) \
	{ .window = (w), .window_seconds = (ws), .window_start = (start), .count = (n), .limit = (lim) }

static const struct row rows[] = {
	{ "day: four calls pass, the 5th in the same UTC day is refused until midnight", day4, {},
	  { PASS(AT(9, 0, 0), 1, 3, 15 * 3600), PASS(AT(12, 0, 0), 2, 2, 12 * 3600),
	    PASS(AT(18, 0, 0), 3, 1, 6 * 3600), PASS(AT(23, 0, 0), 4, 0, 3600),
	    REFUSE(AT(23, 30, 0), 4, 1800), REFUSE(AT(23, 59, 59), 4, 1),
	    PASS(AT(24, 0, 0), 1, 3, DAY), PASS(AT(24, 0, 1), 2, 2, DAY - 1) } },
	{ "day: 23:59:59 -> 00:00:00 resets, not 24 h after the first call",
	  { 1, PSD2_QUOTA_DAY, DAY }, {},
	  { PASS(AT(23, 59, 59), 1, 0, 1), PASS(AT(24, 0, 0), 1, 0, DAY),
	    REFUSE(AT(24, 0, 1), 1, DAY - 1), REFUSE(AT(47, 59, 59), 1, 1),
	    PASS(AT(48, 0, 0), 1, 0, DAY) } },
	{ "hour: 12:59:59 -> 13:00:00 resets", { 2, PSD2_QUOTA_HOUR, 3600 }, {},
	  { PASS(AT(12, 59, 58), 1, 1, 2), PASS(AT(12, 59, 59), 2, 0, 1),
	    REFUSE(AT(12, 59, 59), 2, 1), PASS(AT(13, 0, 0), 1, 1, 3600),
	    PASS(AT(13, 59, 59), 2, 0, 1), REFUSE(AT(13, 59, 59), 2, 1) } },
	{ "minute: :59 -> :00 resets, an idle minute in between", { 3, PSD2_QUOTA_MINUTE, 60 }, {},
	  { PASS(AT(8, 15, 0), 1, 2, 60), PASS(AT(8, 15, 30), 2, 1, 30),
	    PASS(AT(8, 15, 59), 3, 0, 1), REFUSE(AT(8, 15, 59), 3, 1),
	    PASS(AT(8, 16, 0), 1, 2, 60), PASS(AT(8, 17, 30), 1, 2, 30) } },
	{ "peek counts nothing and moves nothing", day4, {},
	  { SEE(AT(9, 0, 0), 0, 4, 15 * 3600), PASS(AT(9, 0, 0), 1, 3, 15 * 3600),
	    PASS(AT(9, 0, 1), 2, 2, 15 * 3600 - 1), SEE(AT(10, 0, 0), 2, 2, 14 * 3600),
	    SEE(AT(24, 0, 0), 0, 4, DAY), PASS(AT(23, 0, 0), 3, 1, 3600),
	    PASS(AT(23, 0, 0), 4, 0, 3600), SEE(AT(23, 0, 0), 4, 0, 3600),
	    REFUSE(AT(23, 0, 1), 4, 3599) } },
	{ "clear: the window reopens for its limit, its end stays", day4, {},
	  { PASS(AT(9, 0, 0), 1, 3, 15 * 3600), PASS(AT(9, 0, 0), 2, 2, 15 * 3600),
	    PASS(AT(9, 0, 0), 3, 1, 15 * 3600), PASS(AT(9, 0, 0), 4, 0, 15 * 3600),
	    REFUSE(AT(10, 0, 0), 4, 14 * 3600), WIPE, SEE(AT(10, 0, 0), 0, 4, 14 * 3600),
	    PASS(AT(10, 0, 0), 1, 3, 14 * 3600) } },
	{ "clock back within the day: still refused", day4, FIXED(PSD2_QUOTA_DAY, DAY, DAY0, 4, 4),
	  { REFUSE(AT(10, 0, 0), 4, 14 * 3600), REFUSE(AT(9, 0, 0), 4, 15 * 3600) } },
	{ "clock back across midnight: yesterday is not reopened, today's window keeps counting",
	  day4, {},
	  { PASS(AT(24, 0, 10), 1, 3, DAY - 10), PASS(AT(24, 0, 11), 2, 2, DAY - 11),
	    PASS(AT(23, 59, 50), 3, 1, DAY + 10), PASS(AT(23, 59, 50), 4, 0, DAY + 10),
	    REFUSE(AT(23, 59, 55), 4, DAY + 5), REFUSE(AT(24, 0, 0), 4, DAY),
	    REFUSE(AT(47, 59, 59), 4, 1), PASS(AT(48, 0, 0), 1, 3, DAY) } },
	{ "clock back a year: no reopen, no underflow, the reset says when the window ends", day4,
	  FIXED(PSD2_QUOTA_DAY, DAY, DAY0, 4, 4),
	  { REFUSE(AT(12, 0, 0) - 365LL * DAY, 4, 365 * DAY + 12 * 3600),
	    REFUSE(AT(23, 59, 59), 4, 1), PASS(AT(24, 0, 0), 1, 3, DAY) } },
	{ "an entry of an older window starts afresh; then the clock steps back into it", day4,
	  FIXED(PSD2_QUOTA_DAY, DAY, DAY0, 4, 4),
	  { PASS(AT(24, 0, 5), 1, 3, DAY - 5), PASS(AT(23, 0, 0), 2, 2, DAY + 3600),
	    PASS(AT(23, 0, 0), 3, 1, DAY + 3600), PASS(AT(23, 0, 0), 4, 0, DAY + 3600),
	    REFUSE(AT(23, 0, 0), 4, DAY + 3600) } },
	{ "rule changed (hour -> day): the entry starts afresh", day4,
	  FIXED(PSD2_QUOTA_HOUR, 3600, AT(10, 0, 0), 9, 9), { PASS(AT(10, 30, 0), 1, 3, 13 * 3600 + 1800) } },
	{ "limit lowered below the count: refused until the window ends", { 2, PSD2_QUOTA_DAY, DAY },
	  FIXED(PSD2_QUOTA_DAY, DAY, DAY0, 3, 4),
	  { REFUSE(AT(12, 0, 0), 3, 12 * 3600), PASS(AT(24, 0, 0), 1, 1, DAY) } },
	{ "limit raised: the count is kept", { 10, PSD2_QUOTA_DAY, DAY },
	  FIXED(PSD2_QUOTA_DAY, DAY, DAY0, 4, 4), { PASS(AT(12, 0, 0), 5, 5, 12 * 3600) } },
	{ "count at UINT64_MAX: refused, nothing wraps", day4,
	  FIXED(PSD2_QUOTA_DAY, DAY, DAY0, UINT64_MAX, 4),
	  { REFUSE(AT(12, 0, 0), UINT64_MAX, 12 * 3600), PASS(AT(24, 0, 0), 1, 3, DAY) } },
	{ "count at UINT64_MAX - 1 under a limit of UINT64_MAX: one more, then refused",
	  { UINT64_MAX, PSD2_QUOTA_DAY, DAY }, FIXED(PSD2_QUOTA_DAY, DAY, DAY0, UINT64_MAX - 1, 4),
	  { PASS(AT(12, 0, 0), UINT64_MAX, 0, 12 * 3600), REFUSE(AT(12, 0, 0), UINT64_MAX, 12 * 3600) } },
	{ "window start at the end of time: counts in it, the reset is capped", day4,
	  FIXED(PSD2_QUOTA_DAY, DAY, INT64_MAX, 3, 4),
	  { PASS(AT(12, 0, 0), 4, 0, UINT32_MAX), REFUSE(AT(12, 0, 0), 4, UINT32_MAX) } },
	{ "window start at the beginning of time: a window long over", day4,
	  FIXED(PSD2_QUOTA_DAY, DAY, INT64_MIN, UINT64_MAX, 4), { PASS(AT(12, 0, 0), 1, 3, 12 * 3600) } },
	{ "limit 0 (a rule read from a corrupt entry) refuses", { 0, PSD2_QUOTA_DAY, DAY }, {},
	  { REFUSE(AT(12, 0, 0), 0, 12 * 3600) } },
	{ "window_seconds 0 (a rule read from a corrupt entry) is taken as 1", { 1, PSD2_QUOTA_MINUTE, 0 },
	  {}, { PASS(AT(12, 0, 0), 1, 0, 1), REFUSE(AT(12, 0, 0), 1, 1), PASS(AT(12, 0, 1), 1, 0, 1) } },
	/* sub-windows of 225 s: a request leaves 17 * 225 = 3825 s after its sub-window began */
	{ "rolling hour: a request frees its place when its sub-window leaves", rolling_hour3, {},
	  { PASS(AT(10, 0, 0), 1, 2, SPAN_3600), PASS(AT(10, 30, 0), 2, 1, SPAN_3600 - 1800),
	    PASS(AT(10, 59, 0), 3, 0, SPAN_3600 - 3540), REFUSE(AT(11, 0, 0), 3, 225),
	    REFUSE(AT(10, 0, 0) + SPAN_3600 - 1, 3, 1), PASS(AT(10, 0, 0) + SPAN_3600, 3, 0, 1800),
	    SEE(AT(10, 0, 0) + SPAN_3600, 3, 0, 1800), PASS(AT(13, 0, 0), 1, 2, SPAN_3600) } },
	{ "rolling hour: a request late in its sub-window leaves with the sub-window's start",
	  rolling_hour3, {},
	  { PASS(AT(10, 3, 44), 1, 2, SPAN_3600 - 224), SEE(AT(11, 3, 44), 1, 2, 1),
	    SEE(AT(11, 3, 45), 0, 3, SPAN_3600) } },
	/* over the limit (lowered): one more fits once two have left; sub[i] of an entry whose
	 * sub[16] is now's leaves (i + 1) * 225 s from now */
	{ "rolling hour: the reset when over waits for as many as needed to leave", rolling_hour3,
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600,
	    .window_start = AT(10, 0, 0) - 16 * SUB_3600, .sub = { [14] = 1, [15] = 2, [16] = 1 } },
	  { REFUSE(AT(10, 0, 0), 4, 16 * SUB_3600), SEE(AT(10, 0, 0) + 15 * SUB_3600 - 1, 4, 0, 226),
	    SEE(AT(10, 0, 0) + 15 * SUB_3600, 3, 0, SUB_3600),
	    REFUSE(AT(10, 0, 0) + 16 * SUB_3600 - 1, 3, 1),
	    PASS(AT(10, 0, 0) + 16 * SUB_3600, 2, 1, SUB_3600) } },
	{ "rolling 60 s: 16 sub-windows of 4 s, judged over 68 s", { 1, PSD2_QUOTA_ROLLING, 60 }, {},
	  { PASS(AT(0, 0, 0), 1, 0, 68), REFUSE(AT(0, 1, 0), 1, 8), REFUSE(AT(0, 1, 7), 1, 1),
	    PASS(AT(0, 1, 8), 1, 0, 68) } },
	{ "rolling: clock back keeps counting into the latest sub-window", { 2, PSD2_QUOTA_ROLLING, 3600 },
	  {},
	  { PASS(AT(10, 0, 0), 1, 1, SPAN_3600), PASS(AT(9, 0, 0), 2, 0, SPAN_3600 + 3600),
	    REFUSE(AT(10, 0, 0), 2, SPAN_3600), REFUSE(AT(8, 0, 0), 2, SPAN_3600 + 7200),
	    PASS(AT(10, 0, 0) + SPAN_3600, 1, 1, SPAN_3600) } },
	{ "rolling: the length changed (hour -> 2 h): the entry starts afresh",
	  { 1, PSD2_QUOTA_ROLLING, 7200 },
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600,
	    .window_start = AT(10, 0, 0) - 16 * SUB_3600, .count = 5, .sub = { [16] = 5 } },
	  { PASS(AT(10, 0, 0), 1, 0, 2 * SPAN_3600) } },
	{ "rolling: a wrong count is recomputed from the sub-windows", rolling_hour3,
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600,
	    .window_start = AT(10, 0, 0) - 16 * SUB_3600, .count = 0, .sub = { [16] = 3 } },
	  { REFUSE(AT(10, 0, 0), 3, SPAN_3600) } },
	{ "rolling: a sub-window at UINT32_MAX refuses rather than wraps, whatever the limit",
	  { 1ULL << 40, PSD2_QUOTA_ROLLING, 3600 },
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600,
	    .window_start = AT(10, 0, 0) - 16 * SUB_3600, .sub = { [16] = UINT32_MAX } },
	  { { TAKE, AT(10, 0, 0), false, UINT32_MAX, (1ULL << 40) - UINT32_MAX, SPAN_3600 } } },
	{ "rolling: every sub-window at UINT32_MAX", rolling_hour3,
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600,
	    .window_start = AT(10, 0, 0) - 16 * SUB_3600,
	    .sub = { UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
		     UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX,
		     UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX, UINT32_MAX } },
	  { REFUSE(AT(10, 0, 0), 17ULL * UINT32_MAX, SPAN_3600),
	    PASS(AT(10, 0, 0) + SPAN_3600 * 2, 1, 2, SPAN_3600) } },
	{ "rolling: window start at the end of time", rolling_hour3,
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600, .window_start = INT64_MAX },
	  { PASS(AT(10, 0, 0), 1, 2, UINT32_MAX) } },
	{ "rolling: window start at the beginning of time", rolling_hour3,
	  { .window = PSD2_QUOTA_ROLLING, .window_seconds = 3600, .window_start = INT64_MIN,
	    .sub = { [16] = 3 } },
	  { PASS(AT(10, 0, 0), 1, 2, SPAN_3600) } },
};

static void test_fixtures(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		struct psd2_quota q = rows[r].entry;

		for (int i = 0; i < STEPS_MAX && rows[r].steps[i].op != END; i++) {
			const struct step *s = &rows[r].steps[i];
			struct quota_state st = { 0 };
			bool pass = false;

			if (s->op == CLEAR) {
				quota_clear(&q);
				continue;
			}
			if (s->op == TAKE)
				pass = quota_take(&q, &rows[r].rule, s->now, &st);
			else
				quota_peek(&q, &rows[r].rule, s->now, &st);
			if (pass != s->pass || st.limit != rows[r].rule.limit || st.used != s->used ||
			    st.remaining != s->remaining || st.reset != s->reset)
				failures++, print_error("%s: step %d at %lld: %s used %llu remaining %llu "
					"reset %u; want %s used %llu remaining %llu reset %u\n",
					rows[r].what, i, (long long)s->now, pass ? "pass" : "no",
					(unsigned long long)st.used, (unsigned long long)st.remaining,
					st.reset, s->pass ? "pass" : "no", (unsigned long long)s->used,
					(unsigned long long)s->remaining, s->reset);
		}
	}
	assert_int_equal(failures, 0);
}

/* quota_take writes the rule into the entry for readers of the map, and the time it counted;
 * a refusal counts nothing and leaves `updated` alone. */
static void test_rule_written(void **state)
{
	struct psd2_quota q = FIXED(PSD2_QUOTA_HOUR, 3600, AT(10, 0, 0), 1, 9);
	struct quota_state st;

	(void)state;
	assert_true(quota_take(&q, &day4, AT(10, 30, 0), &st));
	assert_int_equal(q.limit, 4);
	assert_int_equal(q.window, PSD2_QUOTA_DAY);
	assert_int_equal(q.window_seconds, DAY);
	assert_int_equal(q.window_start, DAY0);
	assert_int_equal(q.count, 1);
	assert_int_equal(q.updated, AT(10, 30, 0));
	q.count = 4;
	assert_false(quota_take(&q, &day4, AT(11, 0, 0), &st));
	assert_int_equal(q.count, 4);
	assert_int_equal(q.updated, AT(10, 30, 0));
}

/* --- seeded random runs against brute-force models ---------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;

static uint64_t rng(void) /* xorshift64*: the same sequence on every run */
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dULL;
}

#define RUN_EVENTS 4000

static const struct quota_rule random_rules[] = {
	{ 5, PSD2_QUOTA_ROLLING, 3600 },
	{ 1, PSD2_QUOTA_ROLLING, 3600 },
	{ 3, PSD2_QUOTA_ROLLING, 60 },       /* sub-windows that do not divide the length */
	{ 4, PSD2_QUOTA_ROLLING, 86400 },
	{ 6, PSD2_QUOTA_ROLLING, 1000 },      /* 63 s sub-windows */
	{ 7, PSD2_QUOTA_ROLLING, 2678400 },  /* 31 days */
	{ 3, PSD2_QUOTA_MINUTE, 60 },
	{ 10, PSD2_QUOTA_HOUR, 3600 },
	{ 4, PSD2_QUOTA_DAY, DAY },
};

/* The next time: mostly a few requests close together, sometimes a gap of a sub-window, of a
 * window, or longer. */
static int64_t next_time(int64_t now, const struct quota_rule *r)
{
	switch (rng() % 16) {
	case 0:
		return now + (int64_t)(rng() % (3 * r->window_seconds));
	case 1:
	case 2:
		return now + (int64_t)(rng() % (r->window_seconds / 4 + 1));
	default:
		return now + (int64_t)(rng() % (r->window_seconds / 64 + 2));
	}
}

static uint64_t admitted_since(const int64_t *times, size_t n, int64_t after)
{
	uint64_t k = 0;

	while (n > 0 && times[n - 1] > after)
		n--, k++;
	return k;
}

static int64_t slot_of(int64_t t, int64_t len)
{
	return t - t % len; /* times here are positive */
}

/* Whether the request passes when taken at `t` on a copy of q (the reset's promise). */
static bool passes_at(const struct psd2_quota *q, const struct quota_rule *r, int64_t t)
{
	struct psd2_quota copy = *q;
	struct quota_state st;

	return quota_take(&copy, r, t, &st);
}

static void check_run(const struct quota_rule *r)
{
	static int64_t admitted[RUN_EVENTS];
	int64_t len = r->window_seconds;
	int64_t sub = (len + PSD2_QUOTA_SUBWINDOWS - 1) / PSD2_QUOTA_SUBWINDOWS;
	int64_t now = DAY0 + (int64_t)(rng() % DAY);
	struct psd2_quota q = { 0 };
	size_t n = 0, refused = 0;

	for (int i = 0; i < RUN_EVENTS; i++) {
		struct quota_state before, st, later;
		bool pass;

		now = next_time(now, r);
		quota_peek(&q, r, now, &before);
		pass = quota_take(&q, r, now, &st);
		if (st.used != before.used + pass) /* a refusal counts nothing; peek sees as take */
			fail_msg("event %d at %lld: peek said used %llu, take %s with used %llu", i,
				 (long long)now, (unsigned long long)before.used,
				 pass ? "passed" : "refused", (unsigned long long)st.used);
		if (pass)
			admitted[n++] = now;
		else
			refused++;
		if (r->window == PSD2_QUOTA_ROLLING) {
			/* every request of (now - len, now] is judged, and nothing before
			 * now - len - PSD2_QUOTA_SUBWINDOWS - sub */
			uint64_t least = admitted_since(admitted, n, now - len);
			uint64_t most = admitted_since(admitted, n, now - len - PSD2_QUOTA_SUBWINDOWS - sub);

			if (least > r->limit || st.used < least || st.used > most ||
			    (!pass && most < r->limit))
				fail_msg("rolling %u/%u s, event %d at %lld: %s, used %llu; the last "
					 "%lld s hold %llu, the judged span at most %llu", (unsigned)r->limit,
					 r->window_seconds, i, (long long)now, pass ? "pass" : "refused",
					 (unsigned long long)st.used, (long long)len,
					 (unsigned long long)least, (unsigned long long)most);
		} else {
			uint64_t in_slot = admitted_since(admitted, n, slot_of(now, len) - 1);

			if (st.used != in_slot || pass != (in_slot - pass < r->limit) ||
			    st.reset != slot_of(now, len) + len - now)
				fail_msg("fixed %u/%u s, event %d at %lld: %s, used %llu reset %u; the "
					 "slot holds %llu", (unsigned)r->limit, r->window_seconds, i,
					 (long long)now, pass ? "pass" : "refused",
					 (unsigned long long)st.used, st.reset, (unsigned long long)in_slot);
		}
		/* the reset is exact: refused one second before it, passes at it (a refusal);
		 * frees a request at it and not before (a pass) */
		if (!pass) {
			if (st.reset > 1 && passes_at(&q, r, now + st.reset - 1))
				fail_msg("event %d at %lld: passes before its reset %u", i, (long long)now,
					 st.reset);
			if (!passes_at(&q, r, now + st.reset))
				fail_msg("event %d at %lld: refused at its reset %u", i, (long long)now,
					 st.reset);
		} else {
			quota_peek(&q, r, now + st.reset - 1, &later);
			if (later.used != st.used)
				fail_msg("event %d at %lld: a request freed before the reset %u", i,
					 (long long)now, st.reset);
			quota_peek(&q, r, now + st.reset, &later);
			if (later.used >= st.used)
				fail_msg("event %d at %lld: nothing freed at the reset %u", i,
					 (long long)now, st.reset);
		}
	}
	/* the run is not degenerate: both verdicts came up often */
	if (refused < 20 || n < 20)
		fail_msg("%u/%u s: %zu passed, %zu refused", (unsigned)r->limit, r->window_seconds, n,
			 refused);
}

static void test_random_against_models(void **state)
{
	(void)state;
	for (size_t r = 0; r < sizeof(random_rules) / sizeof(random_rules[0]); r++)
		check_run(&random_rules[r]);
}

/* A clock that steps back decides exactly as a clock that stood still at the latest time it
 * had shown: same verdicts, same counts (the reset alone may differ: it is counted from the
 * clock's own now). */
static void test_clock_back_is_a_clock_standing_still(void **state)
{
	(void)state;
	for (size_t r = 0; r < sizeof(random_rules) / sizeof(random_rules[0]); r++) {
		const struct quota_rule *rule = &random_rules[r];
		struct psd2_quota stepping = { 0 }, standing = { 0 };
		int64_t now = DAY0 + (int64_t)(rng() % DAY), latest = now;
		size_t back = 0;

		for (int i = 0; i < RUN_EVENTS; i++) {
			struct quota_state st_stepping, st_standing;
			bool p_stepping, p_standing;

			if (i > 0 && rng() % 8 == 0) {
				now -= (int64_t)(rng() % (2 * rule->window_seconds + 1));
				back++;
			} else {
				now = next_time(now, rule);
			}
			latest = now > latest ? now : latest;
			p_stepping = quota_take(&stepping, rule, now, &st_stepping);
			p_standing = quota_take(&standing, rule, latest, &st_standing);
			if (p_stepping != p_standing || st_stepping.used != st_standing.used ||
			    stepping.count != standing.count ||
			    stepping.window_start != standing.window_start ||
			    memcmp(stepping.sub, standing.sub, sizeof(stepping.sub)) ||
			    st_stepping.reset < st_standing.reset)
				fail_msg("%u/%u s, event %d: clock %lld (latest %lld): %s used %llu "
					 "reset %u, standing still: %s used %llu reset %u",
					 (unsigned)rule->limit, rule->window_seconds, i, (long long)now,
					 (long long)latest, p_stepping ? "pass" : "refused",
					 (unsigned long long)st_stepping.used, st_stepping.reset,
					 p_standing ? "pass" : "refused",
					 (unsigned long long)st_standing.used, st_standing.reset);
		}
		assert_true(back > RUN_EVENTS / 16);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_rule_written),
		cmocka_unit_test(test_random_against_models),
		cmocka_unit_test(test_clock_back_is_a_clock_standing_still),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
