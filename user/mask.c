#include "mask.h"

#include <ctype.h>
#include <regex.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>

struct mask {
	size_t n;
	regex_t re[];
};

/* Room for the longest replacement written apart: a key, its quotes and a hashed secret. */
#define MASK_OUT_MAX 64
#define MASK_SECRET_HASHED 16 /* a secret this long or longer is shown by its hash */

struct mask *mask_create(const char *const *patterns, size_t n, size_t *bad, char *err,
			 size_t errlen)
{
	struct mask *m = calloc(1, sizeof(*m) + n * sizeof(m->re[0]));
	if (!m) {
		*bad = n;
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	for (; m->n < n; m->n++) {
		regex_t *re = &m->re[m->n];
		int rc = regcomp(re, patterns[m->n], REG_EXTENDED);
		if (rc != 0) {
			char why[128];
			regerror(rc, re, why, sizeof(why));
			snprintf(err, errlen, "not a POSIX extended regex: %s", why);
			goto fail;
		}
		/* An empty match replaces nothing and could match anywhere: surely a mistake. */
		if (regexec(re, "", 0, NULL, 0) == 0) {
			regfree(re);
			snprintf(err, errlen, "matches the empty string");
			goto fail;
		}
	}
	return m;
fail:
	*bad = m->n;
	mask_free(m);
	return NULL;
}

void mask_free(struct mask *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n; i++)
		regfree(&m->re[i]);
	free(m);
}

/* --- configured patterns ------------------------------------------------------------------ */

static size_t mask_pattern(const regex_t *re, char *text, size_t len)
{
	size_t r = 0, w = 0;
	while (r < len) {
		regmatch_t pm = {.rm_so = (regoff_t)r, .rm_eo = (regoff_t)len};
		if (regexec(re, text, 1, &pm, REG_STARTEND | (r ? REG_NOTBOL : 0)) != 0)
			break;
		size_t so = (size_t)pm.rm_so, eo = (size_t)pm.rm_eo;
		memmove(text + w, text + r, so - r);
		w += so - r;
		r = so;
		if (eo == so) { /* an empty match replaces nothing: step over one character */
			if (so == len)
				break;
			text[w++] = text[r++];
			continue;
		}
		size_t stars = eo - so < 3 ? eo - so : 3;
		memset(text + w, '*', stars);
		w += stars;
		r = eo;
	}
	memmove(text + w, text + r, len - r);
	return w + (len - r);
}

/* --- built-ins ---------------------------------------------------------------------------- */

/* A secret of len bytes as it is written instead (at most len bytes); returns that length. */
static size_t mask_secret(const char *s, size_t len, char *out)
{
	if (len < MASK_SECRET_HASHED) {
		memset(out, '*', len);
		return len;
	}
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)s, len, md);
	return (size_t)snprintf(out, MASK_OUT_MAX, "[token:%02x%02x%02x%02x]", md[0], md[1], md[2],
				md[3]);
}

/* Masked already: a hashed secret or stars. */
static bool secret_masked(const char *s, size_t len)
{
	if (len >= 7 && memcmp(s, "[token:", 7) == 0)
		return true;
	return s[0] == '*';
}

