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

/* Thread-safe. add: a flow new to the hash. set: a flow already in the hash gets a new slot. */
void flow_index_add_v4(struct flow_index *fi, const struct psd2_flow_key *k, uint32_t slot);
void flow_index_set_v4(struct flow_index *fi, const struct psd2_flow_key *k, uint32_t slot);
void flow_index_del_v4(struct flow_index *fi, const struct psd2_flow_key *k);
void flow_index_add_v6(struct flow_index *fi, const struct psd2_flow6_key *k, uint32_t slot);
void flow_index_set_v6(struct flow_index *fi, const struct psd2_flow6_key *k, uint32_t slot);
void flow_index_del_v6(struct flow_index *fi, const struct psd2_flow6_key *k);

/* Empties both arrays (before the hashes are purged). */
void flow_index_clear(struct flow_index *fi);

#endif
