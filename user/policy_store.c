/* The policy state in pinned mmapable maps (policy_store.h).
 *
 * Quota index: the map is an array, so finding (name, client_id, key) needs an index in
 * process memory, rebuilt from the map at open. It is a table of buckets of eight 64-bit slots
 * (one cache line each); a counter sits in the emptier of two buckets chosen by a keyed hash
 * (SipHash-1-3 under a random key, so that a TPP cannot pick key values that crowd a bucket).
 * With four slots per entry, a full map puts at most 5 counters in a bucket in simulations (6
 * or 7 with two per entry): a bucket never overflows in practice. A slot holds the hash's high
 * half and the entry's index + 1; 0 is empty. Workers look up without a lock: a slot is
 * published with a release store after its entry is written, and removed (only when an entry
 * is reused) by storing 0. An entry's identity is rewritten only under a sequence count (seq[],
 * odd while it changes), so a lookup never takes a half-written identity for a match.
 * Allocation, reuse and visits run under one mutex.
 *
 * Checkpoint: comparing whole entries every second would read 25 MB; an entry changed when its
 * count, window or updated time did (quota.h changes nothing else without changing one of
 * those), so the checkpoint compares those three with the values it saved last, reading two
 * cache lines per entry in use and writing nothing on the request path. */
#include "policy_store.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include <bpf/libbpf.h>

#include "bpffs.h"
#include "breaker.h"
#include "log.h"
#include "psd2edge_state.skel.h"
#include "registry.h"
#include "spinlock.h"

/* The layouts (include/psd2edge_abi.h); an array map's elements are value_size rounded up to 8
 * apart, so a multiple of 8 makes the mmapped array a C array. */
_Static_assert(sizeof(struct psd2_quota) == 384, "struct psd2_quota layout");
_Static_assert(offsetof(struct psd2_quota, limit) == 272, "psd2_quota.limit offset");
_Static_assert(offsetof(struct psd2_quota, lock) == 372, "psd2_quota.lock offset");
_Static_assert(sizeof(struct psd2_breaker) == 128, "struct psd2_breaker layout");
_Static_assert(sizeof(struct psd2_quota) % 8 == 0 && sizeof(struct psd2_breaker) % 8 == 0,
	       "array elements are 8-byte aligned");
_Static_assert(CONFIG_MAX_UPSTREAMS <= PSD2_MAX_BREAKERS, "a breaker entry per upstream");
_Static_assert(CONFIG_NAME_MAX < PSD2_NAME_LEN, "names fit the maps' name fields");
_Static_assert(REGISTRY_CLIENT_ID_MAX < PSD2_CLIENT_ID_LEN, "client_id fits psd2_quota");
_Static_assert(CONFIG_QUOTA_KEY_MAX < PSD2_QUOTA_KEY_LEN, "key values fit psd2_quota");

#define NO_ENTRY UINT32_MAX
#define BUCKET_SLOTS 8
/* The shortest configurable window; an entry never counted in has window_seconds 0. */
#define MIN_WINDOW_SECONDS 60

/* What the checkpoint last saved of an entry. */
struct quota_mark {
	int64_t updated;
	int64_t window_start;
	uint64_t count;
};

struct policy_store {
	struct registry *reg;
	struct psd2_quota *quota; /* the quota map, mmapped */
	struct psd2_breaker *breakers;
	uint32_t breaker_of[CONFIG_MAX_UPSTREAMS]; /* cfg->upstreams[i] -> entry */
	unsigned n_upstreams;

	uint64_t hash_key[2];
	_Atomic uint64_t *index; /* n_buckets * BUCKET_SLOTS slots */
	uint32_t bucket_mask;
	_Atomic uint32_t *seq; /* per entry: odd while its identity is rewritten */

	pthread_mutex_t lock;  /* allocation, reuse, visits: everything below */
	uint32_t *free_list;   /* free entries, the lowest index on top */
	uint32_t n_free;
	_Atomic uint32_t used_end; /* every entry in use is below this */
	uint32_t reuse_cursor;
	int64_t full_scan_at;  /* when a scan last found nothing to reuse */
	_Atomic uint64_t full; /* counters refused for want of room */

