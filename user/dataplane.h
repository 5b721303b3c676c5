/* The XDP data plane seen from the daemon: loads bpf/psd2edge.bpf.c through its skeleton,
 * reuses the maps pinned under bpf.pin_dir (one file each, layouts in include/psd2edge_abi.h),
 * attaches the program to bpf.interface, and writes the daemon's verdicts into the maps.
 *
 * Failures to write a map (full, pin errors) are logged and counted (dataplane_metrics);
 * they never stop the daemon from serving. With bpf.mode "off" every call succeeds and does
 * nothing.
 *
 * Threads: dataplane_flow_add/del may be called from any worker at any time; every other call
 * runs on the control thread. */
#ifndef PSD2EDGE_DATAPLANE_H
#define PSD2EDGE_DATAPLANE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config.h"

struct registry;
struct dataplane;

/* Per-client policing; 0 means unlimited. bps counts bytes of whole frames per second (as tc's
 * "bps"). burst is in packets; burst_bytes 0 means burst * 1514 (at least 1514). */
struct dataplane_client_limit {
	uint64_t pps, bps, burst, burst_bytes;
};

/* Rates the daemon can change at run time (defaults until config/registry provide them). */
struct dataplane_limits {
	uint64_t src_per_sec;  /* new TCP connections (SYN without ACK) per source and second; 0 = off */
	uint64_t src_burst;    /* back-to-back SYNs a source may send (>= 1) */
	uint8_t src_v4_prefix; /* sources sharing one bucket: IPv4 /32 by default */
	uint8_t src_v6_prefix; /* IPv6 /64 by default */
	struct dataplane_client_limit client; /* default for every bound client */
};

#define DATAPLANE_SRC_PER_SEC_DEFAULT 50
#define DATAPLANE_SRC_BURST_DEFAULT 100

void dataplane_limits_default(struct dataplane_limits *lim);

/* Mounts bpffs at the pin directory's parent when no bpffs is there, loads the program with the
 * listener ports of cfg->listen, reuses (or creates and pins) the maps, purges every flow (the
 * new process has no connection yet) and attaches per cfg->bpf.mode: native, falling back to
 * generic with a log line, or off. An interface that does not exist yet is not an error: the
 * program is attached when it appears (dataplane_link_*). A program of psd2edge already attached
 * is replaced atomically, so a restart leaves no unenforced window; any other XDP program on
 * the interface is left alone and the call fails. -1 with err on failure. */
int dataplane_open(const struct config *cfg, struct dataplane **out, char *err, size_t errlen);
int dataplane_open_limits(const struct config *cfg, const struct dataplane_limits *lim,
			  struct dataplane **out, char *err, size_t errlen);
bool dataplane_active(const struct dataplane *dp); /* false with bpf.mode off */
const char *dataplane_mode(const struct dataplane *dp); /* "native", "generic", "detached", "off" */

/* detach false: the program stays attached and the maps pinned (SIGTERM, restart).
 * detach true: detaches the program and removes the pins and the pin directory. */
void dataplane_close(struct dataplane *dp, bool detach);
/* `psd2edged --detach`: without a loaded dataplane, detaches psd2edge's program from
 * cfg->bpf.interface and removes the pinned maps. 0, or -1 with err. */
int dataplane_detach(const struct config *cfg, char *err, size_t errlen);

/* Rebuilds client states and the deny-list from the registry: every client's slot is written,
 * every other slot freed; deny entries missing from the maps are added, extra ones removed
 * (existing ones keep their hit counters). In dataplane_sync.c (links the registry). */
int dataplane_sync_clients(struct dataplane *dp, struct registry *reg);

/* The same from plain lists (what dataplane_sync_clients reads out of the registry). */
struct dataplane_client {
	uint32_t slot;
	const char *client_id;
	const uint8_t *thumb; /* 32 bytes */
	bool revoked;
	const struct dataplane_client_limit *limit; /* NULL: the default */
};
int dataplane_sync(struct dataplane *dp, const struct dataplane_client *clients, size_t n_clients,
		   char *const *cidrs, size_t n_cidrs);

/* Clients by registry slot. client_set keeps the slot's limits and counters when the client_id
 * is unchanged, else starts from the default limit. client_del frees the slot: packets of its
 * remaining flows are dropped. */
int dataplane_client_set(struct dataplane *dp, uint32_t slot, const char *client_id,
			 const uint8_t thumb[32], bool revoked);
int dataplane_client_limit(struct dataplane *dp, uint32_t slot,
			   const struct dataplane_client_limit *lim); /* NULL: the default */
int dataplane_client_del(struct dataplane *dp, uint32_t slot);
/* Copies the sums of each client's per-CPU counters (client_stats) into its clients entry, for
 * whoever reads the pinned map; the daemon calls it every second. 0, or -1 if a slot failed. */
int dataplane_client_counters_refresh(struct dataplane *dp);
/* Sets obj's "xdp" to the slot's counters summed over CPUs ({"pass_packets", "pass_bytes",
 * "drop_revoked", "drop_policed"}); nothing when the data plane is off or the read fails. */
void dataplane_fill_client(struct dataplane *dp, uint32_t slot, json_t *obj);

/* Authenticated connections (IPv4, IPv6, IPv4-mapped IPv6). peer is the TPP's address
 * (getpeername), local the gateway's (getsockname). */
int dataplane_flow_add(struct dataplane *dp, const struct sockaddr *peer,
		       const struct sockaddr *local, uint32_t slot);
int dataplane_flow_del(struct dataplane *dp, const struct sockaddr *peer,
		       const struct sockaddr *local);

/* Deny-list; cidr "ADDR/LEN" or a bare address. Host bits are cleared. -1 when not a CIDR. */
int dataplane_deny_add(struct dataplane *dp, const char *cidr);
int dataplane_deny_del(struct dataplane *dp, const char *cidr);

/* Per-source new-connection rate, effective at the next packet. per_sec 0 turns it off. */
int dataplane_set_src_rate(struct dataplane *dp, uint64_t per_sec, uint64_t burst);

/* A metrics source (metrics.h; arg: the dataplane): the mode and interface, the stats map's
 * per-verdict counters summed over CPUs, the map write failures and the flows added and
 * deleted. */
struct metrics_sink;
void dataplane_metrics(void *arg, struct metrics_sink *sink);

/* Interface comings and goings (rtnetlink, libnl): a socket to watch for readability, and the
 * handler to call when it is readable; the program is re-attached when the interface
 * (re)appears. -1 when off or on failure. */
int dataplane_link_fd(struct dataplane *dp);
void dataplane_link_ready(struct dataplane *dp);
/* Attaches again if the program is not on the interface (e.g. it was deleted and re-created).
 * 0 when attached (or off), -1 otherwise. */
int dataplane_reattach(struct dataplane *dp);

#endif