/* ISO 13616 registry: country code and IBAN length. */
static const struct {
	char cc[3];
	unsigned char len;
} iban_countries[] = {
	{"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
	{"BG", 22}, {"BH", 22}, {"BI", 27}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22},
	{"CY", 28}, {"CZ", 24}, {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"EE", 20},
	{"EG", 29}, {"ES", 24}, {"FI", 18}, {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GB", 22},
	{"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27}, {"GT", 28}, {"HN", 28}, {"HR", 21},
	{"HU", 28}, {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30},
	{"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20},
	{"LV", 21}, {"LY", 25}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MN", 20},
	{"MR", 27}, {"MT", 31}, {"MU", 30}, {"NI", 28}, {"NL", 18}, {"NO", 15}, {"OM", 23},
	{"PK", 24}, {"PL", 28}, {"PS", 29}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"RU", 33},
	{"SA", 24}, {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27},
	{"SO", 23}, {"ST", 25}, {"SV", 28}, {"TL", 23}, {"TN", 24}, {"TR", 26}, {"UA", 29},
	{"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

#define IBAN_MAX 34

static unsigned iban_length(char a, char b)
{
	a = (char)toupper((unsigned char)a);
	b = (char)toupper((unsigned char)b);
	for (size_t i = 0; i < sizeof(iban_countries) / sizeof(iban_countries[0]); i++)
		if (iban_countries[i].cc[0] == a && iban_countries[i].cc[1] == b)
			return iban_countries[i].len;
	return 0;
}

/* ISO 7064 mod 97-10 over the IBAN moved four characters left, letters as 10..35. */
static bool iban_checksum_ok(const char *iban, unsigned len)
{
	unsigned rem = 0;
	for (unsigned k = 0; k < len; k++) {
		unsigned char c = (unsigned char)iban[(k + 4) % len];
		unsigned v = isdigit(c) ? (unsigned)(c - '0') : (unsigned)(toupper(c) - 'A' + 10);
		rem = (v >= 10 ? rem * 100 : rem * 10) + v;
		rem %= 97;
	}
	return rem == 1;
}

static size_t detect_iban(const char *s, size_t n, char *out, size_t *out_len)
{
	if (n < 4 || !isalpha((unsigned char)s[0]) || !isalpha((unsigned char)s[1]) ||
	    !isdigit((unsigned char)s[2]) || !isdigit((unsigned char)s[3]))
		return 0;
	unsigned want = iban_length(s[0], s[1]);
	if (!want)
		return 0;
	char iban[IBAN_MAX];
	unsigned got = 0;
	size_t i = 0;
	while (got < want && i < n) {
		if (isalnum((unsigned char)s[i])) {
			iban[got++] = s[i++];
		} else if (s[i] == ' ' && got % 4 == 0 && i + 1 < n && isalnum((unsigned char)s[i + 1])) {
			i++;
		} else {
			return 0;
		}
	}
	if (got < want || (i < n && isalnum((unsigned char)s[i])) || !iban_checksum_ok(iban, want))
		return 0;
	memcpy(out, iban, 4);
	memcpy(out + 4, "****", 4);
	memcpy(out + 8, iban + want - 4, 4);
	*out_len = 12;
	return i;
}

static bool luhn_ok(const char *digits, unsigned n)
{
	unsigned sum = 0;
	for (unsigned k = 0; k < n; k++) {
		unsigned d = (unsigned)(digits[n - 1 - k] - '0');
		if (k % 2) {
			d *= 2;
			if (d > 9)
				d -= 9;
		}
		sum += d;
	}
	return sum % 10 == 0;
}

#define PAN_MIN 13
#define PAN_MAX 19

/* Digits and masked digits: what a run of numbers is made of, before and after masking. */
static bool is_run_char(unsigned char c)
{
	return isdigit(c) || c == '*';
}

/* s[0, n) (digits and separators, nothing masked) is a PAN. */
static bool is_pan(const char *s, size_t n)
{
	char digits[PAN_MAX];
	unsigned nd = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '*')
			return false;
		if (isdigit((unsigned char)s[i])) {
			if (nd == PAN_MAX)
				return false;
			digits[nd++] = s[i];
		}
	}
	return nd >= PAN_MIN && digits[0] != '0' && luhn_ok(digits, nd);
}

/* Every digit of s[0, n) but the last four becomes '*'. */
static void mask_pan(char *s, size_t n)
{
	size_t keep = 4;
	for (size_t i = n; i-- > 0;)
		if (isdigit((unsigned char)s[i]) && (keep ? (keep--, false) : true))
			s[i] = '*';
}

/* The run of digits and '*' (single spaces or dashes between them) at text[r], after the
 * character `before`: copied to text[w] (w <= r) with its PANs masked; returns its length.
 * A whole run of 13-19 digits is tried first, then each piece between separators and stars,
 * so that masking a piece never changes the run: the line masks to itself again. A PAN glued
 * to a letter or digit is left alone. */
static size_t mask_digit_run(char *text, size_t len, size_t r, size_t w, unsigned char before)
{
	size_t end = r;
	while (end < len) {
		if (is_run_char((unsigned char)text[end]))
			end++;
		else if ((text[end] == ' ' || text[end] == '-') && end + 1 < len &&
			 is_run_char((unsigned char)text[end + 1]))
			end++;
		else
			break;
	}
	bool glued_after = end < len && isalnum((unsigned char)text[end]);
	size_t n = end - r;
	memmove(text + w, text + r, n);
	char *run = text + w;
	if (!isalnum(before) && !glued_after && is_pan(run, n)) {
		mask_pan(run, n);
		return n;
	}
	for (size_t a = 0; a < n;) {
		size_t b = a;
		while (b < n && isdigit((unsigned char)run[b]))
			b++;
		bool glued = (a == 0 && isalnum(before)) || (b == n && glued_after);
		if (b - a >= PAN_MIN && !glued && is_pan(run + a, b - a))
			mask_pan(run + a, b - a);
		a = b + 1;
	}
	return n;
}

static bool is_b64url(unsigned char c)
{
	return isalnum(c) || c == '-' || c == '_';
}

static size_t detect_jwt(const char *s, size_t n, char *out, size_t *out_len)
{
	if (n < 3 || memcmp(s, "eyJ", 3) != 0)
		return 0;
	size_t i = 3;
	unsigned dots = 0;
	while (i < n && (is_b64url((unsigned char)s[i]) || s[i] == '.'))
		dots += s[i++] == '.';
	if (dots < 2)
		return 0;
	*out_len = mask_secret(s, i, out);
	return i;
}

/* RFC 6750 b64token. */
static bool is_b64token(unsigned char c)
{
	return isalnum(c) || (c && strchr("-._~+/", c));
}

static size_t detect_bearer(const char *s, size_t n, char *out, size_t *out_len)
{
	if (n < 7 || (s[0] | 0x20) != 'b' || strncasecmp(s, "bearer", 6) != 0 || s[6] != ' ')
		return 0;
	size_t i = 6;
	while (i < n && s[i] == ' ')
		i++;
	size_t start = i;
	while (i < n && is_b64token((unsigned char)s[i]))
		i++;
	while (i < n && s[i] == '=')
		i++;
	if (i - start < MASK_SECRET_HASHED)
		return 0;
	memcpy(out, s, 7); /* "Bearer " as written */
	*out_len = 7 + mask_secret(s + start, i - start, out + 7);
	return i;
}

static const char *const secret_keys[] = {
	"access_token", "refresh_token", "id_token", "code", "code_verifier", "client_secret",
	"client_assertion", "assertion", "password",
};

/* After a key: an optional closing quote (escaped in a JSON line), '=' or ':', spaces, an
 * optional opening quote. Returns how many bytes that is (0 when it is not there) and writes
 * it to sep with its spaces cut to one (at most 6 bytes). */
static size_t secret_separator(const char *s, size_t n, char *sep, size_t *sep_len)
{
	size_t i = 0, k = 0;
	if (i + 1 < n && s[i] == '\\' && s[i + 1] == '"')
		sep[k++] = s[i++], sep[k++] = s[i++];
	else if (i < n && s[i] == '"')
		sep[k++] = s[i++];
	if (i >= n || (s[i] != '=' && s[i] != ':'))
		return 0;
	sep[k++] = s[i++];
	if (i < n && s[i] == ' ')
		sep[k++] = ' ';
	while (i < n && s[i] == ' ')
		i++;
	if (i + 1 < n && s[i] == '\\' && s[i + 1] == '"')
		sep[k++] = s[i++], sep[k++] = s[i++];
	else if (i < n && s[i] == '"')
		sep[k++] = s[i++];
	*sep_len = k;
	return i;
}

static bool ends_secret(unsigned char c)
{
	return !c || isspace(c) || strchr("&\"\\,;#}<>')", c);
}

static size_t detect_secret_field(const char *s, size_t n, char *out, size_t *out_len)
{
	for (size_t k = 0; k < sizeof(secret_keys) / sizeof(secret_keys[0]); k++) {
		if ((s[0] | 0x20) != secret_keys[k][0])
			continue;
		size_t kl = strlen(secret_keys[k]);
		if (n <= kl || strncasecmp(s, secret_keys[k], kl) != 0)
			continue;
		char sep[6];
		size_t sep_len, sep_used = secret_separator(s + kl, n - kl, sep, &sep_len);
		if (!sep_used)
			continue;
		size_t start = kl + sep_used, i = start;
		while (i < n && !ends_secret((unsigned char)s[i]))
			i++;
		if (i == start || secret_masked(s + start, i - start))
			return 0;
		memcpy(out, s, kl);
		memcpy(out + kl, sep, sep_len);
		*out_len = kl + sep_len + mask_secret(s + start, i - start, out + kl + sep_len);
		return i;
	}
	return 0;
}

size_t mask_apply(const struct mask *m, char *text, size_t len)
{
	for (size_t i = 0; m && i < m->n; i++)
		len = mask_pattern(&m->re[i], text, len);
	size_t r = 0, w = 0;
	unsigned char prev = ' '; /* the input's character before r, before any rewrite */
	while (r < len) {
		unsigned char c = (unsigned char)text[r];
		char out[MASK_OUT_MAX];
		size_t out_len = 0, used = 0;
		if (is_run_char(c) && !is_run_char(prev)) {
			size_t run = mask_digit_run(text, len, r, w, prev);
			prev = (unsigned char)text[w + run - 1];
			w += run;
			r += run;
			continue;
		}
		if (!isalnum(prev) && isalpha(c)) {
			const char *s = text + r;
			size_t n = len - r;
			if (!(used = detect_iban(s, n, out, &out_len)) &&
				 !(used = detect_jwt(s, n, out, &out_len)) &&
				 !(used = detect_bearer(s, n, out, &out_len)) && prev != '_')
				used = detect_secret_field(s, n, out, &out_len);
		}
		if (!used) {
			text[w++] = (char)c;
			prev = c;
			r++;
			continue;
		}
		/* What follows starts afresh, as it will when the masked line is read again: a
		 * replacement ends in ']', '*' or the last of an IBAN, which no run may join. */
		prev = ' ';
		memcpy(text + w, out, out_len);
		w += out_len;
		r += used;
	}
	return w;
}
