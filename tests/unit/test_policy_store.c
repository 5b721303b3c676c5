/* user/policy_store.c against the kernel: the quota and breakers maps pinned on a private
 * bpffs, the quota index rebuilt from the map across a reopen, a full map, reuse of an expired
 * counter, breakers matched by upstream name, the registry checkpoint restored into a new map
 * (a reboot: the pins are gone), and one counter for a key created by many threads at once.
 * Runs in a private mount namespace; needs root (BPF maps, mount). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "precondition.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "config.h"
#include "dataplane.h"
#include "policy_store.h"
#include "registry.h"
#include "spinlock.h"

#define ROOT_MISSING "root, to create BPF maps on a private bpffs (set-up failed)"

struct env {
	char dir[64];
	char bpffs[96];
	char pin_dir[128];
	char registry[128];
	struct config cfg;
	struct registry *reg;
};

static bool namespaced;

static int group_setup(void **state)
{
	(void)state;
	namespaced = geteuid() == 0 && unshare(CLONE_NEWNS) == 0 &&
		     mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) == 0;
	return 0;
}

static void set_upstreams(struct env *e, const char *const *names)
{
	e->cfg.n_upstreams = 0;
	for (; *names; names++)
		snprintf(e->cfg.upstreams[e->cfg.n_upstreams++].name, CONFIG_NAME_MAX + 1, "%s",
			 *names);
}

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	char err[256];

	*state = NULL;
	if (!namespaced || !e) {
		free(e);
		return 0;
	}
	snprintf(e->dir, sizeof(e->dir), "/tmp/psd2e-ps-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->bpffs, sizeof(e->bpffs), "%s/bpf", e->dir);
	snprintf(e->pin_dir, sizeof(e->pin_dir), "%s/psd2edge", e->bpffs);
	snprintf(e->registry, sizeof(e->registry), "%s/registry.db", e->dir);
	e->cfg.bpf.pin_dir = e->pin_dir;
	set_upstreams(e, (const char *const[]){ "default", NULL });
	if (registry_open(e->registry, &e->reg, err, sizeof(err)) < 0)
		fail_msg("registry_open: %s", err);
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;
	char cmd[160];

	if (e) {
		registry_close(e->reg);
		umount2(e->bpffs, MNT_DETACH);
		snprintf(cmd, sizeof(cmd), "rm -rf %s", e->dir);
		assert_int_equal(system(cmd), 0);
		free(e);
	}
	return 0;
}

static struct env *env_of(void **state)
{
	if (!*state)
		precondition_missing(ROOT_MISSING);
	return *state;
}

static struct policy_store *store_open(struct env *e)
{
	struct policy_store *ps = NULL;
	char err[256] = "";

	if (policy_store_open(&e->cfg, e->reg, &ps, err, sizeof(err)) < 0)
		fail_msg("policy_store_open: %s", err);
	return ps;
}

/* A reboot empties bpffs. */
static void unpin_maps(struct env *e)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, PSD2_PIN_QUOTA);
	assert_int_equal(unlink(path), 0);
	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, PSD2_PIN_BREAKERS);
	assert_int_equal(unlink(path), 0);
}

/* The pinned map as another process (bpftool, a killed daemon) sees it. */
static void *pinned_map(struct env *e, const char *name, size_t len)
{
	char path[256];
	void *mem;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, name);
	fd = bpf_obj_get(path);
	assert_true(fd >= 0);
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	assert_true(mem != MAP_FAILED);
	close(fd);
	return mem;
}

#define QUOTA_LEN (sizeof(struct psd2_quota) * PSD2_MAX_QUOTA_ENTRIES)
#define BREAKERS_LEN (sizeof(struct psd2_breaker) * PSD2_MAX_BREAKERS)

/* Entries whose key starts with prefix. */
static size_t entries_keyed(const struct psd2_quota *map, const char *prefix)
{
	size_t n = 0;

	for (size_t i = 0; i < PSD2_MAX_QUOTA_ENTRIES; i++)
		n += map[i].name[0] && strncmp(map[i].key, prefix, strlen(prefix)) == 0;
	return n;
}

static void count_in(struct psd2_quota *q, uint64_t count, int64_t updated)
{
	spin_lock(&q->lock);
	q->count = count;
	q->updated = updated;
	spin_unlock(&q->lock);
}

