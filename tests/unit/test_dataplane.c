/* user/dataplane.c against the kernel: bpffs mount, pinning, reuse across a restart, flow purge,
 * atomic program replacement, native -> generic fallback, detach, registry-style sync, stats,
 * and re-attach when the interface comes back. Runs in private network and mount namespaces
 * (unshare) so nothing leaks into the host; needs root, skips otherwise. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "precondition.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "config.h"
#include "dataplane.h"
#include "metrics.h"
#include "psd2edge_abi.h"

struct env {
	char dir[64];
	char bpffs[96];
	char pin_dir[128];
	struct config cfg;
};

static int sh(const char *cmd)
{
	int rc = system(cmd);

	return rc == 0 ? 0 : -1;
}

static int setup(void **state)
{
	struct env *e;
	struct sockaddr_in *sin;

	*state = NULL;
	if (geteuid() != 0)
		return 0;
	if (unshare(CLONE_NEWNET | CLONE_NEWNS) ||
	    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		fprintf(stderr, "unshare: %s\n", strerror(errno));
		return 0;
	}
	e = calloc(1, sizeof(*e));
	snprintf(e->dir, sizeof(e->dir), "/tmp/psd2e-dp-XXXXXX");
	assert_non_null(mkdtemp(e->dir));
	snprintf(e->bpffs, sizeof(e->bpffs), "%s/bpf", e->dir);
	snprintf(e->pin_dir, sizeof(e->pin_dir), "%s/psd2edge", e->bpffs);
	assert_int_equal(sh("ip link add dpa type veth peer name dpb && ip link set dpa up && "
			    "ip link set dpb up && ip link set lo up"), 0);

	e->cfg.n_listen = 1;
	sin = (struct sockaddr_in *)&e->cfg.listen[0].addr;
	sin->sin_family = AF_INET;
	sin->sin_port = htons(8443);
	e->cfg.bpf.pin_dir = e->pin_dir;
	e->cfg.bpf.interface = "dpa";
	e->cfg.bpf.mode = BPF_MODE_NATIVE;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	if (e) {
		umount2(e->bpffs, MNT_DETACH);
		rmdir(e->bpffs);
		rmdir(e->dir);
		free(e);
	}
	return 0;
}

static int pinned_fd(struct env *e, const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, name);
	return bpf_obj_get(path);
}

static bool pinned(struct env *e, const char *name)
{
	char path[256];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, name);
	return stat(path, &st) == 0;
}

static __u32 attached_id(const char *ifname, __u32 *mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);
	int ifindex = if_nametoindex(ifname);

	*mode = 0;
	if (!ifindex || bpf_xdp_query(ifindex, 0, &q))
		return 0;
	*mode = q.drv_prog_id ? XDP_FLAGS_DRV_MODE : q.skb_prog_id ? XDP_FLAGS_SKB_MODE : 0;
	return q.drv_prog_id ? q.drv_prog_id : q.skb_prog_id;
}

/* The data plane's figures as `psd2edgectl stats` shows them. */
static void stats_of(struct dataplane *dp, json_t *obj)
{
	assert_int_equal(metrics_source_add(dataplane_metrics, dp), 0);
	assert_int_equal(metrics_render_json(obj), 0);
	metrics_sources_clear();
}

static void sa4(struct sockaddr_in *s, const char *a, uint16_t port)
{
	memset(s, 0, sizeof(*s));
	s->sin_family = AF_INET;
	s->sin_port = htons(port);
	inet_pton(AF_INET, a, &s->sin_addr);
}

static void sa6(struct sockaddr_in6 *s, const char *a, uint16_t port)
{
	memset(s, 0, sizeof(*s));
	s->sin6_family = AF_INET6;
	s->sin6_port = htons(port);
	inet_pton(AF_INET6, a, &s->sin6_addr);
}

