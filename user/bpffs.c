/* bpffs mount, pin directory and pin reuse (see bpffs.h). */
#include "bpffs.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <linux/magic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"

bool bpffs_on(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && st.f_type == BPF_FS_MAGIC;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -1;
	for (char *p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -1;
		*p = '/';
	}
	return mkdir(tmp, mode) && errno != EEXIST ? -1 : 0;
}

int bpffs_ensure_dir(const char *pin_dir, char *err, size_t errlen)
{
	char copy[PATH_MAX], *parent;

	if (bpffs_on(pin_dir))
		return 0;
	snprintf(copy, sizeof(copy), "%s", pin_dir);
	parent = dirname(copy);
	if (mkdir_p(parent, 0755)) {
		snprintf(err, errlen, "bpf.pin_dir: cannot create %s: %s", parent, strerror(errno));
		return -1;
	}
	if (!bpffs_on(parent)) {
		if (mount("bpf", parent, "bpf", 0, "mode=0700")) {
			snprintf(err, errlen, "bpf.pin_dir: cannot mount bpffs at %s: %s", parent,
				 strerror(errno));
			return -1;
		}
		log_info("bpf: mounted bpffs at %s", parent);
	}
	if (mkdir(pin_dir, 0700) && errno != EEXIST) {
		snprintf(err, errlen, "bpf.pin_dir: cannot create %s: %s", pin_dir, strerror(errno));
		return -1;
	}
	if (!bpffs_on(pin_dir)) {
		snprintf(err, errlen, "bpf.pin_dir: %s is not on bpffs", pin_dir);
		return -1;
	}
	return 0;
}

/* A pinned map of an older layout cannot be reused: it is removed, and its owner rebuilds the
 * content (from the registry) or does without it. */
int bpffs_pin_check(struct bpf_map *map, const char *path)
{
	struct bpf_map_info info = { 0 };
	__u32 len = sizeof(info);
	int fd = bpf_obj_get(path);

	if (fd < 0)
		return errno == ENOENT ? 0 : -1;
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		close(fd);
		return -1;
	}
	close(fd);
	if (info.type == bpf_map__type(map) && info.key_size == bpf_map__key_size(map) &&
	    info.value_size == bpf_map__value_size(map) &&
	    info.max_entries == bpf_map__max_entries(map) &&
	    info.map_flags == bpf_map__map_flags(map))
		return 1;
	log_warn("bpf: pinned map %s has another layout (value %u bytes, want %u); replacing it",
		 path, info.value_size, bpf_map__value_size(map));
	return unlink(path) ? -1 : 0;
}
