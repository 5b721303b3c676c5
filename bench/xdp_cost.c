/* Per-packet cost of each verdict path of psd2edge's XDP program, side by side with xdp-filter's
 * packaged full-featured programs (xdpfilt_alw_all.o, xdpfilt_dny_all.o) on the same frames, in
 * the same run, with BPF_PROG_TEST_RUN (repeat N). Prints one JSON object.
 *
 * xdp-filter is given the rules that make it do comparable work: alw_all (default pass) denies
 * the deny-listed sources, dny_all (default drop) allows TCP to the listener port and port 22.
 *
 * usage: xdp_cost [REPEAT] [ROUNDS]   (root) */
/* The path table names only the fields that matter for each row. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "flow_index.h"
#include "psd2edge_abi.h"
#include "psd2edge.skel.h"
#include "xdp_pkt.h"

#define PORT 8443
#define XDPFILT_DIR "/usr/lib/x86_64-linux-gnu/bpf/"

struct path {
	const char *name;   /* psd2edge verdict reason exercised */
	struct bench_pkt pkt;
	int want;           /* psd2edge's action */
	bool syn_open;      /* SYN bucket generous for this path (else: no refill, burst 1) */
};

static const struct path paths[] = {
	{ "pass_not_listener", { "203.0.113.5", "192.0.2.1", 40000, 22, 0x10, .vlan = false }, XDP_PASS },
	{ "pass", { "203.0.113.5", "192.0.2.1", 40000, PORT, 0x10, .vlan = false }, XDP_PASS },
	{ "pass_syn", { "203.0.113.6", "192.0.2.1", 40000, PORT, 0x02, .vlan = false }, XDP_PASS,
	  .syn_open = true },
	{ "pass_flow_v4", { "203.0.113.11", "192.0.2.1", 40000, PORT, 0x10, .vlan = false }, XDP_PASS },
	{ "pass_flow_v6", { "2001:db8:1::11", "2001:db8::1", 40000, PORT, 0x10, .vlan = false }, XDP_PASS },
	{ "pass_flow_policed_ok", { "203.0.113.17", "192.0.2.1", 40000, PORT, 0x10, .vlan = false }, XDP_PASS },
	{ "pass_flow_vlan", { "203.0.113.11", "192.0.2.1", 40000, PORT, 0x10, .vlan = true },
	  XDP_PASS },
	{ "drop_deny_v4", { "198.51.100.7", "192.0.2.1", 40000, PORT, 0x10, .vlan = false }, XDP_DROP },
	{ "drop_deny_v6", { "2001:db8:dead::7", "2001:db8::1", 40000, PORT, 0x10, .vlan = false }, XDP_DROP },
	{ "drop_syn_rate", { "203.0.113.100", "192.0.2.1", 40000, PORT, 0x02, .vlan = false }, XDP_DROP },
	{ "drop_revoked", { "203.0.113.12", "192.0.2.1", 40000, PORT, 0x10, .vlan = false }, XDP_DROP },
	{ "drop_policed", { "203.0.113.14", "192.0.2.1", 40000, PORT, 0x10, .vlan = false }, XDP_DROP },
	{ "drop_fragment", { "203.0.113.5", "192.0.2.1", 40000, PORT, 0x10, .frag_first = true },
	  XDP_DROP },
	{ "drop_malformed", { "203.0.113.5", "192.0.2.1", 40000, PORT, 0x10, .bad_ihl = true },
	  XDP_DROP },
};
#define N_PATHS (sizeof(paths) / sizeof(paths[0]))

static void mapped(const char *text, uint8_t out[16])
{
	memset(out, 0, 16);
	if (strchr(text, ':')) {
		inet_pton(AF_INET6, text, out);
	} else {
		out[10] = out[11] = 0xff;
		inet_pton(AF_INET, text, out + 12);
	}
}

static struct flow_index *flow_index; /* psd2edge's, written as the daemon does */

