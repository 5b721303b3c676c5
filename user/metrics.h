/* The daemon's metrics: one registry of typed families (counters, gauges, histograms), each
 * defined once in METRICS_FAMILIES, and two renderings of one snapshot of them: the Prometheus
 * text format 0.0.4 (GET /metrics, metrics_http.h) and the JSON object `psd2edgectl stats`
 * prints (a family's json path says where its series go there).
 *
 * Where the numbers come from:
 *  - Counted series: STATS_INC / STATS_DEC / STATS_ADD on the series of METRICS_CELLS, and the
 *    metrics_route_* calls on the routes' series. Each thread adds to a shard of its own (found
 *    through a thread-local pointer, allocated at the thread's first count), so a request
 *    writes no cache line that another worker writes; a render sums the shards.
 *  - Series read at render time: sources (metrics_source_add) emit the series of the families
 *    whose state lives elsewhere (the XDP stats map, kTLS counters, breakers, the registry,
 *    certificates) with metrics_emit. A module's source needs this header only, not the
 *    registry's object file.
 *
 * Threads: counting from any thread. metrics_routes_set, metrics_source_add/_clear and the
 * renders run on one thread (the control thread); metrics_routes_set before the workers
 * start. */
#ifndef PSD2EDGE_METRICS_H
#define PSD2EDGE_METRICS_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"

enum metric_type {
	METRIC_COUNTER,
	METRIC_GAUGE,
	METRIC_FLAG,      /* a gauge of 0 or 1; false / true in JSON */
	METRIC_INFO,      /* a gauge of 1 whose labels are the information; strings in JSON */
	METRIC_HISTOGRAM, /* durations, in the buckets of METRICS_DURATION_BOUNDS_US */
};

#define METRICS_MAX_LABELS 4

/* X(id, type, json, help, labels...): the Prometheus name is psd2edge_<id>, with _total for a
 * counter. json: where the series go in `psd2edgectl stats`, NULL for nowhere; "." separates
 * objects, {label} stands for the label's value, and NAME[field={label},...] is the element
 * of array NAME whose fields hold those values (appended when there is none). Counted
 * families have their series in METRICS_CELLS or are per route (route_*, request_duration);
 * the others are emitted by sources. */
