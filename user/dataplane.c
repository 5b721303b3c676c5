/* The XDP data plane: program load and attach, pinned map reuse, and the daemon's writes into
 * the maps (see dataplane.h). Layouts come from include/psd2edge_abi.h only. */
#include "dataplane.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <linux/if_link.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <netlink/msg.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include "bpffs.h"
#include "cidr.h"
#include "flow_index.h"
#include "log.h"
#include "metrics.h"
#include "psd2edge_abi.h"
#include "psd2edge.skel.h"

/* The layouts both sides rely on (see include/psd2edge_abi.h). */
_Static_assert(sizeof(enum psd2_client_state) == 4, "enum psd2_client_state is 4 bytes");
_Static_assert(sizeof(struct psd2_client) == 224, "struct psd2_client layout");
_Static_assert(offsetof(struct psd2_client, state) == 104, "psd2_client.state offset");
_Static_assert(offsetof(struct psd2_client, pps) == 112, "psd2_client.pps offset");
_Static_assert(offsetof(struct psd2_client, pkt_tat_ns) == 168, "psd2_client GCRA offset");
_Static_assert(sizeof(struct psd2_client_stats) == 40, "struct psd2_client_stats layout");
_Static_assert(sizeof(struct psd2_flow_key) == 12, "struct psd2_flow_key layout");
_Static_assert(sizeof(struct psd2_flow6_key) == 36, "struct psd2_flow6_key layout");
_Static_assert(offsetof(struct psd2_flow_key, sport) == 8, "psd2_flow_key.sport offset");
_Static_assert(offsetof(struct psd2_flow6_key, sport) == 32, "psd2_flow6_key.sport offset");
_Static_assert(sizeof(struct psd2_flow) == 16, "struct psd2_flow layout");
_Static_assert(sizeof(struct psd2_deny_v4_key) == 8, "struct psd2_deny_v4_key layout");
_Static_assert(sizeof(struct psd2_deny_v6_key) == 20, "struct psd2_deny_v6_key layout");
_Static_assert(sizeof(struct psd2_deny) == 16, "struct psd2_deny layout");
_Static_assert(sizeof(struct psd2_src_v4_key) == 4, "struct psd2_src_v4_key layout");
_Static_assert(sizeof(struct psd2_src_v6_key) == 16, "struct psd2_src_v6_key layout");
_Static_assert(sizeof(struct psd2_src_bucket) == 24, "struct psd2_src_bucket layout");
_Static_assert(sizeof(struct psd2_src_cfg) == 24, "struct psd2_src_cfg layout");
_Static_assert(sizeof(struct psd2_stat) == 16, "struct psd2_stat layout");
_Static_assert(PSD2_CLIENT_ID_LEN > 64, "client_id fits REGISTRY_CLIENT_ID_MAX + NUL");

#define NSEC_PER_SEC 1000000000ULL
#define PROG_NAME "psd2edge_xdp"
#define MAX_FRAME 1514

static const char *const reason_names[PSD2_STAT_MAX] = {
#define REASON_NAME(name, text) [PSD2_STAT_##name] = text,
	PSD2_STAT_REASONS(REASON_NAME)
#undef REASON_NAME
};

/* Failures that are logged and counted, never fatal. */
#define DP_ERRORS(X)                                                                       \
	X(flow_add_full) X(flow_add_failed) X(flow_del_failed) X(flow_bad_address)         \
	X(client_write_failed) X(client_bad_slot) X(deny_write_failed) X(attach_failed)

struct dp_errors {
#define DP_ERROR_FIELD(name) _Atomic uint64_t name;
	DP_ERRORS(DP_ERROR_FIELD)
#undef DP_ERROR_FIELD
};

struct dataplane {
	bool off;
	struct psd2edge_bpf *skel;
	char pin_dir[PATH_MAX];
	char ifname[IF_NAMESIZE];
	enum bpf_mode want_mode;
	int ifindex;        /* where the program is attached, 0 when it is not */
	__u32 attach_flags; /* XDP_FLAGS_DRV_MODE or XDP_FLAGS_SKB_MODE when attached */
	__u32 prog_id;
	int fd_clients, fd_client_stats, fd_flows, fd_flows6, fd_deny4, fd_deny6, fd_deny_index, fd_stats;
	struct flow_index *flow_index;
	struct psd2_client *clients_mem; /* the clients array, mmap-ed */
	size_t clients_mem_len;
	struct dataplane_limits lim;
	uint32_t src_cfg_gen;
	pthread_mutex_t clients_lock; /* read-modify-write of clients values, slot_used */
	uint8_t slot_used[PSD2_MAX_CLIENTS / 8]; /* slots holding a client, for the counter copy */
	struct nl_sock *nl;
	bool link_event;
	struct dp_errors errors;
	_Atomic uint64_t flows_added, flows_deleted;
	_Atomic int64_t last_warn_s;
};

/* One warning per second at most for failures that can repeat at packet-ish rates. */
static bool warn_allowed(struct dataplane *dp)
{
	struct timespec ts;
	int64_t last;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	last = atomic_load_explicit(&dp->last_warn_s, memory_order_relaxed);
	if (last == ts.tv_sec)
		return false;
	return atomic_compare_exchange_strong(&dp->last_warn_s, &last, (int64_t)ts.tv_sec);
}

static int deny_index_rebuild(struct dataplane *dp);

#define COUNT_ERROR(dp, name) atomic_fetch_add_explicit(&(dp)->errors.name, 1, memory_order_relaxed)

void dataplane_limits_default(struct dataplane_limits *lim)
{
	memset(lim, 0, sizeof(*lim));
	lim->src_per_sec = DATAPLANE_SRC_PER_SEC_DEFAULT;
	lim->src_burst = DATAPLANE_SRC_BURST_DEFAULT;
	lim->src_v4_prefix = 32;
	lim->src_v6_prefix = 64;
}

bool dataplane_active(const struct dataplane *dp)
{
	return dp && !dp->off;
}

const char *dataplane_mode(const struct dataplane *dp)
{
	if (!dataplane_active(dp))
		return "off";
	if (!dp->ifindex)
		return "detached";
	return dp->attach_flags & XDP_FLAGS_SKB_MODE ? "generic" : "native";
}

/* --- bpffs and pins ----------------------------------------------------------------------- */

struct pinned_map {
	const char *name;
	struct bpf_map *(*get)(struct psd2edge_bpf *s);
};

