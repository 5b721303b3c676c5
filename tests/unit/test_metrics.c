/* The metrics registry (user/metrics.c): the text format 0.0.4 of each type (HELP and TYPE,
 * labels, an info's and a flag's value, a histogram's cumulative buckets with le="+Inf", _sum
 * and _count), label values escaped, families without series left out, every family of the
 * table rendered both ways under a valid name and documented in docs/metrics.md, the JSON
 * paths that keep the `stats` keys of before, per-route series, and counts from many threads
 * summed over their shards without a loss. Counts are global to the process: each test reads
 * what it changed as a difference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"

/* --- helpers ------------------------------------------------------------------------------- */

static char *render_text(void)
{
	struct buf b = {0};
	assert_int_equal(metrics_render_text(&b), 0);
	assert_int_equal(buf_append(&b, "", 1), 0);
	char *s = strdup(buf_head(&b));
	buf_free(&b);
	return s;
}

static json_t *render_json(void)
{
	json_t *o = json_object();
	assert_int_equal(metrics_render_json(o), 0);
	return o;
}

/* The value at a dotted path ("routes.0.requests"), NULL when absent. */
static json_t *at(json_t *v, const char *path)
{
	char copy[256];
	snprintf(copy, sizeof(copy), "%s", path);
	for (char *save, *k = strtok_r(copy, ".", &save); v && k; k = strtok_r(NULL, ".", &save))
		v = json_is_array(v) ? json_array_get(v, strtoul(k, NULL, 10)) : json_object_get(v, k);
	return v;
}

static json_int_t json_at(json_t *o, const char *path)
{
	json_t *v = at(o, path);
	if (!json_is_integer(v))
		fail_msg("stats: %s is not an integer", path);
	return json_integer_value(v);
}

/* The first route's duration bucket le (whose name has dots). */
static json_int_t bucket(json_t *o, const char *le)
{
	json_t *v = json_object_get(at(o, "routes.0.duration_seconds.buckets"), le);
	if (!json_is_integer(v))
		fail_msg("stats: no bucket %s", le);
	return json_integer_value(v);
}

/* Where text holds line as a whole line, NULL when nowhere. */
static const char *find_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	for (const char *p = text; (p = strstr(p, line)); p++)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return p;
	return NULL;
}

static bool has_line(const char *text, const char *line)
{
	return find_line(text, line) != NULL;
}

/* A source that emits the rows it is given. */
struct emit_row {
	enum metric_family family;
	const char *label[METRICS_MAX_LABELS];
	int64_t value;
};

struct rows {
	const struct emit_row *row;
	size_t n;
};

static void rows_source(void *arg, struct metrics_sink *sink)
{
	const struct rows *r = arg;
	for (size_t i = 0; i < r->n; i++)
		metrics_emit(sink, r->row[i].family, r->row[i].value, r->row[i].label);
}

static int teardown(void **state)
{
	(void)state;
	metrics_sources_clear();
	metrics_routes_set(NULL, 0);
	return 0;
}

/* --- the text format of each type ---------------------------------------------------------- */

struct text_case {
	const char *what;
	struct emit_row row;
	const char *type_line;
	const char *sample_line;
};