static size_t map_count(int fd, size_t key_size)
{
	uint8_t k[64], prev[64];
	size_t n = 0;
	void *p = NULL;

	while (bpf_map_get_next_key(fd, p, k) == 0) {
		n++;
		memcpy(prev, k, key_size);
		p = prev;
	}
	return n;
}

/* A frame through the attached program (found by id), as XDP would see it on dpa. */
static int run_attached(__u32 id, const char *src, uint16_t sport, uint16_t dport)
{
	uint8_t f[54] = { 0 };
	int fd = bpf_prog_get_fd_by_id(id), rc;
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = f, .data_size_in = sizeof(f), .repeat = 1);

	assert_true(fd >= 0);
	f[12] = 0x08;
	f[14] = 0x45;
	f[16] = 0;
	f[17] = 40;
	f[23] = IPPROTO_TCP;
	inet_pton(AF_INET, src, f + 26);
	inet_pton(AF_INET, "192.0.2.1", f + 30);
	f[34] = sport >> 8;
	f[35] = sport & 0xff;
	f[36] = dport >> 8;
	f[37] = dport & 0xff;
	f[46] = 5 << 4;
	f[47] = 0x10;
	assert_int_equal(bpf_prog_test_run_opts(fd, &o), 0);
	rc = (int)o.retval;
	close(fd);
	return rc;
}

