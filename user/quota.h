/* Quota window arithmetic on one counter of the `quota` map (struct psd2_quota, which lives in
 * shared mmapped memory): fixed UTC windows (minute, hour, day) and rolling windows. Pure: the
 * caller passes the time and holds the entry's lock (spinlock.h) around every call.
 *
 * Fixed windows are slots of window_seconds counted from the epoch: unix time has no leap
 * seconds, so a day window resets at 00:00:00 UTC, an hour window at :00:00.
 *
 * Rolling windows are judged over PSD2_QUOTA_SUBWINDOWS + 1 sub-windows of
 * ceil(window_seconds / PSD2_QUOTA_SUBWINDOWS) seconds each (on the same epoch grid), the oldest
 * counted whole: no period of window_seconds ever holds more than limit requests (stricter than
 * an exact log by at most one sub-window).
 *
 * The entry is read as untrusted (another version, bpftool, a corrupted checkpoint may have
 * written it): no value of it wraps into a pass, and a window start in the future (the clock
 * stepped back) keeps counting into that window. */
#ifndef PSD2EDGE_QUOTA_H
#define PSD2EDGE_QUOTA_H

#include <stdbool.h>
#include <stdint.h>

#include "psd2edge_abi.h"

struct quota_rule {
	uint64_t limit;          /* requests per window, >= 1 (0 refuses every request) */
	uint32_t window;         /* enum psd2_quota_window */
	uint32_t window_seconds; /* 60, 3600, 86400, or the rolling length (0 is taken as 1) */
};

struct quota_state {
	uint64_t limit;
	uint64_t used;      /* in the current window, after this request when it was counted */
	uint64_t remaining; /* limit - used, 0 when over */
	uint32_t reset;     /* seconds (>= 1) until the window frees at least one request; when
			     * over the limit, until one more request fits (the Retry-After) */
};

/* Counts one request at `now` (unix seconds) when it fits: true and *st after counting; false
 * (nothing counted) when the window is full, *st saying when it frees. A clock that steps back
 * never reopens a window already counted in: the entry keeps its window until time passes it.
 * The rule is written into the entry (limit, window, window_seconds; updated when counted) so
 * readers of the map see it; an entry counted under another window or window length starts
 * afresh, one counted under another limit keeps its count. */
bool quota_take(struct psd2_quota *q, const struct quota_rule *r, int64_t now, struct quota_state *st);

/* The state at `now` without counting (psd2edgectl quota show, RateLimit headers of a request
 * refused for another reason). */
void quota_peek(const struct psd2_quota *q, const struct quota_rule *r, int64_t now,
		struct quota_state *st);

/* Zeroes the counts (psd2edgectl quota reset); the window and the rule stay. */
void quota_clear(struct psd2_quota *q);

#endif