/* --- quota index ---------------------------------------------------------------------------- */

static void test_create_lookup_reopen(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps = store_open(e);
	char long_key[PSD2_QUOTA_KEY_LEN + 1];
	int64_t now = time(NULL);

	struct psd2_quota *q1 = policy_store_quota(ps, "ais", "tpp-1", "", true);
	struct psd2_quota *q2 = policy_store_quota(ps, "ais", "tpp-1", "DE89370400440532013000", true);
	struct psd2_quota *q3 = policy_store_quota(ps, "pis", "tpp-1", "", true);
	assert_non_null(q1);
	assert_non_null(q2);
	assert_non_null(q3);
	assert_true(q1 != q2 && q1 != q3 && q2 != q3);
	assert_string_equal(q2->name, "ais");
	assert_string_equal(q2->client_id, "tpp-1");
	assert_string_equal(q2->key, "DE89370400440532013000");
	assert_int_equal(q2->count, 0);
	assert_true(q2->updated >= now);

	/* Found again, created or not; a missing one is not created by a lookup. */
	assert_ptr_equal(policy_store_quota(ps, "ais", "tpp-1", "", false), q1);
	assert_ptr_equal(policy_store_quota(ps, "ais", "tpp-1", "", true), q1);
	assert_null(policy_store_quota(ps, "ais", "tpp-2", "", false));
	assert_null(policy_store_quota(ps, "ais", "tpp-2", "", false));

	/* An identity that cannot be stored whole is no counter, and the map is not full. */
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	assert_null(policy_store_quota(ps, "ais", "tpp-1", long_key, true));
	assert_null(policy_store_quota(ps, "", "tpp-1", "", true));
	assert_int_equal(policy_store_quota_full(ps), 0);

	count_in(q1, 3, now);
	count_in(q3, 1, now);
	policy_store_close(ps);

	/* A daemon killed while it held q1's lock. */
	struct psd2_quota *map = pinned_map(e, PSD2_PIN_QUOTA, QUOTA_LEN);
	for (size_t i = 0; i < PSD2_MAX_QUOTA_ENTRIES; i++)
		if (strcmp(map[i].name, "ais") == 0 && !map[i].key[0])
			map[i].lock = 1;
	munmap(map, QUOTA_LEN);

	/* The index comes back from the map: same counters, lock released. */
	ps = store_open(e);
	q1 = policy_store_quota(ps, "ais", "tpp-1", "", false);
	q2 = policy_store_quota(ps, "ais", "tpp-1", "DE89370400440532013000", false);
	q3 = policy_store_quota(ps, "pis", "tpp-1", "", false);
	assert_non_null(q1);
	assert_non_null(q2);
	assert_non_null(q3);
	assert_int_equal(q1->count, 3);
	assert_int_equal(q1->lock, 0);
	assert_int_equal(q3->count, 1);
	assert_null(policy_store_quota(ps, "ais", "tpp-2", "", false));
	/* A new counter does not land on a kept one. */
	struct psd2_quota *q4 = policy_store_quota(ps, "ais", "tpp-2", "", true);
	assert_non_null(q4);
	assert_true(q4 != q1 && q4 != q2 && q4 != q3);
	policy_store_close(ps);
}

/* A full map refuses new counters (counted) unless one has expired: two of its windows passed
 * without a count. */
