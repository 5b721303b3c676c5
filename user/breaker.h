/* The circuit breaker state machine on one entry of the `breakers` map (struct psd2_breaker,
 * shared mmapped memory, one per upstream, shared by every worker). Pure apart from taking the
 * entry's spin lock (spinlock.h) inside each call: callers pass the time (unix ms).
 *
 *   closed --(consecutive_failures in a row, or failure_ratio_pct of >= min_requests in the
 *             window)--> open --(cooldown_ms)--> half-open --(probes admitted, all succeed)-->
 *   closed; a failed probe --> open again (cool-down restarts). */
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
 * the seconds until the cool-down ends (or 1 while probes are out). */
enum breaker_admit breaker_admit(struct psd2_breaker *b, const struct config_breaker *r,
				 int64_t now_ms, uint32_t *retry_after_s);

/* The outcome of a request admitted by breaker_admit (probe: it returned BREAKER_PROBE).
 * failure: the upstream could not be reached, timed out, or answered 5xx. */
void breaker_record(struct psd2_breaker *b, const struct config_breaker *r, bool probe,
		    bool failure, int64_t now_ms);

/* An admitted probe whose request never reached the upstream (refused by a later policy, the
 * client left): gives the probe back. */
void breaker_cancel_probe(struct psd2_breaker *b);

/* Closed, counts cleared (psd2edgectl breaker reset); keeps name and totals. */
void breaker_reset(struct psd2_breaker *b);

const char *breaker_state_name(uint32_t state); /* "closed", "open", "half-open" */

#endif
