/* Daemon-wide counters, updated by the workers with relaxed atomics and read by `stats`. */
#ifndef PSD2EDGE_STATS_H
#define PSD2EDGE_STATS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#define STATS_COUNTERS(X)                                                          \
	X(connections_accepted) X(connections_open) X(connections_refused_limit)      \
	X(connections_refused_deny)                                                   \
	X(handshakes_ok) X(handshakes_failed) X(verify_fast_path) X(verify_full_path) X(requests)                              \
	X(responses_2xx) X(responses_3xx) X(responses_4xx) X(responses_5xx)             \
	X(denied_missing_client_id) X(denied_conflicting_client_id)                    \
	X(denied_invalid_client_id) X(denied_unbound_cert) X(denied_client_mismatch)    \
	X(denied_revoked_cert) X(denied_expired_cert) X(bad_requests)                   \
	X(header_timeouts) X(upstream_connect_errors) X(upstream_errors)                \
	X(upstream_timeouts) X(upstream_leftovers) X(connections_cut_by_control)        \
	X(splice_bytes)

struct stats {
#define STATS_FIELD(name) _Atomic uint64_t name;
	STATS_COUNTERS(STATS_FIELD)
#undef STATS_FIELD
};

extern struct stats g_stats;

#define STATS_INC(name) atomic_fetch_add_explicit(&g_stats.name, 1, memory_order_relaxed)
#define STATS_DEC(name) atomic_fetch_sub_explicit(&g_stats.name, 1, memory_order_relaxed)
#define STATS_ADD(name, n) atomic_fetch_add_explicit(&g_stats.name, (n), memory_order_relaxed)

void stats_fill(json_t *obj);

#endif