static void test_full_map_and_reuse(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps = store_open(e);
	int64_t now = time(NULL);
	char key[32];

	for (unsigned i = 0; i < PSD2_MAX_QUOTA_ENTRIES; i++) {
		snprintf(key, sizeof(key), "acc-%u", i);
		if (!policy_store_quota(ps, "ais", "tpp-1", key, true))
			fail_msg("counter %u of %u not created", i, PSD2_MAX_QUOTA_ENTRIES);
	}
	assert_int_equal(policy_store_quota_full(ps), 0);

	/* acc-7: counted last more than two hours ago in an hour window; acc-8: a day ago in a
	 * day window (its window may still be running: kept). */
	struct psd2_quota *expired = policy_store_quota(ps, "ais", "tpp-1", "acc-7", false);
	struct psd2_quota *recent = policy_store_quota(ps, "ais", "tpp-1", "acc-8", false);
	spin_lock(&expired->lock);
	expired->window_seconds = 3600;
	expired->count = 4;
	expired->updated = now - 2 * 3600 - 1;
	spin_unlock(&expired->lock);
	spin_lock(&recent->lock);
	recent->window_seconds = 86400;
	recent->count = 4;
	recent->updated = now - 86400;
	spin_unlock(&recent->lock);

	struct psd2_quota *q = policy_store_quota(ps, "ais", "tpp-2", "", true);
	assert_ptr_equal(q, expired);
	assert_string_equal(q->client_id, "tpp-2");
	assert_string_equal(q->key, "");
	assert_int_equal(q->count, 0);
	assert_int_equal(q->window_seconds, 0);
	assert_null(policy_store_quota(ps, "ais", "tpp-1", "acc-7", false));
	assert_ptr_equal(policy_store_quota(ps, "ais", "tpp-1", "acc-8", false), recent);
	assert_ptr_equal(policy_store_quota(ps, "ais", "tpp-2", "", false), q);
	assert_int_equal(policy_store_quota_full(ps), 0);

	/* Nothing else has expired: refused and counted, each time. */
	assert_null(policy_store_quota(ps, "ais", "tpp-3", "", true));
	assert_null(policy_store_quota(ps, "ais", "tpp-1", "acc-7", true));
	assert_int_equal(policy_store_quota_full(ps), 2);
	assert_ptr_equal(policy_store_quota(ps, "ais", "tpp-1", "acc-8", true), recent);
	assert_int_equal(policy_store_quota_full(ps), 2);
	policy_store_close(ps);
}

/* --- breakers ------------------------------------------------------------------------------- */

static void test_breakers_by_name(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps;
	struct psd2_breaker *b, *map;

	set_upstreams(e, (const char *const[]){ "accounts", "payments", NULL });
	ps = store_open(e);
	b = policy_store_breaker(ps, 0);
	assert_string_equal(b->name, "accounts");
	b->state = PSD2_BREAKER_OPEN;
	b->opened_total = 2;
	b = policy_store_breaker(ps, 1);
	assert_string_equal(b->name, "payments");
	b->consecutive_failures = 3;
	b->lock = 1; /* killed while holding it */
	assert_null(policy_store_breaker(ps, 2));
	policy_store_close(ps);

	/* accounts is gone, payments moved to index 0, cards is new. */
	set_upstreams(e, (const char *const[]){ "payments", "cards", NULL });
	ps = store_open(e);
	b = policy_store_breaker(ps, 0);
	assert_string_equal(b->name, "payments");
	assert_int_equal(b->consecutive_failures, 3);
	assert_int_equal(b->lock, 0);
	b = policy_store_breaker(ps, 1);
	assert_string_equal(b->name, "cards");
	assert_int_equal(b->state, PSD2_BREAKER_CLOSED);
	assert_int_equal(b->opened_total, 0);
	map = pinned_map(e, PSD2_PIN_BREAKERS, BREAKERS_LEN);
	for (unsigned i = 0; i < PSD2_MAX_BREAKERS; i++)
		assert_string_not_equal(map[i].name, "accounts");
	munmap(map, BREAKERS_LEN);
	policy_store_close(ps);

	/* Back again: a fresh breaker, not the state it had. */
	set_upstreams(e, (const char *const[]){ "accounts", NULL });
	ps = store_open(e);
	b = policy_store_breaker(ps, 0);
	assert_string_equal(b->name, "accounts");
	assert_int_equal(b->state, PSD2_BREAKER_CLOSED);
	assert_int_equal(b->opened_total, 0);
	policy_store_close(ps);
}

/* --- checkpoint ----------------------------------------------------------------------------- */

struct saved_rows {
	struct registry_quota row[4];
	size_t n;
};

static void collect_row(void *arg, const struct registry_quota *row)
{
	struct saved_rows *s = arg;

	assert_true(s->n < 4);
	s->row[s->n++] = *row;
}

/* The saved row of ("ais", "tpp-1", key); s holds every row. */
static const struct registry_quota *saved_row(struct env *e, struct saved_rows *s, const char *key)
{
	s->n = 0;
	assert_int_equal(registry_quota_load(e->reg, collect_row, s), REG_OK);
	for (size_t i = 0; i < s->n; i++)
		if (strcmp(s->row[i].q.key, key) == 0)
			return &s->row[i];
	fail_msg("no saved row for key '%s'", key);
	return NULL;
}

