/* The circuit breaker state machine on one entry of the `breakers` map (struct psd2_breaker,
 * shared mmapped memory, one per upstream, shared by every worker). Pure apart from taking the
 * entry's spin lock (spinlock.h) inside each call: callers pass the time (unix ms).
 *
 *   closed --(consecutive_failures in a row, or failure_ratio_pct of >= min_requests in the
 *             window)--> open --(cooldown_ms)--> half-open --(probes admitted, all succeed)-->
 *   closed; a failed probe --> open again (cool-down restarts).
 *
 * The ratio's window is fixed: window_ms from its first request, then a new one. The breaker
 * opens on a failure, never on a success. Outcomes of requests admitted before the breaker
 * opened (they were in flight) change nothing while it is open or half-open: only probes
 * decide. A clock that steps back before opened_at_ms restarts the cool-down from the new
 * clock (it does not last the step as well). An entry read from the map may hold anything: an
 * unknown state is taken as closed, counts saturate. */
#ifndef PSD2EDGE_BREAKER_H
#define PSD2EDGE_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "config.h"
#include "psd2edge_abi.h"

enum breaker_admit {
	BREAKER_PASS,  /* closed: go on */
	BREAKER_PROBE, /* half-open: go on as one of the probes (report it in breaker_record) */
	BREAKER_REFUSE, /* open, or half-open with every probe out: 503 with *retry_after_s */
};

/* Whether a request may go to the upstream now. retry_after_s (>= 1) is set on BREAKER_REFUSE:
 * the seconds until the cool-down ends, rounded up (or 1 while probes are out). A refusal
 * counts in rejected_total. */
enum breaker_admit breaker_admit(struct psd2_breaker *b, const struct config_breaker *r,
				 int64_t now_ms, uint32_t *retry_after_s);

/* The outcome of a request admitted by breaker_admit (probe: it returned BREAKER_PROBE).
 * failure: the upstream could not be reached, timed out, or answered 5xx. A probe that comes
 * back while the breaker is open again (another probe failed), or half-open with no probe out,
 * changes nothing; one that comes back after it closed counts like any request. */
void breaker_record(struct psd2_breaker *b, const struct config_breaker *r, bool probe,
		    bool failure, int64_t now_ms);

/* An admitted probe whose request never reached the upstream (refused by a later policy, the
 * client left): gives the probe back. */
void breaker_cancel_probe(struct psd2_breaker *b);

/* Closed, counts cleared (psd2edgectl breaker reset); keeps name and totals. */
void breaker_reset(struct psd2_breaker *b);

/* At daemon start, before any worker runs, on an entry kept from an earlier process: its lock
 * and its probes in flight died with it. Left as they were, a lock held at kill -9 would hang
 * every worker, and probes never reported would keep a half-open breaker refusing every
 * request until `breaker reset`. */
void breaker_recover(struct psd2_breaker *b);

const char *breaker_state_name(uint32_t state); /* "closed", "open", "half-open" ("unknown") */

#endif