	/* Control thread only. */
	struct quota_mark *saved;
	_Atomic uint64_t *dirty; /* bitmap: entries visited, saved at the next checkpoint */
	struct registry_quota *rows; /* the checkpoint's rows, grown as needed */
	size_t rows_cap;
};

/* --- keyed hash --------------------------------------------------------------------------- */

static uint64_t rotl64(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                           \
	do {                                                                               \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32);               \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2;                                   \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0;                                   \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32);               \
	} while (0)

static uint64_t siphash13(const uint64_t key[2], const uint8_t *in, size_t len)
{
	uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
	uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
	uint64_t last = (uint64_t)len << 56, m;
	size_t i;

	for (i = 0; i + 8 <= len; i += 8) {
		memcpy(&m, in + i, 8);
		v3 ^= m;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; i + j < len; j++)
		last |= (uint64_t)in[i + j] << (8 * j);
	v3 ^= last;
	SIPROUND;
	v0 ^= last;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* --- quota identities and the index -------------------------------------------------------- */

struct quota_id {
	const char *name, *client_id, *key;
	size_t name_len, client_id_len, key_len;
	uint64_t hash;
};

/* false when a part is empty (name) or longer than its field: such a counter cannot exist. */
static bool quota_id_make(const struct policy_store *ps, struct quota_id *id, const char *name,
			  const char *client_id, const char *key)
{
	uint8_t buf[PSD2_NAME_LEN + PSD2_CLIENT_ID_LEN + PSD2_QUOTA_KEY_LEN];

	id->name = name;
	id->client_id = client_id;
	id->key = key;
	id->name_len = strnlen(name, PSD2_NAME_LEN);
	id->client_id_len = strnlen(client_id, PSD2_CLIENT_ID_LEN);
	id->key_len = strnlen(key, PSD2_QUOTA_KEY_LEN);
	if (!id->name_len || id->name_len == PSD2_NAME_LEN ||
	    id->client_id_len == PSD2_CLIENT_ID_LEN || id->key_len == PSD2_QUOTA_KEY_LEN)
		return false;
	/* The three with their NULs: no two identities give the same bytes. */
	memcpy(buf, name, id->name_len + 1);
	memcpy(buf + id->name_len + 1, client_id, id->client_id_len + 1);
	memcpy(buf + id->name_len + id->client_id_len + 2, key, id->key_len + 1);
	id->hash = siphash13(ps->hash_key, buf, id->name_len + id->client_id_len + id->key_len + 3);
	return true;
}

static bool quota_id_of_entry(const struct policy_store *ps, const struct psd2_quota *q,
			      struct quota_id *id)
{
	return memchr(q->name, 0, sizeof(q->name)) && memchr(q->client_id, 0, sizeof(q->client_id)) &&
	       memchr(q->key, 0, sizeof(q->key)) &&
	       quota_id_make(ps, id, q->name, q->client_id, q->key);
}

static uint64_t slot_value(const struct quota_id *id, uint32_t e)
{
	return (id->hash & 0xffffffff00000000ULL) | (e + 1);
}

/* The two buckets of an identity (the same one when they coincide). */
static _Atomic uint64_t *bucket(const struct policy_store *ps, const struct quota_id *id, int which)
{
	uint32_t b = (uint32_t)(which ? id->hash >> 16 : id->hash) & ps->bucket_mask;

	return ps->index + (size_t)b * BUCKET_SLOTS;
}

static bool identity_equal(const struct psd2_quota *q, const struct quota_id *id)
{
	return memcmp(q->name, id->name, id->name_len + 1) == 0 &&
	       memcmp(q->client_id, id->client_id, id->client_id_len + 1) == 0 &&
	       memcmp(q->key, id->key, id->key_len + 1) == 0;
}

/* Whether entry e holds id, read while its identity may be rewritten (the seqlock reader). */
static bool entry_holds(struct policy_store *ps, uint32_t e, const struct quota_id *id)
{
	for (;;) {
		uint32_t s = atomic_load_explicit(&ps->seq[e], memory_order_acquire);
		bool equal = !(s & 1) && identity_equal(&ps->quota[e], id);

		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&ps->seq[e], memory_order_relaxed) == s)
			return equal;
	}
}