static const struct text_case text_cases[] = {
	{"counter with a label", {METRIC_xdp_packets, {"drop_deny"}, 7},
	 "# TYPE psd2edge_xdp_packets_total counter",
	 "psd2edge_xdp_packets_total{reason=\"drop_deny\"} 7"},
	{"counter without labels", {METRIC_ktls_fallbacks, {NULL}, 12},
	 "# TYPE psd2edge_ktls_fallbacks_total counter", "psd2edge_ktls_fallbacks_total 12"},
	{"gauge, negative", {METRIC_certificate_expiry_seconds, {"server", "tls"}, -86400},
	 "# TYPE psd2edge_certificate_expiry_seconds gauge",
	 "psd2edge_certificate_expiry_seconds{kind=\"server\",name=\"tls\"} -86400"},
	{"gauge with two labels", {METRIC_ktls_installs, {"rx", "manual"}, 3},
	 "# TYPE psd2edge_ktls_installs_total counter",
	 "psd2edge_ktls_installs_total{direction=\"rx\",by=\"manual\"} 3"},
	{"flag: any value but 0 is 1", {METRIC_ktls_kernel_available, {NULL}, 5},
	 "# TYPE psd2edge_ktls_kernel_available gauge", "psd2edge_ktls_kernel_available 1"},
	{"info: a gauge of 1, empty labels left out", {METRIC_xdp_info, {"off", ""}, 0},
	 "# TYPE psd2edge_xdp_info gauge", "psd2edge_xdp_info{mode=\"off\"} 1"},
	{"label values escaped", {METRIC_breaker_state, {"a\"b\\c\nd"}, 2},
	 "# TYPE psd2edge_breaker_state gauge",
	 "psd2edge_breaker_state{upstream=\"a\\\"b\\\\c\\nd\"} 2"},
	{"label value with UTF-8 and braces", {METRIC_worker_sessions, {"é{}=,"}, 0},
	 "# TYPE psd2edge_worker_sessions gauge",
	 "psd2edge_worker_sessions{worker=\"é{}=,\"} 0"},
};

static void test_text_types(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(text_cases) / sizeof(text_cases[0]); i++) {
		const struct text_case *c = &text_cases[i];
		struct rows rows = {&c->row, 1};
		assert_int_equal(metrics_source_add(rows_source, &rows), 0);
		char *t = render_text();
		metrics_sources_clear();
		/* HELP, TYPE, then the sample: the family's lines together. */
		char name[METRICS_NAME_MAX], help[METRICS_NAME_MAX + 16];
		metrics_family_name(c->row.family, name);
		snprintf(help, sizeof(help), "# HELP %s ", name);
		const char *h = strstr(t, help), *ty = find_line(t, c->type_line),
			   *sample = find_line(t, c->sample_line);
		if (!h || !ty || !sample || strchr(h, '\n') + 1 != ty ||
		    strchr(ty, '\n') + 1 != sample)
			fail_msg("%s: want\n%s...\n%s\n%s\nin\n%s", c->what, help, c->type_line,
				 c->sample_line, t);
		free(t);
	}
}

/* A family with no series (no route set, no source) gets no HELP and TYPE either. */
static void test_empty_families_left_out(void **state)
{
	(void)state;
	char *t = render_text();
	assert_null(strstr(t, "psd2edge_route_requests_total"));
	assert_null(strstr(t, "psd2edge_request_duration_seconds"));
	assert_null(strstr(t, "psd2edge_xdp_info"));
	/* counted families always have their series */
	assert_true(has_line(t, "# TYPE psd2edge_requests_total counter"));
	free(t);
}

/* --- every family --------------------------------------------------------------------------- */

