#include "denyset.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DENYSET_MIN_CAP 16

/* One family's prefixes, sorted longest first and then by address, and the lengths present,
 * longest first: a lookup masks the peer's address to each length in turn and searches for it,
 * so the first hit is the longest covering prefix, as in an LPM trie. */
struct deny_family {
	struct cidr *v;
	size_t n, cap;
	unsigned n_lens;
	uint8_t lens[129];
};

/* A rwlock rather than an immutable snapshot swapped atomically: the snapshot would spare the
 * readers the lock's shared counter, but freeing the old one needs to know when its last reader
 * has left (epochs, hazard pointers, or a reference count, which is that same shared counter
 * again). The lock costs one atomic on a shared cache line per accept, nothing next to the
 * accept() before it and the TLS handshake after it, and it is plainly correct. Writers are
 * preferred, so that a flood of accepts cannot hold back a deny add. */
struct denyset {
	pthread_rwlock_t lock;
	struct deny_family fam[2]; /* IPv4, IPv6 */
};

static struct deny_family *family_of(struct denyset *ds, int family)
{
	return &ds->fam[family == AF_INET6];
}

static int cidr_order(const struct cidr *a, const struct cidr *b)
{
	if (a->plen != b->plen)
		return a->plen > b->plen ? -1 : 1;
	return memcmp(a->addr, b->addr, sizeof(a->addr));
}

/* The index of c, or where it would go. */
static size_t lower_bound(const struct deny_family *f, const struct cidr *c)
{
	size_t lo = 0, hi = f->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (cidr_order(&f->v[mid], c) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static bool holds_at(const struct deny_family *f, size_t at, const struct cidr *c)
{
	return at < f->n && cidr_order(&f->v[at], c) == 0;
}

static void lens_rebuild(struct deny_family *f)
{
	f->n_lens = 0;
	for (size_t i = 0; i < f->n; i++)
		if (f->n_lens == 0 || f->lens[f->n_lens - 1] != f->v[i].plen)
			f->lens[f->n_lens++] = (uint8_t)f->v[i].plen;
}

struct denyset *denyset_new(void)
{
	struct denyset *ds = calloc(1, sizeof(*ds));
	pthread_rwlockattr_t attr;

	if (!ds)
		return NULL;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	int rc = pthread_rwlock_init(&ds->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (rc != 0) {
		free(ds);
		return NULL;
	}
	return ds;
}

void denyset_free(struct denyset *ds)
{
	if (!ds)
		return;
	pthread_rwlock_destroy(&ds->lock);
	free(ds->fam[0].v);
	free(ds->fam[1].v);
	free(ds);
}

/* The prefix as stored: host bits cleared, so that equal networks compare equal. */
static struct cidr canonical(const struct cidr *c)
{
	struct cidr k = *c;

	cidr_mask(k.addr, k.plen, cidr_max_len(k.family));
	return k;
}

int denyset_add(struct denyset *ds, const struct cidr *c)
{
	struct cidr k = canonical(c);
	int rc = 0;

	pthread_rwlock_wrlock(&ds->lock);
	struct deny_family *f = family_of(ds, k.family);
	size_t at = lower_bound(f, &k);
	if (holds_at(f, at, &k))
		goto out;
	if (f->n == f->cap) {
		size_t cap = f->cap ? f->cap * 2 : DENYSET_MIN_CAP;
		struct cidr *v = realloc(f->v, cap * sizeof(*v));
		if (!v) {
			rc = -1;
			goto out;
		}
		f->v = v;
		f->cap = cap;
	}
	memmove(&f->v[at + 1], &f->v[at], (f->n - at) * sizeof(*f->v));
	f->v[at] = k;
	f->n++;
	lens_rebuild(f);
out:
	pthread_rwlock_unlock(&ds->lock);
	return rc;
}

void denyset_del(struct denyset *ds, const struct cidr *c)
{
	struct cidr k = canonical(c);

	pthread_rwlock_wrlock(&ds->lock);
	struct deny_family *f = family_of(ds, k.family);
	size_t at = lower_bound(f, &k);
	if (holds_at(f, at, &k)) {
		memmove(&f->v[at], &f->v[at + 1], (f->n - at - 1) * sizeof(*f->v));
		f->n--;
		lens_rebuild(f);
	}
	pthread_rwlock_unlock(&ds->lock);
}

bool denyset_match(struct denyset *ds, const struct sockaddr *peer, struct cidr *hit)
{
	struct cidr probe;
	bool found = false;

	if (cidr_of_peer(peer, &probe) < 0)
		return false;
	pthread_rwlock_rdlock(&ds->lock);
	const struct deny_family *f = family_of(ds, probe.family);
	/* Lengths go from the longest down, so each mask only clears more of the address. */
	for (unsigned i = 0; i < f->n_lens && !found; i++) {
		probe.plen = f->lens[i];
		cidr_mask(probe.addr, probe.plen, cidr_max_len(probe.family));
		found = holds_at(f, lower_bound(f, &probe), &probe);
	}
	pthread_rwlock_unlock(&ds->lock);
	if (found && hit)
		*hit = probe;
	return found;
}