static void zero_count(struct psd2_quota *q, void *arg)
{
	(void)arg;
	spin_lock(&q->lock);
	q->count = 0;
	spin_unlock(&q->lock);
}

static void test_checkpoint_and_reboot(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps = store_open(e);
	struct saved_rows s;
	int64_t now = time(NULL);

	struct psd2_quota *per_client = policy_store_quota(ps, "ais", "tpp-1", "", true);
	struct psd2_quota *per_account = policy_store_quota(ps, "ais", "tpp-1", "acc", true);
	spin_lock(&per_client->lock);
	per_client->limit = 4;
	per_client->window = PSD2_QUOTA_ROLLING;
	per_client->window_seconds = 3600;
	per_client->window_start = now - 3600;
	per_client->sub[PSD2_QUOTA_SUBWINDOWS] = 2;
	per_client->count = 2;
	per_client->updated = now;
	spin_unlock(&per_client->lock);
	count_in(per_account, 1, now);
	assert_int_equal(policy_store_checkpoint(ps), 0);
	assert_int_equal(saved_row(e, &s, "")->q.count, 2);
	assert_int_equal(saved_row(e, &s, "acc")->q.count, 1);
	assert_int_equal(s.n, 2);

	/* A change is saved by the next checkpoint; a visit (psd2edgectl quota reset) too, even
	 * when the count it leaves was the saved one. */
	count_in(per_client, 3, now);
	assert_int_equal(policy_store_checkpoint(ps), 0);
	assert_int_equal(saved_row(e, &s, "")->q.count, 3);
	assert_int_equal(policy_store_quota_each(ps, "tpp-1", "acc", zero_count, NULL), 1);
	assert_int_equal(policy_store_quota_each(ps, "tpp-2", NULL, zero_count, NULL), 0);
	assert_int_equal(policy_store_checkpoint(ps), 0);
	assert_int_equal(saved_row(e, &s, "acc")->q.count, 0);

	/* Counted after the last checkpoint: close saves it. */
	count_in(per_client, 4, now);
	policy_store_close(ps);
	assert_int_equal(saved_row(e, &s, "")->q.count, 4);

	/* A reboot: the maps are new and filled from the registry. */
	unpin_maps(e);
	ps = store_open(e);
	per_client = policy_store_quota(ps, "ais", "tpp-1", "", false);
	per_account = policy_store_quota(ps, "ais", "tpp-1", "acc", false);
	assert_non_null(per_client);
	assert_non_null(per_account);
	assert_int_equal(per_client->count, 4);
	assert_int_equal(per_client->limit, 4);
	assert_int_equal(per_client->window, PSD2_QUOTA_ROLLING);
	assert_int_equal(per_client->window_seconds, 3600);
	assert_int_equal(per_client->window_start, now - 3600);
	assert_int_equal(per_client->sub[PSD2_QUOTA_SUBWINDOWS], 2);
	assert_int_equal(per_client->updated, now);
	assert_int_equal(per_account->count, 0);
	policy_store_close(ps);

	/* A map that survived (restart, kill -9) is newer than the registry: it wins, and is
	 * saved over the registry's rows by the first checkpoint. */
	struct registry_quota stale = *saved_row(e, &s, "");
	char err[256];
	stale.q.count = 100;
	assert_int_equal(registry_quota_save(e->reg, &stale, 1, err, sizeof(err)), REG_OK);
	ps = store_open(e);
	assert_int_equal(policy_store_quota(ps, "ais", "tpp-1", "", false)->count, 4);
	assert_int_equal(policy_store_checkpoint(ps), 0);
	assert_int_equal(saved_row(e, &s, "")->q.count, 4);
	policy_store_close(ps);
}

/* A pinned map of another layout (an older build) is replaced, and then filled from the
 * registry like a new one. */
