/* The flow index's bookkeeping against a model: random adds, slot changes and deletes of flows
 * crafted to collide on a few entries, after which every entry must hold one of its live flows
 * (with that flow's slot) or be empty, and count in `overflow` exactly its other live flows. The
 * arrays are real BPF maps (ARRAY, BPF_F_MMAPABLE) as the XDP program declares them; no program
 * is loaded. Needs root, like the other BPF tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "precondition.h"

#include <arpa/inet.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>

#include "flow_index.h"

#define N_FLOWS 64  /* candidate flows, over N_SPOTS entries */
#define N_SPOTS 4   /* distinct index entries they land on */
#define N_STEPS 5000

struct model_flow {
	struct psd2_flow_key k;
	uint32_t i;     /* its index entry */
	bool live;
	uint32_t slot;
};

static int map_create(size_t value_size, uint32_t entries)
{
	LIBBPF_OPTS(bpf_map_create_opts, o, .map_flags = BPF_F_MMAPABLE);

	return bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, (uint32_t)value_size, entries, &o);
}

/* N_FLOWS IPv4 keys falling on N_SPOTS entries: peers 198.51.100.x, any port. */
static void craft_flows(struct model_flow *f)
{
	uint32_t spots[N_SPOTS];
	int n = 0, n_spots = 0;

	for (uint32_t port = 1024; n < N_FLOWS && port < 65536; port++) {
		for (int host = 1; host < 255 && n < N_FLOWS; host++) {
			struct psd2_flow_key k = { .sport = htons((uint16_t)port), .dport = htons(8443) };
			uint8_t src[4] = { 198, 51, 100, (uint8_t)host }, dst[4] = { 192, 0, 2, 1 };
			uint32_t i;
			int s;

			memcpy(k.saddr, src, 4);
			memcpy(k.daddr, dst, 4);
			i = psd2_flow_hash_v4(&k);
			for (s = 0; s < n_spots && spots[s] != i; s++)
				;
			if (s == n_spots) {
				if (n_spots == N_SPOTS)
					continue;
				spots[n_spots++] = i;
			}
			f[n++] = (struct model_flow){ .k = k, .i = i };
		}
	}
	assert_int_equal(n, N_FLOWS);
}

static void check(int fd, const struct model_flow *f)
{
	for (int a = 0; a < N_FLOWS; a++) {
		struct psd2_flow_index_v4 e;
		uint32_t others = 0;
		int held = -1;

		assert_int_equal(bpf_map_lookup_elem(fd, &f[a].i, &e), 0);
		assert_int_equal(e.seq % 2, 0);
		for (int b = 0; b < N_FLOWS; b++) {
			if (f[b].i != f[a].i || !f[b].live)
				continue;
			if (memcmp(&e.key, &f[b].k, sizeof(e.key)) == 0)
				held = b;
			else
				others++;
		}
		if (held >= 0)
			assert_int_equal(e.slot, f[held].slot);
		else
			assert_int_equal(e.key.dport, 0); /* empty */
		assert_int_equal(e.overflow, others);
	}
}

static void test_model(void **state)
{
	(void)state;
	struct model_flow *f;
	struct flow_index *fi;
	int fd4, fd6;

	if (geteuid() != 0)
		precondition_missing("root");
	f = calloc(N_FLOWS, sizeof(*f));
	assert_non_null(f);
	fd4 = map_create(sizeof(struct psd2_flow_index_v4), PSD2_FLOW_INDEX_V4_SIZE);
	fd6 = map_create(sizeof(struct psd2_flow_index_v6), PSD2_FLOW_INDEX_V6_SIZE);
	assert_true(fd4 >= 0 && fd6 >= 0);
	fi = flow_index_open(fd4, fd6);
	assert_non_null(fi);
	craft_flows(f);
	srand(7);
	for (int step = 0; step < N_STEPS; step++) {
		struct model_flow *m = &f[rand() % N_FLOWS];
		uint32_t slot = (uint32_t)(rand() % 1000);

		if (!m->live) {
			flow_index_update_v4(fi, &m->k, slot, FLOW_INDEX_ADD);
			m->live = true;
			m->slot = slot;
		} else if (rand() % 3 == 0) {
			flow_index_update_v4(fi, &m->k, slot, FLOW_INDEX_SET);
			m->slot = slot;
		} else {
			flow_index_update_v4(fi, &m->k, 0, FLOW_INDEX_DEL);
			m->live = false;
		}
		if (step % 50 == 0)
			check(fd4, f);
	}
	check(fd4, f);
	flow_index_clear(fi);
	for (int a = 0; a < N_FLOWS; a++)
		f[a].live = false;
	check(fd4, f);
	flow_index_close(fi);
	close(fd4);
	close(fd6);
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_model),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