static uint32_t index_find(struct policy_store *ps, const struct quota_id *id)
{
	uint32_t tag = (uint32_t)(id->hash >> 32);

	for (int which = 0; which < 2; which++) {
		_Atomic uint64_t *b = bucket(ps, id, which);

		for (int i = 0; i < BUCKET_SLOTS; i++) {
			uint64_t v = atomic_load_explicit(&b[i], memory_order_acquire);
			uint32_t e = (uint32_t)v - 1;

			if ((uint32_t)v && (uint32_t)(v >> 32) == tag && entry_holds(ps, e, id))
				return e;
		}
	}
	return NO_ENTRY;
}

static int bucket_used(_Atomic uint64_t *b)
{
	int n = 0;

	for (int i = 0; i < BUCKET_SLOTS; i++)
		n += atomic_load_explicit(&b[i], memory_order_relaxed) != 0;
	return n;
}

/* The empty slot id goes into (in the emptier bucket), or NULL when both are full. Under the
 * lock. */
static _Atomic uint64_t *index_room(struct policy_store *ps, const struct quota_id *id)
{
	_Atomic uint64_t *b = bucket(ps, id, 0), *b2 = bucket(ps, id, 1);

	if (bucket_used(b2) < bucket_used(b))
		b = b2;
	for (int i = 0; i < BUCKET_SLOTS; i++)
		if (!atomic_load_explicit(&b[i], memory_order_relaxed))
			return &b[i];
	return NULL;
}

static void index_remove(struct policy_store *ps, const struct quota_id *id, uint32_t e)
{
	uint64_t want = slot_value(id, e);

	for (int which = 0; which < 2; which++) {
		_Atomic uint64_t *b = bucket(ps, id, which);

		for (int i = 0; i < BUCKET_SLOTS; i++)
			if (atomic_load_explicit(&b[i], memory_order_relaxed) == want)
				atomic_store_explicit(&b[i], 0, memory_order_release);
	}
}

/* --- allocation and reuse ------------------------------------------------------------------ */

/* No request was counted in it for two of its windows: whatever the window's kind, the
 * counts it holds have expired. */
static bool quota_expired(const struct psd2_quota *q, int64_t now)
{
	int64_t window = __atomic_load_n(&q->window_seconds, __ATOMIC_RELAXED);

	if (window < MIN_WINDOW_SECONDS)
		window = MIN_WINDOW_SECONDS;
	return __atomic_load_n(&q->updated, __ATOMIC_RELAXED) < now - 2 * window;
}

/* Writes id into entry e, zeroed, under the entry's lock (a worker that still holds a pointer
 * to a reused entry counts before or after, never into a half-written one) and an odd
 * sequence count. The name is cleared first and written last, and x86 keeps stores in program
 * order: a process killed half-way leaves a free entry. */
static void quota_write_identity(struct policy_store *ps, uint32_t e, const struct quota_id *id,
				 int64_t now)
{
	struct psd2_quota *q = &ps->quota[e];
	uint32_t s = atomic_load_explicit(&ps->seq[e], memory_order_relaxed);

	atomic_store_explicit(&ps->seq[e], s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	q->name[0] = '\0';
	atomic_signal_fence(memory_order_seq_cst);
	memset(q, 0, offsetof(struct psd2_quota, lock));
	q->updated = now; /* not expired before its first count */
	memcpy(q->client_id, id->client_id, id->client_id_len + 1);
	memcpy(q->key, id->key, id->key_len + 1);
	atomic_signal_fence(memory_order_seq_cst);
	memcpy(q->name, id->name, id->name_len + 1);
	atomic_store_explicit(&ps->seq[e], s + 2, memory_order_release);
}

/* An expired entry, taken out of the index and locked, or NO_ENTRY. A scan that finds none
 * is not repeated within the same second. Under the lock. */
static uint32_t quota_take_expired(struct policy_store *ps, int64_t now)
{
	uint32_t n = atomic_load_explicit(&ps->used_end, memory_order_relaxed);

	if (!n || ps->full_scan_at == now)
		return NO_ENTRY;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t e = ps->reuse_cursor;
		struct psd2_quota *q = &ps->quota[e];
		struct quota_id old;

		ps->reuse_cursor = (e + 1) % n;
		if (!quota_expired(q, now))
			continue;
		spin_lock(&q->lock);
		if (quota_expired(q, now)) { /* not counted in meanwhile */
			if (quota_id_of_entry(ps, q, &old))
				index_remove(ps, &old, e);
			return e;
		}
		spin_unlock(&q->lock);
	}
	ps->full_scan_at = now;
	return NO_ENTRY;
}

