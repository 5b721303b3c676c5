/* The circuit breaker (breaker.h). Every function but breaker_state_name and breaker_recover
 * runs under the entry's lock. */
#include "breaker.h"

#include "spinlock.h"

static uint32_t saturating_inc(uint32_t v)
{
	return v < UINT32_MAX ? v + 1 : v;
}

static uint32_t probes_of(const struct config_breaker *r)
{
	return r->probes ? r->probes : 1; /* none would leave it half-open for ever */
}

static void breaker_open(struct psd2_breaker *b, int64_t now_ms)
{
	b->state = PSD2_BREAKER_OPEN;
	b->opened_at_ms = now_ms;
	b->opened_total++;
	b->probes_in_flight = 0;
	b->probes_succeeded = 0;
}

static void breaker_close(struct psd2_breaker *b)
{
	b->state = PSD2_BREAKER_CLOSED;
	b->consecutive_failures = 0;
	b->opened_at_ms = 0;
	b->window_start_ms = 0;
	b->window_requests = 0;
	b->window_failures = 0;
	b->probes_in_flight = 0;
	b->probes_succeeded = 0;
}

/* The seconds left of the cool-down, rounded up; 0 when it is over. */
static uint32_t cooldown_left_s(const struct psd2_breaker *b, const struct config_breaker *r,
				int64_t now_ms)
{
	__int128 left_ms = (__int128)b->opened_at_ms + r->cooldown_ms - now_ms;

	if (left_ms <= 0)
		return 0;
	return left_ms > (__int128)UINT32_MAX * 1000 ? UINT32_MAX : (uint32_t)((left_ms + 999) / 1000);
}

enum breaker_admit breaker_admit(struct psd2_breaker *b, const struct config_breaker *r,
				 int64_t now_ms, uint32_t *retry_after_s)
{
	enum breaker_admit verdict = BREAKER_PASS;

	spin_lock(&b->lock);
	switch (b->state) {
	case PSD2_BREAKER_CLOSED:
		break;
	case PSD2_BREAKER_OPEN:
		if (now_ms < b->opened_at_ms) /* the clock stepped back */
			b->opened_at_ms = now_ms;
		if ((*retry_after_s = cooldown_left_s(b, r, now_ms))) {
			verdict = BREAKER_REFUSE;
			break;
		}
		b->state = PSD2_BREAKER_HALF_OPEN;
		b->probes_in_flight = 0;
		b->probes_succeeded = 0;
		/* fall through */
	case PSD2_BREAKER_HALF_OPEN:
		if ((uint64_t)b->probes_in_flight + b->probes_succeeded < probes_of(r)) {
			b->probes_in_flight++;
			verdict = BREAKER_PROBE;
		} else {
			*retry_after_s = 1;
			verdict = BREAKER_REFUSE;
		}
		break;
	default: /* no state of ours: the map may hold anything */
		breaker_close(b);
	}
	if (verdict == BREAKER_REFUSE)
		b->rejected_total++;
	spin_unlock(&b->lock);
	return verdict;
}

static void record_closed(struct psd2_breaker *b, const struct config_breaker *r, bool failure,
			  int64_t now_ms)
{
	uint32_t min_requests = r->min_requests ? r->min_requests : 1;

	if (now_ms < b->window_start_ms ||
	    now_ms >= (__int128)b->window_start_ms + r->window_ms) {
		b->window_start_ms = now_ms;
		b->window_requests = 0;
		b->window_failures = 0;
	}
	b->window_requests = saturating_inc(b->window_requests);
	if (!failure) {
		b->consecutive_failures = 0;
		return;
	}
	b->window_failures = saturating_inc(b->window_failures);
	b->consecutive_failures = saturating_inc(b->consecutive_failures);
	if ((r->consecutive_failures && b->consecutive_failures >= r->consecutive_failures) ||
	    (r->failure_ratio_pct && b->window_requests >= min_requests &&
	     (uint64_t)b->window_failures * 100 >=
		     (uint64_t)r->failure_ratio_pct * b->window_requests))
		breaker_open(b, now_ms);
}

void breaker_record(struct psd2_breaker *b, const struct config_breaker *r, bool probe,
		    bool failure, int64_t now_ms)
{
	spin_lock(&b->lock);
	switch (b->state) {
	case PSD2_BREAKER_CLOSED:
		record_closed(b, r, failure, now_ms);
		break;
	case PSD2_BREAKER_HALF_OPEN:
		/* not a probe: admitted before it opened; none out: a probe of an earlier
		 * half-open period */
		if (!probe || !b->probes_in_flight)
			break;
		b->probes_in_flight--;
		if (failure)
			breaker_open(b, now_ms);
		else if ((b->probes_succeeded = saturating_inc(b->probes_succeeded)) >= probes_of(r))
			breaker_close(b);
		break;
	default: /* open: what opened it is counted; later outcomes change nothing */
		break;
	}
	spin_unlock(&b->lock);
}

void breaker_cancel_probe(struct psd2_breaker *b)
{
	spin_lock(&b->lock);
	if (b->state == PSD2_BREAKER_HALF_OPEN && b->probes_in_flight)
		b->probes_in_flight--;
	spin_unlock(&b->lock);
}

void breaker_reset(struct psd2_breaker *b)
{
	spin_lock(&b->lock);
	breaker_close(b);
	spin_unlock(&b->lock);
}

void breaker_recover(struct psd2_breaker *b)
{
	b->lock = 0;
	b->probes_in_flight = 0;
}

const char *breaker_state_name(uint32_t state)
{
	switch (state) {
	case PSD2_BREAKER_CLOSED:
		return "closed";
	case PSD2_BREAKER_OPEN:
		return "open";
	case PSD2_BREAKER_HALF_OPEN:
		return "half-open";
	default:
		return "unknown";
	}
}
