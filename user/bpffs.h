/* The pin directory on bpffs, shared by the XDP data plane (dataplane.c) and the policy state
 * (policy_store.c): both pin their maps there and reuse them across restarts. */
#ifndef PSD2EDGE_BPFFS_H
#define PSD2EDGE_BPFFS_H

#include <stdbool.h>
#include <stddef.h>

struct bpf_map;

bool bpffs_on(const char *path);

/* Creates pin_dir on bpffs; when its parent is not on bpffs, mounts one there (as bpftool and
 * Cilium do with /sys/fs/bpf). -1 with err ("bpf.pin_dir: ...") on failure. */
int bpffs_ensure_dir(const char *pin_dir, char *err, size_t errlen);

/* Before map (not loaded yet) is pinned at path: 1 when a map of the same layout is pinned
 * there (libbpf will reuse it), 0 when none is (one of another layout, left by an older build,
 * is removed with a log line), -1 with errno when the pin cannot be inspected. */
int bpffs_pin_check(struct bpf_map *map, const char *path);

#endif
