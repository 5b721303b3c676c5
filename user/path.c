/* Request path normalisation (see path.h): remove_dot_segments (RFC 3986 §5.2.4) done one
 * segment at a time. Each segment is validated and copied with its dots decoded, then a "."
 * is dropped and a ".." removes the segment before it; depth counts the segments in the
 * output, so a ".." at depth 0 is the climb above the root that RFC 3986 would silently clamp
 * and that is refused here. The output is written behind the read position (never longer),
 * which is what lets out be the input buffer. */
#include "path.h"

#include <stdbool.h>
#include <string.h>

#include "hex.h"

/* A percent-encoded UTF-8 sequence in progress (RFC 3629 §4): how many continuation bytes are
 * still due and the range the next one must fall in (narrower after E0, ED, F0, F4, which is
 * what excludes overlong forms and surrogates). */
struct utf8_seq {
	unsigned due;
	unsigned char lo, hi;
};

/* Takes one decoded byte; false when the bytes so far cannot be UTF-8. */
static bool utf8_take(struct utf8_seq *u, unsigned char b)
{
	if (u->due) {
		if (b < u->lo || b > u->hi)
			return false;
		u->due--;
		u->lo = 0x80;
		u->hi = 0xbf;
		return true;
	}
	if (b < 0x80)
		return true;
	u->lo = 0x80;
	u->hi = 0xbf;
	if (b >= 0xc2 && b <= 0xdf) {
		u->due = 1;
	} else if (b >= 0xe0 && b <= 0xef) {
		u->due = 2;
		if (b == 0xe0)
			u->lo = 0xa0;
		else if (b == 0xed)
			u->hi = 0x9f;
	} else if (b >= 0xf0 && b <= 0xf4) {
		u->due = 3;
		if (b == 0xf0)
			u->lo = 0x90;
		else if (b == 0xf4)
			u->hi = 0x8f;
	} else {
		return false; /* a continuation byte first, C0/C1 (overlong) or beyond U+10FFFF */
	}
	return true;
}

/* Why a percent-encoded byte may not stand in a path, or NULL. */
static const char *escape_refused(unsigned char b)
{
	if (b == '/' || b == '\\')
		return "encoded slash or backslash in path";
	if (b == '%')
		return "encoded '%' in path (double encoding)";
	if (b == ';')
		return "encoded ';' in path";
	if (b < 0x20 || b == 0x7f)
		return "encoded NUL or control character in path";
	return NULL;
}

/* Why a literal byte may not stand in a path segment, or NULL. */
static const char *char_refused(unsigned char c)
{
	if (c == '\\')
		return "backslash in path";
	if (c == ';')
		return "';' in path (path parameters are not accepted)";
	if (c <= 0x20 || c >= 0x7f)
		return "invalid character in path";
	return NULL;
}

/* Copies the segment that starts at path[*r] (after its '/') to out + *w, dots decoded, up to
 * the next '/' or the end. Returns NULL or the reason it is refused. */
static const char *copy_segment(const char *path, size_t len, size_t *r, char *out, size_t *w)
{
	struct utf8_seq u = {0};
	while (*r < len && path[*r] != '/') {
		unsigned char c = (unsigned char)path[*r];
		if (c != '%') {
			const char *why = u.due ? "percent-encoded bytes in path are not UTF-8"
						: char_refused(c);
			if (why)
				return why;
			out[(*w)++] = (char)c;
			(*r)++;
			continue;
		}
		int hi = len - *r >= 3 ? hex_digit_value(path[*r + 1]) : -1;
		int lo = hi >= 0 ? hex_digit_value(path[*r + 2]) : -1;
		if (lo < 0)
			return "malformed percent-encoding in path";
		unsigned char b = (unsigned char)(hi << 4 | lo);
		const char *why = escape_refused(b);
		if (why)
			return why;
		if (!utf8_take(&u, b))
			return "percent-encoded bytes in path are not UTF-8";
		if (b == '.') {
			out[(*w)++] = '.';
		} else {
			memmove(out + *w, path + *r, 3);
			*w += 3;
		}
		*r += 3;
	}
	return u.due ? "percent-encoded bytes in path are not UTF-8" : NULL;
}

static bool all_dots(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] != '.')
			return false;
	return true;
}

ssize_t path_normalize(const char *path, size_t len, char *out, const char **why)
{
	if (len == 0 || path[0] != '/') {
		*why = "path does not start with '/'";
		return -1;
	}
	size_t r = 0, w = 0, depth = 0;
	while (r < len) {
		size_t seg = w; /* where this segment's '/' goes */
		out[w++] = path[r++];
		*why = copy_segment(path, len, &r, out, &w);
		if (*why)
			return -1;
		size_t seg_len = w - seg - 1;
		if (seg_len == 0 || !all_dots(out + seg + 1, seg_len)) {
			depth++;
			continue;
		}
		if (seg_len > 2) { /* "..." is ".." to some (trailing dots dropped) */
			*why = "segment of dots only in path";
			return -1;
		}
		w = seg; /* "." goes */
		if (seg_len == 2) { /* ".." takes the segment before it along */
			if (depth == 0) {
				*why = "path climbs above its root";
				return -1;
			}
			depth--;
			while (out[--w] != '/')
				;
		}
		if (r == len)
			out[w++] = '/'; /* "/a/." and "/a/b/.." name the directory "/a/" */
	}
	return (ssize_t)w;
}