#define METRICS_FAMILIES(X)                                                                \
	X(connections_accepted, COUNTER, "connections_accepted",                           \
	  "TCP connections accepted on the TPP listeners.")                                \
	X(connections_refused, COUNTER, "connections_refused_{reason}",                    \
	  "Connections closed at accept: the source is in the deny-list, or the worker "   \
	  "holds limits.max_connections.", "reason")                                       \
	X(connections_open, GAUGE, "connections_open", "TPP connections open.")            \
	X(connections_cut_by_control, COUNTER, "connections_cut_by_control",               \
	  "TPP connections cut because their client or certificate was revoked or "        \
	  "unbound.")                                                                      \
	X(handshakes, COUNTER, "handshakes_{result}",                                      \
	  "TLS handshakes with TPPs, by result.", "result")                                \
	X(handshake_failures, COUNTER, "handshake_failures.{reason}",                      \
	  "Failed TLS handshakes with TPPs, by reason.", "reason")                         \
	X(handshake_verifications, COUNTER, "verify_{path}_path",                          \
	  "Client certificates verified: fast, a bound certificate accepted by its "       \
	  "thumbprint; full, its chain built and checked.", "path")                        \
	X(requests, COUNTER, "requests", "Request heads received.")                        \
	X(responses, COUNTER, "responses_{class}",                                         \
	  "Responses sent to TPPs, by status class.", "class")                             \
	X(requests_denied, COUNTER, "denied_{reason}",                                     \
	  "Requests refused by the identity check (401), by reason.", "reason")            \
	X(bad_requests, COUNTER, "bad_requests", "Requests refused as malformed.")         \
	X(header_timeouts, COUNTER, "header_timeouts",                                     \
	  "Connections whose handshake or request head did not come in time.")             \
	X(upstream_connect_errors, COUNTER, "upstream_connect_errors",                     \
	  "Upstream connections that could not be opened.")                                \
	X(upstream_errors, COUNTER, "upstream_errors",                                     \
	  "Upstream exchanges that failed after connecting (TLS, framing, early close).")  \
	X(upstream_timeouts, COUNTER, "upstream_timeouts",                                 \
	  "Upstream exchanges that timed out (504).")                                      \
	X(upstream_leftovers, COUNTER, "upstream_leftovers",                               \
	  "Upstream responses followed by bytes nobody asked for (connection dropped).")   \
	X(splice_bytes, COUNTER, "splice_bytes",                                           \
	  "Body bytes moved socket to socket with splice().")                              \
	X(route_requests, COUNTER, "routes[prefix={route},upstream={upstream}].requests",  \
	  "Requests of proven TPPs, by route.", "route", "upstream")                       \
	X(route_responses, COUNTER,                                                        \
	  "routes[prefix={route},upstream={upstream}].responses.{class}",                  \
	  "Outcomes of the requests of a route, by status class (none: no response "       \
	  "sent).", "route", "upstream", "class")                                          \
	X(route_policy_decisions, COUNTER,                                                 \
	  "routes[prefix={route},upstream={upstream}].policies.{policy}.{decision}",       \
	  "Verdicts of a route's policies (a quota's refusals are its 429s).", "route",    \
	  "upstream", "policy", "decision")                                                \
	X(request_duration_seconds, HISTOGRAM,                                             \
	  "routes[prefix={route},upstream={upstream}].duration_seconds",                   \
	  "Time from a request's first byte to its response, by route.", "route",          \
	  "upstream")                                                                      \
	X(workers, GAUGE, "workers", "Worker threads.")                                    \
	X(worker_sessions, GAUGE, "per_worker[worker={worker}].sessions",                  \
	  "TPP connections held by each worker.", "worker")                                \
	X(xdp_info, INFO, "xdp", "The XDP program: its mode and interface.", "mode",       \
	  "interface")                                                                     \
	X(xdp_packets, COUNTER, "xdp.packets.{reason}",                                    \
	  "Packets seen by the XDP program, by verdict (the stats map).", "reason")        \
	X(xdp_bytes, COUNTER, "xdp.bytes.{reason}",                                        \
	  "Bytes seen by the XDP program, by verdict (the stats map).", "reason")          \
	X(xdp_errors, COUNTER, "xdp.errors.{error}",                                       \
	  "Failures to write the XDP maps, by kind.", "error")                             \
	X(xdp_flows_added, COUNTER, "xdp.flows_added",                                     \
	  "Authenticated connections written into the flows maps.")                        \
	X(xdp_flows_deleted, COUNTER, "xdp.flows_deleted",                                 \
	  "Connections removed from the flows maps.")                                      \
	X(ktls_kernel_available, FLAG, "ktls.kernel_available",                            \
	  "1 when the kernel offers kTLS (the TLS ULP).")                                  \
	X(ktls_connections, COUNTER, "ktls.connections",                                   \
	  "Handshakes handed to the kTLS setup.")                                          \
	X(ktls_offloads, COUNTER, "ktls.{direction}",                                      \
	  "Connections whose direction the kernel took over.", "direction")                \
	X(ktls_installs, COUNTER, "ktls.{direction}_{by}",                                 \
	  "kTLS directions by installer: OpenSSL in the handshake, or psd2edge after it.", \
	  "direction", "by")                                                               \
	X(ktls_open, GAUGE, "ktls.{direction}_open",                                       \
	  "Open connections with the direction in the kernel.", "direction")               \
	X(ktls_fallbacks, COUNTER, "ktls.fallback",                                        \
	  "Connections with at least one direction left in userspace TLS.")                \
	X(ktls_fallbacks_by_reason, COUNTER, "ktls.fallback_by_reason.{reason}",           \
	  "Userspace TLS fallbacks, by reason.", "reason")                                 \
	X(ktls_keyupdate_closes, COUNTER, "ktls.keyupdate_closes",                         \
	  "kTLS connections closed on a KeyUpdate.")                                       \
	X(ktls_alerts_received, COUNTER, "ktls.alerts_received",                           \
	  "TLS alerts read on kTLS connections.")                                          \
	X(ktls_tickets_dropped, COUNTER, "ktls.tickets_dropped",                           \
	  "TLS 1.3 session tickets dropped on kTLS connections.")                          \
	X(ktls_renegotiations_refused, COUNTER, "ktls.renegotiations_refused",             \
	  "Renegotiations refused on kTLS connections.")                                   \
	X(quota_map_full, COUNTER, "quota_map_full",                                       \
	  "Requests refused because the quota map had no room for their counter.")        \
	X(quota_map_entries, GAUGE, "quota_map_entries", "Quota counters in the quota map.") \
	X(quota_map_capacity, GAUGE, "quota_map_capacity",                                 \
	  "Quota counters the quota map can hold.")                                        \
	X(breaker_state, GAUGE, "breakers.{upstream}.state",                               \
	  "Circuit breaker of an upstream: 0 closed, 1 open, 2 half-open.", "upstream")    \
	X(breaker_opened, COUNTER, "breakers.{upstream}.opened",                           \
	  "Times the circuit breaker of an upstream opened.", "upstream")                  \
	X(breaker_rejected, COUNTER, "breakers.{upstream}.rejected",                       \
	  "Requests refused (503) while the breaker of an upstream was open.", "upstream") \
	/* `stats` has the registry's figures from the control plane (clients, certs_...) */ \
	X(registry_clients, GAUGE, NULL, "Clients in the registry.")                       \
	X(registry_certificates, GAUGE, NULL,                                              \
	  "Client certificates in the registry, by state (active, revoked).", "state")     \
	X(registry_deny_entries, GAUGE, NULL, "Entries of the deny-list.")                 \
	X(certificate_expiry_seconds, GAUGE, "certificate_expiry_seconds.{kind}.{name}",   \
	  "Seconds until the gateway's certificates expire (negative: expired): the "      \
	  "server certificate (tls) and each upstream's client certificate.", "kind",      \
	  "name")                                                                          \
	X(client_certificate_expiry_seconds, GAUGE, NULL,                                  \
	  "Seconds until each active bound client certificate expires (negative: "         \
	  "expired).", "client_id", "sha256")                                              \
	X(hub_sessions, COUNTER, "hub.sessions_{event}",                                   \
	  "Hub mode: sessions opened (a code exchanged at a bank) and revoked.", "event")  \
	X(hub_token_calls, COUNTER, "hub.token_calls_{result}",                            \
	  "Hub mode: calls to banks' token endpoints (code exchanges and refreshes): "     \
	  "ok, refused by the bank, failed (no answer, bad answer).", "result")            \
	X(hub_refreshes, COUNTER, "hub.refreshes",                                         \
	  "Hub mode: access tokens refreshed at a bank before a forwarded request.")

