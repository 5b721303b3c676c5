/* Fuzzes mask_apply. Input: the first byte picks the built-ins alone (even) or with a configured
 * pattern (odd); the rest is the log text. Invariants:
 *   - the result is never longer than the input;
 *   - with the built-ins alone, masking the result again changes nothing;
 *   - the result holds no IBAN and no PAN that the reference below (written apart from
 *     mask.c, on compact forms of a few countries) finds. */
#include <ctype.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mask.h"

#define MAX_TEXT 4096

static bool word_char(const char *s, size_t len, size_t i)
{
	return i < len && isalnum((unsigned char)s[i]);
}

static bool mod97_ok(const char *s, size_t len)
{
	unsigned rem = 0;
	for (size_t k = 0; k < len; k++) {
		unsigned char c = (unsigned char)s[(k + 4) % len];
		if (isdigit(c))
			rem = (rem * 10 + (unsigned)(c - '0')) % 97;
		else
			rem = (rem * 100 + (unsigned)(toupper(c) - 'A' + 10)) % 97;
	}
	return rem == 1;
}

static bool luhn_ok(const char *s, size_t len)
{
	unsigned sum = 0;
	for (size_t k = 0; k < len; k++) {
		unsigned d = (unsigned)(s[len - 1 - k] - '0');
		if (k & 1)
			d = d * 2 > 9 ? d * 2 - 9 : d * 2;
		sum += d;
	}
	return sum % 10 == 0;
}

/* An IBAN (DE, GB, FR, NL, NO; compact) or a PAN (compact) standing alone in s. */
static bool reference_finds(const char *s, size_t len)
{
	static const struct {
		char cc[3];
		size_t len;
	} countries[] = {{"DE", 22}, {"GB", 22}, {"FR", 27}, {"NL", 18}, {"NO", 15}};
	for (size_t i = 0; i < len; i++) {
		if (i > 0 && word_char(s, len, i - 1))
			continue;
		size_t run = 0;
		while (word_char(s, len, i + run))
			run++;
		for (size_t c = 0; c < sizeof(countries) / sizeof(countries[0]); c++)
			if (run == countries[c].len && toupper((unsigned char)s[i]) == countries[c].cc[0] &&
			    toupper((unsigned char)s[i + 1]) == countries[c].cc[1] &&
			    isdigit((unsigned char)s[i + 2]) && isdigit((unsigned char)s[i + 3]) &&
			    mod97_ok(s + i, run))
				return true;
		size_t digits = 0;
		while (digits < run && isdigit((unsigned char)s[i + digits]))
			digits++;
		if (digits == run && run >= 13 && run <= 19 && s[i] != '0' && luhn_ok(s + i, run))
			return true;
	}
	return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct mask *with_pattern;
	if (!with_pattern) {
		static const char *const patterns[] = {"[Jj]ane( [A-Z]\\.)? Doe"};
		char err[128];
		size_t bad;
		with_pattern = mask_create(patterns, 1, &bad, err, sizeof(err));
		if (!with_pattern)
			abort();
	}
	if (size < 1 || size - 1 > MAX_TEXT)
		return 0;
	const struct mask *m = data[0] & 1 ? with_pattern : NULL;
	size_t len = size - 1;
	char text[MAX_TEXT], again[MAX_TEXT];
	memcpy(text, data + 1, len);
	size_t n = mask_apply(m, text, len);
	if (n > len)
		abort();
	if (reference_finds(text, n))
		abort();
	if (!m) {
		memcpy(again, text, n);
		if (mask_apply(NULL, again, n) != n || memcmp(again, text, n) != 0)
			abort();
	}
	return 0;
}
