/* Generator and XDP receiver for bench/xdp_droprate.sh.
 *
 *   xdp_gen gen  GEN_NS IFNAME DST_MAC COUNT CPU   send COUNT TCP frames from 198.51.100.7 to
 *                                                  192.0.2.1:8443 out of IFNAME (in GEN_NS) with
 *                                                  BPF_F_TEST_XDP_LIVE_FRAMES; prints pps sent
 *   xdp_gen xdp  RX_NS IFNAME                      load psd2edge's program, deny 198.51.100.0/24,
 *                                                  attach native to IFNAME in RX_NS, then wait for
 *                                                  a line on stdin and print drop_deny packets
 * Namespaces are entered with setns() only (network namespace; mounts unchanged). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/if_link.h>

#include "psd2edge_abi.h"
#include "psd2edge.skel.h"
#include "xdp_pkt.h"

#ifndef BPF_F_TEST_XDP_LIVE_FRAMES
#define BPF_F_TEST_XDP_LIVE_FRAMES (1U << 1)
#endif

static int enter_ns(const char *name)
{
	char path[256];
	int fd, rc;

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	rc = setns(fd, CLONE_NEWNET);
	close(fd);
	return rc;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int cmd_gen(const char *ns, const char *ifname, const char *mac_text, long count, int cpu,
		   const char *obj_path)
{
	uint8_t mac[6], frame[128];
	struct bench_pkt pkt = { .src = "198.51.100.7", .dst = "192.0.2.1", .sport = 40000,
				 .dport = 8443, .tcp_flags = 0x10, .payload = 6 };
	struct bpf_object *o;
	struct bpf_program *p;
	struct bpf_map *rodata;
	cpu_set_t set;
	size_t len;
	double t0, t1;
	__u32 ifindex;

	if (sscanf(mac_text, "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2], &mac[3],
		   &mac[4], &mac[5]) != 6)
		return 2;
	pkt.dst_mac = mac;
	len = bench_build(&pkt, frame);
	if (enter_ns(ns))
		return perror("setns"), 1;
	ifindex = if_nametoindex(ifname);
	if (!ifindex)
		return perror(ifname), 1;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);

	o = bpf_object__open_file(obj_path, NULL);
	if (!o)
		return perror(obj_path), 1;
	rodata = bpf_object__find_map_by_name(o, ".rodata");
	if (!rodata || bpf_map__set_initial_value(rodata, &ifindex, sizeof(ifindex)))
		return fprintf(stderr, "gen: no .rodata\n"), 1;
	if (bpf_object__load(o))
		return fprintf(stderr, "gen: load failed\n"), 1;
	p = bpf_object__next_program(o, NULL);

	long left = count;
	t0 = now_s();
	while (left > 0) {
		__u32 chunk = left > 1000000 ? 1000000 : (__u32)left;
		LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame, .data_size_in = (__u32)len,
			    .repeat = chunk, .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);

		if (bpf_prog_test_run_opts(bpf_program__fd(p), &opts))
			return fprintf(stderr, "gen: test_run: %s\n", strerror(errno)), 1;
		left -= chunk;
	}
	t1 = now_s();
	printf("{\"sent\": %ld, \"seconds\": %.3f, \"pps\": %.0f}\n", count, t1 - t0,
	       count / (t1 - t0));
	bpf_object__close(o);
	return 0;
}

static int cmd_xdp(const char *ns, const char *ifname)
{
	struct psd2edge_bpf *s;
	struct psd2_deny_v4_key k = { .prefixlen = 24, .addr = { 198, 51, 100, 0 } };
	struct psd2_deny v = { 0 };
	int ifindex, ncpu = libbpf_num_possible_cpus();
	char line[16];
	__u32 r = PSD2_STAT_DROP_DENY;

	if (enter_ns(ns))
		return perror("setns"), 1;
	ifindex = (int)if_nametoindex(ifname);
	s = psd2edge_bpf__open();
	if (!s || !ifindex)
		return 1;
	s->rodata->listen_ports[8443 >> 3] |= 1 << (8443 & 7);
	if (psd2edge_bpf__load(s))
		return 1;
	bpf_map__update_elem(s->maps.deny_v4, &k, sizeof(k), &v, sizeof(v), 0);
	{ /* its deny_index bit (the /16 198.51, as user/dataplane.c writes it) */
		uint16_t hi;
		__u32 word;
		__u64 bits = 0;

		memcpy(&hi, k.addr, 2);
		word = PSD2_DENY_INDEX_V4 + (hi >> 6);
		bits = 1ULL << (hi & 63);
		bpf_map__update_elem(s->maps.deny_index, &word, 4, &bits, 8, 0);
	}
	if (bpf_xdp_attach(ifindex, bpf_program__fd(s->progs.psd2edge_xdp), XDP_FLAGS_DRV_MODE,
			   NULL))
		return fprintf(stderr, "xdp: attach: %s\n", strerror(errno)), 1;
	printf("attached\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		struct psd2_stat st[ncpu];
		unsigned long long n = 0;

		bpf_map__lookup_elem(s->maps.stats, &r, sizeof(r), st, sizeof(st), 0);
		for (int c = 0; c < ncpu; c++)
			n += st[c].packets;
		printf("%llu\n", n);
		fflush(stdout);
	}
	bpf_xdp_detach(ifindex, XDP_FLAGS_DRV_MODE, NULL);
	psd2edge_bpf__destroy(s);
	return 0;
}

int main(int argc, char **argv)
{
	libbpf_set_print(NULL);
	if (argc == 8 && strcmp(argv[1], "gen") == 0)
		return cmd_gen(argv[2], argv[3], argv[4], atol(argv[5]), atoi(argv[6]), argv[7]);
	if (argc == 4 && strcmp(argv[1], "xdp") == 0)
		return cmd_xdp(argv[2], argv[3]);
	fprintf(stderr, "usage: xdp_gen gen NS IF DST_MAC COUNT CPU GEN_OBJ | xdp NS IF\n");
	return 2;
}
