/* The daemon's own copy of the deny-list, checked by the workers at every accept: the second
 * line behind XDP, which is not there with bpf.mode off, does not see a listener reached
 * through an interface it is not attached to, and is gone while a link flap has detached it.
 * Same verdicts as XDP's LPM tries: a peer is refused when any prefix of its family covers it
 * (the longest is reported); an IPv4-mapped IPv6 peer is checked as its IPv4 address.
 *
 * Usage: the daemon fills it from the registry at start, and the control thread applies every
 * deny add/del after the registry committed it (as it does for the maps). Workers call
 * denyset_match() from any thread. Once denyset_add() has returned, no later match misses the
 * prefix; so a `deny add` that the CLI saw acknowledged holds for every later connection. */
#ifndef PSD2EDGE_DENYSET_H
#define PSD2EDGE_DENYSET_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "cidr.h"

struct denyset;

struct denyset *denyset_new(void);
void denyset_free(struct denyset *ds);
/* Adding a prefix that is there, or deleting one that is not, changes nothing. add: 0, or -1
 * when out of memory (the set is unchanged). */
int denyset_add(struct denyset *ds, const struct cidr *c);
void denyset_del(struct denyset *ds, const struct cidr *c);
/* True when a prefix covers the peer; then *hit (when non-NULL) is the longest such prefix. */
bool denyset_match(struct denyset *ds, const struct sockaddr *peer, struct cidr *hit);

#endif