static struct bpf_map *get_clients(struct psd2edge_bpf *s) { return s->maps.clients; }
static struct bpf_map *get_flows(struct psd2edge_bpf *s) { return s->maps.flows; }
static struct bpf_map *get_flows6(struct psd2edge_bpf *s) { return s->maps.flows_v6; }
static struct bpf_map *get_deny4(struct psd2edge_bpf *s) { return s->maps.deny_v4; }
static struct bpf_map *get_deny6(struct psd2edge_bpf *s) { return s->maps.deny_v6; }
static struct bpf_map *get_src(struct psd2edge_bpf *s) { return s->maps.src_rate; }
static struct bpf_map *get_src6(struct psd2edge_bpf *s) { return s->maps.src_rate_v6; }
static struct bpf_map *get_findex(struct psd2edge_bpf *s) { return s->maps.flow_index; }
static struct bpf_map *get_findex6(struct psd2edge_bpf *s) { return s->maps.flow_index_v6; }
static struct bpf_map *get_stats(struct psd2edge_bpf *s) { return s->maps.stats; }
static struct bpf_map *get_cstats(struct psd2edge_bpf *s) { return s->maps.client_stats; }
static struct bpf_map *get_dindex(struct psd2edge_bpf *s) { return s->maps.deny_index; }

static const struct pinned_map pinned_maps[] = {
	{ PSD2_PIN_CLIENTS, get_clients }, { PSD2_PIN_FLOWS, get_flows },
	{ PSD2_PIN_DENY_V4, get_deny4 },   { PSD2_PIN_DENY_V6, get_deny6 },
	{ PSD2_PIN_SRC_RATE, get_src },    { PSD2_PIN_STATS, get_stats },
	{ PSD2_PIN_CLIENT_STATS, get_cstats }, { PSD2_PIN_DENY_INDEX, get_dindex },
	{ PSD2_PIN_FLOWS_V6, get_flows6 }, { PSD2_PIN_SRC_RATE_V6, get_src6 },
	{ PSD2_PIN_FLOW_INDEX, get_findex }, { PSD2_PIN_FLOW_INDEX_V6, get_findex6 },
};
#define N_PINNED (sizeof(pinned_maps) / sizeof(pinned_maps[0]))

/* The policy state's maps (policy_store.c) share the pin directory and go with it: the quota
 * counters come back from the registry's checkpoint. */
static const char *const policy_pins[] = { PSD2_PIN_QUOTA, PSD2_PIN_BREAKERS };

static void unpin(const char *pin_dir, const char *name)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", pin_dir, name);
	if (unlink(path) && errno != ENOENT)
		log_warn("xdp: cannot remove %s: %s", path, strerror(errno));
}

static void unpin_all(const char *pin_dir)
{
	for (size_t i = 0; i < N_PINNED; i++)
		unpin(pin_dir, pinned_maps[i].name);
	for (size_t i = 0; i < sizeof(policy_pins) / sizeof(policy_pins[0]); i++)
		unpin(pin_dir, policy_pins[i]);
	if (rmdir(pin_dir) && errno != ENOENT)
		log_warn("xdp: cannot remove %s: %s", pin_dir, strerror(errno));
}

/* --- attach ------------------------------------------------------------------------------ */

static bool prog_is_ours(__u32 id)
{
	struct bpf_prog_info info = { 0 };
	__u32 len = sizeof(info);
	int fd = bpf_prog_get_fd_by_id(id);
	bool ours;

	if (fd < 0)
		return false;
	ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == BPF_PROG_TYPE_XDP &&
	       strcmp(info.name, PROG_NAME) == 0;
	close(fd);
	return ours;
}

/* The program attached to ifindex: its id and mode flag, 0 when none. */
static int query_attached(int ifindex, __u32 *id, __u32 *mode)
{
	LIBBPF_OPTS(bpf_xdp_query_opts, q);

	*id = 0;
	*mode = 0;
	if (bpf_xdp_query(ifindex, 0, &q))
		return -1;
	if (q.drv_prog_id) {
		*id = q.drv_prog_id;
		*mode = XDP_FLAGS_DRV_MODE;
	} else if (q.skb_prog_id) {
		*id = q.skb_prog_id;
		*mode = XDP_FLAGS_SKB_MODE;
	} else if (q.hw_prog_id) {
		*id = q.hw_prog_id;
		*mode = XDP_FLAGS_HW_MODE;
	}
	return 0;
}

/* Attaches in `mode`, atomically replacing old_id when it is set (same mode). */
static int attach_mode(int ifindex, int prog_fd, __u32 mode, __u32 old_id)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts);
	int old_fd = -1, rc;

	if (old_id) {
		old_fd = bpf_prog_get_fd_by_id(old_id);
		if (old_fd < 0)
			return -errno;
		opts.old_prog_fd = old_fd;
	} else {
		mode |= XDP_FLAGS_UPDATE_IF_NOEXIST;
	}
	rc = bpf_xdp_attach(ifindex, prog_fd, mode, &opts);
	if (old_fd >= 0)
		close(old_fd);
	return rc;
}

/* Attaches to dp->ifname per dp->want_mode. A missing interface is not an error (it will be
 * attached when it appears); another program on the interface is. */
static int attach(struct dataplane *dp, char *err, size_t errlen)
{
	int prog_fd = bpf_program__fd(dp->skel->progs.psd2edge_xdp);
	__u32 cur_id, cur_mode, want;
	int ifindex = if_nametoindex(dp->ifname), rc;

	dp->ifindex = 0;
	dp->attach_flags = 0;
	if (!ifindex) {
		log_warn("xdp: interface %s does not exist; the program is attached when it appears",
			 dp->ifname);
		return 0;
	}
	if (query_attached(ifindex, &cur_id, &cur_mode)) {
		snprintf(err, errlen, "bpf.interface: cannot query XDP on %s: %s", dp->ifname,
			 strerror(errno));
		return -1;
	}
	if (cur_id == dp->prog_id && cur_id) {
		dp->ifindex = ifindex;
		dp->attach_flags = cur_mode;
		return 0;
	}
	if (cur_id && !prog_is_ours(cur_id)) {
		snprintf(err, errlen,
			 "bpf.interface: %s already has XDP program id %u that is not psd2edge's",
			 dp->ifname, cur_id);
		return -1;
	}
	want = dp->want_mode == BPF_MODE_GENERIC ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE;
	if (cur_id && cur_mode != want) {
		/* Replacing across modes needs a detach first: keep the mode, no unenforced gap. */
		log_warn("xdp: psd2edge is attached to %s in %s mode; keeping that mode (use --detach "
			 "to change it)", dp->ifname,
			 cur_mode == XDP_FLAGS_SKB_MODE ? "generic" : "native");
		want = cur_mode;
	}
	rc = attach_mode(ifindex, prog_fd, want, cur_id);
	if (rc && want == XDP_FLAGS_DRV_MODE && !cur_id) {
		log_warn("xdp: native attach to %s failed (%s); falling back to generic", dp->ifname,
			 strerror(-rc));
		want = XDP_FLAGS_SKB_MODE;
		rc = attach_mode(ifindex, prog_fd, want, 0);
	}
	if (rc) {
		COUNT_ERROR(dp, attach_failed);
		snprintf(err, errlen, "bpf.interface: cannot attach XDP to %s: %s", dp->ifname,
			 strerror(-rc));
		return -1;
	}
	dp->ifindex = ifindex;
	dp->attach_flags = want;
	log_info("xdp: %s program id %u on %s (%s mode)", cur_id ? "replaced old program by" :
		 "attached", dp->prog_id, dp->ifname, dataplane_mode(dp));
	return 0;
}