static uint32_t quota_alloc(struct policy_store *ps, const struct quota_id *id)
{
	_Atomic uint64_t *slot = index_room(ps, id);
	int64_t now = time(NULL);
	uint32_t e;

	if (!slot) {
		atomic_fetch_add_explicit(&ps->full, 1, memory_order_relaxed);
		return NO_ENTRY;
	}
	if (ps->n_free) {
		e = ps->free_list[--ps->n_free];
		spin_lock(&ps->quota[e].lock);
	} else if ((e = quota_take_expired(ps, now)) == NO_ENTRY) {
		atomic_fetch_add_explicit(&ps->full, 1, memory_order_relaxed);
		return NO_ENTRY;
	}
	quota_write_identity(ps, e, id, now);
	spin_unlock(&ps->quota[e].lock);
	atomic_store_explicit(slot, slot_value(id, e), memory_order_release);
	if (e >= atomic_load_explicit(&ps->used_end, memory_order_relaxed))
		atomic_store_explicit(&ps->used_end, e + 1, memory_order_release);
	return e;
}

struct psd2_quota *policy_store_quota(struct policy_store *ps, const char *name,
				      const char *client_id, const char *key, bool create)
{
	struct quota_id id;
	uint32_t e;

	if (!quota_id_make(ps, &id, name, client_id, key))
		return NULL;
	e = index_find(ps, &id);
	if (e == NO_ENTRY && create) {
		pthread_mutex_lock(&ps->lock);
		e = index_find(ps, &id);
		if (e == NO_ENTRY)
			e = quota_alloc(ps, &id);
		pthread_mutex_unlock(&ps->lock);
	}
	return e == NO_ENTRY ? NULL : &ps->quota[e];
}

uint64_t policy_store_quota_full(const struct policy_store *ps)
{
	return atomic_load_explicit(&ps->full, memory_order_relaxed);
}

uint32_t policy_store_quota_used(struct policy_store *ps)
{
	pthread_mutex_lock(&ps->lock);
	uint32_t used = PSD2_MAX_QUOTA_ENTRIES - ps->n_free;
	pthread_mutex_unlock(&ps->lock);
	return used;
}

static void mark_dirty(struct policy_store *ps, uint32_t e)
{
	atomic_fetch_or_explicit(&ps->dirty[e / 64], 1ULL << (e % 64), memory_order_relaxed);
}

size_t policy_store_quota_each(struct policy_store *ps, const char *client_id, const char *key,
			       void (*fn)(struct psd2_quota *q, void *arg), void *arg)
{
	size_t n = 0;

	pthread_mutex_lock(&ps->lock); /* identities stay as they are */
	for (uint32_t e = 0; e < atomic_load_explicit(&ps->used_end, memory_order_relaxed); e++) {
		struct psd2_quota *q = &ps->quota[e];

		if (!q->name[0] || strcmp(q->client_id, client_id) != 0 ||
		    (key && strcmp(q->key, key) != 0))
			continue;
		fn(q, arg);
		mark_dirty(ps, e);
		n++;
	}
	pthread_mutex_unlock(&ps->lock);
	return n;
}

/* --- open: the index from the map, the map from the checkpoint ----------------------------- */

static void quota_restore_row(void *arg, const struct registry_quota *row)
{
	struct policy_store *ps = arg;

	if (row->slot < PSD2_MAX_QUOTA_ENTRIES && !ps->quota[row->slot].name[0]) {
		ps->quota[row->slot] = row->q;
		ps->quota[row->slot].lock = 0;
	}
}

/* Indexes every entry in use. Locks left taken by a killed process are released; an entry
 * that is malformed, a duplicate, or finds no room is freed. */
