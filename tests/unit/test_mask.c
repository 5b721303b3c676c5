/* Log masking (mask.h): a fixture table of text and what the logs show instead, the configured
 * patterns, and both logs masked on the way out (log.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"
#include "mask.h"

static const struct {
	const char *what;
	const char *in;
	const char *out;
} fixtures[] = {
	/* IBANs: registry country and length, mod-97 */
	{"DE IBAN in a path", "/accounts/DE89370400440532013000/balances",
	 "/accounts/DE89****3000/balances"},
	{"DE IBAN in groups of four", "iban DE89 3704 0044 0532 0130 00 end", "iban DE89****3000 end"},
	{"GB IBAN", "GB82WEST12345698765432", "GB82****5432"},
	{"FR IBAN with a letter in the BBAN", "FR1420041010050500013M02606", "FR14****2606"},
	{"NL IBAN", "\"NL91ABNA0417164300\"", "\"NL91****4300\""},
	{"BE IBAN in lower case", "be68539007547034", "be68****7034"},
	{"NO IBAN, the shortest", "NO9386011117947", "NO93****7947"},
	{"wrong check digits", "DE89370400440532013001", "DE89370400440532013001"},
	{"one character too many", "DE893704004405320130001", "DE893704004405320130001"},
	{"inside a word", "xDE89370400440532013000", "xDE89370400440532013000"},
	{"not a registry country", "ZZ89370400440532013000", "ZZ89370400440532013000"},
	/* PANs: 13-19 digits, Luhn, first digit not 0 */
	{"Visa", "card 4111111111111111 ok", "card ************1111 ok"},
	{"Visa in groups", "4111 1111 1111 1111", "**** **** **** 1111"},
	{"Visa with dashes", "/cards/4111-1111-1111-1111/x", "/cards/****-****-****-1111/x"},
	{"Amex, 15 digits", "378282246310005", "***********0005"},
	{"Mastercard after a number", "n=1234 5500000000000004", "n=1234 ************0004"},
	{"Luhn fails", "4111111111111112", "4111111111111112"},
	{"glued to letters", "ab4111111111111111", "ab4111111111111111"},
	{"followed by a letter", "4111111111111111x", "4111111111111111x"},
	{"20 digits", "41111111111111111110", "41111111111111111110"},
	{"starts with 0", "0000000000000000", "0000000000000000"},
	/* secrets */
	{"authorization code in a callback", "/cb?code=SplxlOBeZQQYbYS6WxSbIA&state=xyz",
	 "/cb?code=[token:a35b81a7]&state=xyz"},
	{"short access token", "access_token=abc&x=1", "access_token=***&x=1"},
	{"JSON escaped in a JSON line", "{\\\"access_token\\\":\\\"2YotnFZFEjr1zCsicMWpAA\\\"}",
	 "{\\\"access_token\\\":\\\"[token:6c96130f]\\\"}"},
	{"JSON refresh token", "\"refresh_token\": \"tGzv3JOkF0XG5Qx2TlKWIA\"",
	 "\"refresh_token\": \"[token:00cf4c78]\""},
	{"spaces after the key", "\"id_token\":          \"eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.\"",
	 "\"id_token\": \"[token:b09af2b9]\""},
	{"client secret", "client_secret=s3cr3t&grant_type=x", "client_secret=******&grant_type=x"},
	{"client assertion JWT", "client_assertion=eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ4In0.sig",
	 "client_assertion=[token:dfc0353d]"},
	{"Bearer", "Authorization: Bearer mF_9.B5f-4.1JqMmF_9.B5f-4.1JqM",
	 "Authorization: Bearer [token:556221af]"},
	{"Bearer, a word too short to be a token", "no Bearer token", "no Bearer token"},
	{"bare JWT", "token eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl there",
	 "token [token:f9bc93e3] there"},
	{"a key ending in code", "error_code=502 zipcode=12345", "error_code=502 zipcode=12345"},
	/* overlaps */
	{"IBAN and PAN in one line", "DE89370400440532013000 4111111111111111",
	 "DE89****3000 ************1111"},
	{"a PAN among other numbers", "4111111111111111 1234 5678 9012 3",
	 "************1111 1234 5678 9012 3"},
	{"a PAN after a star", "Jane*4111111111111111", "Jane*************1111"},
	{"an IBAN, digits after it", "DE89 3704 0044 0532 0130 00 1234", "DE89****3000 1234"},
	{"a PAN as a code", "code=4111111111111111", "code=[token:9bbef194]"},
	/* the gateway's own identifiers stay */
	{"client_id", "PSDGB-FCA-123456", "PSDGB-FCA-123456"},
	{"request id", "0a1b2c3d4e5f60718293a4b5c6d7e8f9", "0a1b2c3d4e5f60718293a4b5c6d7e8f9"},
	{"request id, all digits", "12345678901234560001000000000042",
	 "12345678901234560001000000000042"},
	{"thumbprint", "a3f0c2d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1",
	 "a3f0c2d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1"},
	{"timestamp", "2026-12-04T18:56:58.123Z", "2026-12-04T18:56:58.123Z"},
	{"host name", "www.example.com", "www.example.com"},
	{"peer address", "peer [2001:db8::1]:443 10.0.0.1:8443", "peer [2001:db8::1]:443 10.0.0.1:8443"},
};

