// SPDX-License-Identifier: GPL-2.0
/* The daemon's policy state as two pinned BPF maps and no program: the maps outlive the process
 * (bpffs), every worker shares them through one mmap, and `bpftool map dump pinned
 * <pin_dir>/quota` prints named fields, which the value types declared here put into the
 * object's BTF. Only the daemon reads and writes them (user/policy_store.c). Layouts:
 * include/psd2edge_abi.h. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#include "psd2edge_abi.h"

/* Quota counters, one per (quota name, client_id, key value); a free entry is all zeros. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_quota);
	__uint(max_entries, PSD2_MAX_QUOTA_ENTRIES);
	__uint(map_flags, BPF_F_MMAPABLE);
} quota SEC(".maps");

/* Circuit breakers, one per configured upstream, matched by name across restarts. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct psd2_breaker);
	__uint(max_entries, PSD2_MAX_BREAKERS);
	__uint(map_flags, BPF_F_MMAPABLE);
} breakers SEC(".maps");
