/* Frame builder shared by the XDP benchmarks: Ethernet (+ optional 802.1Q), IPv4 or IPv6, TCP.
 * Checksums are left zero except the IPv4 header's (the veth receiver path validates it). */
#ifndef PSD2EDGE_BENCH_XDP_PKT_H
#define PSD2EDGE_BENCH_XDP_PKT_H

#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

struct bench_pkt {
	const char *src, *dst; /* family from src */
	uint16_t sport, dport;
	uint8_t tcp_flags;     /* 0x10 ACK, 0x02 SYN */
	bool vlan;
	bool frag_first;
	bool bad_ihl;
	int payload;
	const uint8_t *dst_mac, *src_mac; /* NULL: locally administered dummies */
};

static inline void bench_put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static inline uint16_t bench_csum(const uint8_t *p, size_t n)
{
	uint32_t s = 0;

	for (size_t i = 0; i + 1 < n; i += 2)
		s += (uint32_t)p[i] << 8 | p[i + 1];
	while (s >> 16)
		s = (s & 0xffff) + (s >> 16);
	return (uint16_t)~s;
}

static inline size_t bench_build(const struct bench_pkt *b, uint8_t *buf)
{
	static const uint8_t dmac[6] = { 2, 0, 0, 0, 0, 1 }, smac[6] = { 2, 0, 0, 0, 0, 2 };
	bool v6 = strchr(b->src, ':') != NULL;
	uint8_t *p = buf, *ip, *th;
	size_t l4 = 20 + (size_t)b->payload;

	memcpy(p, b->dst_mac ? b->dst_mac : dmac, 6);
	memcpy(p + 6, b->src_mac ? b->src_mac : smac, 6);
	p += 12;
	if (b->vlan) {
		bench_put16(p, ETH_P_8021Q);
		bench_put16(p + 2, 100);
		p += 4;
	}
	bench_put16(p, v6 ? ETH_P_IPV6 : ETH_P_IP);
	p += 2;
	ip = p;
	if (v6) {
		memset(ip, 0, 40);
		ip[0] = 0x60;
		bench_put16(ip + 4, (uint16_t)l4);
		ip[6] = IPPROTO_TCP;
		ip[7] = 64;
		inet_pton(AF_INET6, b->src, ip + 8);
		inet_pton(AF_INET6, b->dst, ip + 24);
		th = ip + 40;
	} else {
		memset(ip, 0, 20);
		ip[0] = b->bad_ihl ? 0x44 : 0x45;
		bench_put16(ip + 2, (uint16_t)(20 + l4));
		if (b->frag_first)
			bench_put16(ip + 6, 0x2000);
		ip[8] = 64;
		ip[9] = IPPROTO_TCP;
		inet_pton(AF_INET, b->src, ip + 12);
		inet_pton(AF_INET, b->dst, ip + 16);
		bench_put16(ip + 10, bench_csum(ip, 20));
		th = ip + 20;
	}
	memset(th, 0, 20);
	bench_put16(th, b->sport);
	bench_put16(th + 2, b->dport);
	th[12] = 5 << 4;
	th[13] = b->tcp_flags ? b->tcp_flags : 0x10;
	bench_put16(th + 14, 65535);
	memset(th + 20, 0x5a, (size_t)b->payload);
	return (size_t)(th + l4 - buf);
}

#endif