static void test_open_pin_reuse_purge_detach(void **state)
{
	struct env *e = *state;
	struct dataplane *dp = NULL;
	char err[256] = "";
	uint8_t thumb[32];
	struct sockaddr_in peer, local;
	struct sockaddr_in6 peer6, local6, mapped_peer, mapped_local;
	struct psd2_client c;
	uint32_t slot = 3;
	__u32 id1, id2, mode;
	int fd;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	memset(thumb, 0xaa, sizeof(thumb));
	assert_int_equal(dataplane_open(&e->cfg, &dp, err, sizeof(err)), 0);
	assert_string_equal(dataplane_mode(dp), "native");
	for (const char *const *n = (const char *const[]){ PSD2_PIN_CLIENTS, PSD2_PIN_FLOWS,
			PSD2_PIN_DENY_V4, PSD2_PIN_DENY_V6, PSD2_PIN_SRC_RATE, PSD2_PIN_STATS,
			PSD2_PIN_FLOWS_V6, PSD2_PIN_CLIENT_STATS, PSD2_PIN_DENY_INDEX,
			PSD2_PIN_SRC_RATE_V6, PSD2_PIN_FLOW_INDEX, PSD2_PIN_FLOW_INDEX_V6, NULL };
	     *n; n++)
		assert_true(pinned(e, *n));
	id1 = attached_id("dpa", &mode);
	assert_true(id1 != 0);
	assert_int_equal(mode, XDP_FLAGS_DRV_MODE);

	assert_int_equal(dataplane_client_set(dp, slot, "tpp-one", thumb, false), 0);
	assert_int_equal(dataplane_deny_add(dp, "198.51.100.77/24"), 0);
	assert_int_equal(dataplane_deny_add(dp, "2001:db8:dead::/48"), 0);
	assert_int_equal(dataplane_deny_add(dp, "not-a-cidr"), -1);
	assert_int_equal(dataplane_deny_add(dp, "10.0.0.0/33"), -1);
	sa4(&peer, "203.0.113.9", 40001);
	sa4(&local, "192.0.2.1", 8443);
	assert_int_equal(dataplane_flow_add(dp, (struct sockaddr *)&peer, (struct sockaddr *)&local,
					    slot), 0);
	sa6(&peer6, "2001:db8:1::9", 40002);
	sa6(&local6, "2001:db8::1", 8443);
	assert_int_equal(dataplane_flow_add(dp, (struct sockaddr *)&peer6,
					    (struct sockaddr *)&local6, slot), 0);
	/* a dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: the same key as AF_INET, in
	 * the IPv4 map */
	sa6(&mapped_peer, "::ffff:203.0.113.9", 40001);
	sa6(&mapped_local, "::ffff:192.0.2.1", 8443);
	fd = pinned_fd(e, PSD2_PIN_FLOWS);
	assert_int_equal(map_count(fd, sizeof(struct psd2_flow_key)), 1);
	assert_int_equal(dataplane_flow_add(dp, (struct sockaddr *)&mapped_peer,
					    (struct sockaddr *)&mapped_local, slot), 0);
	assert_int_equal(map_count(fd, sizeof(struct psd2_flow_key)), 1);
	close(fd);
	fd = pinned_fd(e, PSD2_PIN_FLOWS_V6);
	assert_int_equal(map_count(fd, sizeof(struct psd2_flow6_key)), 1);
	close(fd);

	/* the program sees what the daemon wrote (listener port from cfg->listen) */
	assert_int_equal(run_attached(id1, "203.0.113.9", 40001, 8443), XDP_PASS);
	assert_int_equal(run_attached(id1, "198.51.100.1", 40001, 8443), XDP_DROP);
	assert_int_equal(run_attached(id1, "198.51.100.1", 40001, 22), XDP_PASS);
	/* the IPv4-mapped form lands in the IPv4 trie, where IPv4 packets are looked up */
	assert_int_equal(dataplane_deny_add(dp, "::ffff:192.0.2.128/121"), 0);
	assert_int_equal(run_attached(id1, "192.0.2.200", 40001, 8443), XDP_DROP);
	assert_int_equal(dataplane_deny_del(dp, "192.0.2.128/25"), 0);
	assert_int_equal(run_attached(id1, "192.0.2.200", 40001, 8443), XDP_PASS);
	/* deny_index: a prefix shorter than /16 marks every /16 it covers; a delete rebuilds
	 * the index, so the word of a removed prefix goes back to zero */
	assert_int_equal(run_attached(id1, "10.200.1.1", 40001, 8443), XDP_PASS);
	assert_int_equal(dataplane_deny_add(dp, "10.0.0.0/8"), 0);
	assert_int_equal(run_attached(id1, "10.200.1.1", 40001, 8443), XDP_DROP);
	assert_int_equal(run_attached(id1, "10.0.0.9", 40001, 8443), XDP_DROP);
	assert_int_equal(run_attached(id1, "11.0.0.9", 40001, 8443), XDP_PASS);
	{
		uint8_t a[2] = { 10, 200 };
		uint16_t hi;
		uint32_t word;
		uint64_t bits;

		memcpy(&hi, a, 2);
		word = PSD2_DENY_INDEX_V4 + (hi >> 6);
		fd = pinned_fd(e, PSD2_PIN_DENY_INDEX);
		assert_int_equal(bpf_map_lookup_elem(fd, &word, &bits), 0);
		assert_true(bits & (1ULL << (hi & 63)));
		assert_int_equal(dataplane_deny_del(dp, "10.0.0.0/8"), 0);
		assert_int_equal(bpf_map_lookup_elem(fd, &word, &bits), 0);
		assert_false(bits & (1ULL << (hi & 63)));
		close(fd);
	}
	assert_int_equal(run_attached(id1, "10.200.1.1", 40001, 8443), XDP_PASS);
	assert_int_equal(dataplane_client_set(dp, slot, "tpp-one", thumb, true), 0);
	assert_int_equal(run_attached(id1, "203.0.113.9", 40001, 8443), XDP_DROP);

	/* restart: maps reused, flows purged, program replaced without a gap */
	dataplane_close(dp, false);
	id2 = attached_id("dpa", &mode);
	assert_int_equal(id2, id1); /* still enforcing while no daemon runs */
	assert_int_equal(run_attached(id1, "198.51.100.1", 40001, 8443), XDP_DROP);
	assert_int_equal(dataplane_open(&e->cfg, &dp, err, sizeof(err)), 0);
	id2 = attached_id("dpa", &mode);
	assert_true(id2 != 0 && id2 != id1);
	fd = pinned_fd(e, PSD2_PIN_CLIENTS);
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	close(fd);
	assert_string_equal(c.client_id, "tpp-one");
	assert_int_equal(c.state, PSD2_CLIENT_REVOKED);
	assert_memory_equal(c.thumb, thumb, 32);
	fd = pinned_fd(e, PSD2_PIN_DENY_V4);
	assert_int_equal(map_count(fd, sizeof(struct psd2_deny_v4_key)), 1);
	close(fd);
	fd = pinned_fd(e, PSD2_PIN_FLOWS);
	assert_int_equal(map_count(fd, sizeof(struct psd2_flow_key)), 0);
	close(fd);
	fd = pinned_fd(e, PSD2_PIN_FLOWS_V6);
	assert_int_equal(map_count(fd, sizeof(struct psd2_flow6_key)), 0);
	close(fd);
	assert_int_equal(run_attached(id2, "198.51.100.1", 40001, 8443), XDP_DROP);

	/* --detach from another process: program and pins gone */
	dataplane_close(dp, false);
	assert_int_equal(dataplane_detach(&e->cfg, err, sizeof(err)), 0);
	assert_int_equal(attached_id("dpa", &mode), 0);
	assert_false(pinned(e, PSD2_PIN_CLIENTS));
	assert_int_equal(access(e->pin_dir, F_OK), -1);
}

