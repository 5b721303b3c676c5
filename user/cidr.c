#include "cidr.h"

#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#define MAPPED_PREFIX_LEN 96 /* ::ffff:0:0/96 */

static const uint8_t mapped_head[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

void cidr_mask(uint8_t *addr, unsigned plen, unsigned max_bits)
{
	unsigned byte = plen / 8;

	if (plen >= max_bits)
		return;
	if (plen % 8)
		addr[byte++] &= (uint8_t)(0xff00u >> (plen % 8));
	memset(addr + byte, 0, max_bits / 8 - byte);
}

/* A prefix length: one to three decimal digits (no sign, no space), at most max. */
static int parse_plen(const char *p, unsigned max, unsigned *out)
{
	size_t digits = strspn(p, "0123456789");
	unsigned v = 0;

	if (digits == 0 || digits > 3 || p[digits] != '\0')
		return -1;
	for (size_t i = 0; i < digits; i++)
		v = v * 10 + (unsigned)(p[i] - '0');
	if (v > max)
		return -1;
	*out = v;
	return 0;
}

int cidr_parse(const char *text, struct cidr *out, const char **why)
{
	static const char *const bad_syntax = "expected ADDRESS or ADDRESS/PREFIX_LENGTH";
	char addr[INET6_ADDRSTRLEN];
	struct cidr c = {0};

	*why = bad_syntax;
	if (!text || strnlen(text, CIDR_TEXT_MAX + 1) > CIDR_TEXT_MAX)
		return -1;
	const char *slash = strchr(text, '/');
	size_t alen = slash ? (size_t)(slash - text) : strlen(text);
	if (alen == 0 || alen >= sizeof(addr))
		return -1;
	memcpy(addr, text, alen);
	addr[alen] = '\0';
	c.family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(c.family, addr, c.addr) != 1)
		return -1;
	c.plen = cidr_max_len(c.family);
	if (slash && parse_plen(slash + 1, c.plen, &c.plen) < 0) {
		*why = c.family == AF_INET ? "the prefix length of an IPv4 address is 0 to 32"
					   : "the prefix length of an IPv6 address is 0 to 128";
		return -1;
	}
	if (c.family == AF_INET6 && memcmp(c.addr, mapped_head, sizeof(mapped_head)) == 0) {
		if (c.plen < MAPPED_PREFIX_LEN) {
			*why = "an IPv4-mapped prefix (::ffff:a.b.c.d/N) stands for IPv4 "
			       "addresses and needs N of 96 or more (N - 96 is the IPv4 "
			       "prefix length)";
			return -1;
		}
		c.family = AF_INET;
		c.plen -= MAPPED_PREFIX_LEN;
		memmove(c.addr, c.addr + sizeof(mapped_head), 4);
		memset(c.addr + 4, 0, sizeof(c.addr) - 4);
	}
	cidr_mask(c.addr, c.plen, cidr_max_len(c.family));
	*out = c;
	*why = NULL;
	return 0;
}

int cidr_format(const struct cidr *c, char *out, size_t outlen)
{
	char txt[INET6_ADDRSTRLEN];

	if (!inet_ntop(c->family, c->addr, txt, sizeof(txt)))
		return -1;
	int n = snprintf(out, outlen, "%s/%u", txt, c->plen);
	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

int cidr_canonical(const char *text, char *out, size_t outlen, const char **why)
{
	struct cidr c;

	if (cidr_parse(text, &c, why) < 0)
		return -1;
	if (cidr_format(&c, out, outlen) < 0) {
		*why = "no room for the canonical form";
		return -1;
	}
	return 0;
}

int cidr_of_peer(const struct sockaddr *peer, struct cidr *out)
{
	memset(out, 0, sizeof(*out));
	if (peer->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)peer;
		out->family = AF_INET;
		out->plen = 32;
		memcpy(out->addr, &in->sin_addr, 4);
		return 0;
	}
	if (peer->sa_family != AF_INET6)
		return -1;
	const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)peer;
	if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
		out->family = AF_INET;
		out->plen = 32;
		memcpy(out->addr, in6->sin6_addr.s6_addr + 12, 4);
		return 0;
	}
	out->family = AF_INET6;
	out->plen = 128;
	memcpy(out->addr, &in6->sin6_addr, 16);
	return 0;
}
