/* The daemon's side of flow_index and flow_index_v6, the direct-mapped arrays XDP reads in front
 * of the flows / flows_v6 hashes (layout and rules in include/psd2edge_abi.h). The caller keeps
 * the hashes; these calls keep the index in step with them and must follow each change that
 * took effect there: add after a flow was inserted into the hash, del after it was deleted. */
#ifndef PSD2EDGE_FLOW_INDEX_H
#define PSD2EDGE_FLOW_INDEX_H

#include <stdint.h>

#include "psd2edge_abi.h"

struct flow_index;

/* Maps both arrays (fds of flow_index and flow_index_v6, BPF_F_MMAPABLE). NULL with errno. */
struct flow_index *flow_index_open(int fd_v4, int fd_v6);
void flow_index_close(struct flow_index *fi);

enum flow_index_op {
	FLOW_INDEX_ADD, /* the flow is new to the hash */
	FLOW_INDEX_SET, /* the flow was in the hash already and has a new slot */
	FLOW_INDEX_DEL, /* the flow was deleted from the hash (slot ignored) */
};

/* Thread-safe. */
void flow_index_update_v4(struct flow_index *fi, const struct psd2_flow_key *k, uint32_t slot,
			  enum flow_index_op op);
void flow_index_update_v6(struct flow_index *fi, const struct psd2_flow6_key *k, uint32_t slot,
			  enum flow_index_op op);

/* Empties both arrays (before the hashes are purged). */
void flow_index_clear(struct flow_index *fi);

#endif