static void test_generic_fallback_and_close_detach(void **state)
{
	struct env *e = *state;
	struct config cfg;
	struct dataplane *dp = NULL;
	char err[256] = "";
	__u32 mode;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	cfg = e->cfg;
	cfg.bpf.interface = "lo"; /* no native XDP on loopback */
	assert_int_equal(dataplane_open(&cfg, &dp, err, sizeof(err)), 0);
	assert_string_equal(dataplane_mode(dp), "generic");
	assert_true(attached_id("lo", &mode) != 0);
	assert_int_equal(mode, XDP_FLAGS_SKB_MODE);
	dataplane_close(dp, true);
	assert_int_equal(attached_id("lo", &mode), 0);
	assert_false(pinned(e, PSD2_PIN_FLOWS));
}

static void test_refuses_foreign_program(void **state)
{
	struct env *e = *state;
	struct dataplane *dp = NULL;
	char err[256] = "";
	__u32 mode;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	if (sh("ip link set dev dpb xdpgeneric obj /usr/lib/x86_64-linux-gnu/bpf/xdpfilt_alw_all.o "
	       "sec xdp 2>/dev/null"))
		precondition_missing("xdp-tools' xdpfilt_alw_all.o attached in generic mode");
	struct config cfg = e->cfg;
	cfg.bpf.interface = "dpb";
	assert_int_equal(dataplane_open(&cfg, &dp, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not psd2edge's"));
	assert_true(attached_id("dpb", &mode) != 0);
	sh("ip link set dev dpb xdpgeneric off");
	struct config c2 = e->cfg;
	assert_int_equal(dataplane_detach(&c2, err, sizeof(err)), 0);
}

static void test_off_mode(void **state)
{
	struct env *e = *state;
	struct config cfg;
	struct dataplane *dp = NULL;
	struct sockaddr_in a;
	char err[256] = "";
	json_t *obj = json_object();

	(void)e;
	memset(&cfg, 0, sizeof(cfg));
	cfg.bpf.mode = BPF_MODE_OFF;
	sa4(&a, "192.0.2.1", 1);
	assert_int_equal(dataplane_open(&cfg, &dp, err, sizeof(err)), 0);
	assert_false(dataplane_active(dp));
	assert_string_equal(dataplane_mode(dp), "off");
	assert_int_equal(dataplane_client_set(dp, 1, "x", NULL, false), 0);
	assert_int_equal(dataplane_flow_add(dp, (struct sockaddr *)&a, (struct sockaddr *)&a, 1), 0);
	assert_int_equal(dataplane_deny_add(dp, "10.0.0.0/8"), 0);
	assert_int_equal(dataplane_sync(dp, NULL, 0, NULL, 0), 0);
	stats_of(dp, obj);
	assert_string_equal(json_string_value(json_object_get(json_object_get(obj, "xdp"), "mode")),
			    "off");
	json_decref(obj);
	dataplane_close(dp, true);
}

static void test_sync_limits_stats(void **state)
{
	struct env *e = *state;
	struct dataplane *dp = NULL;
	struct dataplane_limits lim;
	struct dataplane_client_limit cl = { .pps = 1000, .bps = 125000, .burst = 10 };
	uint8_t t1[32], t2[32];
	char err[256] = "";
	struct psd2_client c;
	json_t *obj;
	int fd;
	uint32_t slot;
	char *cidrs[] = { "203.0.113.0/24", "2001:db8:beef::/48" };
	__u32 id, mode;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	dataplane_limits_default(&lim);
	lim.client.pps = 500;
	assert_int_equal(dataplane_open_limits(&e->cfg, &lim, &dp, err, sizeof(err)), 0);
	memset(t1, 1, 32);
	memset(t2, 2, 32);
	assert_int_equal(dataplane_client_set(dp, 7, "stale", t1, false), 0);
	assert_int_equal(dataplane_deny_add(dp, "198.51.100.0/24"), 0);
	assert_int_equal(dataplane_deny_add(dp, "203.0.113.0/24"), 0);

	struct dataplane_client list[] = {
		{ .slot = 1, .client_id = "tpp-a", .thumb = t1, .revoked = false, .limit = NULL },
		{ .slot = 2, .client_id = "tpp-b", .thumb = t2, .revoked = true, .limit = &cl },
	};
	assert_int_equal(dataplane_sync(dp, list, 2, cidrs, 2), 0);

	fd = pinned_fd(e, PSD2_PIN_CLIENTS);
	slot = 1;
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_string_equal(c.client_id, "tpp-a");
	assert_int_equal(c.state, PSD2_CLIENT_ACTIVE);
	assert_int_equal(c.pps, 500); /* the default limit */
	assert_int_equal(c.pkt_interval_ns, 2000000);
	assert_int_equal(c.pkt_batch, 1);
	slot = 2;
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.state, PSD2_CLIENT_REVOKED);
	assert_int_equal(c.pps, 1000);
	assert_int_equal(c.bytes_per_sec, 125000);
	assert_int_equal(c.burst_pkts, 10);
	assert_int_equal(c.pkt_batch, 2); /* a quarter of the burst */
	assert_int_equal(c.burst_bytes, 15140);
	assert_int_equal(c.byte_burst_ns, 15140ULL * 1000000000ULL / 125000);
	slot = 7;
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.state, PSD2_CLIENT_FREE);
	assert_string_equal(c.client_id, "");

	/* client_set keeps limits of the same client; limit NULL restores the default */
	assert_int_equal(dataplane_client_set(dp, 2, "tpp-b", t2, false), 0);
	slot = 2;
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.pps, 1000);
	assert_int_equal(c.state, PSD2_CLIENT_ACTIVE);
	assert_int_equal(dataplane_client_limit(dp, 2, NULL), 0);
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.pps, 500);
	assert_int_equal(dataplane_client_del(dp, 2), 0);
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.state, PSD2_CLIENT_FREE);
	assert_int_equal(dataplane_client_set(dp, PSD2_MAX_CLIENTS, "x", t1, false), -1);
	close(fd);

	fd = pinned_fd(e, PSD2_PIN_DENY_V4);
	assert_int_equal(map_count(fd, sizeof(struct psd2_deny_v4_key)), 1); /* 198.51.100/24 pruned */
	close(fd);
	fd = pinned_fd(e, PSD2_PIN_DENY_V6);
	assert_int_equal(map_count(fd, sizeof(struct psd2_deny_v6_key)), 1);
	close(fd);

	id = attached_id("dpa", &mode);
	assert_int_equal(run_attached(id, "203.0.113.1", 1, 8443), XDP_DROP);
	assert_int_equal(run_attached(id, "198.51.100.1", 1, 8443), XDP_PASS);
	assert_int_equal(dataplane_deny_del(dp, "203.0.113.0/24"), 0);
	assert_int_equal(run_attached(id, "203.0.113.1", 1, 8443), XDP_PASS);

	/* A bound flow's packets are counted per CPU, and their sums copied into the entry */
	struct sockaddr_in peer = { .sin_family = AF_INET, .sin_port = htons(40000) };
	struct sockaddr_in local = { .sin_family = AF_INET, .sin_port = htons(8443) };
	struct dataplane_client_limit unlimited = { 0 };

	inet_pton(AF_INET, "198.51.100.9", &peer.sin_addr);
	inet_pton(AF_INET, "192.0.2.1", &local.sin_addr);
	assert_int_equal(dataplane_client_set(dp, 3, "tpp-c", t1, false), 0);
	assert_int_equal(dataplane_client_limit(dp, 3, &unlimited), 0);
	assert_int_equal(dataplane_flow_add(dp, (struct sockaddr *)&peer, (struct sockaddr *)&local,
					    3), 0);
	/* the flow is in the hash and in its flow_index entry */
	struct psd2_flow_key fk = { .sport = htons(40000), .dport = htons(8443) };
	struct psd2_flow_index_v4 fe;
	uint32_t fi;

	memcpy(fk.saddr, &peer.sin_addr, 4);
	memcpy(fk.daddr, &local.sin_addr, 4);
	fi = psd2_flow_hash_v4(&fk);
	fd = pinned_fd(e, PSD2_PIN_FLOW_INDEX);
	assert_int_equal(bpf_map_lookup_elem(fd, &fi, &fe), 0);
	assert_memory_equal(&fe.key, &fk, sizeof(fk));
	assert_int_equal(fe.slot, 3);
	assert_int_equal(fe.seq % 2, 0);
	close(fd);
	for (int i = 0; i < 3; i++)
		assert_int_equal(run_attached(id, "198.51.100.9", 40000, 8443), XDP_PASS);
	assert_int_equal(dataplane_client_set(dp, 3, "tpp-c", t1, true), 0);
	assert_int_equal(run_attached(id, "198.51.100.9", 40000, 8443), XDP_DROP);
	assert_int_equal(dataplane_client_counters_refresh(dp), 0);
	fd = pinned_fd(e, PSD2_PIN_CLIENTS);
	slot = 3;
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.pass_packets, 3);
	assert_int_equal(c.pass_bytes, 3 * 54);
	assert_int_equal(c.drop_revoked, 1);
	assert_int_equal(c.drop_policed, 0);
	assert_int_equal(c.state, PSD2_CLIENT_REVOKED);
	json_t *shown = json_object();
	dataplane_fill_client(dp, 3, shown);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(shown, "xdp"),
							     "pass_packets")), 3);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(shown, "xdp"),
							     "drop_revoked")), 1);
	json_decref(shown);
	/* closing the connection empties the entry */
	assert_int_equal(dataplane_flow_del(dp, (struct sockaddr *)&peer, (struct sockaddr *)&local),
			 0);
	int fd_index = pinned_fd(e, PSD2_PIN_FLOW_INDEX);
	assert_int_equal(bpf_map_lookup_elem(fd_index, &fi, &fe), 0);
	close(fd_index);
	assert_int_equal(fe.key.dport, 0);
	assert_int_equal(fe.overflow, 0);
	assert_int_equal(run_attached(id, "198.51.100.9", 40000, 8443), XDP_PASS); /* no flow */
	/* a new client in the slot starts from zero */
	assert_int_equal(dataplane_client_del(dp, 3), 0);
	assert_int_equal(dataplane_client_set(dp, 3, "tpp-d", t2, false), 0);
	assert_int_equal(dataplane_client_counters_refresh(dp), 0);
	assert_int_equal(bpf_map_lookup_elem(fd, &slot, &c), 0);
	assert_int_equal(c.pass_packets, 0);
	assert_int_equal(c.drop_revoked, 0);
	close(fd);

	obj = json_object();
	stats_of(dp, obj);
	json_t *xdp = json_object_get(obj, "xdp");
	assert_string_equal(json_string_value(json_object_get(xdp, "mode")), "native");
	assert_true(json_integer_value(json_object_get(json_object_get(xdp, "packets"),
						       "drop_deny")) >= 1);
	assert_true(json_integer_value(json_object_get(json_object_get(xdp, "packets"), "pass")) >=
		    2);
	assert_non_null(json_object_get(json_object_get(xdp, "errors"), "flow_add_full"));
	json_decref(obj);
	dataplane_close(dp, true);
}