static size_t mask_text(const struct mask *m, const char *in, char *out, size_t cap)
{
	size_t n = strlen(in);
	assert_true(n < cap);
	memcpy(out, in, n);
	return mask_apply(m, out, n);
}

static void test_fixtures(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(fixtures) / sizeof(fixtures[0]); i++) {
		char got[512], again[512];
		size_t n = mask_text(NULL, fixtures[i].in, got, sizeof(got));
		got[n] = '\0';
		if (strcmp(got, fixtures[i].out) != 0)
			fail_msg("%s: '%s' became '%s', expected '%s'", fixtures[i].what,
				 fixtures[i].in, got, fixtures[i].out);
		size_t m = mask_text(NULL, got, again, sizeof(again));
		again[m] = '\0';
		if (strcmp(again, got) != 0)
			fail_msg("%s: masking '%s' again gave '%s'", fixtures[i].what, got, again);
	}
}

static void test_patterns(void **state)
{
	(void)state;
	static const char *const patterns[] = {"Jane( Q\\.)? Doe", "[A-Z]{2}-[0-9]{6}"};
	char err[256];
	size_t bad = 99;
	struct mask *m = mask_create(patterns, 2, &bad, err, sizeof(err));
	assert_non_null(m);
	static const struct {
		const char *in, *out;
	} rows[] = {
		{"payee Jane Doe, Jane Q. Doe", "payee ***, ***"},
		{"ref AB-123456 and AB-12345", "ref *** and AB-12345"},
		/* the built-ins still run after the patterns */
		{"Jane Doe DE89370400440532013000", "*** DE89****3000"},
		{"nothing here", "nothing here"},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char got[256];
		size_t n = mask_text(m, rows[i].in, got, sizeof(got));
		got[n] = '\0';
		assert_string_equal(got, rows[i].out);
	}
	mask_free(m);

	static const struct {
		const char *pattern;
		const char *err_start;
	} refused[] = {
		{"(unclosed", "not a POSIX extended regex: "},
		{"a{2,1}", "not a POSIX extended regex: "},
		{"x*", "matches the empty string"},
	};
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		const char *two[] = {"fine", refused[i].pattern};
		assert_null(mask_create(two, 2, &bad, err, sizeof(err)));
		assert_int_equal(bad, 1);
		if (strncmp(err, refused[i].err_start, strlen(refused[i].err_start)) != 0)
			fail_msg("'%s': %s", refused[i].pattern, err);
	}
}