static void quota_index_build(struct policy_store *ps)
{
	uint32_t used_end = 0, dropped = 0;

	for (uint32_t e = 0; e < PSD2_MAX_QUOTA_ENTRIES; e++) {
		struct psd2_quota *q = &ps->quota[e];
		_Atomic uint64_t *slot = NULL;
		struct quota_id id;

		q->lock = 0;
		if (!q->name[0])
			continue;
		if (!quota_id_of_entry(ps, q, &id) || index_find(ps, &id) != NO_ENTRY ||
		    !(slot = index_room(ps, &id))) {
			memset(q, 0, sizeof(*q));
			dropped++;
			continue;
		}
		atomic_store_explicit(slot, slot_value(&id, e), memory_order_relaxed);
		used_end = e + 1;
	}
	if (dropped)
		log_warn("policy: %u quota entries were malformed, duplicates or found no room in "
			 "the index; freed", dropped);
	atomic_store_explicit(&ps->used_end, used_end, memory_order_relaxed);
	for (uint32_t e = PSD2_MAX_QUOTA_ENTRIES; e-- > 0;)
		if (!ps->quota[e].name[0])
			ps->free_list[ps->n_free++] = e;
}

static struct quota_mark quota_mark_of(const struct psd2_quota *q)
{
	return (struct quota_mark){
		.updated = __atomic_load_n(&q->updated, __ATOMIC_RELAXED),
		.window_start = __atomic_load_n(&q->window_start, __ATOMIC_RELAXED),
		.count = __atomic_load_n(&q->count, __ATOMIC_RELAXED),
	};
}

/* Every configured upstream gets the entry of its name, or a free one; entries of upstreams
 * no longer configured are freed. */
static void breakers_assign(struct policy_store *ps, const struct config *cfg)
{
	bool taken[PSD2_MAX_BREAKERS] = { false };

	ps->n_upstreams = cfg->n_upstreams;
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		ps->breaker_of[i] = NO_ENTRY;
		for (uint32_t j = 0; j < PSD2_MAX_BREAKERS && ps->breaker_of[i] == NO_ENTRY; j++) {
			if (!taken[j] && strncmp(ps->breakers[j].name, cfg->upstreams[i].name,
						 PSD2_NAME_LEN) == 0) {
				ps->breaker_of[i] = j;
				taken[j] = true;
			}
		}
	}
	for (uint32_t j = 0; j < PSD2_MAX_BREAKERS; j++) {
		if (taken[j]) {
			breaker_recover(&ps->breakers[j]);
		} else if (ps->breakers[j].name[0]) {
			log_info("policy: breaker of upstream %.*s dropped (no longer configured)",
				 PSD2_NAME_LEN, ps->breakers[j].name);
			memset(&ps->breakers[j], 0, sizeof(ps->breakers[j]));
		}
	}
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		uint32_t j = 0;

		if (ps->breaker_of[i] != NO_ENTRY)
			continue;
		while (taken[j]) /* CONFIG_MAX_UPSTREAMS <= PSD2_MAX_BREAKERS: one is free */
			j++;
		memset(&ps->breakers[j], 0, sizeof(ps->breakers[j]));
		snprintf(ps->breakers[j].name, PSD2_NAME_LEN, "%s", cfg->upstreams[i].name);
		ps->breaker_of[i] = j;
		taken[j] = true;
	}
}

static void *map_array(struct bpf_map *map, size_t len)
{
	void *mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, bpf_map__fd(map), 0);

	return mem == MAP_FAILED ? NULL : mem;
}

/* Loads (reusing or creating and pinning) both maps and maps them. *quota_is_new when the
 * quota map did not exist before. */
