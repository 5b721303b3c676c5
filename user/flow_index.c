/* Writer of the flow index (include/psd2edge_abi.h). Entries are rewritten in place through the
 * mmap-ed arrays under a sequence count, as a seqlock: the count goes odd, the key and slot
 * change, the count goes even. XDP reads the count, the entry, the count again, and searches the
 * hash whenever the two counts differ or are odd. On x86 (stores ordered with stores, loads with
 * loads) the fences below are compiler barriers and XDP's volatile loads need none. One mutex
 * serialises the workers; flow changes happen once per connection. */
#include "flow_index.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

struct entry_head { /* what both entry types start with; the key follows */
	uint32_t seq;
	uint32_t overflow;
	uint32_t slot;
};

_Static_assert(sizeof(struct psd2_flow_index_v4) == 24, "struct psd2_flow_index_v4 layout");
_Static_assert(sizeof(struct psd2_flow_index_v6) == 48, "struct psd2_flow_index_v6 layout");
_Static_assert(offsetof(struct psd2_flow_index_v4, key) == sizeof(struct entry_head), "v4 key");
_Static_assert(offsetof(struct psd2_flow_index_v6, key) == sizeof(struct entry_head), "v6 key");

struct table {
	uint8_t *base;
	size_t map_len, entry_size, key_len;
	uint32_t n;
};

struct flow_index {
	struct table v4, v6;
	pthread_mutex_t lock;
};

static int table_map(struct table *t, int fd, uint32_t n, size_t entry_size, size_t key_len)
{
	long page = sysconf(_SC_PAGESIZE);

	t->n = n;
	t->entry_size = entry_size;
	t->key_len = key_len;
	t->map_len = ((size_t)n * entry_size + (size_t)page - 1) / (size_t)page * (size_t)page;
	t->base = mmap(NULL, t->map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (t->base == MAP_FAILED) {
		t->base = NULL;
		return -1;
	}
	return 0;
}

struct flow_index *flow_index_open(int fd_v4, int fd_v6)
{
	struct flow_index *fi = calloc(1, sizeof(*fi));
	int e;

	if (!fi)
		return NULL;
	if (table_map(&fi->v4, fd_v4, PSD2_FLOW_INDEX_V4_SIZE, sizeof(struct psd2_flow_index_v4),
		      sizeof(struct psd2_flow_key)) ||
	    table_map(&fi->v6, fd_v6, PSD2_FLOW_INDEX_V6_SIZE, sizeof(struct psd2_flow_index_v6),
		      sizeof(struct psd2_flow6_key))) {
		e = errno;
		flow_index_close(fi);
		errno = e;
		return NULL;
	}
	pthread_mutex_init(&fi->lock, NULL);
	return fi;
}

void flow_index_close(struct flow_index *fi)
{
	if (!fi)
		return;
	if (fi->v4.base)
		munmap(fi->v4.base, fi->v4.map_len);
	if (fi->v6.base)
		munmap(fi->v6.base, fi->v6.map_len);
	if (fi->v4.base && fi->v6.base)
		pthread_mutex_destroy(&fi->lock);
	free(fi);
}

static struct entry_head *entry_at(const struct table *t, uint32_t i)
{
	return (struct entry_head *)(t->base + (size_t)i * t->entry_size);
}

static uint8_t *entry_key(struct entry_head *h)
{
	return (uint8_t *)(h + 1);
}

static bool key_is_empty(const uint8_t *k, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (k[i])
			return false;
	return true;
}

/* key NULL: the entry becomes empty. */
static void entry_write(const struct table *t, struct entry_head *h, const void *key,
			uint32_t slot)
{
	uint32_t seq = __atomic_load_n(&h->seq, __ATOMIC_RELAXED) | 1;

	__atomic_store_n(&h->seq, seq, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
	if (key)
		memcpy(entry_key(h), key, t->key_len);
	else
		memset(entry_key(h), 0, t->key_len);
	h->slot = key ? slot : 0;
	__atomic_thread_fence(__ATOMIC_RELEASE);
	__atomic_store_n(&h->seq, seq + 1, __ATOMIC_RELAXED);
}

static void set_overflow(struct entry_head *h, uint32_t v)
{
	__atomic_store_n(&h->overflow, v, __ATOMIC_RELAXED);
}

static void change(struct flow_index *fi, struct table *t, uint32_t i, const void *key,
		   uint32_t slot, enum flow_index_op op)
{
	struct entry_head *h;
	bool holds;

	pthread_mutex_lock(&fi->lock);
	h = entry_at(t, i);
	holds = memcmp(entry_key(h), key, t->key_len) == 0;
	switch (op) {
	case FLOW_INDEX_ADD:
		if (holds || key_is_empty(entry_key(h), t->key_len))
			entry_write(t, h, key, slot);
		else
			set_overflow(h, h->overflow + 1); /* only in the hash */
		break;
	case FLOW_INDEX_SET:
		if (holds)
			entry_write(t, h, key, slot);
		break;
	case FLOW_INDEX_DEL:
		if (holds)
			entry_write(t, h, NULL, 0);
		else if (h->overflow)
			set_overflow(h, h->overflow - 1);
		break;
	}
	pthread_mutex_unlock(&fi->lock);
}

void flow_index_update_v4(struct flow_index *fi, const struct psd2_flow_key *k, uint32_t slot,
			  enum flow_index_op op)
{
	change(fi, &fi->v4, psd2_flow_hash_v4(k), k, slot, op);
}

void flow_index_update_v6(struct flow_index *fi, const struct psd2_flow6_key *k, uint32_t slot,
			  enum flow_index_op op)
{
	change(fi, &fi->v6, psd2_flow_hash_v6(k), k, slot, op);
}

static void table_clear(struct table *t)
{
	for (uint32_t i = 0; i < t->n; i++) {
		struct entry_head *h = entry_at(t, i);

		if (!key_is_empty(entry_key(h), t->key_len))
			entry_write(t, h, NULL, 0);
		if (h->overflow)
			set_overflow(h, 0);
	}
}

void flow_index_clear(struct flow_index *fi)
{
	pthread_mutex_lock(&fi->lock);
	table_clear(&fi->v4);
	table_clear(&fi->v6);
	pthread_mutex_unlock(&fi->lock);
}
