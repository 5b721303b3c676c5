/* Quota windows (quota.h). Sums that involve a field of the entry are done in 128 bits, so
 * that whatever the entry holds, a window end or a shift cannot wrap. */
#include "quota.h"

#include <string.h>

#define QUOTA_SUBS (PSD2_QUOTA_SUBWINDOWS + 1) /* sub[] entries; sub[QUOTA_LAST] is the current */
#define QUOTA_LAST PSD2_QUOTA_SUBWINDOWS

static bool is_rolling(const struct quota_rule *r)
{
	return r->window == PSD2_QUOTA_ROLLING;
}

/* control.c judges an entry by the rule written into it, so a rule may come from the map. */
static int64_t window_length(const struct quota_rule *r)
{
	return r->window_seconds ? r->window_seconds : 1;
}

/* PSD2_QUOTA_SUBWINDOWS sub-windows must cover at least the window for the guarantee of
 * quota.h, hence rounded up: a length that does not divide evenly is judged a little longer. */
static int64_t sub_length(const struct quota_rule *r)
{
	return (window_length(r) + PSD2_QUOTA_SUBWINDOWS - 1) / PSD2_QUOTA_SUBWINDOWS;
}

/* The start of the slot of `len` seconds, counted from the epoch, that holds `now`. */
static int64_t slot_start(int64_t now, int64_t len)
{
	int64_t into = now % len;

	return now - (into < 0 ? into + len : into);
}

static uint32_t seconds_until(__int128 when, int64_t now)
{
	__int128 left = when - now;

	return left < 1 ? 1 : left > UINT32_MAX ? UINT32_MAX : (uint32_t)left;
}

static void start_afresh(struct psd2_quota *q, const struct quota_rule *r, int64_t now)
{
	q->count = 0;
	memset(q->sub, 0, sizeof(q->sub));
	if (is_rolling(r))
		q->window_start = slot_start(now, sub_length(r)) - QUOTA_LAST * sub_length(r);
	else
		q->window_start = slot_start(now, window_length(r));
}

/* Moves the sub-windows on by the sub-windows that ended before `now`; before the current one
 * (the clock stepped back) nothing moves and the current one keeps counting. */
static void advance_rolling(struct psd2_quota *q, const struct quota_rule *r, int64_t now)
{
	int64_t len = sub_length(r);
	__int128 current = (__int128)q->window_start + (__int128)QUOTA_LAST * len;
	uint64_t count = 0;

	if (now >= current + len) {
		__int128 ended = (now - current) / len;

		if (ended >= QUOTA_SUBS) {
			start_afresh(q, r, now);
		} else {
			size_t n = (size_t)ended;

			memmove(q->sub, q->sub + n, (QUOTA_SUBS - n) * sizeof(q->sub[0]));
			memset(q->sub + QUOTA_SUBS - n, 0, n * sizeof(q->sub[0]));
			q->window_start += (int64_t)n * len; /* at most now: cannot wrap */
		}
	}
	for (int i = 0; i < QUOTA_SUBS; i++) /* count is derived: an entry's own may be wrong */
		count += q->sub[i];
	q->count = count;
}

/* Brings the entry to the rule and to `now`. */
static void quota_advance(struct psd2_quota *q, const struct quota_rule *r, int64_t now)
{
	if (q->window != r->window || q->window_seconds != r->window_seconds) {
		q->window = r->window;
		q->window_seconds = r->window_seconds;
		start_afresh(q, r, now);
	} else if (is_rolling(r)) {
		advance_rolling(q, r, now);
	} else if (now >= (__int128)q->window_start + window_length(r)) {
		start_afresh(q, r, now);
	}
	q->limit = r->limit;
}

/* When the oldest requests leave: the first sub-window whose leaving frees `need` of them (the
 * current one, when the window is empty). sub[i] leaves the window QUOTA_SUBS sub-windows after
 * it began. */
static uint32_t rolling_reset(const struct psd2_quota *q, const struct quota_rule *r, int64_t now)
{
	uint64_t need = q->count >= r->limit ? q->count - r->limit + 1 : 1, freed = 0;
	int i;

	for (i = 0; i < QUOTA_LAST && freed + q->sub[i] < need; i++)
		freed += q->sub[i];
	return seconds_until((__int128)q->window_start + (__int128)(i + QUOTA_SUBS) * sub_length(r),
			     now);
}

static void quota_state_of(const struct psd2_quota *q, const struct quota_rule *r, int64_t now,
			   struct quota_state *st)
{
	st->limit = r->limit;
	st->used = q->count;
	st->remaining = q->count < r->limit ? r->limit - q->count : 0;
	st->reset = is_rolling(r) ? rolling_reset(q, r, now) :
		    seconds_until((__int128)q->window_start + window_length(r), now);
}

bool quota_take(struct psd2_quota *q, const struct quota_rule *r, int64_t now, struct quota_state *st)
{
	bool fits;

	quota_advance(q, r, now);
	/* count < limit leaves room for one more in 64 bits; a sub-window's count is 32 bits, and
	 * one at its top (only a limit above 2^32 lets it get there) refuses rather than wraps */
	fits = q->count < r->limit && (!is_rolling(r) || q->sub[QUOTA_LAST] < UINT32_MAX);
	if (fits) {
		q->count++;
		if (is_rolling(r))
			q->sub[QUOTA_LAST]++;
		q->updated = now;
	}
	quota_state_of(q, r, now, st);
	return fits;
}

void quota_peek(const struct psd2_quota *q, const struct quota_rule *r, int64_t now,
		struct quota_state *st)
{
	struct psd2_quota at_now = *q;

	quota_advance(&at_now, r, now);
	quota_state_of(&at_now, r, now, st);
}

void quota_clear(struct psd2_quota *q)
{
	q->count = 0;
	memset(q->sub, 0, sizeof(q->sub));
}