static void detach_ours(const char *ifname, __u32 only_id)
{
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts);
	int ifindex = if_nametoindex(ifname), fd;
	__u32 id, mode;

	if (!ifindex || query_attached(ifindex, &id, &mode) || !id)
		return;
	if ((only_id && id != only_id) || !prog_is_ours(id))
		return;
	fd = bpf_prog_get_fd_by_id(id);
	if (fd < 0)
		return;
	opts.old_prog_fd = fd;
	if (bpf_xdp_detach(ifindex, mode, &opts))
		log_warn("xdp: cannot detach program %u from %s: %s", id, ifname, strerror(errno));
	else
		log_info("xdp: detached program %u from %s", id, ifname);
	close(fd);
}

int dataplane_reattach(struct dataplane *dp)
{
	char err[256];

	if (!dataplane_active(dp))
		return 0;
	if (attach(dp, err, sizeof(err))) {
		log_error("xdp: %s", err);
		return -1;
	}
	return dp->ifindex ? 0 : -1;
}

/* --- open / close ------------------------------------------------------------------------ */

static void src_mask(uint8_t plen, int width, __be32 *out)
{
	for (int w = 0; w < width; w++) {
		int bits = (int)plen - 32 * w;

		out[w] = bits >= 32 ? 0xffffffffU : bits <= 0 ? 0 : htonl(~0U << (32 - bits));
	}
}

static uint16_t sockaddr_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

/* Deletes every entry of one flow map: collect the keys, then delete them (deleting while
 * iterating a hash restarts the walk). Returns how many were deleted. */
static size_t purge_map(int fd, size_t klen)
{
	uint8_t *keys = NULL, k[sizeof(struct psd2_flow6_key)];
	size_t n = 0, cap = 0, deleted = 0;
	void *prev = NULL;

	while (bpf_map_get_next_key(fd, prev, k) == 0) {
		if (n == cap) {
			size_t ncap = cap ? cap * 2 : 256;
			uint8_t *nk = realloc(keys, ncap * klen);

			if (!nk)
				break;
			keys = nk;
			cap = ncap;
		}
		memcpy(keys + n * klen, k, klen);
		prev = keys + n++ * klen;
	}
	for (size_t i = 0; i < n; i++)
		deleted += bpf_map_delete_elem(fd, keys + i * klen) == 0;
	free(keys);
	return deleted;
}

/* The index first: XDP then finds no flow in it, and none in the hashes once purged. */
static void purge_flows(struct dataplane *dp)
{
	flow_index_clear(dp->flow_index);
	size_t deleted = purge_map(dp->fd_flows, sizeof(struct psd2_flow_key)) +
			 purge_map(dp->fd_flows6, sizeof(struct psd2_flow6_key));

	if (deleted)
		log_info("xdp: purged %zu flows of the previous process", deleted);
}

/* How many packets (or SYNs) XDP charges to a shared bucket at once (pkt_batch and
 * src_cfg.batch in the ABI header): a quarter of the burst, so batches never turn a conforming
 * sender away, and at most 16, a compare-and-swap per 16 packets instead of per packet. */
static uint32_t charge_batch(uint64_t burst)
{
	uint64_t batch = burst / 4;

	return (uint32_t)(batch < 1 ? 1 : batch > 16 ? 16 : batch);
}

static void apply_src_rate(struct dataplane *dp)
{
	uint64_t per_sec = dp->lim.src_per_sec, burst = dp->lim.src_burst ? dp->lim.src_burst : 1;
	uint64_t interval = per_sec ? NSEC_PER_SEC / per_sec : 0;

	if (per_sec && !interval)
		interval = 1;
	dp->skel->bss->src_cfg.burst_ns = burst * interval < PSD2_MIN_BURST_NS ? PSD2_MIN_BURST_NS :
					  burst * interval;
	dp->skel->bss->src_cfg.batch = charge_batch(burst);
	dp->skel->bss->src_cfg.gen = ++dp->src_cfg_gen;
	dp->skel->bss->src_cfg.interval_ns = interval; /* 0 turns the bucket off */
}

int dataplane_open(const struct config *cfg, struct dataplane **out, char *err, size_t errlen)
{
	struct dataplane_limits lim;

	dataplane_limits_default(&lim);
	return dataplane_open_limits(cfg, &lim, out, err, errlen);
}

int dataplane_open_limits(const struct config *cfg, const struct dataplane_limits *lim,
			  struct dataplane **out, char *err, size_t errlen)
{
	struct dataplane *dp = calloc(1, sizeof(*dp));
	struct bpf_prog_info info = { 0 };
	__u32 info_len = sizeof(info);
	char path[PATH_MAX + 32];
	int rc;

	*out = NULL;
	if (!dp) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	pthread_mutex_init(&dp->clients_lock, NULL);
	dp->lim = *lim;
	if (cfg->bpf.mode == BPF_MODE_OFF) {
		dp->off = true;
		log_info("xdp: data plane off (bpf.mode is off)");
		*out = dp;
		return 0;
	}
	dp->want_mode = cfg->bpf.mode;
	if (!cfg->bpf.pin_dir || !cfg->bpf.interface) {
		snprintf(err, errlen, "bpf: pin_dir and interface are required unless mode is off");
		goto fail;
	}
	snprintf(dp->pin_dir, sizeof(dp->pin_dir), "%s", cfg->bpf.pin_dir);
	snprintf(dp->ifname, sizeof(dp->ifname), "%s", cfg->bpf.interface);
	if (bpffs_ensure_dir(dp->pin_dir, err, errlen))
		goto fail;

