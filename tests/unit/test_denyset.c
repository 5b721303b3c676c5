/* denyset: the daemon's deny check at accept. A fixture table of deny-lists, a peer and the
 * expected verdict (the longest covering prefix, or none), for both families, /0, /32, /128 and
 * IPv4-mapped peers; add/del; a model check against a linear scan over random prefixes; and
 * matches from threads while the control thread changes the set. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"
#include "denyset.h"

#define MAX_PREFIXES 4

/* A peer as accept() reports it: with ':' a sockaddr_in6 (so "::ffff:a.b.c.d" is a dual-stack
 * listener's IPv4 peer), else a sockaddr_in. */
static struct sockaddr_storage peer_of(const char *text)
{
	struct sockaddr_storage ss = {0};

	if (strchr(text, ':')) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons(40000);
		if (inet_pton(AF_INET6, text, &in6->sin6_addr) != 1)
			fail_msg("bad peer %s", text);
	} else {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		in->sin_port = htons(40000);
		if (inet_pton(AF_INET, text, &in->sin_addr) != 1)
			fail_msg("bad peer %s", text);
	}
	return ss;
}

static struct cidr cidr_of(const char *text)
{
	struct cidr c;
	const char *why;

	if (cidr_parse(text, &c, &why) < 0)
		fail_msg("bad prefix %s: %s", text, why);
	return c;
}

/* The verdict as text: the covering prefix, or "-" when the peer is not denied. */
static const char *verdict(struct denyset *ds, const char *peer, char *buf, size_t len)
{
	struct sockaddr_storage ss = peer_of(peer);
	struct cidr hit;

	if (!denyset_match(ds, (struct sockaddr *)&ss, &hit))
		return "-";
	assert_int_equal(cidr_format(&hit, buf, len), 0);
	return buf;
}

static void test_match_table(void **state)
{
	(void)state;
	static const struct {
		const char *desc;
		const char *prefixes[MAX_PREFIXES]; /* the deny-list */
		const char *peer;
		const char *want; /* the longest covering prefix, "-": not denied */
	} cases[] = {
		{"empty list", {NULL}, "192.0.2.7", "-"},
		{"empty list, IPv6", {NULL}, "2001:db8::7", "-"},
		{"IPv4 /32 covers its host", {"192.0.2.7/32"}, "192.0.2.7", "192.0.2.7/32"},
		{"IPv4 /32 not its neighbour", {"192.0.2.7/32"}, "192.0.2.8", "-"},
		{"IPv4 /8", {"10.0.0.0/8"}, "10.255.1.2", "10.0.0.0/8"},
		{"IPv4 /8 not the next /8", {"10.0.0.0/8"}, "11.0.0.0", "-"},
		{"IPv4 /25 upper half", {"192.0.2.128/25"}, "192.0.2.200", "192.0.2.128/25"},
		{"IPv4 /25 not the lower half", {"192.0.2.128/25"}, "192.0.2.127", "-"},
		{"IPv4 /0 covers every IPv4 peer", {"0.0.0.0/0"}, "203.0.113.9", "0.0.0.0/0"},
		{"IPv4 /0 does not cover IPv6", {"0.0.0.0/0"}, "2001:db8::1", "-"},
		{"IPv6 /128 covers its host", {"2001:db8::7/128"}, "2001:db8::7", "2001:db8::7/128"},
		{"IPv6 /128 not its neighbour", {"2001:db8::7/128"}, "2001:db8::6", "-"},
		{"IPv6 /127", {"2001:db8::/127"}, "2001:db8::1", "2001:db8::/127"},
		{"IPv6 /127 not beyond", {"2001:db8::/127"}, "2001:db8::2", "-"},
		{"IPv6 /48", {"2001:db8:dead::/48"}, "2001:db8:dead:1::1", "2001:db8:dead::/48"},
		{"IPv6 /0 covers every IPv6 peer", {"::/0"}, "2001:db8::1", "::/0"},
		{"IPv6 /0 does not cover IPv4", {"::/0"}, "192.0.2.1", "-"},
		{"IPv6 /0 does not cover a mapped peer (it is IPv4)", {"::/0"}, "::ffff:192.0.2.1",
		 "-"},
		{"longest of three IPv4 prefixes", {"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"},
		 "10.1.2.3", "10.1.2.0/24"},
		{"the middle one", {"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"}, "10.1.3.3",
		 "10.1.0.0/16"},
		{"the shortest one", {"10.0.0.0/8", "10.1.0.0/16", "10.1.2.0/24"}, "10.2.0.1",
		 "10.0.0.0/8"},
		{"/0 under a /32", {"0.0.0.0/0", "192.0.2.7/32"}, "192.0.2.7", "192.0.2.7/32"},
		{"/0 under a /32, another host", {"0.0.0.0/0", "192.0.2.7/32"}, "192.0.2.8",
		 "0.0.0.0/0"},
		{"longest of three IPv6 prefixes",
		 {"2001:db8::/32", "2001:db8:dead::/48", "2001:db8:dead:beef::/64"},
		 "2001:db8:dead:beef::1", "2001:db8:dead:beef::/64"},
		{"IPv6 /32 of three", {"2001:db8::/32", "2001:db8:dead::/48", "2001:db8:dead:beef::/64"},
		 "2001:db8:1::1", "2001:db8::/32"},
		{"the other family's prefixes do not count", {"2001:db8::/32", "10.0.0.0/8"},
		 "2001:db9::1", "-"},
		{"mapped peer checked as IPv4", {"192.0.2.0/24"}, "::ffff:192.0.2.9", "192.0.2.0/24"},
		{"mapped peer, /32", {"192.0.2.9"}, "::ffff:192.0.2.9", "192.0.2.9/32"},
		{"mapped peer outside", {"192.0.2.0/24"}, "::ffff:198.51.100.1", "-"},
		{"prefix written mapped, IPv4 peer", {"::ffff:192.0.2.0/120"}, "192.0.2.9",
		 "192.0.2.0/24"},
		{"prefix written mapped, mapped peer", {"::ffff:192.0.2.9"}, "::ffff:192.0.2.9",
		 "192.0.2.9/32"},
	};
	char buf[CIDR_TEXT_MAX + 1];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct denyset *ds = denyset_new();
		assert_non_null(ds);
		for (int j = 0; j < MAX_PREFIXES && cases[i].prefixes[j]; j++) {
			struct cidr c = cidr_of(cases[i].prefixes[j]);
			assert_int_equal(denyset_add(ds, &c), 0);
		}
		const char *got = verdict(ds, cases[i].peer, buf, sizeof(buf));
		if (strcmp(got, cases[i].want) != 0)
			fail_msg("%s: peer %s gives %s, want %s", cases[i].desc, cases[i].peer, got,
				 cases[i].want);
		denyset_free(ds);
	}
}

