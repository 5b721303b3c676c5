/* The maps of the XDP program. Each is pinned by the daemon (user/dataplane.c) as one file of
 * the same name under the pin directory; none sets a pinning attribute here, so tests and
 * benchmarks load the object without touching bpffs. Layouts: include/psd2edge_abi.h. */
#ifndef PSD2EDGE_MAPS_H
#define PSD2EDGE_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "psd2edge_abi.h"

/* Client identity, state, limits and counters by registry slot. Written by the daemon on
 * bind/revoke/unbind/limit, and its counters field by field through mmap; XDP updates the GCRA
 * times. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_client);
	__uint(max_entries, PSD2_MAX_CLIENTS);
	__uint(map_flags, BPF_F_MMAPABLE);
} clients SEC(".maps");

/* Per-CPU packet counters of each client slot, written by XDP without atomics; summed over
 * CPUs by readers, zeroed by the daemon when a slot gets a new client. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_client_stats);
	__uint(max_entries, PSD2_MAX_CLIENTS);
} client_stats SEC(".maps");

/* Authenticated IPv4 connections -> client slot. Written by the workers after the binding
 * check, deleted on close; never evicted (a lost flow would escape a revoke). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct psd2_flow_key);
	__type(value, struct psd2_flow);
	__uint(max_entries, PSD2_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} flows SEC(".maps");

/* Authenticated IPv6 connections, as flows. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct psd2_flow6_key);
	__type(value, struct psd2_flow);
	__uint(max_entries, PSD2_MAX_FLOWS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} flows_v6 SEC(".maps");

/* Per-CPU prepaid SYNs of IPv4 sources, in front of src_rate (psd2edge_abi.h). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_src_prepaid);
	__uint(max_entries, 1 << PSD2_SRC_PREPAID_BITS);
} src_prepaid SEC(".maps");

/* Direct-mapped fronts of flows and flows_v6 (psd2edge_abi.h), written by the daemon only. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_flow_index_v4);
	__uint(max_entries, PSD2_FLOW_INDEX_V4_SIZE);
	__uint(map_flags, BPF_F_MMAPABLE);
} flow_index SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_flow_index_v6);
	__uint(max_entries, PSD2_FLOW_INDEX_V6_SIZE);
	__uint(map_flags, BPF_F_MMAPABLE);
} flow_index_v6 SEC(".maps");

/* Denied IPv4 source prefixes. Written by the daemon (deny add/del, restored from the
 * registry at start); XDP counts hits in the value. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct psd2_deny_v4_key);
	__type(value, struct psd2_deny);
	__uint(max_entries, PSD2_MAX_DENY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} deny_v4 SEC(".maps");

/* Denied IPv6 source prefixes, as deny_v4. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct psd2_deny_v6_key);
	__type(value, struct psd2_deny);
	__uint(max_entries, PSD2_MAX_DENY);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} deny_v6 SEC(".maps");

/* Prefilter of the deny tries (layout in psd2edge_abi.h), written by the daemon; XDP walks a
 * trie only when the source's bit is set. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, PSD2_DENY_INDEX_WORDS);
} deny_index SEC(".maps");

/* Per-source SYN buckets, created and updated by XDP only; the LRU evicts the coldest. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct psd2_src_v4_key);
	__type(value, struct psd2_src_bucket);
	__uint(max_entries, PSD2_MAX_SRC_BUCKETS);
} src_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct psd2_src_v6_key);
	__type(value, struct psd2_src_bucket);
	__uint(max_entries, PSD2_MAX_SRC_BUCKETS);
} src_rate_v6 SEC(".maps");

/* Per-CPU packet and byte counters by enum psd2_stat_reason, written by XDP; the daemon sums
 * them over CPUs for `psd2edgectl stats`. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_stat);
	__uint(max_entries, PSD2_STAT_MAX);
} stats SEC(".maps");

#endif