	dp->skel = psd2edge_bpf__open();
	if (!dp->skel) {
		snprintf(err, errlen, "bpf: cannot open the XDP object: %s", strerror(errno));
		goto fail;
	}
	for (unsigned i = 0; i < cfg->n_listen; i++) {
		uint16_t port = sockaddr_port(&cfg->listen[i].addr);

		dp->skel->rodata->listen_ports[port >> 3] |= (uint8_t)(1u << (port & 7));
	}
	src_mask(lim->src_v4_prefix, 1, (__be32 *)&dp->skel->rodata->src_mask_v4);
	src_mask(lim->src_v6_prefix, 4, (__be32 *)dp->skel->rodata->src_mask_v6);
	for (size_t i = 0; i < N_PINNED; i++) {
		struct bpf_map *m = pinned_maps[i].get(dp->skel);

		snprintf(path, sizeof(path), "%s/%s", dp->pin_dir, pinned_maps[i].name);
		if (bpffs_pin_check(m, path) < 0)
			log_warn("xdp: cannot inspect pinned map %s: %s", path, strerror(errno));
		if (bpf_map__set_pin_path(m, path)) {
			snprintf(err, errlen, "bpf.pin_dir: bad pin path %s", path);
			goto fail;
		}
	}
	rc = psd2edge_bpf__load(dp->skel);
	if (rc) {
		snprintf(err, errlen, "bpf: cannot load the XDP program or its maps in %s: %s",
			 dp->pin_dir, strerror(-rc));
		goto fail;
	}
	bpf_obj_get_info_by_fd(bpf_program__fd(dp->skel->progs.psd2edge_xdp), &info, &info_len);
	dp->prog_id = info.id;
	dp->fd_clients = bpf_map__fd(dp->skel->maps.clients);
	dp->fd_flows = bpf_map__fd(dp->skel->maps.flows);
	dp->fd_flows6 = bpf_map__fd(dp->skel->maps.flows_v6);
	dp->fd_deny4 = bpf_map__fd(dp->skel->maps.deny_v4);
	dp->fd_deny6 = bpf_map__fd(dp->skel->maps.deny_v6);
	dp->fd_stats = bpf_map__fd(dp->skel->maps.stats);
	dp->fd_client_stats = bpf_map__fd(dp->skel->maps.client_stats);
	dp->fd_deny_index = bpf_map__fd(dp->skel->maps.deny_index);
	dp->flow_index = flow_index_open(bpf_map__fd(dp->skel->maps.flow_index),
					 bpf_map__fd(dp->skel->maps.flow_index_v6));
	dp->clients_mem_len = sizeof(struct psd2_client) * PSD2_MAX_CLIENTS;
	dp->clients_mem = mmap(NULL, dp->clients_mem_len, PROT_READ | PROT_WRITE, MAP_SHARED,
			       dp->fd_clients, 0);
	if (!dp->flow_index || dp->clients_mem == MAP_FAILED) {
		dp->clients_mem = NULL;
		snprintf(err, errlen, "bpf: cannot map the flow index or the clients array: %s",
			 strerror(errno));
		goto fail;
	}
	apply_src_rate(dp);
	purge_flows(dp);
	deny_index_rebuild(dp); /* before attach: the new program must see every deny entry */
	if (attach(dp, err, errlen))
		goto fail;
	*out = dp;
	return 0;
fail:
	if (dp->clients_mem)
		munmap(dp->clients_mem, dp->clients_mem_len);
	flow_index_close(dp->flow_index);
	psd2edge_bpf__destroy(dp->skel);
	pthread_mutex_destroy(&dp->clients_lock);
	free(dp);
	return -1;
}

void dataplane_close(struct dataplane *dp, bool detach)
{
	if (!dp)
		return;
	if (dataplane_active(dp) && detach) {
		if (dp->ifindex)
			detach_ours(dp->ifname, dp->prog_id);
		unpin_all(dp->pin_dir);
	}
	if (dp->nl)
		nl_socket_free(dp->nl);
	if (dp->clients_mem)
		munmap(dp->clients_mem, dp->clients_mem_len);
	flow_index_close(dp->flow_index);
	psd2edge_bpf__destroy(dp->skel);
	pthread_mutex_destroy(&dp->clients_lock);
	free(dp);
}

int dataplane_detach(const struct config *cfg, char *err, size_t errlen)
{
	if (cfg->bpf.interface)
		detach_ours(cfg->bpf.interface, 0);
	if (!cfg->bpf.pin_dir) {
		snprintf(err, errlen, "bpf.pin_dir: not set");
		return -1;
	}
	if (bpffs_on(cfg->bpf.pin_dir))
		unpin_all(cfg->bpf.pin_dir);
	return 0;
}

/* --- clients ------------------------------------------------------------------------------ */

static void limit_apply(struct psd2_client *c, const struct dataplane_client_limit *l)
{
	uint64_t burst = l->burst ? l->burst : 1;
	uint64_t burst_bytes = l->burst_bytes ? l->burst_bytes : burst * MAX_FRAME;

	if (burst_bytes < MAX_FRAME)
		burst_bytes = MAX_FRAME;
	c->pps = l->pps;
	c->bytes_per_sec = l->bps;
	c->burst_pkts = l->pps ? burst : 0;
	c->burst_bytes = l->bps ? burst_bytes : 0;
	c->pkt_interval_ns = l->pps ? NSEC_PER_SEC / l->pps : 0;
	if (l->pps && !c->pkt_interval_ns)
		c->pkt_interval_ns = 1;
	c->pkt_burst_ns = c->burst_pkts * c->pkt_interval_ns;
	c->byte_burst_ns = l->bps ? (uint64_t)((unsigned __int128)burst_bytes * NSEC_PER_SEC /
					       l->bps) : 0;
	if (l->pps && c->pkt_burst_ns < PSD2_MIN_BURST_NS)
		c->pkt_burst_ns = PSD2_MIN_BURST_NS;
	if (l->bps && c->byte_burst_ns < PSD2_MIN_BURST_NS)
		c->byte_burst_ns = PSD2_MIN_BURST_NS;
	c->pkt_tat_ns = 0;
	c->byte_tat_ns = 0;
	c->pkt_batch = charge_batch(c->burst_pkts);
	c->limit_gen++;
}