enum metric_family {
#define METRIC_FAMILY_ENUM(id, type, json, ...) METRIC_##id,
	METRICS_FAMILIES(METRIC_FAMILY_ENUM)
#undef METRIC_FAMILY_ENUM
	METRIC_FAMILY_COUNT
};

/* C(family, cell, label value): the counted series of the families with one label or none
 * (NULL). A cell's name is what STATS_INC takes. */
#define METRICS_CELLS(C)                                                                   \
	C(connections_accepted, connections_accepted, NULL)                                \
	C(connections_refused, connections_refused_limit, "limit")                         \
	C(connections_refused, connections_refused_deny, "deny")                           \
	C(connections_open, connections_open, NULL)                                        \
	C(connections_cut_by_control, connections_cut_by_control, NULL)                    \
	C(handshakes, handshakes_ok, "ok")                                                 \
	C(handshakes, handshakes_failed, "failed")                                         \
	C(handshake_failures, handshake_failed_timeout, "timeout")                         \
	C(handshake_failures, handshake_failed_closed, "closed")                           \
	C(handshake_failures, handshake_failed_no_certificate, "no_certificate")           \
	C(handshake_failures, handshake_failed_cert_untrusted, "cert_untrusted")           \
	C(handshake_failures, handshake_failed_cert_expired, "cert_expired")               \
	C(handshake_failures, handshake_failed_cert_revoked, "cert_revoked")               \
	C(handshake_failures, handshake_failed_cert_invalid, "cert_invalid")               \
	C(handshake_failures, handshake_failed_protocol, "protocol")                       \
	C(handshake_failures, handshake_failed_tls_error, "tls_error")                     \
	C(handshake_verifications, verify_fast_path, "fast")                               \
	C(handshake_verifications, verify_full_path, "full")                               \
	C(requests, requests, NULL)                                                        \
	C(responses, responses_2xx, "2xx")                                                 \
	C(responses, responses_3xx, "3xx")                                                 \
	C(responses, responses_4xx, "4xx")                                                 \
	C(responses, responses_5xx, "5xx")                                                 \
	C(requests_denied, denied_missing_client_id, "missing_client_id")                  \
	C(requests_denied, denied_conflicting_client_id, "conflicting_client_id")          \
	C(requests_denied, denied_invalid_client_id, "invalid_client_id")                  \
	C(requests_denied, denied_unbound_cert, "unbound_cert")                            \
	C(requests_denied, denied_client_mismatch, "client_mismatch")                      \
	C(requests_denied, denied_revoked_cert, "revoked_cert")                            \
	C(requests_denied, denied_expired_cert, "expired_cert")                            \
	C(bad_requests, bad_requests, NULL)                                                \
	C(header_timeouts, header_timeouts, NULL)                                          \
	C(upstream_connect_errors, upstream_connect_errors, NULL)                          \
	C(upstream_errors, upstream_errors, NULL)                                          \
	C(upstream_timeouts, upstream_timeouts, NULL)                                      \
	C(upstream_leftovers, upstream_leftovers, NULL)                                    \
	C(splice_bytes, splice_bytes, NULL)                                                \
	C(hub_sessions, hub_sessions_opened, "opened")                                     \
	C(hub_sessions, hub_sessions_revoked, "revoked")                                   \
	C(hub_token_calls, hub_token_calls_ok, "ok")                                       \
	C(hub_token_calls, hub_token_calls_refused, "refused")                             \
	C(hub_token_calls, hub_token_calls_failed, "failed")                               \
	C(hub_refreshes, hub_refreshes, NULL)