static void test_incompatible_pin_replaced(void **state)
{
	struct env *e = *state;
	struct dataplane *dp = NULL;
	char err[256] = "", path[256];
	int fd;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	/* an old layout of "stats" (another value size) left by a previous version */
	mkdir(e->bpffs, 0700);
	if (mount("bpf", e->bpffs, "bpf", 0, "mode=0700") && errno != EBUSY)
		fail_msg("mount: %s", strerror(errno));
	mkdir(e->pin_dir, 0700);
	fd = bpf_map_create(BPF_MAP_TYPE_PERCPU_ARRAY, "stats", 4, 8, 4, NULL);
	assert_true(fd >= 0);
	snprintf(path, sizeof(path), "%s/%s", e->pin_dir, PSD2_PIN_STATS);
	assert_int_equal(bpf_obj_pin(fd, path), 0);
	close(fd);
	assert_int_equal(dataplane_open(&e->cfg, &dp, err, sizeof(err)), 0);
	fd = pinned_fd(e, PSD2_PIN_STATS);
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	assert_int_equal(bpf_obj_get_info_by_fd(fd, &info, &len), 0);
	assert_int_equal(info.value_size, sizeof(struct psd2_stat));
	close(fd);
	dataplane_close(dp, true);
}

static void test_reattach_when_interface_returns(void **state)
{
	struct env *e = *state;
	struct dataplane *dp = NULL;
	struct config cfg;
	char err[256] = "";
	struct pollfd pfd;
	__u32 mode;
	int fd;

	if (!e)
		precondition_missing("root and a kernel that loads the XDP program (set-up failed)");
	cfg = e->cfg;
	cfg.bpf.interface = "dpc";
	/* the interface does not exist yet: not an error */
	assert_int_equal(dataplane_open(&cfg, &dp, err, sizeof(err)), 0);
	assert_string_equal(dataplane_mode(dp), "detached");
	fd = dataplane_link_fd(dp);
	assert_true(fd >= 0);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(sh("ip link add dpc type veth peer name dpd && ip link set dpc up"),
				 0);
		for (int i = 0; i < 20 && attached_id("dpc", &mode) == 0; i++) {
			pfd = (struct pollfd){ .fd = fd, .events = POLLIN };
			if (poll(&pfd, 1, 100) > 0)
				dataplane_link_ready(dp);
		}
		assert_true(attached_id("dpc", &mode) != 0);
		assert_string_equal(dataplane_mode(dp), "native");
		assert_int_equal(sh("ip link del dpc"), 0);
	}
	dataplane_close(dp, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_pin_reuse_purge_detach),
		cmocka_unit_test(test_generic_fallback_and_close_detach),
		cmocka_unit_test(test_refuses_foreign_program),
		cmocka_unit_test(test_off_mode),
		cmocka_unit_test(test_sync_limits_stats),
		cmocka_unit_test(test_incompatible_pin_replaced),
		cmocka_unit_test(test_reattach_when_interface_returns),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