static bool valid_name(const char *s)
{
	if (!((*s >= 'a' && *s <= 'z') || *s == '_'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);
	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* Each family emitted once with labels "v0".."v3" (routes set for the histogram): both
 * renders take every one, under a Prometheus name that is well formed, unique, _total exactly
 * for counters, and in docs/metrics.md. */
static void test_every_family(void **state)
{
	(void)state;
	static struct emit_row all[METRIC_FAMILY_COUNT];
	for (unsigned f = 0; f < METRIC_FAMILY_COUNT; f++)
		all[f] = (struct emit_row){f, {"v0", "v1", "v2", "v3"}, 1};
	struct rows rows = {all, METRIC_FAMILY_COUNT};
	struct metrics_route route = {"/r", "up", {"quota"}};
	metrics_routes_set(&route, 1);
	assert_int_equal(metrics_source_add(rows_source, &rows), 0);
	char *t = render_text();
	json_t *j = render_json();

	FILE *f = fopen("docs/metrics.md", "r");
	if (!f)
		fail_msg("docs/metrics.md: cannot open (run from the repository's root)");
	static char doc[64 * 1024];
	doc[fread(doc, 1, sizeof(doc) - 1, f)] = '\0';
	fclose(f);

	char names[METRIC_FAMILY_COUNT][METRICS_NAME_MAX];
	for (unsigned i = 0; i < METRIC_FAMILY_COUNT; i++) {
		char *name = names[i], type[METRICS_NAME_MAX + 16], quoted[METRICS_NAME_MAX + 2];
		metrics_family_name(i, name);
		if (!valid_name(name) || strncmp(name, "psd2edge_", 9) != 0)
			fail_msg("family %u: invalid name '%s'", i, name);
		snprintf(type, sizeof(type), "# TYPE %s ", name);
		if (!strstr(t, type))
			fail_msg("%s: not rendered", name);
		bool counter = strstr(t, type)[strlen(type)] == 'c';
		if (counter != ends_with(name, "_total"))
			fail_msg("%s: _total is for counters, and every counter has it", name);
		for (unsigned k = 0; k < i; k++)
			if (strcmp(names[k], name) == 0)
				fail_msg("%s: two families of that name", name);
		snprintf(quoted, sizeof(quoted), "`%s`", name);
		if (!strstr(doc, quoted))
			fail_msg("%s: not in docs/metrics.md", name);
	}
	/* the JSON paths were followed: a few of each kind */
	assert_int_equal(json_at(j, "routes.0.requests"), 0);
	assert_string_equal(json_string_value(at(j, "routes.0.prefix")), "/r");
	assert_int_equal(json_at(j, "xdp.packets.v0"), 1);
	assert_int_equal(json_at(j, "ktls.v0_v1"), 1);
	assert_string_equal(json_string_value(at(j, "xdp.mode")), "v0");
	assert_true(json_is_true(at(j, "ktls.kernel_available")));
	assert_int_equal(json_at(j, "per_worker.0.sessions"), 1);
	assert_int_equal(json_at(j, "certificate_expiry_seconds.v0.v1"), 1);
	json_decref(j);
	free(t);
}

/* --- the `stats` keys of before -------------------------------------------------------------- */

struct key_case {
	enum metric_cell cell;
	const char *key;
};

static const struct key_case key_cases[] = {
	{METRIC_CELL_connections_accepted, "connections_accepted"},
	{METRIC_CELL_connections_refused_limit, "connections_refused_limit"},
	{METRIC_CELL_connections_refused_deny, "connections_refused_deny"},
	{METRIC_CELL_connections_cut_by_control, "connections_cut_by_control"},
	{METRIC_CELL_handshakes_ok, "handshakes_ok"},
	{METRIC_CELL_handshakes_failed, "handshakes_failed"},
	{METRIC_CELL_handshake_failed_no_certificate, "handshake_failures.no_certificate"},
	{METRIC_CELL_handshake_failed_cert_revoked, "handshake_failures.cert_revoked"},
	{METRIC_CELL_verify_fast_path, "verify_fast_path"},
	{METRIC_CELL_verify_full_path, "verify_full_path"},
	{METRIC_CELL_requests, "requests"},
	{METRIC_CELL_responses_2xx, "responses_2xx"},
	{METRIC_CELL_responses_5xx, "responses_5xx"},
	{METRIC_CELL_denied_missing_client_id, "denied_missing_client_id"},
	{METRIC_CELL_denied_unbound_cert, "denied_unbound_cert"},
	{METRIC_CELL_denied_expired_cert, "denied_expired_cert"},
	{METRIC_CELL_bad_requests, "bad_requests"},
	{METRIC_CELL_header_timeouts, "header_timeouts"},
	{METRIC_CELL_upstream_connect_errors, "upstream_connect_errors"},
	{METRIC_CELL_upstream_errors, "upstream_errors"},
	{METRIC_CELL_upstream_timeouts, "upstream_timeouts"},
	{METRIC_CELL_upstream_leftovers, "upstream_leftovers"},
	{METRIC_CELL_splice_bytes, "splice_bytes"},
};

static void test_stats_keys(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(key_cases) / sizeof(key_cases[0]); i++) {
		const struct key_case *c = &key_cases[i];
		json_t *before = render_json();
		metrics_add(c->cell, 3 + i);
		json_t *after = render_json();
		if (json_at(after, c->key) - json_at(before, c->key) != (json_int_t)(3 + i))
			fail_msg("%s: not the count added", c->key);
		json_decref(before);
		json_decref(after);
	}
	/* a gauge's decrement below what this thread added: the sum over shards goes negative */
	json_t *before = render_json();
	STATS_DEC(connections_open);
	json_t *after = render_json();
	assert_int_equal(json_at(after, "connections_open") - json_at(before, "connections_open"),
			 -1);
	STATS_INC(connections_open);
	json_decref(before);
	json_decref(after);
}

/* --- routes ---------------------------------------------------------------------------------- */

static void test_routes(void **state)
{
	(void)state;
	struct metrics_route routes[2] = {
		{"/accounts", "bank", {NULL}},
		{"/payments", "bank", {"spike_arrest", "quota"}},
	};
	metrics_routes_set(routes, 2);
	for (int i = 0; i < 3; i++) {
		metrics_route_request(0);
		metrics_route_response(0, 200);
	}
	for (int i = 0; i < 3; i++) {
		metrics_route_request(1);
		metrics_route_policy(1, 0, true);
		metrics_route_policy(1, 1, i == 0);
		metrics_route_response(1, i == 0 ? 201 : 429);
	}
	metrics_route_request(1);
	metrics_route_response(1, 0); /* the client left: none sent */
	json_t *j = render_json();
	assert_int_equal(json_array_size(at(j, "routes")), 2);
	assert_string_equal(json_string_value(at(j, "routes.1.prefix")), "/payments");
	assert_string_equal(json_string_value(at(j, "routes.1.upstream")), "bank");
	assert_int_equal(json_at(j, "routes.0.requests"), 3);
	assert_int_equal(json_at(j, "routes.0.responses.2xx"), 3);
	assert_int_equal(json_at(j, "routes.0.responses.4xx"), 0);
	assert_null(at(j, "routes.0.policies"));
	assert_int_equal(json_at(j, "routes.1.requests"), 4);
	assert_int_equal(json_at(j, "routes.1.responses.none"), 1);
	assert_int_equal(json_at(j, "routes.1.responses.2xx"), 1);
	assert_int_equal(json_at(j, "routes.1.responses.4xx"), 2);
	assert_int_equal(json_at(j, "routes.1.policies.spike_arrest.passed"), 3);
	assert_int_equal(json_at(j, "routes.1.policies.spike_arrest.refused"), 0);
	assert_int_equal(json_at(j, "routes.1.policies.quota.passed"), 1);
	assert_int_equal(json_at(j, "routes.1.policies.quota.refused"), 2);
	json_decref(j);
	char *t = render_text();
	static const char *const lines[] = {
		"psd2edge_route_requests_total{route=\"/accounts\",upstream=\"bank\"} 3",
		"psd2edge_route_responses_total{route=\"/payments\",upstream=\"bank\",class=\"4xx\"} 2",
		"psd2edge_route_responses_total{route=\"/payments\",upstream=\"bank\",class=\"none\"} 1",
		"psd2edge_route_policy_decisions_total{route=\"/payments\",upstream=\"bank\","
		"policy=\"quota\",decision=\"refused\"} 2",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (!has_line(t, lines[i]))
			fail_msg("missing line %s in\n%s", lines[i], t);
	assert_null(strstr(t, "route=\"/accounts\",upstream=\"bank\",policy"));
	free(t);
	/* a new route table starts from zero */
	metrics_routes_set(routes, 2);
	j = render_json();
	assert_int_equal(json_at(j, "routes.1.requests"), 0);
	json_decref(j);
}

/* --- histogram ------------------------------------------------------------------------------- */

static void test_histogram(void **state)
{
	(void)state;
	struct metrics_route route = {"/accounts", "bank", {NULL}};
	metrics_routes_set(&route, 1);
	/* bounds are inclusive (le); negative durations count as 0 */
	static const int64_t us[] = {0, -7, 500, 501, 999999, 30000000, 30000001};
	for (size_t i = 0; i < sizeof(us) / sizeof(us[0]); i++)
		metrics_route_duration(0, us[i]);
	char *t = render_text();
	static const char *const lines[] = {
		"# TYPE psd2edge_request_duration_seconds histogram",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"0.0005\"} 3",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"0.001\"} 4",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"0.5\"} 4",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"1\"} 5",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"2.5\"} 5",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"30\"} 6",
		"psd2edge_request_duration_seconds_bucket{route=\"/accounts\",upstream=\"bank\","
		"le=\"+Inf\"} 7",
		"psd2edge_request_duration_seconds_sum{route=\"/accounts\",upstream=\"bank\"} "
		"61.001001",
		"psd2edge_request_duration_seconds_count{route=\"/accounts\",upstream=\"bank\"} 7",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		if (!has_line(t, lines[i]))
			fail_msg("missing line %s in\n%s", lines[i], t);
	/* every bucket once, in order, +Inf last */
	const char *p = strstr(t, "psd2edge_request_duration_seconds_bucket");
	unsigned buckets = 0;
	for (; p && strncmp(p, "psd2edge_request_duration_seconds_bucket", 40) == 0;
	     p = strchr(p, '\n') + 1)
		buckets++;
	assert_int_equal(buckets, METRICS_DURATION_BUCKETS + 1);
	free(t);
	json_t *j = render_json();
	assert_int_equal(json_at(j, "routes.0.duration_seconds.count"), 7);
	assert_int_equal(bucket(j, "0.0005"), 3);
	assert_int_equal(bucket(j, "+Inf"), 7);
	assert_true(json_real_value(at(j, "routes.0.duration_seconds.sum")) > 61.0);
	json_decref(j);
}

/* --- shards ---------------------------------------------------------------------------------- */

#define THREADS 8
#define COUNTS 20000

static void *count_thread(void *arg)
{
	struct metrics_shard **mine = arg;
	for (int i = 0; i < COUNTS; i++) {
		STATS_INC(bad_requests);
		STATS_ADD(splice_bytes, 2);
		metrics_route_request(0);
		metrics_route_response(0, 503);
		metrics_route_duration(0, 1000);
	}
	*mine = metrics_shard();
	return NULL;
}

/* Threads counting at once, each on its own shard: nothing is lost in the sums. */
static void test_shards_under_threads(void **state)
{
	(void)state;
	struct metrics_route route = {"/", "default", {NULL}};
	metrics_routes_set(&route, 1);
	json_t *before = render_json();
	pthread_t th[THREADS];
	struct metrics_shard *shard[THREADS];
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, count_thread, &shard[i]), 0);
	for (int i = 0; i < THREADS; i++)
		pthread_join(th[i], NULL);
	json_t *after = render_json();
	for (int i = 0; i < THREADS; i++)
		for (int k = 0; k < i; k++)
			assert_ptr_not_equal(shard[i], shard[k]);
	assert_int_equal(json_at(after, "bad_requests") - json_at(before, "bad_requests"),
			 THREADS * COUNTS);
	assert_int_equal(json_at(after, "splice_bytes") - json_at(before, "splice_bytes"),
			 2 * THREADS * COUNTS);
	assert_int_equal(json_at(after, "routes.0.requests"), THREADS * COUNTS);
	assert_int_equal(json_at(after, "routes.0.responses.5xx"), THREADS * COUNTS);
	assert_int_equal(json_at(after, "routes.0.duration_seconds.count"), THREADS * COUNTS);
	assert_int_equal(bucket(after, "0.001"), THREADS * COUNTS);
	json_decref(before);
	json_decref(after);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_text_types, teardown),
		cmocka_unit_test_teardown(test_empty_families_left_out, teardown),
		cmocka_unit_test_teardown(test_every_family, teardown),
		cmocka_unit_test_teardown(test_stats_keys, teardown),
		cmocka_unit_test_teardown(test_routes, teardown),
		cmocka_unit_test_teardown(test_histogram, teardown),
		cmocka_unit_test_teardown(test_shards_under_threads, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