static int maps_open(struct policy_store *ps, const char *pin_dir, bool *quota_is_new, char *err,
		     size_t errlen)
{
	struct psd2edge_state_bpf *skel = psd2edge_state_bpf__open();
	struct bpf_map *maps[2];
	const char *names[2] = { PSD2_PIN_QUOTA, PSD2_PIN_BREAKERS };
	char path[PATH_MAX];
	int pinned[2], rc = -1;

	if (!skel) {
		snprintf(err, errlen, "bpf: cannot open the policy state object: %s", strerror(errno));
		return -1;
	}
	maps[0] = skel->maps.quota;
	maps[1] = skel->maps.breakers;
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", pin_dir, names[i]);
		pinned[i] = bpffs_pin_check(maps[i], path);
		if (pinned[i] < 0) {
			snprintf(err, errlen, "bpf.pin_dir: cannot inspect %s: %s", path,
				 strerror(errno));
			goto out;
		}
		if (bpf_map__set_pin_path(maps[i], path)) {
			snprintf(err, errlen, "bpf.pin_dir: bad pin path %s", path);
			goto out;
		}
	}
	rc = psd2edge_state_bpf__load(skel);
	if (rc) {
		snprintf(err, errlen, "bpf: cannot create the quota and breakers maps in %s: %s",
			 pin_dir, strerror(-rc));
		rc = -1;
		goto out;
	}
	/* The mappings keep the maps; the object is not needed past them. */
	ps->quota = map_array(maps[0], sizeof(struct psd2_quota) * PSD2_MAX_QUOTA_ENTRIES);
	ps->breakers = map_array(maps[1], sizeof(struct psd2_breaker) * PSD2_MAX_BREAKERS);
	if (!ps->quota || !ps->breakers) {
		snprintf(err, errlen, "bpf: cannot map the quota and breakers maps: %s",
			 strerror(errno));
		rc = -1;
		goto out;
	}
	*quota_is_new = !pinned[0];
out:
	psd2edge_state_bpf__destroy(skel);
	return rc;
}

static int index_alloc(struct policy_store *ps)
{
	size_t buckets = 1;

	while (buckets * BUCKET_SLOTS < 4 * (size_t)PSD2_MAX_QUOTA_ENTRIES)
		buckets *= 2;
	ps->bucket_mask = (uint32_t)(buckets - 1);
	ps->index = aligned_alloc(64, buckets * BUCKET_SLOTS * sizeof(*ps->index));
	ps->seq = calloc(PSD2_MAX_QUOTA_ENTRIES, sizeof(*ps->seq));
	ps->free_list = calloc(PSD2_MAX_QUOTA_ENTRIES, sizeof(*ps->free_list));
	ps->saved = calloc(PSD2_MAX_QUOTA_ENTRIES, sizeof(*ps->saved));
	ps->dirty = calloc((PSD2_MAX_QUOTA_ENTRIES + 63) / 64, sizeof(*ps->dirty));
	if (!ps->index || !ps->seq || !ps->free_list || !ps->saved || !ps->dirty)
		return -1;
	memset(ps->index, 0, buckets * BUCKET_SLOTS * sizeof(*ps->index));
	return 0;
}

static void store_free(struct policy_store *ps)
{
	if (ps->quota)
		munmap(ps->quota, sizeof(struct psd2_quota) * PSD2_MAX_QUOTA_ENTRIES);
	if (ps->breakers)
		munmap(ps->breakers, sizeof(struct psd2_breaker) * PSD2_MAX_BREAKERS);
	free(ps->index);
	free(ps->seq);
	free(ps->free_list);
	free(ps->saved);
	free(ps->dirty);
	free(ps->rows);
	pthread_mutex_destroy(&ps->lock);
	free(ps);
}

int policy_store_open(const struct config *cfg, struct registry *reg, struct policy_store **out,
		      char *err, size_t errlen)
{
	struct policy_store *ps = calloc(1, sizeof(*ps));
	bool quota_is_new = false;

	*out = NULL;
	if (!ps) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&ps->lock, NULL);
	ps->reg = reg;
	if (!cfg->bpf.pin_dir) {
		snprintf(err, errlen, "bpf.pin_dir: needed for the quota and breaker state");
		goto fail;
	}
	if (index_alloc(ps) < 0) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (getrandom(ps->hash_key, sizeof(ps->hash_key), 0) != sizeof(ps->hash_key)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		goto fail;
	}
	if (bpffs_ensure_dir(cfg->bpf.pin_dir, err, errlen) < 0 ||
	    maps_open(ps, cfg->bpf.pin_dir, &quota_is_new, err, errlen) < 0)
		goto fail;
	if (quota_is_new) {
		if (registry_quota_load(reg, quota_restore_row, ps) != REG_OK) {
			snprintf(err, errlen, "registry: cannot read the quota checkpoint");
			goto fail;
		}
	}
	quota_index_build(ps);
	for (uint32_t e = 0; e < PSD2_MAX_QUOTA_ENTRIES; e++) {
		if (quota_is_new)
			ps->saved[e] = quota_mark_of(&ps->quota[e]); /* what the registry holds */
		else if (ps->quota[e].name[0])
			mark_dirty(ps, e); /* the registry may be behind (kill -9): saved again */
	}
	if (quota_is_new)
		log_info("policy: quota map created in %s, %u counters restored from the registry",
			 cfg->bpf.pin_dir, PSD2_MAX_QUOTA_ENTRIES - ps->n_free);
	else
		log_info("policy: quota map reused in %s, %u counters", cfg->bpf.pin_dir,
			 PSD2_MAX_QUOTA_ENTRIES - ps->n_free);
	breakers_assign(ps, cfg);
	*out = ps;
	return 0;