enum metric_cell {
#define METRIC_CELL_ENUM(family, cell, value) METRIC_CELL_##cell,
	METRICS_CELLS(METRIC_CELL_ENUM)
#undef METRIC_CELL_ENUM
	METRIC_CELL_COUNT
};

/* Per-route series, for routes by their index in the configuration. */
#define METRICS_MAX_ROUTES CONFIG_MAX_ROUTES
#define METRICS_ROUTE_POLICIES 8  /* policy slots of a route (exchange.h asserts its own fit) */
#define METRICS_STATUS_CLASSES 6  /* none sent, 1xx .. 5xx */
/* Upper bounds of the request duration buckets, in microseconds (le="0.0005" .. "30"). */
#define METRICS_DURATION_BOUNDS_US                                                         \
	500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000, 1000000,       \
	2500000, 5000000, 10000000, 30000000
#define METRICS_DURATION_BUCKETS 15

struct metrics_histogram {
	_Atomic uint64_t bucket[METRICS_DURATION_BUCKETS + 1]; /* the last: above every bound */
	_Atomic uint64_t sum_us;
};

struct metrics_route_cells {
	_Atomic uint64_t requests;
	_Atomic uint64_t responses[METRICS_STATUS_CLASSES];
	_Atomic uint64_t policy[METRICS_ROUTE_POLICIES][2]; /* passed, refused */
	struct metrics_histogram duration;
};

/* One thread's counts; a cache line of its own at the start, so no other thread's counts
 * share a line with it. */
struct metrics_shard {
	_Alignas(64) _Atomic uint64_t cell[METRIC_CELL_COUNT];
	struct metrics_route_cells route[METRICS_MAX_ROUTES];
	struct metrics_shard *next; /* every shard, for the renders */
};