static void put_flow(struct psd2edge_bpf *s, const char *src, const char *dst, uint32_t slot)
{
	struct psd2_flow6_key k = { .sport = htons(40000), .dport = htons(PORT) };
	struct psd2_flow_key k4 = { .sport = k.sport, .dport = k.dport };
	struct psd2_flow v = { .slot = slot };

	mapped(src, k.saddr);
	mapped(dst, k.daddr);
	if (strchr(src, ':')) {
		if (bpf_map__update_elem(s->maps.flows_v6, &k, sizeof(k), &v, sizeof(v), BPF_NOEXIST) == 0)
			flow_index_update_v6(flow_index, &k, slot, FLOW_INDEX_ADD);
		return;
	}
	memcpy(k4.saddr, k.saddr + 12, 4);
	memcpy(k4.daddr, k.daddr + 12, 4);
	if (bpf_map__update_elem(s->maps.flows, &k4, sizeof(k4), &v, sizeof(v), BPF_NOEXIST) == 0)
		flow_index_update_v4(flow_index, &k4, slot, FLOW_INDEX_ADD);
}

static void put_client(struct psd2edge_bpf *s, uint32_t slot, enum psd2_client_state st,
		       uint64_t pps)
{
	struct psd2_client c = { .state = st, .pps = pps, .burst_pkts = pps ? 1 : 0 };

	snprintf(c.client_id, sizeof(c.client_id), "bench-%u", slot);
	if (pps) {
		c.pkt_interval_ns = 1000000000ULL / pps;
		c.pkt_burst_ns = pps == 1 ? c.pkt_interval_ns : 1000000000ULL;
		/* what user/dataplane.c derives: a quarter of the burst in packets, at most 16 */
		c.pkt_batch = pps == 1 ? 1 : 16;
	}
	bpf_map__update_elem(s->maps.clients, &slot, sizeof(slot), &c, sizeof(c), 0);
}

/* deny_index bits of a prefix, as user/dataplane.c writes them (include/psd2edge_abi.h). */
static void index_bit(struct psd2edge_bpf *s, uint32_t base, uint32_t bit)
{
	uint32_t word = base + (bit >> 6);
	uint64_t v = 0;

	bpf_map__lookup_elem(s->maps.deny_index, &word, 4, &v, 8, 0);
	v |= 1ULL << (bit & 63);
	bpf_map__update_elem(s->maps.deny_index, &word, 4, &v, 8, 0);
}

static void put_deny4(struct psd2edge_bpf *s, const struct psd2_deny_v4_key *k)
{
	struct psd2_deny v = { 0 };
	uint32_t first = (uint32_t)k->addr[0] << 8 | k->addr[1];
	uint32_t n = k->prefixlen >= 16 ? 1 : 1u << (16 - k->prefixlen);

	bpf_map__update_elem(s->maps.deny_v4, k, sizeof(*k), &v, sizeof(v), 0);
	for (uint32_t i = first; i < first + n; i++)
		index_bit(s, PSD2_DENY_INDEX_V4, htons((uint16_t)i));
}

static void put_deny6(struct psd2edge_bpf *s, const struct psd2_deny_v6_key *k)
{
	struct psd2_deny v = { 0 };
	uint32_t w0;
	uint16_t h2;

	bpf_map__update_elem(s->maps.deny_v6, k, sizeof(*k), &v, sizeof(v), 0);
	memcpy(&w0, k->addr, 4);
	memcpy(&h2, k->addr + 4, 2);
	if (k->prefixlen >= 48)
		index_bit(s, PSD2_DENY_INDEX_V6_48, PSD2_DENY_H48(w0, h2));
	else
		index_bit(s, PSD2_DENY_INDEX_V6_32, PSD2_DENY_H32(w0)); /* /32../47 here */
}

static struct psd2edge_bpf *load_psd2edge(void)
{
	struct psd2edge_bpf *s = psd2edge_bpf__open();
	struct psd2_deny_v4_key k4 = { .prefixlen = 24, .addr = { 198, 51, 100, 0 } };
	struct psd2_deny_v6_key k6 = { .prefixlen = 48 };