static void test_add_del(void **state)
{
	(void)state;
	struct denyset *ds = denyset_new();
	char buf[CIDR_TEXT_MAX + 1];
	struct cidr net = cidr_of("10.1.0.0/16"), host = cidr_of("10.1.2.3");
	/* Host bits are cleared by the set itself too. */
	struct cidr sloppy = {.family = AF_INET, .plen = 16, .addr = {10, 1, 9, 9}};

	assert_string_equal(verdict(ds, "10.1.2.3", buf, sizeof(buf)), "-");
	assert_int_equal(denyset_add(ds, &net), 0);
	assert_int_equal(denyset_add(ds, &sloppy), 0); /* already there */
	assert_int_equal(denyset_add(ds, &host), 0);
	assert_string_equal(verdict(ds, "10.1.2.3", buf, sizeof(buf)), "10.1.2.3/32");
	denyset_del(ds, &host);
	assert_string_equal(verdict(ds, "10.1.2.3", buf, sizeof(buf)), "10.1.0.0/16");
	denyset_del(ds, &host); /* not there: nothing changes */
	denyset_del(ds, &sloppy);
	assert_string_equal(verdict(ds, "10.1.2.3", buf, sizeof(buf)), "-");
	assert_int_equal(denyset_add(ds, &host), 0);
	assert_string_equal(verdict(ds, "10.1.2.3", buf, sizeof(buf)), "10.1.2.3/32");
	/* A peer of neither family is never denied. */
	struct sockaddr_storage unix_peer = {.ss_family = AF_UNIX};
	assert_false(denyset_match(ds, (struct sockaddr *)&unix_peer, NULL));
	denyset_free(ds);
}

/* --- model: the set against a linear scan ------------------------------------------------ */

#define MODEL_PREFIXES 600
#define MODEL_PEERS 20000

static bool covers(const struct cidr *p, const struct cidr *host)
{
	struct cidr h = *host;

	cidr_mask(h.addr, p->plen, cidr_max_len(p->family));
	return p->family == h.family && memcmp(p->addr, h.addr, sizeof(h.addr)) == 0;
}

/* A random prefix (/8../32, /32../128) or host near a few seeds, so that many prefixes nest
 * and overlap. */
static struct cidr random_prefix(unsigned *seed, int family, bool host)
{
	static const uint8_t seeds[3][16] = {
		{10, 1, 2, 3}, {192, 0, 2, 0}, {0x20, 0x01, 0x0d, 0xb8, 0xde, 0xad}};
	unsigned max = family == AF_INET ? 32 : 128;
	struct cidr c = {.family = family};

	memcpy(c.addr, seeds[family == AF_INET6 ? 2 : rand_r(seed) % 2], 16);
	for (unsigned b = (unsigned)rand_r(seed) % max; b < max; b++)
		if (rand_r(seed) % 2)
			c.addr[b / 8] ^= (uint8_t)(0x80u >> (b % 8));
	if (family == AF_INET)
		memset(c.addr + 4, 0, 12);
	c.plen = host ? max : max / 4 + (unsigned)rand_r(seed) % (max - max / 4 + 1);
	cidr_mask(c.addr, c.plen, max);
	return c;
}