/* A file's whole content, NUL-terminated. */
static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static char text[8192];
	size_t n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	return text;
}

/* Both logs, as log.c writes them: the access-log line and the error-log message masked. */
static void test_logs_masked(void **state)
{
	(void)state;
	static const char *const patterns[] = {"Jane Doe"};
	char err[256], path[] = "/tmp/psd2edge-test-mask.XXXXXX";
	size_t bad;
	struct mask *m = mask_create(patterns, 1, &bad, err, sizeof(err));
	assert_non_null(m);
	log_set_mask(m);
	int fd = mkstemp(path);
	assert_true(fd >= 0);

	assert_int_equal(log_open_access(path), 0);
	struct buf batch = {0};
	size_t start = batch.len;
	assert_int_equal(buf_printf(&batch, "{\"path\":\"/accounts/DE89370400440532013000/x\","
				    "\"who\":\"Jane Doe\"}\n"), 0);
	log_access_commit(&batch, start);
	log_access_flush(&batch);
	assert_string_equal(slurp(path), "{\"path\":\"/accounts/DE89****3000/x\",\"who\":\"***\"}\n");
	assert_int_equal(log_open_access("-"), 0);
	buf_free(&batch);

	assert_int_equal(ftruncate(fd, 0), 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	log_warn("upstream said: card 4111111111111111 of Jane Doe, Bearer "
		 "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl");
	const char *line = strstr(slurp(path), " warn: ");
	assert_non_null(line);
	assert_string_equal(line, " warn: upstream said: card ************1111 of ***, Bearer "
			    "[token:f9bc93e3]\n");
	/* A card number across the 1023rd byte, where the line is cut: masked before the cut. */
	assert_int_equal(ftruncate(fd, 0), 0);
	assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
	char pad[1022 - 41 - 8 + 1]; /* 41: the line's time, name and level */
	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	log_warn("%s 4111111111111111", pad);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	const char *cut = slurp(path);
	assert_int_equal(strlen(cut), 1023);
	assert_null(strstr(cut + 41, "41"));
	assert_non_null(strstr(cut, " ***"));
	close(fd);
	unlink(path);
	log_set_mask(NULL);
	mask_free(m);
}

/* What masking costs on an access-log line; printed, not asserted (the machine is shared). */
static void test_cost_per_line(void **state)
{
	(void)state;
	static const char line[] =
		"{\"request_id\":\"0a1b2c3d4e5f60718293a4b5c6d7e8f9\",\"client_id\":\"PSDGB-FCA-123456\","
		"\"cert_sha256_prefix\":\"a3f0c2d9e8b7a6f5\",\"peer\":\"10.0.0.1:51234\",\"method\":"
		"\"GET\",\"path\":\"/accounts/DE89370400440532013000/balances\",\"route\":\"/accounts\","
		"\"status\":200,\"verdict\":\"ok\",\"latency_ms\":3,\"bytes_in\":0,\"bytes_out\":512}";
	static const char *const patterns[] = {"Jane Doe"};
	char err[256];
	size_t bad;
	struct mask *m = mask_create(patterns, 1, &bad, err, sizeof(err));
	assert_non_null(m);
	enum { ROUNDS = 20000 };
	for (int with_pattern = 0; with_pattern < 2; with_pattern++) {
		struct timespec t0, t1;
		char copy[sizeof(line)];
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (int i = 0; i < ROUNDS; i++) {
			memcpy(copy, line, sizeof(line) - 1);
			mask_apply(with_pattern ? m : NULL, copy, sizeof(line) - 1);
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double ns = ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
			    ROUNDS;
		print_message("mask cost: %.0f ns per %zu-byte access-log line (%s)\n", ns,
			      sizeof(line) - 1, with_pattern ? "built-ins and one pattern" : "built-ins");
	}
	mask_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_patterns),
		cmocka_unit_test(test_logs_masked),
		cmocka_unit_test(test_cost_per_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
