/* Fuzzes path_normalize. Input: the path (a '/' is put in front when missing).
 * Invariants of an accepted path:
 *   - the same result in place as into a separate buffer, never longer than the input;
 *   - it starts with '/', has no "." or ".." segment, no encoded dot, nothing path_normalize
 *     refuses (it normalises to itself: idempotent);
 *   - it is what RFC 3986 §5.2.4 remove_dot_segments (written out below, step by step) makes
 *     of the input with its encoded dots decoded, and that reference never had to clamp a
 *     climb above the root: so under any prefix the result stays under the prefix.
 * A refused path is refused the same way in place. A path the reference sees climbing is
 * always refused. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "path.h"

#define MAX_PATH 4096

/* Encoded dots decoded, everything else as is. */
static size_t decode_dots(const char *in, size_t len, char *out)
{
	size_t w = 0;
	for (size_t i = 0; i < len; i++) {
		if (in[i] == '%' && i + 2 < len && in[i + 1] == '2' && (in[i + 2] | 0x20) == 'e') {
			out[w++] = '.';
			i += 2;
		} else {
			out[w++] = in[i];
		}
	}
	return w;
}

static bool starts(const char *s, size_t len, const char *lit)
{
	size_t n = strlen(lit);
	return len >= n && memcmp(s, lit, n) == 0;
}

static bool is(const char *s, size_t len, const char *lit)
{
	return len == strlen(lit) && memcmp(s, lit, len) == 0;
}

/* RFC 3986 §5.2.4, rules A to E over an input cursor; *climbed is set when rule C had no
 * segment left to remove. */
static size_t remove_dot_segments(const char *in, size_t len, char *out, bool *climbed)
{
	char buf[MAX_PATH + 2];
	size_t w = 0;
	*climbed = false;
	memcpy(buf, in, len);
	char *s = buf;
	while (len) {
		if (starts(s, len, "../") || starts(s, len, "./")) { /* A */
			size_t n = s[1] == '.' ? 3 : 2;
			s += n;
			len -= n;
		} else if (starts(s, len, "/./") || is(s, len, "/.")) { /* B */
			size_t n = starts(s, len, "/./") ? 3 : 2;
			s += n - 1; /* the prefix becomes "/" */
			len -= n - 1;
			s[0] = '/';
		} else if (starts(s, len, "/../") || is(s, len, "/..")) { /* C */
			size_t n = starts(s, len, "/../") ? 4 : 3;
			s += n - 1;
			len -= n - 1;
			s[0] = '/';
			if (w == 0)
				*climbed = true;
			while (w > 0 && out[--w] != '/')
				;
		} else if (is(s, len, ".") || is(s, len, "..")) { /* D */
			len = 0;
		} else { /* E */
			size_t n = 1;
			while (n < len && s[n] != '/')
				n++;
			memcpy(out + w, s, n);
			w += n;
			s += n;
			len -= n;
		}
	}
	return w;
}

static void check_accepted(const char *in, size_t len, const char *out, size_t n)
{
	if (n == 0 || n > len || out[0] != '/')
		abort();
	for (size_t i = 0; i < n; i++) {
		if (out[i] == '%' && i + 2 < n && out[i + 1] == '2' && (out[i + 2] | 0x20) == 'e')
			abort();
		if (out[i] != '/')
			continue;
		size_t e = i + 1;
		while (e < n && out[e] != '/')
			e++;
		if (is(out + i + 1, e - i - 1, ".") || is(out + i + 1, e - i - 1, ".."))
			abort();
	}
	char again[MAX_PATH + 1];
	const char *why;
	if (path_normalize(out, n, again, &why) != (ssize_t)n || memcmp(again, out, n) != 0)
		abort();
	char dots[MAX_PATH + 1], ref[MAX_PATH + 1];
	bool climbed;
	size_t rn = remove_dot_segments(dots, decode_dots(in, len, dots), ref, &climbed);
	if (climbed || rn != n || memcmp(ref, out, n) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size >= MAX_PATH)
		return 0;
	char in[MAX_PATH + 1], out[MAX_PATH + 1], inplace[MAX_PATH + 1];
	size_t len = 0;
	if (size == 0 || data[0] != '/')
		in[len++] = '/';
	memcpy(in + len, data, size);
	len += size;
	memcpy(inplace, in, len);
	const char *why = NULL, *why_inplace = NULL;
	ssize_t n = path_normalize(in, len, out, &why);
	ssize_t n_inplace = path_normalize(inplace, len, inplace, &why_inplace);
	if (n != n_inplace)
		abort();
	if (n < 0) {
		if (!why || why != why_inplace)
			abort();
		return 0;
	}
	if (memcmp(out, inplace, (size_t)n) != 0)
		abort();
	check_accepted(in, len, out, (size_t)n);
	return 0;
}
