// SPDX-License-Identifier: GPL-2.0
/* Traffic generator for bench/xdp_droprate.sh: run with BPF_PROG_TEST_RUN and
 * BPF_F_TEST_XDP_LIVE_FRAMES, every frame is redirected out of `out_ifindex` (one end of a veth
 * pair), so the receiver gets XDP frames as from a NIC (what xdp-trafficgen does). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

const volatile __u32 out_ifindex;

SEC("xdp")
int xdp_gen(struct xdp_md *ctx)
{
	return bpf_redirect(out_ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
