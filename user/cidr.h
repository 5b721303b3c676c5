/* Address prefixes of the deny-list: the one parser of CIDR text, shared by the registry (which
 * stores the canonical text), the control socket (which reports why a text is refused), the XDP
 * maps and the daemon's own deny set (user/denyset.h).
 *
 * IPv4 is IPv4 everywhere: XDP looks IPv4 packets up in the IPv4 trie, and the daemon checks a
 * dual-stack listener's IPv4-mapped peer (::ffff:a.b.c.d) as its IPv4 address. So the mapped
 * form of a prefix is taken as the IPv4 prefix it stands for; stored as an IPv6 prefix it would
 * never match anything. */
#ifndef PSD2EDGE_CIDR_H
#define PSD2EDGE_CIDR_H

#include <arpa/inet.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 4) /* address, '/', up to three digits */

struct cidr {
	int family;       /* AF_INET or AF_INET6 */
	unsigned plen;    /* 0..32 or 0..128 */
	uint8_t addr[16]; /* network order, host bits cleared; IPv4 in the first 4 bytes */
};

/* Parses "ADDRESS/PREFIX_LENGTH" or a bare address (a single host: /32, /128). An IPv4-mapped
 * prefix ::ffff:a.b.c.d/N becomes a.b.c.d/(N - 96); with N below 96 it would cover more than
 * the mapped range and is refused. 0, or -1 with *why (a static string) saying what is wrong. */
int cidr_parse(const char *text, struct cidr *out, const char **why);

/* The canonical text: host bits cleared, IPv6 compressed and lowercase, the length always
 * written ("10.0.0.0/8", "2001:db8::/32"). 0, or -1 when out is too small. */
int cidr_format(const struct cidr *c, char *out, size_t outlen);

/* cidr_parse, then cidr_format into out (CIDR_TEXT_MAX + 1 bytes always suffice): the form the
 * registry stores. 0, or -1 with *why. */
int cidr_canonical(const char *text, char *out, size_t outlen, const char **why);

/* The single-host prefix of a socket peer (AF_INET or AF_INET6; an IPv4-mapped IPv6 peer is
 * its IPv4 address). -1 for any other family. */
int cidr_of_peer(const struct sockaddr *peer, struct cidr *out);

/* Clears every bit of addr (max_bits long) from bit plen on. */
void cidr_mask(uint8_t *addr, unsigned plen, unsigned max_bits);

static inline unsigned cidr_max_len(int family)
{
	return family == AF_INET ? 32 : 128;
}

#endif
