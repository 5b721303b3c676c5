/* Route matching: fixture tables of request paths (as a client sends them, normalised by
 * path_normalize first as http.c does) and the route each takes: dot segments raw and
 * encoded, re-spellings that upstream stacks read as the same path (escapes of unreserved
 * characters, case, repeated '/'), segment boundaries, the longest prefix, the catch-all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "path.h"
#include "route.h"

/* As config.c leaves them: longest prefix first. */
static const char *const with_root[] = {
	"/berlingroup/v1/payments", "/berlingroup/v1", "/accounts", "/payments", "/",
};
static const char *const without_root[] = {"/v1/accounts", "/v1"};

struct route_case {
	const char *target; /* path and optional query, as sent */
	const char *want;   /* prefix of the route taken; NULL: none; "400": refused before */
};

static const struct route_case with_root_cases[] = {
	{"/", "/"},
	{"/accounts", "/accounts"},
	{"/accounts/", "/accounts"},
	{"/accounts/1/balances", "/accounts"},
	{"/accounts?withBalance=true", "/accounts"},
	{"/accountsx", "/"},
	{"/account", "/"},
	{"/accounts%20", "/"},
	{"/accounts%3Fx", "/"}, /* an encoded '?' ends no segment */
	/* dot segments are resolved before matching, raw or encoded */
	{"/payments/../accounts/1", "/accounts"},
	{"/accounts/../payments", "/payments"},
	{"/accounts/%2e%2e/payments", "/payments"},
	{"/accounts/.%2E/payments/1", "/payments"},
	{"/./accounts", "/accounts"},
	{"/%2e/accounts/./1", "/accounts"},
	{"/x/%2e%2e/accounts", "/accounts"},
	{"/accounts/%2e%2e/%2e%2e/admin", "400"},
	{"/accounts%2f..%2fadmin", "400"},
	{"/accounts/..;/admin", "400"},
	/* what some upstream reads as the same path takes the same route */
	{"/%61ccounts/1", "/accounts"},
	{"/%61%63%43OUNTS", "/accounts"},
	{"/ACCOUNTS/1", "/accounts"},
	{"/Accounts", "/accounts"},
	{"//accounts/1", "/accounts"},
	{"/accounts//1", "/accounts"},
	{"/berlingroup//v1///payments/x", "/berlingroup/v1/payments"},
	{"/berlingroup/v%31/payments", "/berlingroup/v1/payments"},
	/* the longest prefix wins, on segment boundaries */
	{"/berlingroup/v1/payments", "/berlingroup/v1/payments"},
	{"/berlingroup/v1/payments/sepa-credit-transfers", "/berlingroup/v1/payments"},
	{"/berlingroup/v1/paymentsx", "/berlingroup/v1"},
	{"/berlingroup/v1/consents", "/berlingroup/v1"},
	{"/berlingroup/v1", "/berlingroup/v1"},
	{"/berlingroup/v1?x=/payments", "/berlingroup/v1"},
	{"/berlingroup/v2/payments", "/"},
	{"/berlingroup", "/"},
	{"/berlingroup/v1/payments/../consents", "/berlingroup/v1"},
};

static const struct route_case without_root_cases[] = {
	{"/v1/accounts/1", "/v1/accounts"},
	{"/v1/accountsx", "/v1"},
	{"/v1", "/v1"},
	{"/v1x", NULL},
	{"/v2/accounts", NULL},
	{"/", NULL},
	{"/accounts", NULL},
	{"/v1/accounts/../../accounts", NULL},
};

static void fill_routes(struct config *cfg, const char *const *prefixes, size_t n)
{
	memset(cfg, 0, sizeof(*cfg));
	for (size_t i = 0; i < n; i++)
		snprintf(cfg->routes[i].prefix, sizeof(cfg->routes[i].prefix), "%s", prefixes[i]);
	cfg->n_routes = (unsigned)n;
}

static void check_cases(const char *const *prefixes, size_t n_prefixes,
			const struct route_case *cases, size_t n_cases)
{
	static struct config cfg;
	fill_routes(&cfg, prefixes, n_prefixes);
	for (size_t i = 0; i < n_cases; i++) {
		const struct route_case *c = &cases[i];
		char target[256];
		size_t len = strlen(c->target), path_len = strcspn(c->target, "?");
		assert_true(len < sizeof(target));
		const char *why;
		ssize_t n = path_normalize(c->target, path_len, target, &why);
		if (n < 0) {
			if (!c->want || strcmp(c->want, "400") != 0)
				fail_msg("'%s': refused (%s), want route %s", c->target, why,
					 c->want ? c->want : "none");
			continue;
		}
		if (c->want && strcmp(c->want, "400") == 0)
			fail_msg("'%s': normalised to '%.*s', want refused", c->target, (int)n,
				 target);
		memcpy(target + n, c->target + path_len, len - path_len); /* the query as is */
		int r = route_match(&cfg, target, (size_t)n + len - path_len);
		const char *got = r < 0 ? NULL : cfg.routes[r].prefix;
		if (!got != !c->want || (got && strcmp(got, c->want) != 0))
			fail_msg("'%s' (normalised '%.*s'): route %s, want %s", c->target,
				 (int)((size_t)n + len - path_len), target, got ? got : "none",
				 c->want ? c->want : "none");
	}
}

static void test_routes_with_root(void **state)
{
	(void)state;
	check_cases(with_root, sizeof(with_root) / sizeof(with_root[0]), with_root_cases,
		    sizeof(with_root_cases) / sizeof(with_root_cases[0]));
}

static void test_routes_without_root(void **state)
{
	(void)state;
	check_cases(without_root, sizeof(without_root) / sizeof(without_root[0]),
		    without_root_cases, sizeof(without_root_cases) / sizeof(without_root_cases[0]));
}

/* A path cut inside an escape is not read past its end. */
static void test_truncated_escape(void **state)
{
	(void)state;
	static struct config cfg;
	fill_routes(&cfg, without_root, sizeof(without_root) / sizeof(without_root[0]));
	assert_int_equal(route_match(&cfg, "/v%3", 4), -1);
	assert_int_equal(route_match(&cfg, "/v%31", 4), -1);
	assert_int_equal(route_match(&cfg, "/v%31", 5), 1);
	assert_int_equal(route_match(&cfg, "/v1/a", 3), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routes_with_root),
		cmocka_unit_test(test_routes_without_root),
		cmocka_unit_test(test_truncated_escape),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