static void test_model(void **state)
{
	(void)state;
	static struct cidr list[MODEL_PREFIXES];
	struct denyset *ds = denyset_new();
	unsigned seed = 7;
	int hits = 0, misses = 0;

	for (int i = 0; i < MODEL_PREFIXES; i++) {
		bool dup;
		do { /* distinct, so that deleting one leaves no copy in the model */
			list[i] = random_prefix(&seed, i % 3 ? AF_INET : AF_INET6, false);
			dup = false;
			for (int j = 0; j < i && !dup; j++)
				dup = list[j].plen == list[i].plen &&
				      memcmp(list[j].addr, list[i].addr, 16) == 0;
		} while (dup);
		assert_int_equal(denyset_add(ds, &list[i]), 0);
	}
	for (int i = 0; i < MODEL_PREFIXES / 3; i++) /* and take a third out again */
		denyset_del(ds, &list[i]);
	for (int n = 0; n < MODEL_PEERS; n++) {
		struct cidr host = random_prefix(&seed, n % 2 ? AF_INET : AF_INET6, true);
		const struct cidr *want = NULL;
		for (int i = MODEL_PREFIXES / 3; i < MODEL_PREFIXES; i++)
			if (covers(&list[i], &host) && (!want || list[i].plen > want->plen))
				want = &list[i];
		struct sockaddr_storage ss = {0};
		if (host.family == AF_INET) {
			struct sockaddr_in *in = (struct sockaddr_in *)&ss;
			in->sin_family = AF_INET;
			memcpy(&in->sin_addr, host.addr, 4);
		} else {
			struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
			in6->sin6_family = AF_INET6;
			memcpy(&in6->sin6_addr, host.addr, 16);
		}
		struct cidr hit;
		bool got = denyset_match(ds, (struct sockaddr *)&ss, &hit);
		assert_int_equal(got, want != NULL);
		*(got ? &hits : &misses) += 1;
		if (want) {
			assert_int_equal(hit.plen, want->plen);
			assert_memory_equal(hit.addr, want->addr, 16);
		}
	}
	print_message("%d peers denied, %d not\n", hits, misses);
	/* Both verdicts are well represented, or the comparison proves little. */
	assert_true(hits > MODEL_PEERS / 10 && misses > MODEL_PEERS / 10);
	denyset_free(ds);
}

/* --- matches from threads while the set changes --------------------------------------------- */

#define READERS 3
#define CHURN 3000

struct reader_arg {
	struct denyset *ds;
	atomic_bool *stop;
	long misses, wrong, rounds;
};

/* 192.0.2.7 is denied throughout; 198.51.100.7 never is: neither verdict may flicker while
 * other prefixes come and go. */
static void *reader(void *p)
{
	struct reader_arg *a = p;
	struct sockaddr_storage denied = peer_of("192.0.2.7"), allowed = peer_of("198.51.100.7");

	while (!atomic_load(a->stop)) {
		if (!denyset_match(a->ds, (struct sockaddr *)&denied, NULL))
			a->misses++;
		if (denyset_match(a->ds, (struct sockaddr *)&allowed, NULL))
			a->wrong++;
		a->rounds++;
	}
	return NULL;
}

static void test_threads(void **state)
{
	(void)state;
	struct denyset *ds = denyset_new();
	atomic_bool stop = false;
	struct reader_arg args[READERS];
	pthread_t th[READERS];
	struct cidr stable = cidr_of("192.0.2.0/24");
	unsigned seed = 11;

	assert_int_equal(denyset_add(ds, &stable), 0);
	for (int i = 0; i < READERS; i++) {
		args[i] = (struct reader_arg){.ds = ds, .stop = &stop};
		assert_int_equal(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < CHURN; i++) {
		struct cidr c = random_prefix(&seed, i % 2 ? AF_INET : AF_INET6, false);
		/* (IPv4 prefixes are /8 or longer: their first byte tells whether they cover
		 * 198.51.100.7) */
		if ((c.family == AF_INET && c.addr[0] == 198) ||
		    (c.plen == stable.plen && memcmp(c.addr, stable.addr, 16) == 0))
			continue;
		assert_int_equal(denyset_add(ds, &c), 0);
		if (i % 3)
			denyset_del(ds, &c);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < READERS; i++) {
		pthread_join(th[i], NULL);
		assert_int_equal(args[i].misses, 0);
		assert_int_equal(args[i].wrong, 0);
		assert_true(args[i].rounds > 0);
	}
	denyset_free(ds);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_match_table),
		cmocka_unit_test(test_add_del),
		cmocka_unit_test(test_model),
		cmocka_unit_test(test_threads),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