fail:
	store_free(ps);
	return -1;
}

/* --- checkpoint ---------------------------------------------------------------------------- */

static bool rows_room(struct policy_store *ps, size_t n)
{
	size_t cap = ps->rows_cap ? ps->rows_cap : 64;
	struct registry_quota *grown;

	if (n < ps->rows_cap)
		return true;
	while (cap <= n)
		cap *= 2;
	grown = realloc(ps->rows, cap * sizeof(*grown));
	if (!grown)
		return false;
	ps->rows = grown;
	ps->rows_cap = cap;
	return true;
}

static bool mark_equal(const struct quota_mark *a, const struct quota_mark *b)
{
	return a->updated == b->updated && a->window_start == b->window_start &&
	       a->count == b->count;
}

int policy_store_checkpoint(struct policy_store *ps)
{
	uint32_t used_end = atomic_load_explicit(&ps->used_end, memory_order_acquire);
	uint64_t *dirty_seen;
	char err[256];
	size_t n = 0;

	dirty_seen = calloc((used_end + 63) / 64 + 1, sizeof(*dirty_seen));
	if (!dirty_seen)
		return -1;
	for (uint32_t w = 0; w < (used_end + 63) / 64; w++)
		dirty_seen[w] = atomic_exchange_explicit(&ps->dirty[w], 0, memory_order_relaxed);
	for (uint32_t e = 0; e < used_end; e++) {
		struct psd2_quota *q = &ps->quota[e];
		struct quota_mark now = quota_mark_of(q);

		if (!(dirty_seen[e / 64] & (1ULL << (e % 64))) && mark_equal(&now, &ps->saved[e]))
			continue;
		if (!rows_room(ps, n))
			goto fail;
		/* A consistent copy: the workers change entries under their lock. */
		spin_lock(&q->lock);
		ps->rows[n].q = *q;
		spin_unlock(&q->lock);
		ps->rows[n].q.lock = 0;
		ps->rows[n].slot = e;
		if (ps->rows[n].q.name[0])
			n++;
	}
	if (n && registry_quota_save(ps->reg, ps->rows, n, err, sizeof(err)) != REG_OK) {
		log_error("policy: quota checkpoint of %zu counters failed (retried in a second): %s",
			  n, err);
		goto fail;
	}
	for (size_t i = 0; i < n; i++)
		ps->saved[ps->rows[i].slot] = quota_mark_of(&ps->rows[i].q);
	free(dirty_seen);
	return 0;
fail:
	/* Saved again next time: the entries it was to save keep differing from ps->saved. */
	for (uint32_t w = 0; w < (used_end + 63) / 64; w++)
		atomic_fetch_or_explicit(&ps->dirty[w], dirty_seen[w], memory_order_relaxed);
	free(dirty_seen);
	return -1;
}

/* --- breakers and close -------------------------------------------------------------------- */

struct psd2_breaker *policy_store_breaker(struct policy_store *ps, unsigned upstream)
{
	return upstream < ps->n_upstreams ? &ps->breakers[ps->breaker_of[upstream]] : NULL;
}

void policy_store_close(struct policy_store *ps)
{
	if (!ps)
		return;
	policy_store_checkpoint(ps);
	store_free(ps);
}