static int client_write(struct dataplane *dp, uint32_t slot, const struct psd2_client *c)
{
	if (bpf_map_update_elem(dp->fd_clients, &slot, c, BPF_ANY)) {
		COUNT_ERROR(dp, client_write_failed);
		log_error("xdp: cannot write client slot %u: %s", slot, strerror(errno));
		return -1;
	}
	return 0;
}

static bool slot_ok(struct dataplane *dp, uint32_t slot)
{
	if (slot < PSD2_MAX_CLIENTS)
		return true;
	COUNT_ERROR(dp, client_bad_slot);
	log_error("xdp: client slot %u out of range (max %u)", slot, PSD2_MAX_CLIENTS - 1);
	return false;
}

/* A slot that gets a new client starts its per-CPU counters from zero. */
static void client_stats_zero(struct dataplane *dp, uint32_t slot)
{
	int ncpu = libbpf_num_possible_cpus();
	struct psd2_client_stats *z;

	if (ncpu <= 0 || !(z = calloc((size_t)ncpu, sizeof(*z))))
		return;
	if (bpf_map_update_elem(dp->fd_client_stats, &slot, z, BPF_ANY))
		COUNT_ERROR(dp, client_write_failed);
	free(z);
}

static int client_set_locked(struct dataplane *dp, uint32_t slot, const char *client_id,
			     const uint8_t thumb[32], bool revoked,
			     const struct dataplane_client_limit *lim)
{
	struct psd2_client c;

	if (bpf_map_lookup_elem(dp->fd_clients, &slot, &c))
		memset(&c, 0, sizeof(c));
	if (c.state == PSD2_CLIENT_FREE || strncmp(c.client_id, client_id, sizeof(c.client_id))) {
		memset(&c, 0, sizeof(c));
		limit_apply(&c, lim ? lim : &dp->lim.client);
		client_stats_zero(dp, slot);
	} else if (lim) {
		limit_apply(&c, lim);
	}
	snprintf(c.client_id, sizeof(c.client_id), "%s", client_id);
	if (thumb)
		memcpy(c.thumb, thumb, sizeof(c.thumb));
	c.state = revoked ? PSD2_CLIENT_REVOKED : PSD2_CLIENT_ACTIVE;
	dp->slot_used[slot / 8] |= (uint8_t)(1u << (slot % 8));
	return client_write(dp, slot, &c);
}

int dataplane_client_set(struct dataplane *dp, uint32_t slot, const char *client_id,
			 const uint8_t thumb[32], bool revoked)
{
	int rc;

	if (!dataplane_active(dp))
		return 0;
	if (!slot_ok(dp, slot))
		return -1;
	pthread_mutex_lock(&dp->clients_lock);
	rc = client_set_locked(dp, slot, client_id, thumb, revoked, NULL);
	pthread_mutex_unlock(&dp->clients_lock);
	return rc;
}

int dataplane_client_limit(struct dataplane *dp, uint32_t slot,
			   const struct dataplane_client_limit *lim)
{
	struct psd2_client c;
	int rc = -1;

	if (!dataplane_active(dp))
		return 0;
	if (!slot_ok(dp, slot))
		return -1;
	pthread_mutex_lock(&dp->clients_lock);
	if (bpf_map_lookup_elem(dp->fd_clients, &slot, &c) == 0) {
		limit_apply(&c, lim ? lim : &dp->lim.client);
		rc = client_write(dp, slot, &c);
	}
	pthread_mutex_unlock(&dp->clients_lock);
	return rc;
}

int dataplane_client_del(struct dataplane *dp, uint32_t slot)
{
	struct psd2_client c = { .state = PSD2_CLIENT_FREE };
	int rc;

	if (!dataplane_active(dp))
		return 0;
	if (!slot_ok(dp, slot))
		return -1;
	pthread_mutex_lock(&dp->clients_lock);
	dp->slot_used[slot / 8] &= (uint8_t)~(1u << (slot % 8));
	rc = client_write(dp, slot, &c);
	pthread_mutex_unlock(&dp->clients_lock);
	return rc;
}

/* Sums the slot's per-CPU counters into *sum. 0, or -1. */
static int client_stats_sum(struct dataplane *dp, uint32_t slot, struct psd2_client_stats *sum)
{
	int ncpu = libbpf_num_possible_cpus();
	struct psd2_client_stats *per_cpu;

	memset(sum, 0, sizeof(*sum));
	if (ncpu <= 0 || !(per_cpu = calloc((size_t)ncpu, sizeof(*per_cpu))))
		return -1;
	if (bpf_map_lookup_elem(dp->fd_client_stats, &slot, per_cpu)) {
		free(per_cpu);
		return -1;
	}
	for (int i = 0; i < ncpu; i++) {
		sum->pass_packets += per_cpu[i].pass_packets;
		sum->pass_bytes += per_cpu[i].pass_bytes;
		sum->drop_revoked += per_cpu[i].drop_revoked;
		sum->drop_policed += per_cpu[i].drop_policed;
	}
	free(per_cpu);
	return 0;
}

void dataplane_fill_client(struct dataplane *dp, uint32_t slot, json_t *obj)
{
	struct psd2_client_stats sum;

	if (!dataplane_active(dp) || slot >= PSD2_MAX_CLIENTS || client_stats_sum(dp, slot, &sum))
		return;
	json_object_set_new(obj, "xdp",
			    json_pack("{s:I, s:I, s:I, s:I}", "pass_packets",
				      (json_int_t)sum.pass_packets, "pass_bytes",
				      (json_int_t)sum.pass_bytes, "drop_revoked",
				      (json_int_t)sum.drop_revoked, "drop_policed",
				      (json_int_t)sum.drop_policed));
}

/* The counters are stored into the mmap-ed entry one field at a time: a whole-value write would
 * also put back GCRA times XDP advanced in the meantime. */