	if (!s)
		return NULL;
	s->rodata->listen_ports[PORT >> 3] |= 1 << (PORT & 7);
	if (psd2edge_bpf__load(s)) {
		psd2edge_bpf__destroy(s);
		return NULL;
	}
	flow_index = flow_index_open(bpf_map__fd(s->maps.flow_index),
				     bpf_map__fd(s->maps.flow_index_v6));
	if (!flow_index) {
		perror("xdp_cost: flow index");
		psd2edge_bpf__destroy(s);
		return NULL;
	}
	/* a realistic deny-list: a few hundred prefixes of both families */
	for (int i = 0; i < (getenv("NDENY") ? atoi(getenv("NDENY")) : 256); i++) {
		struct psd2_deny_v4_key k = { .prefixlen = 24, .addr = { 100, 64, (uint8_t)i, 0 } };

		put_deny4(s, &k);
	}
	put_deny4(s, &k4);
	inet_pton(AF_INET6, "2001:db8:dead::", k6.addr);
	put_deny6(s, &k6);
	/* SYN bucket: effectively no refill, burst 1, so a repeated SYN is over the rate */
	s->bss->src_cfg.interval_ns = 1000000000ULL * 3600;
	s->bss->src_cfg.burst_ns = s->bss->src_cfg.interval_ns;
	put_client(s, 1, PSD2_CLIENT_ACTIVE, 0);
	put_client(s, 2, PSD2_CLIENT_REVOKED, 0);
	put_client(s, 4, PSD2_CLIENT_ACTIVE, 1);            /* 1 pps: repeated packets policed */
	put_client(s, 6, PSD2_CLIENT_ACTIVE, 1000000000ULL); /* 1 Gpps, burst 1 s: within rate */
	put_flow(s, "203.0.113.11", "192.0.2.1", 1);
	put_flow(s, "2001:db8:1::11", "2001:db8::1", 1);
	put_flow(s, "203.0.113.12", "192.0.2.1", 2);
	put_flow(s, "203.0.113.14", "192.0.2.1", 4);
	put_flow(s, "203.0.113.17", "192.0.2.1", 6);
	for (int i = 0; i < (getenv("NFLOW") ? atoi(getenv("NFLOW")) : 10000); i++) { /* a populated flow table */
		char a[32];

		snprintf(a, sizeof(a), "10.%d.%d.%d", i >> 16, (i >> 8) & 0xff, i & 0xff);
		put_flow(s, a, "192.0.2.1", 1);
	}
	return s;
}

/* xdp-filter's maps hold per-CPU u64 flags. */
static int xdpfilt_set(struct bpf_object *o, const char *map, const void *key, uint64_t flags)
{
	struct bpf_map *m = bpf_object__find_map_by_name(o, map);
	int ncpu = libbpf_num_possible_cpus();
	uint64_t v[ncpu];

	for (int i = 0; i < ncpu; i++)
		v[i] = flags;
	return m ? bpf_map_update_elem(bpf_map__fd(m), key, v, BPF_ANY) : -1;
}

#define MAP_FLAG_SRC (1 << 0)
#define MAP_FLAG_DST (1 << 1)
#define MAP_FLAG_TCP (1 << 2)

static struct bpf_object *load_xdpfilt(const char *file, bool deny_mode)
{
	struct bpf_object *o = bpf_object__open_file(file, NULL);
	struct bpf_map *m;

	if (!o)
		return NULL;
	bpf_object__for_each_map(m, o)
		bpf_map__set_pin_path(m, NULL); /* they pin by name by default */
	if (bpf_object__load(o)) {
		bpf_object__close(o);
		return NULL;
	}
	if (deny_mode) {
		uint32_t p22 = htons(22), pl = htons(PORT);

		xdpfilt_set(o, "filter_ports", &pl, MAP_FLAG_DST | MAP_FLAG_TCP);
		xdpfilt_set(o, "filter_ports", &p22, MAP_FLAG_DST | MAP_FLAG_TCP);
	} else {
		uint32_t a4;
		uint8_t a6[16];

		inet_pton(AF_INET, "198.51.100.7", &a4);
		xdpfilt_set(o, "filter_ipv4", &a4, MAP_FLAG_SRC);
		inet_pton(AF_INET6, "2001:db8:dead::7", a6);
		xdpfilt_set(o, "filter_ipv6", a6, MAP_FLAG_SRC);
		for (int i = 0; i < 256; i++) {
			uint8_t b[4] = { 100, 64, (uint8_t)i, 1 };

			xdpfilt_set(o, "filter_ipv4", b, MAP_FLAG_SRC);
		}
	}
	return o;
}

static int first_prog_fd(struct bpf_object *o)
{
	struct bpf_program *p = bpf_object__next_program(o, NULL);

	return p ? bpf_program__fd(p) : -1;
}

/* Fastest round of the kernel's average ns per run (the machine is shared: the minimum is the
 * least disturbed figure). */