static void test_incompatible_pin_replaced(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps = store_open(e);
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	char path[256];
	int fd;

	count_in(policy_store_quota(ps, "ais", "tpp-1", "", true), 2, time(NULL));
	policy_store_close(ps);
	unpin_maps(e);
	LIBBPF_OPTS(bpf_map_create_opts, opts, .map_flags = BPF_F_MMAPABLE);
	fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, "quota", 4, 256, 16, &opts);
	assert_true(fd >= 0);
	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, PSD2_PIN_QUOTA);
	assert_int_equal(bpf_obj_pin(fd, path), 0);
	close(fd);

	ps = store_open(e);
	fd = bpf_obj_get(path);
	assert_true(fd >= 0);
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	close(fd);
	assert_int_equal(info.value_size, sizeof(struct psd2_quota));
	assert_int_equal(info.max_entries, PSD2_MAX_QUOTA_ENTRIES);
	assert_int_equal(policy_store_quota(ps, "ais", "tpp-1", "", false)->count, 2);
	policy_store_close(ps);
}

/* psd2edged --detach removes every pin, these too; the counters come back from the registry. */
static void test_detach_removes_pins(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps = store_open(e);
	char err[256] = "";

	count_in(policy_store_quota(ps, "ais", "tpp-1", "", true), 2, time(NULL));
	policy_store_close(ps);
	assert_int_equal(dataplane_detach(&e->cfg, err, sizeof(err)), 0);
	assert_int_equal(access(e->pin_dir, F_OK), -1);

	ps = store_open(e);
	assert_int_equal(policy_store_quota(ps, "ais", "tpp-1", "", false)->count, 2);
	policy_store_close(ps);
}

/* --- threads -------------------------------------------------------------------------------- */

#define THREADS 8
#define OWN_KEYS 200

struct racer {
	struct policy_store *ps;
	pthread_barrier_t *start;
	unsigned id;
	struct psd2_quota *shared[OWN_KEYS];
};

/* Every thread creates the shared key over and over, and keys of its own in between. */
static void *race(void *arg)
{
	struct racer *r = arg;
	char key[32];

	pthread_barrier_wait(r->start);
	for (unsigned i = 0; i < OWN_KEYS; i++) {
		r->shared[i] = policy_store_quota(r->ps, "ais", "tpp-1", "shared", true);
		snprintf(key, sizeof(key), "own-%u-%u", r->id, i);
		if (!policy_store_quota(r->ps, "ais", "tpp-1", key, true))
			return "own key not created";
	}
	return NULL;
}

static void test_concurrent_creation(void **state)
{
	struct env *e = env_of(state);
	struct policy_store *ps = store_open(e);
	struct racer racers[THREADS];
	pthread_t threads[THREADS];
	pthread_barrier_t start;
	char key[32];

	pthread_barrier_init(&start, NULL, THREADS);
	for (unsigned t = 0; t < THREADS; t++) {
		racers[t] = (struct racer){ .ps = ps, .start = &start, .id = t };
		assert_int_equal(pthread_create(&threads[t], NULL, race, &racers[t]), 0);
	}
	for (unsigned t = 0; t < THREADS; t++) {
		void *why;

		assert_int_equal(pthread_join(threads[t], &why), 0);
		if (why)
			fail_msg("thread %u: %s", t, (const char *)why);
	}
	pthread_barrier_destroy(&start);

	struct psd2_quota *shared = policy_store_quota(ps, "ais", "tpp-1", "shared", false);
	assert_non_null(shared);
	for (unsigned t = 0; t < THREADS; t++)
		for (unsigned i = 0; i < OWN_KEYS; i++)
			assert_ptr_equal(racers[t].shared[i], shared);
	for (unsigned t = 0; t < THREADS; t++) {
		for (unsigned i = 0; i < OWN_KEYS; i++) {
			snprintf(key, sizeof(key), "own-%u-%u", t, i);
			assert_non_null(policy_store_quota(ps, "ais", "tpp-1", key, false));
		}
	}
	/* Each once in the map: found above, and no more entries than keys. */
	struct psd2_quota *map = pinned_map(e, PSD2_PIN_QUOTA, QUOTA_LEN);
	assert_int_equal(entries_keyed(map, "shared"), 1);
	assert_int_equal(entries_keyed(map, "own-"), THREADS * OWN_KEYS);
	munmap(map, QUOTA_LEN);
	policy_store_close(ps);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_create_lookup_reopen),
		T(test_full_map_and_reuse),
		T(test_breakers_by_name),
		T(test_checkpoint_and_reboot),
		T(test_incompatible_pin_replaced),
		T(test_detach_removes_pins),
		T(test_concurrent_creation),
	};
#undef T

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