int dataplane_client_counters_refresh(struct dataplane *dp)
{
	int rc = 0;

	if (!dataplane_active(dp))
		return 0;
	for (uint32_t slot = 0; slot < PSD2_MAX_CLIENTS; slot++) {
		struct psd2_client_stats sum;
		struct psd2_client *c = &dp->clients_mem[slot];

		if (!(dp->slot_used[slot / 8] & (1u << (slot % 8))))
			continue;
		if (client_stats_sum(dp, slot, &sum)) {
			rc = -1;
			continue;
		}
		pthread_mutex_lock(&dp->clients_lock);
		if (dp->slot_used[slot / 8] & (1u << (slot % 8))) {
			__atomic_store_n(&c->pass_packets, sum.pass_packets, __ATOMIC_RELAXED);
			__atomic_store_n(&c->pass_bytes, sum.pass_bytes, __ATOMIC_RELAXED);
			__atomic_store_n(&c->drop_revoked, sum.drop_revoked, __ATOMIC_RELAXED);
			__atomic_store_n(&c->drop_policed, sum.drop_policed, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&dp->clients_lock);
	}
	return rc;
}

/* --- flows -------------------------------------------------------------------------------- */

/* Address and port of a sockaddr in the map's form (IPv4-mapped for IPv4). */
static int addr_to_key(const struct sockaddr *sa, __u8 addr[16], __be16 *port)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		memset(addr, 0, 10);
		addr[10] = addr[11] = 0xff;
		memcpy(addr + 12, &in->sin_addr, 4);
		*port = in->sin_port;
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		memcpy(addr, &in6->sin6_addr, 16);
		*port = in6->sin6_port;
		return 0;
	}
	return -1;
}

/* A connection's key and map: IPv4 (also IPv4-mapped IPv6, as XDP sees those packets) in
 * flows, IPv6 in flows_v6. */
struct flow_ref {
	int fd;
	union {
		struct psd2_flow_key k4;
		struct psd2_flow6_key k6;
	};
};

static bool addr_is_mapped(const __u8 a[16])
{
	static const __u8 prefix[12] = { [10] = 0xff, [11] = 0xff };

	return memcmp(a, prefix, sizeof(prefix)) == 0;
}

static int flow_key(struct dataplane *dp, const struct sockaddr *peer,
		    const struct sockaddr *local, struct flow_ref *f)
{
	struct psd2_flow6_key k;

	memset(f, 0, sizeof(*f));
	memset(&k, 0, sizeof(k));
	if (addr_to_key(peer, k.saddr, &k.sport) || addr_to_key(local, k.daddr, &k.dport))
		return -1;
	if (addr_is_mapped(k.saddr) && addr_is_mapped(k.daddr)) {
		memcpy(f->k4.saddr, k.saddr + 12, 4);
		memcpy(f->k4.daddr, k.daddr + 12, 4);
		f->k4.sport = k.sport;
		f->k4.dport = k.dport;
		f->fd = dp->fd_flows;
	} else {
		f->k6 = k;
		f->fd = dp->fd_flows6;
	}
	return 0;
}