extern _Thread_local struct metrics_shard *metrics_thread_shard;
/* The calling thread's shard, allocated at its first count (a shared one when out of memory:
 * the counts stay right, only slower). It lives as long as the process: the counts of a thread
 * that ended stay in the sums. */
struct metrics_shard *metrics_shard_attach(void);

static inline struct metrics_shard *metrics_shard(void)
{
	struct metrics_shard *s = metrics_thread_shard;
	return s ? s : metrics_shard_attach();
}

static inline void metrics_add(enum metric_cell c, uint64_t n)
{
	atomic_fetch_add_explicit(&metrics_shard()->cell[c], n, memory_order_relaxed);
}

/* The call sites' spelling of a count on a cell of METRICS_CELLS (a gauge's decrement adds
 * -1 modulo 2^64: the sum over the shards comes out right). */
#define STATS_INC(cell) metrics_add(METRIC_CELL_##cell, 1)
#define STATS_DEC(cell) metrics_add(METRIC_CELL_##cell, UINT64_MAX)
#define STATS_ADD(cell, n) metrics_add(METRIC_CELL_##cell, (n))

static inline void metrics_route_request(unsigned route)
{
	atomic_fetch_add_explicit(&metrics_shard()->route[route].requests, 1,
				  memory_order_relaxed);
}

/* status 0 (or outside 100..599): no response was sent. */
static inline void metrics_route_response(unsigned route, unsigned status)
{
	unsigned cls = status >= 100 && status < 600 ? status / 100 : 0;
	atomic_fetch_add_explicit(&metrics_shard()->route[route].responses[cls], 1,
				  memory_order_relaxed);
}

static inline void metrics_route_policy(unsigned route, unsigned slot, bool passed)
{
	atomic_fetch_add_explicit(&metrics_shard()->route[route].policy[slot][passed ? 0 : 1], 1,
				  memory_order_relaxed);
}

/* A request of the route took us microseconds (negative counts as 0). */
void metrics_route_duration(unsigned route, int64_t us);

/* What the route families call a route by its index (exchange.h's route table). */
struct metrics_route {
	const char *prefix, *upstream;
	const char *policy[METRICS_ROUTE_POLICIES]; /* the policy in each slot; NULL: none */
};

/* The routes counted from now on (n <= METRICS_MAX_ROUTES; 0: none), their counts zeroed. The
 * strings must outlive the binding. Before any thread counts on a route. */
void metrics_routes_set(const struct metrics_route *routes, unsigned n);

/* A source's way out: emit(sink, family, value, labels) once per series, with as many label
 * values as the family has labels (labels NULL when none; "" leaves a label out). */
struct metrics_sink {
	void (*emit)(struct metrics_sink *sink, enum metric_family f, int64_t value,
		     const char *const *labels);
};

#define METRIC_LABELS(...) ((const char *const[]){__VA_ARGS__})

static inline void metrics_emit(struct metrics_sink *sink, enum metric_family f, int64_t value,
				const char *const *labels)
{
	sink->emit(sink, f, value, labels);
}

typedef void metrics_source_fn(void *arg, struct metrics_sink *sink);

#define METRICS_MAX_SOURCES 16

/* fn(arg, sink) runs at every render, on the rendering thread. -1 when there are
 * METRICS_MAX_SOURCES already. */
int metrics_source_add(metrics_source_fn *fn, void *arg);
void metrics_sources_clear(void);

/* Every family with at least one series, in the Prometheus text format 0.0.4, appended to
 * out. 0, or -1 when out of memory (out may hold part of it). */
int metrics_render_text(struct buf *out);
/* The series of every family with a json path, placed along it in obj. 0, or -1 when out of
 * memory. */
int metrics_render_json(json_t *obj);

#define METRICS_NAME_MAX 80
/* The Prometheus name of family f (psd2edge_..., _total for a counter). */
void metrics_family_name(enum metric_family f, char out[METRICS_NAME_MAX]);

#endif
