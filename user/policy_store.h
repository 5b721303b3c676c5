/* The policy state that must outlive the process: quota counters and circuit breakers, in the
 * pinned BPF maps `quota` and `breakers` under bpf.pin_dir (layouts in include/psd2edge_abi.h,
 * maps in bpf/psd2edge_state.bpf.c), mmapped once and shared by every worker. The maps exist
 * whatever bpf.mode says (no program reads them). Quota counters are also checkpointed into
 * the registry, so that a reboot (which empties bpffs) loses at most one checkpoint interval.
 *
 * Threads: quota lookups/creations and breaker lookups from any worker; open, checkpoint,
 * reset and close on the control thread. */
#ifndef PSD2EDGE_POLICY_STORE_H
#define PSD2EDGE_POLICY_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "psd2edge_abi.h"

struct registry;
struct policy_store;

/* Opens (or creates and pins) both maps under cfg->bpf.pin_dir and maps them; rebuilds the
 * quota index from the map; when the quota map was created afresh (after a reboot), loads the
 * counters checkpointed in the registry. Gives each of cfg->upstreams a breaker entry by name
 * (an entry of the same name keeps its state across restarts); frees entries of upstreams no
 * longer configured. -1 with err ("bpf.pin_dir: ...") on failure. */
int policy_store_open(const struct config *cfg, struct registry *reg, struct policy_store **out,
		      char *err, size_t errlen);
/* Writes a last checkpoint, unmaps; the pinned maps stay. */
void policy_store_close(struct policy_store *ps);

/* The counter of (name, client_id, key); key "" for a quota per client_id. With create, a
 * missing one is allocated (zeroed, identity written). NULL when missing (create false) or
 * when the map is full (counted in policy_store_quota_full; the caller refuses the request). */
struct psd2_quota *policy_store_quota(struct policy_store *ps, const char *name,
				      const char *client_id, const char *key, bool create);
uint64_t policy_store_quota_full(const struct policy_store *ps);
/* Counters in the quota map (of PSD2_MAX_QUOTA_ENTRIES). */
uint32_t policy_store_quota_used(struct policy_store *ps);

/* Calls fn for each counter of client_id (every quota name; only those of `key` when key is not
 * NULL). The callback may read and (holding the entry's lock) change the entry; every entry
 * visited is saved at the next checkpoint. Returns how many were visited. */
size_t policy_store_quota_each(struct policy_store *ps, const char *client_id, const char *key,
			       void (*fn)(struct psd2_quota *q, void *arg), void *arg);

/* The breaker entry of cfg->upstreams[i]. */
struct psd2_breaker *policy_store_breaker(struct policy_store *ps, unsigned upstream);

/* Saves counters changed since the last checkpoint into the registry (one transaction); the
 * daemon calls it every second and at exit. 0, or -1 (logged; retried next time). */
int policy_store_checkpoint(struct policy_store *ps);

#endif