int dataplane_flow_add(struct dataplane *dp, const struct sockaddr *peer,
		       const struct sockaddr *local, uint32_t slot)
{
	struct flow_ref k;
	struct psd2_flow v = { .slot = slot };
	struct timespec ts;

	if (!dataplane_active(dp))
		return 0;
	if (flow_key(dp, peer, local, &k)) {
		COUNT_ERROR(dp, flow_bad_address);
		return -1;
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	v.created_ns = (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
	/* NOEXIST first: the index counts each flow once (flow_index.h). */
	bool is_new = bpf_map_update_elem(k.fd, &k.k4, &v, BPF_NOEXIST) == 0;
	if (!is_new && (errno != EEXIST || bpf_map_update_elem(k.fd, &k.k4, &v, BPF_EXIST))) {
		int e = errno;

		if (e == E2BIG || e == ENOMEM)
			COUNT_ERROR(dp, flow_add_full);
		else
			COUNT_ERROR(dp, flow_add_failed);
		if (warn_allowed(dp))
			log_warn("xdp: cannot add flow for slot %u: %s%s", slot, strerror(e),
				 e == E2BIG ? " (flows map full: this connection is not enforced "
					      "in XDP)" : "");
		return -1;
	}
	enum flow_index_op op = is_new ? FLOW_INDEX_ADD : FLOW_INDEX_SET;
	if (k.fd == dp->fd_flows)
		flow_index_update_v4(dp->flow_index, &k.k4, slot, op);
	else
		flow_index_update_v6(dp->flow_index, &k.k6, slot, op);
	atomic_fetch_add_explicit(&dp->flows_added, 1, memory_order_relaxed);
	return 0;
}

int dataplane_flow_del(struct dataplane *dp, const struct sockaddr *peer,
		       const struct sockaddr *local)
{
	struct flow_ref k;

	if (!dataplane_active(dp))
		return 0;
	if (flow_key(dp, peer, local, &k)) {
		COUNT_ERROR(dp, flow_bad_address);
		return -1;
	}
	if (bpf_map_delete_elem(k.fd, &k.k4)) {
		if (errno != ENOENT) {
			COUNT_ERROR(dp, flow_del_failed);
			if (warn_allowed(dp))
				log_warn("xdp: cannot delete flow: %s", strerror(errno));
		}
		return -1;
	}
	if (k.fd == dp->fd_flows)
		flow_index_update_v4(dp->flow_index, &k.k4, 0, FLOW_INDEX_DEL);
	else
		flow_index_update_v6(dp->flow_index, &k.k6, 0, FLOW_INDEX_DEL);
	atomic_fetch_add_explicit(&dp->flows_deleted, 1, memory_order_relaxed);
	return 0;
}

/* --- deny_index: the prefilter in front of the tries (layout: psd2edge_abi.h) --------------- */

static void index_bit(uint64_t *w, uint32_t base, uint32_t bit)
{
	w[base + (bit >> 6)] |= 1ULL << (bit & 63);
}

/* Sets, in the word array w, every bit that the prefix c needs. */
static void deny_index_mark(uint64_t *w, int family, uint32_t plen, const uint8_t *addr)
{
	if (family == AF_INET) {
		uint32_t first = (uint32_t)addr[0] << 8 | addr[1];
		uint32_t n = plen >= 16 ? 1 : 1u << (16 - plen);

		for (uint32_t v = first; v < first + n && v <= 0xffff; v++)
			index_bit(w, PSD2_DENY_INDEX_V4, htons((uint16_t)v)); /* memory order */
		return;
	}
	if (plen < 32) {
		w[PSD2_DENY_INDEX_FLAGS] |= PSD2_DENY_F_V6_SHORT;
	} else {
		uint32_t w0;
		uint16_t h2;

		memcpy(&w0, addr, 4);
		memcpy(&h2, addr + 4, 2);
		if (plen < 48)
			index_bit(w, PSD2_DENY_INDEX_V6_32, PSD2_DENY_H32(w0));
		else
			index_bit(w, PSD2_DENY_INDEX_V6_48, PSD2_DENY_H48(w0, h2));
	}
}

/* Writes the words of `want` that differ from the map. */
static int deny_index_store(struct dataplane *dp, const uint64_t *want)
{
	int rc = 0;

	for (uint32_t i = 0; i < PSD2_DENY_INDEX_WORDS; i++) {
		uint64_t have;

		if (bpf_map_lookup_elem(dp->fd_deny_index, &i, &have) == 0 && have == want[i])
			continue;
		if (bpf_map_update_elem(dp->fd_deny_index, &i, &want[i], BPF_ANY))
			rc = -1;
	}
	if (rc) {
		COUNT_ERROR(dp, deny_write_failed);
		log_error("xdp: cannot write the deny index: %s", strerror(errno));
	}
	return rc;
}

/* Recomputes the whole index from both tries (start, deny del, sync). */
static int deny_index_rebuild(struct dataplane *dp)
{
	uint64_t *w = calloc(PSD2_DENY_INDEX_WORDS, sizeof(*w));
	struct psd2_deny_v6_key k6, *p6 = NULL;
	struct psd2_deny_v4_key k4, *p4 = NULL;
	int rc;

	if (!w)
		return -1;
	while (bpf_map_get_next_key(dp->fd_deny4, p4, &k4) == 0) {
		deny_index_mark(w, AF_INET, k4.prefixlen, k4.addr);
		p4 = &k4;
	}
	while (bpf_map_get_next_key(dp->fd_deny6, p6, &k6) == 0) {
		deny_index_mark(w, AF_INET6, k6.prefixlen, k6.addr);
		p6 = &k6;
	}
	rc = deny_index_store(dp, w);
	free(w);
	return rc;
}

/* Adds one prefix's bits to the index (after its trie entry exists): read-modify-write of the
 * words it touches only (one for most prefixes). */
static int deny_index_add(struct dataplane *dp, const struct cidr *c)
{
	uint64_t *w = calloc(PSD2_DENY_INDEX_WORDS, sizeof(*w));
	int rc = 0;

	if (!w)
		return -1;
	deny_index_mark(w, c->family, c->plen, c->addr);
	for (uint32_t i = 0; i < PSD2_DENY_INDEX_WORDS; i++) {
		uint64_t have = 0, want;

		if (!w[i])
			continue;
		bpf_map_lookup_elem(dp->fd_deny_index, &i, &have);
		want = have | w[i];
		if (want != have && bpf_map_update_elem(dp->fd_deny_index, &i, &want, BPF_ANY))
			rc = -1;
	}
	if (rc) {
		COUNT_ERROR(dp, deny_write_failed);
		log_error("xdp: cannot write the deny index: %s", strerror(errno));
	}
	free(w);
	return rc;
}

static int deny_write(struct dataplane *dp, const char *text, bool add)
{
	struct psd2_deny_v4_key k4;
	struct psd2_deny_v6_key k6;
	struct psd2_deny zero = { 0 };
	const char *why;
	struct cidr c;
	void *key;
	int fd, rc;

	if (!dataplane_active(dp))
		return 0;
	if (cidr_parse(text, &c, &why)) {
		log_warn("xdp: deny entry '%s': %s", text, why);
		return -1;
	}
	if (c.family == AF_INET) {
		k4.prefixlen = c.plen;
		memcpy(k4.addr, c.addr, 4);
		key = &k4;
		fd = dp->fd_deny4;
	} else {
		k6.prefixlen = c.plen;
		memcpy(k6.addr, c.addr, 16);
		key = &k6;
		fd = dp->fd_deny6;
	}
	if (add) {
		/* An existing entry keeps its hit counters. */
		rc = bpf_map_update_elem(fd, key, &zero, BPF_NOEXIST);
		if (rc && errno == EEXIST)
			rc = 0;
	} else {
		rc = bpf_map_delete_elem(fd, key);
		if (rc && errno == ENOENT)
			rc = 0;
	}
	if (rc) {
		COUNT_ERROR(dp, deny_write_failed);
		log_error("xdp: cannot %s deny entry %s: %s", add ? "add" : "remove", text,
			  strerror(errno));
		return rc;
	}
	/* The index may only over-approximate the tries: bits are set after an add, cleared by
	 * a rebuild after a delete. */
	return add ? deny_index_add(dp, &c) : deny_index_rebuild(dp);
}

int dataplane_deny_add(struct dataplane *dp, const char *cidr)
{
	return deny_write(dp, cidr, true);
}

int dataplane_deny_del(struct dataplane *dp, const char *cidr)
{
	return deny_write(dp, cidr, false);
}

/* Removes the entries of one trie that are not in the wanted list. */
static void deny_prune(struct dataplane *dp, int fd, int family, const struct cidr *want,
		       size_t n_want)
{
	size_t klen = family == AF_INET ? sizeof(struct psd2_deny_v4_key) :
					  sizeof(struct psd2_deny_v6_key);
	size_t alen = family == AF_INET ? 4 : 16;
	uint8_t key[sizeof(struct psd2_deny_v6_key)], *stale = NULL;
	size_t n_stale = 0;
	void *prev = NULL;
	uint8_t prev_buf[sizeof(key)];

	while (bpf_map_get_next_key(fd, prev, key) == 0) {
		uint32_t plen;
		bool keep = false;

		memcpy(&plen, key, 4);
		for (size_t i = 0; i < n_want && !keep; i++)
			keep = want[i].family == family && want[i].plen == plen &&
			       memcmp(want[i].addr, key + 4, alen) == 0;
		if (!keep) {
			uint8_t *ns = realloc(stale, (n_stale + 1) * klen);

			if (!ns)
				break;
			stale = ns;
			memcpy(stale + n_stale++ * klen, key, klen);
		}
		memcpy(prev_buf, key, klen);
		prev = prev_buf;
	}
	for (size_t i = 0; i < n_stale; i++)
		if (bpf_map_delete_elem(fd, stale + i * klen) && errno != ENOENT)
			COUNT_ERROR(dp, deny_write_failed);
	if (n_stale)
		log_info("xdp: removed %zu deny entries absent from the registry", n_stale);
	free(stale);
}

int dataplane_sync(struct dataplane *dp, const struct dataplane_client *clients, size_t n_clients,
		   char *const *cidrs, size_t n_cidrs)
{
	uint8_t *seen = NULL;
	struct cidr *want = NULL;
	size_t n_want = 0;
	int rc = 0;

	if (!dataplane_active(dp))
		return 0;
	seen = calloc(PSD2_MAX_CLIENTS / 8, 1);
	want = calloc(n_cidrs ? n_cidrs : 1, sizeof(*want));
	if (!seen || !want) {
		rc = -1;
		goto out;
	}
	pthread_mutex_lock(&dp->clients_lock);
	for (size_t i = 0; i < n_clients; i++) {
		const struct dataplane_client *c = &clients[i];

		if (!slot_ok(dp, c->slot)) {
			rc = -1;
			continue;
		}
		seen[c->slot / 8] |= (uint8_t)(1u << (c->slot % 8));
		if (client_set_locked(dp, c->slot, c->client_id, c->thumb, c->revoked, c->limit))
			rc = -1;
	}
	for (uint32_t slot = 0; slot < PSD2_MAX_CLIENTS; slot++) {
		struct psd2_client c;

		if (seen[slot / 8] & (1u << (slot % 8)))
			continue;
		dp->slot_used[slot / 8] &= (uint8_t)~(1u << (slot % 8));
		if (bpf_map_lookup_elem(dp->fd_clients, &slot, &c) == 0 &&
		    (c.state != PSD2_CLIENT_FREE || c.client_id[0])) {
			memset(&c, 0, sizeof(c));
			if (client_write(dp, slot, &c))
				rc = -1;
		}
	}
	pthread_mutex_unlock(&dp->clients_lock);

	for (size_t i = 0; i < n_cidrs; i++) {
		const char *why;

		if (cidr_parse(cidrs[i], &want[n_want], &why) == 0)
			n_want++;
		if (dataplane_deny_add(dp, cidrs[i]))
			rc = -1;
	}
	deny_prune(dp, dp->fd_deny4, AF_INET, want, n_want);
	deny_prune(dp, dp->fd_deny6, AF_INET6, want, n_want);
	if (deny_index_rebuild(dp))
		rc = -1;
	log_info("xdp: synchronised %zu clients and %zu deny entries", n_clients, n_cidrs);
out:
	free(seen);
	free(want);
	return rc;
}

int dataplane_set_src_rate(struct dataplane *dp, uint64_t per_sec, uint64_t burst)
{
	if (!dataplane_active(dp))
		return 0;
	dp->lim.src_per_sec = per_sec;
	dp->lim.src_burst = burst;
	apply_src_rate(dp);
	return 0;
}

/* --- metrics ------------------------------------------------------------------------------ */

void dataplane_metrics(void *arg, struct metrics_sink *sink)
{
	struct dataplane *dp = arg;
	bool active = dataplane_active(dp);
	metrics_emit(sink, METRIC_xdp_info, 1,
		     METRIC_LABELS(dataplane_mode(dp), active ? dp->ifname : ""));
	if (!active)
		return;
	int ncpu = libbpf_num_possible_cpus();
	struct psd2_stat *v = ncpu > 0 ? calloc((size_t)ncpu, sizeof(*v)) : NULL;
	for (__u32 r = 0; v && r < PSD2_STAT_MAX; r++) {
		uint64_t p = 0, b = 0;

		if (bpf_map_lookup_elem(dp->fd_stats, &r, v) == 0)
			for (int c = 0; c < ncpu; c++) {
				p += v[c].packets;
				b += v[c].bytes;
			}
		metrics_emit(sink, METRIC_xdp_packets, (int64_t)p, METRIC_LABELS(reason_names[r]));
		metrics_emit(sink, METRIC_xdp_bytes, (int64_t)b, METRIC_LABELS(reason_names[r]));
	}
	free(v);
#define DP_ERROR_EMIT(name)                                                                \
	metrics_emit(sink, METRIC_xdp_errors,                                              \
		     (int64_t)atomic_load_explicit(&dp->errors.name, memory_order_relaxed),     \
		     METRIC_LABELS(#name));
	DP_ERRORS(DP_ERROR_EMIT)
#undef DP_ERROR_EMIT
	metrics_emit(sink, METRIC_xdp_flows_added, (int64_t)atomic_load(&dp->flows_added), NULL);
	metrics_emit(sink, METRIC_xdp_flows_deleted, (int64_t)atomic_load(&dp->flows_deleted),
		     NULL);
}

/* --- link notifications ------------------------------------------------------------------- */

static int link_msg(struct nl_msg *msg, void *arg)
{
	struct dataplane *dp = arg;
	struct nlmsghdr *h = nlmsg_hdr(msg);
	struct nlattr *name;

	if (h->nlmsg_type != RTM_NEWLINK)
		return NL_OK;
	name = nlmsg_find_attr(h, sizeof(struct ifinfomsg), IFLA_IFNAME);
	if (name && strcmp(nla_get_string(name), dp->ifname) == 0)
		dp->link_event = true;
	return NL_OK;
}

int dataplane_link_fd(struct dataplane *dp)
{
	if (!dataplane_active(dp))
		return -1;
	if (dp->nl)
		return nl_socket_get_fd(dp->nl);
	dp->nl = nl_socket_alloc();
	if (!dp->nl)
		return -1;
	nl_socket_disable_seq_check(dp->nl);
	nl_socket_modify_cb(dp->nl, NL_CB_VALID, NL_CB_CUSTOM, link_msg, dp);
	if (nl_connect(dp->nl, NETLINK_ROUTE) || nl_socket_add_membership(dp->nl, RTNLGRP_LINK) ||
	    nl_socket_set_nonblocking(dp->nl)) {
		log_warn("xdp: cannot watch link notifications; %s is not re-attached if it "
			 "reappears", dp->ifname);
		nl_socket_free(dp->nl);
		dp->nl = NULL;
		return -1;
	}
	return nl_socket_get_fd(dp->nl);
}

void dataplane_link_ready(struct dataplane *dp)
{
	if (!dataplane_active(dp) || !dp->nl)
		return;
	dp->link_event = false;
	while (nl_recvmsgs_default(dp->nl) >= 0)
		;
	if (!dp->link_event)
		return;
	if (dp->ifindex && (int)if_nametoindex(dp->ifname) == dp->ifindex) {
		__u32 id, mode;

		if (query_attached(dp->ifindex, &id, &mode) == 0 && id == dp->prog_id)
			return;
	}
	log_info("xdp: interface %s (re)appeared; attaching", dp->ifname);
	dataplane_reattach(dp);
}
