/* Path normalisation: a fixture table of request paths with the path forwarded (or NULL and
 * the reason it is refused), each run into a separate buffer and in place; every accepted
 * result must normalise to itself. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"

struct path_case {
	const char *in;
	const char *want; /* NULL: refused */
	const char *why;  /* the reason, when refused */
};

static const struct path_case cases[] = {
	/* unchanged */
	{"/", "/", NULL},
	{"/accounts", "/accounts", NULL},
	{"/accounts/", "/accounts/", NULL},
	{"/v1/accounts/123/balances", "/v1/accounts/123/balances", NULL},
	{"/a//b", "/a//b", NULL},
	{"/a.b/c..d/.e/f.", "/a.b/c..d/.e/f.", NULL},
	{"/caf%C3%A9/%e2%82%ac/%F0%9F%98%80", "/caf%C3%A9/%e2%82%ac/%F0%9F%98%80", NULL},
	{"/a%20b/%3F%23%41", "/a%20b/%3F%23%41", NULL},
	{"/:@!$&'()*+,=~_-", "/:@!$&'()*+,=~_-", NULL},

	/* dot segments (RFC 3986 §5.2.4), dots raw or encoded */
	{"/.", "/", NULL},
	{"/./", "/", NULL},
	{"/a/.", "/a/", NULL},
	{"/a/./b", "/a/b", NULL},
	{"/a/./", "/a/", NULL},
	{"/a/..", "/", NULL},
	{"/a/../", "/", NULL},
	{"/a/b/..", "/a/", NULL},
	{"/a/b/../c", "/a/c", NULL},
	{"/a/b/c/./../../g", "/a/g", NULL},
	{"/a/.//b", "/a//b", NULL},
	{"/a//..", "/a/", NULL},
	{"/a/%2e/b", "/a/b", NULL},
	{"/a/%2E%2e/b", "/b", NULL},
	{"/a/.%2e/b", "/b", NULL},
	{"/a/%2e./b", "/b", NULL},
	{"/a/b%2e/c", "/a/b./c", NULL},
	{"/a/%2e%2e", "/", NULL},

	/* climbing above the root */
	{"/..", NULL, "path climbs above its root"},
	{"/../", NULL, "path climbs above its root"},
	{"/../etc/passwd", NULL, "path climbs above its root"},
	{"/a/../..", NULL, "path climbs above its root"},
	{"/a/../../b", NULL, "path climbs above its root"},
	{"/%2e%2e/admin", NULL, "path climbs above its root"},
	{"/%2E%2E/admin", NULL, "path climbs above its root"},
	{"/.%2e/admin", NULL, "path climbs above its root"},
	{"/%2e./admin", NULL, "path climbs above its root"},
	{"//../..", NULL, "path climbs above its root"},
	{"/./..", NULL, "path climbs above its root"},
	{"/...", NULL, "segment of dots only in path"},
	{"/a/.%2e./b", NULL, "segment of dots only in path"},

	/* what stacks read differently */
	{"/a/..;/admin", NULL, "';' in path (path parameters are not accepted)"},
	{"/a;jsessionid=1/b", NULL, "';' in path (path parameters are not accepted)"},
	{"/a%3b/b", NULL, "encoded ';' in path"},
	{"/a%2fb", NULL, "encoded slash or backslash in path"},
	{"/a%2F..%2Fb", NULL, "encoded slash or backslash in path"},
	{"/a%5cb", NULL, "encoded slash or backslash in path"},
	{"/a%5C..%5Cb", NULL, "encoded slash or backslash in path"},
	{"/a\\..\\b", NULL, "backslash in path"},
	{"/a%00b", NULL, "encoded NUL or control character in path"},
	{"/a%0d%0aX:1", NULL, "encoded NUL or control character in path"},
	{"/a%7f", NULL, "encoded NUL or control character in path"},
	{"/%252e%252e/admin", NULL, "encoded '%' in path (double encoding)"},
	{"/a%252fb", NULL, "encoded '%' in path (double encoding)"},
	{"/a%25%32%65", NULL, "encoded '%' in path (double encoding)"},
	{"/a%", NULL, "malformed percent-encoding in path"},
	{"/a%2", NULL, "malformed percent-encoding in path"},
	{"/a%zz", NULL, "malformed percent-encoding in path"},
	{"/a%%2e", NULL, "malformed percent-encoding in path"},
	{"/%c0%ae%c0%ae/admin", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%c0%af", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%e0%80%ae", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%ed%a0%80", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%f4%90%80%80", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%80", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%e9t%e9", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%c3", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/%c3/", NULL, "percent-encoded bytes in path are not UTF-8"},
	{"/a b", NULL, "invalid character in path"},
	{"/a\x7f", NULL, "invalid character in path"},
	{"/\xc3\xa9", NULL, "invalid character in path"},
	{"", NULL, "path does not start with '/'"},
	{"a/b", NULL, "path does not start with '/'"},
};

static void check_case(const struct path_case *c)
{
	size_t len = strlen(c->in);
	char *out = malloc(len + 1), *inplace = malloc(len + 1);
	assert_non_null(out);
	assert_non_null(inplace);
	memcpy(inplace, c->in, len);
	const char *why = NULL, *why_inplace = NULL;
	ssize_t n = path_normalize(c->in, len, out, &why);
	ssize_t n_inplace = path_normalize(inplace, len, inplace, &why_inplace);
	if (!c->want) {
		if (n >= 0)
			fail_msg("'%s': forwarded as '%.*s', want refused (%s)", c->in, (int)n, out,
				 c->why);
		assert_string_equal(why, c->why);
		assert_int_equal(n_inplace, -1);
		assert_string_equal(why_inplace, c->why);
	} else {
		if (n < 0)
			fail_msg("'%s': refused (%s), want '%s'", c->in, why, c->want);
		if ((size_t)n != strlen(c->want) || memcmp(out, c->want, (size_t)n) != 0)
			fail_msg("'%s': got '%.*s', want '%s'", c->in, (int)n, out, c->want);
		assert_int_equal(n_inplace, n);
		assert_memory_equal(inplace, c->want, (size_t)n);
		/* idempotent */
		char again[256];
		assert_true((size_t)n <= sizeof(again));
		assert_int_equal(path_normalize(out, (size_t)n, again, &why), n);
		assert_memory_equal(again, out, (size_t)n);
	}
	free(out);
	free(inplace);
}

static void test_path_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_case(&cases[i]);
}

/* A long path of ".." after as many segments: bounded work, the exact result. */
static void test_deep_path(void **state)
{
	(void)state;
	enum { DEPTH = 4000 };
	char *in = malloc(DEPTH * 5 + 8), *out = malloc(DEPTH * 5 + 8);
	assert_non_null(in);
	assert_non_null(out);
	size_t len = 0;
	for (int i = 0; i < DEPTH; i++)
		len += (size_t)sprintf(in + len, "/a");
	for (int i = 0; i < DEPTH; i++)
		len += (size_t)sprintf(in + len, "/..");
	const char *why = NULL;
	assert_int_equal(path_normalize(in, len, out, &why), 1);
	assert_memory_equal(out, "/", 1);
	len += (size_t)sprintf(in + len, "/..");
	assert_int_equal(path_normalize(in, len, out, &why), -1);
	assert_string_equal(why, "path climbs above its root");
	free(in);
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_path_table),
		cmocka_unit_test(test_deep_path),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
