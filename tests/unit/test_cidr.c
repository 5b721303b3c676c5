/* cidr: the one parser of deny-list prefixes. A table of texts and their canonical form or the
 * reason they are refused, including the IPv4-mapped form that is stored as the IPv4 prefix it
 * stands for; and the prefix of a socket peer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "cidr.h"

static void test_parse_format(void **state)
{
	(void)state;
	static const struct {
		const char *in;
		const char *out; /* canonical text; NULL: refused */
		const char *why; /* part of the reason when refused */
	} cases[] = {
		{"10.0.0.0/8", "10.0.0.0/8", NULL},
		{"10.1.2.3/8", "10.0.0.0/8", NULL},
		{"192.0.2.1", "192.0.2.1/32", NULL},
		{"192.0.2.255/31", "192.0.2.254/31", NULL},
		{"0.0.0.0/0", "0.0.0.0/0", NULL},
		{"1.2.3.4/032", "1.2.3.4/32", NULL},
		{"2001:DB8::1/32", "2001:db8::/32", NULL},
		{"2001:db8:0:0::1", "2001:db8::1/128", NULL},
		{"::/0", "::/0", NULL},
		{"fe80::1:2/127", "fe80::1:2/127", NULL},
		/* IPv4-mapped: the IPv4 prefix it stands for */
		{"::ffff:192.0.2.7", "192.0.2.7/32", NULL},
		{"::FFFF:192.0.2.7/128", "192.0.2.7/32", NULL},
		{"::ffff:c000:207", "192.0.2.7/32", NULL},
		{"::ffff:192.0.2.7/120", "192.0.2.0/24", NULL},
		{"::ffff:10.1.2.3/104", "10.0.0.0/8", NULL},
		{"::ffff:0.0.0.0/96", "0.0.0.0/0", NULL},
		{"::ffff:192.0.2.7/95", NULL, "needs N of 96 or more"},
		{"::ffff:0:0/64", NULL, "needs N of 96 or more"},
		{"::ffff:192.0.2.7/129", NULL, "0 to 128"},
		/* near the mapped range but not in it: plain IPv6 */
		{"::fffe:192.0.2.7", "::fffe:c000:207/128", NULL},
		{"::192.0.2.7", "::192.0.2.7/128", NULL}, /* IPv4-compatible (deprecated), not mapped */
		{"64:ff9b::192.0.2.7", "64:ff9b::c000:207/128", NULL},
		{"::/80", "::/80", NULL},
		/* refused */
		{"10.0.0.0/33", NULL, "0 to 32"},
		{"2001:db8::/129", NULL, "0 to 128"},
		{"10.0.0.0/", NULL, "0 to 32"},
		{"10.0.0.0/-1", NULL, "0 to 32"},
		{"10.0.0.0/+8", NULL, "0 to 32"},
		{"10.0.0.0/8 ", NULL, "0 to 32"},
		{"10.0.0.0/0008", NULL, "0 to 32"},
		{"10.0.0/8", NULL, "expected ADDRESS"},
		{"/8", NULL, "expected ADDRESS"},
		{"", NULL, "expected ADDRESS"},
		{"example.com", NULL, "expected ADDRESS"},
		{"fe80::1%eth0/64", NULL, "expected ADDRESS"},
		{"10.0.0.0/8/8", NULL, "0 to 32"},
		{"1111:2222:3333:4444:5555:6666:7777:8888:9999/64", NULL, "expected ADDRESS"},
	};
	char out[CIDR_TEXT_MAX + 1];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct cidr c;
		const char *why = NULL;
		int rc = cidr_parse(cases[i].in, &c, &why);
		if (!cases[i].out) {
			if (rc != -1)
				fail_msg("'%s' accepted", cases[i].in);
			if (!why || !strstr(why, cases[i].why))
				fail_msg("'%s': reason '%s', want '%s'", cases[i].in, why, cases[i].why);
			continue;
		}
		if (rc != 0)
			fail_msg("'%s' refused: %s", cases[i].in, why);
		if (cidr_format(&c, out, sizeof(out)) != 0 || strcmp(out, cases[i].out) != 0)
			fail_msg("'%s': '%s', want '%s'", cases[i].in, out, cases[i].out);
	}
}

static void test_bounds(void **state)
{
	(void)state;
	struct cidr c;
	const char *why;
	char out[CIDR_TEXT_MAX + 1];

	assert_int_equal(cidr_parse(NULL, &c, &why), -1);
	char long_in[512];
	memset(long_in, '1', sizeof(long_in) - 1);
	long_in[sizeof(long_in) - 1] = '\0';
	assert_int_equal(cidr_parse(long_in, &c, &why), -1);
	/* Too small an output buffer is an error, not a truncation. */
	assert_int_equal(cidr_parse("10.0.0.0/8", &c, &why), 0);
	assert_int_equal(cidr_format(&c, out, 5), -1);
	/* The longest text fits CIDR_TEXT_MAX. */
	assert_int_equal(cidr_parse("1111:2222:3333:4444:5555:6666:7777:8888/128", &c, &why), 0);
	assert_int_equal(cidr_format(&c, out, sizeof(out)), 0);
}

static void test_of_peer(void **state)
{
	(void)state;
	static const struct {
		const char *peer; /* with ':' a sockaddr_in6, else a sockaddr_in */
		const char *want;
	} cases[] = {
		{"192.0.2.7", "192.0.2.7/32"},
		{"2001:db8::7", "2001:db8::7/128"},
		{"::ffff:192.0.2.7", "192.0.2.7/32"}, /* a dual-stack listener's IPv4 peer */
		{"::1", "::1/128"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss = {0};
		struct cidr c;
		char out[CIDR_TEXT_MAX + 1];
		if (strchr(cases[i].peer, ':')) {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			in6->sin6_family = AF_INET6;
			assert_int_equal(inet_pton(AF_INET6, cases[i].peer, &in6->sin6_addr), 1);
		} else {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			in->sin_family = AF_INET;
			assert_int_equal(inet_pton(AF_INET, cases[i].peer, &in->sin_addr), 1);
		}
		assert_int_equal(cidr_of_peer((struct sockaddr *)&ss, &c), 0);
		assert_int_equal(cidr_format(&c, out, sizeof(out)), 0);
		assert_string_equal(out, cases[i].want);
	}
	struct sockaddr_storage unix_peer = {.ss_family = AF_UNIX};
	struct cidr c;
	assert_int_equal(cidr_of_peer((struct sockaddr *)&unix_peer, &c), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_format),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_of_peer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