static double cost_ns(int fd, const uint8_t *frame, size_t len, int repeat, int rounds, int *ret)
{
	double v[16], t;

	for (int r = 0; r < rounds; r++) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = frame, .data_size_in = (__u32)len,
			    .repeat = repeat);

		if (bpf_prog_test_run_opts(fd, &o))
			return -1;
		v[r] = o.duration; /* ns per run, measured by the kernel */
		*ret = (int)o.retval;
	}
	for (int i = 1; i < rounds; i++)
		for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
			t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	return v[0];
}

int main(int argc, char **argv)
{
	int repeat = argc > 1 ? atoi(argv[1]) : 2000000;
	int rounds = argc > 2 ? atoi(argv[2]) : 5;
	struct psd2edge_bpf *s;
	struct bpf_object *alw, *dny;
	int fd_p, fd_a, fd_d, bad = 0;
	double worst_a = 1e9, worst_d = 1e9;

	if (rounds < 1 || rounds > 16)
		rounds = 5;
	libbpf_set_print(NULL);
	s = load_psd2edge();
	alw = load_xdpfilt(XDPFILT_DIR "xdpfilt_alw_all.o", false);
	dny = load_xdpfilt(XDPFILT_DIR "xdpfilt_dny_all.o", true);
	if (!s || !alw || !dny) {
		fprintf(stderr, "xdp_cost: cannot load the programs (root? %s)\n", strerror(errno));
		return 77;
	}
	fd_p = bpf_program__fd(s->progs.psd2edge_xdp);
	fd_a = first_prog_fd(alw);
	fd_d = first_prog_fd(dny);

	printf("{\"repeat\": %d, \"rounds\": %d, \"paths\": [\n", repeat, rounds);
	for (size_t i = 0; i < N_PATHS; i++) {
		uint8_t frame[256];
		size_t len = bench_build(&paths[i].pkt, frame);
		int rp, ra, rd;
		double p, a, d;

		s->bss->src_cfg.interval_ns = paths[i].syn_open ? 1 : 1000000000ULL * 3600;
		s->bss->src_cfg.burst_ns = paths[i].syn_open ? 1ULL << 62 : s->bss->src_cfg.interval_ns;
		/* what user/dataplane.c derives: a quarter of the burst, at most 16; a new gen */
		s->bss->src_cfg.batch = paths[i].syn_open ? 16 : 1;
		s->bss->src_cfg.gen = (uint32_t)i + 1;
		/* warm up (creates the SYN bucket, spends the policed client's burst) */
		cost_ns(fd_p, frame, len, 1000, 1, &rp);
		p = cost_ns(fd_p, frame, len, repeat, rounds, &rp);
		a = cost_ns(fd_a, frame, len, repeat, rounds, &ra);
		d = cost_ns(fd_d, frame, len, repeat, rounds, &rd);
		if (rp != paths[i].want) {
			fprintf(stderr, "xdp_cost: %s: psd2edge returned %d, want %d\n",
				paths[i].name, rp, paths[i].want);
			bad = 1;
		}
		if (a / p < worst_a)
			worst_a = a / p;
		if (d / p < worst_d)
			worst_d = d / p;
		printf("  {\"path\": \"%s\", \"frame_bytes\": %zu, \"psd2edge_ns\": %.1f, "
		       "\"psd2edge_action\": \"%s\", \"xdpfilt_alw_all_ns\": %.1f, "
		       "\"xdpfilt_alw_all_action\": \"%s\", \"xdpfilt_dny_all_ns\": %.1f, "
		       "\"xdpfilt_dny_all_action\": \"%s\", \"speedup_vs_alw_all\": %.2f, "
		       "\"speedup_vs_dny_all\": %.2f}%s\n",
		       paths[i].name, len, p, rp == XDP_DROP ? "drop" : "pass", a,
		       ra == XDP_DROP ? "drop" : ra == XDP_PASS ? "pass" : "aborted", d,
		       rd == XDP_DROP ? "drop" : rd == XDP_PASS ? "pass" : "aborted", a / p, d / p,
		       i + 1 < N_PATHS ? "," : "");
	}
	printf("], \"min_speedup_vs_alw_all\": %.2f, \"min_speedup_vs_dny_all\": %.2f}\n", worst_a,
	       worst_d);
	flow_index_close(flow_index);
	psd2edge_bpf__destroy(s);
	bpf_object__close(alw);
	bpf_object__close(dny);
	return bad;
}
