/* Route matching (see route.h): each prefix, longest first, is walked against the path, the
 * path's escapes decoded, letters folded to lower case and runs of '/' taken as one. Decoding
 * every escape is safe: a prefix holds only unreserved characters and '/', and an escape can
 * only ever equal the unreserved character it encodes ('/' itself is matched raw only). */
#include "route.h"

#include <stdbool.h>

#include "hex.h"

static unsigned char ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* The character at path[*j], a percent-escape decoded; *j moves past it. */
static unsigned char path_char(const char *path, size_t len, size_t *j)
{
	unsigned char c = (unsigned char)path[*j];
	int hi = c == '%' && len - *j >= 3 ? hex_digit_value(path[*j + 1]) : -1;
	int lo = hi >= 0 ? hex_digit_value(path[*j + 2]) : -1;
	if (lo < 0) {
		(*j)++;
		return c;
	}
	*j += 3;
	return (unsigned char)(hi << 4 | lo);
}

/* Whether prefix (not "/") matches the start of path up to a segment boundary. */
static bool prefix_matches(const char *prefix, const char *path, size_t len)
{
	size_t j = 0;
	for (const char *p = prefix; *p; p++) {
		if (j == len)
			return false;
		if (*p == '/') {
			if (path[j] != '/')
				return false;
			while (j < len && path[j] == '/')
				j++;
		} else if (ascii_lower(path_char(path, len, &j)) !=
			   ascii_lower((unsigned char)*p)) {
			return false;
		}
	}
	return j == len || path[j] == '/' || path[j] == '?';
}

int route_match(const struct config *cfg, const char *path, size_t len)
{
	for (unsigned i = 0; i < cfg->n_routes; i++) {
		const char *prefix = cfg->routes[i].prefix;
		if (prefix[1] == '\0' || prefix_matches(prefix, path, len))
			return (int)i;
	}
	return -1;
}
