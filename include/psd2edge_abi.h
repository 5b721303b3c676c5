/* The one ABI between the XDP program (bpf/) and the daemon (user/dataplane.c): every key and
 * value of every pinned map, with fixed-width types and explicit padding, and the names of the
 * pinned files. No code here. The user side asserts the sizes at compile time
 * (user/dataplane.c); changing a layout changes a size, so an old pinned map is refused at
 * load instead of being misread (psd2edged --detach removes the old maps).
 *
 * Byte order: addresses and ports are kept in network order, exactly as on the wire, so the
 * program copies them without swapping. IPv4 addresses are stored IPv4-mapped (::ffff:a.b.c.d)
 * wherever a key holds either family. */
#ifndef PSD2EDGE_ABI_H
#define PSD2EDGE_ABI_H

#include <linux/types.h>

/* --- sizes (overridable so tests can shrink them) ------------------------------------------ */
#ifndef PSD2_MAX_CLIENTS
#define PSD2_MAX_CLIENTS 65536 /* slots of the clients array: REGISTRY_SLOT_MAX + 1 */
#endif
#ifndef PSD2_MAX_FLOWS
#define PSD2_MAX_FLOWS 262144 /* authenticated TCP connections across all workers */
#endif
#ifndef PSD2_MAX_DENY
#define PSD2_MAX_DENY 65536 /* CIDRs per family */
#endif
#ifndef PSD2_MAX_SRC_BUCKETS
#define PSD2_MAX_SRC_BUCKETS 131072 /* per-source SYN buckets (LRU: the coldest are evicted) */
#endif

/* Floor of every GCRA burst (pkt_burst_ns, byte_burst_ns, src_cfg.burst_ns): XDP reads the
 * coarse clock, which advances by one tick (1-4 ms). */
#define PSD2_MIN_BURST_NS 10000000ULL

#define PSD2_CLIENT_ID_LEN 72 /* registry client_id (<= 64 bytes) + NUL, rounded up to 8 */
#define PSD2_THUMB_LEN 32     /* SHA-256 of the DER certificate */
#define PSD2_PORT_BITMAP_LEN (65536 / 8)

/* Pinned file names under the pin directory (DESIGN "Contract"). */
#define PSD2_PIN_CLIENTS "clients"
#define PSD2_PIN_FLOWS "flows"
#define PSD2_PIN_FLOWS_V6 "flows_v6"
#define PSD2_PIN_DENY_V4 "deny_v4"
#define PSD2_PIN_DENY_V6 "deny_v6"
#define PSD2_PIN_SRC_RATE "src_rate"
#define PSD2_PIN_SRC_RATE_V6 "src_rate_v6"
#define PSD2_PIN_FLOW_INDEX "flow_index"
#define PSD2_PIN_FLOW_INDEX_V6 "flow_index_v6"
#define PSD2_PIN_STATS "stats"
#define PSD2_PIN_CLIENT_STATS "client_stats"
#define PSD2_PIN_DENY_INDEX "deny_index"
#define PSD2_PIN_QUOTA "quota"
#define PSD2_PIN_BREAKERS "breakers"

/* --- clients: ARRAY indexed by registry slot ------------------------------------------------ */

/* Life of a slot. Written by the daemon (bind, revoke, unbind); read by XDP for every packet of a
 * bound flow. Anything but ACTIVE drops the flow's packets. */
enum psd2_client_state {
	PSD2_CLIENT_FREE = 0,    /* no client in this slot (never bound, or unbound) */
	PSD2_CLIENT_ACTIVE = 1,  /* bound; packets are policed, then pass */
	PSD2_CLIENT_REVOKED = 2, /* revoked: every packet of its flows is dropped at once */
};

/* One client (value of `clients`). The identity and limits are written by the daemon with a
 * read-modify-write of the whole value; the GCRA times are updated by XDP with compare-and-swap
 * (a daemon write can undo the few charges made during that write; control operations are
 * rare). XDP counts the client's packets per CPU, in `client_stats`; the daemon copies their
 * sums into the counters here every second, so that `bpftool map dump` of `clients` shows them
 * next to the identity without XDP sharing a cache line between CPUs on every packet. */
struct psd2_client {
	char client_id[PSD2_CLIENT_ID_LEN];   /* NUL-terminated */
	__u8 thumb[PSD2_THUMB_LEN];           /* newest active certificate */
	enum psd2_client_state state;         /* 4 bytes (asserted on the user side) */
	__u32 flags;                          /* reserved, 0 */
	/* Policing, written by the daemon; 0 means unlimited. bytes_per_sec counts whole frames. */
	__u64 pps;
	__u64 bytes_per_sec;
	__u64 burst_pkts;
	__u64 burst_bytes;
	/* Derived by the daemon from the four above, so XDP needs one division per packet. */
	__u64 pkt_interval_ns;  /* 1e9 / pps */
	__u64 pkt_burst_ns;     /* max(burst_pkts * pkt_interval_ns, PSD2_MIN_BURST_NS) */
	__u64 byte_burst_ns;    /* max(burst_bytes * 1e9 / bytes_per_sec, PSD2_MIN_BURST_NS) */
	/* GCRA theoretical arrival times (bpf_ktime_get_coarse_ns), written by XDP. */
	__u64 pkt_tat_ns;
	__u64 byte_tat_ns;
	/* Sums over CPUs of client_stats, at most a second old; written by the daemon only. */
	__u64 pass_packets;
	__u64 pass_bytes;
	__u64 drop_revoked;
	__u64 drop_policed;
	/* Packets a CPU charges to pkt_tat_ns at once and then spends from client_stats without
	 * touching this shared entry (0 or 1: every packet is charged). At most a quarter of the
	 * burst, so batching never turns a conforming client away. */
	__u32 pkt_batch;
	__u32 limit_gen; /* changed with every limit: prepaid packets of an older one are void */
};

/* --- client_stats: PERCPU_ARRAY indexed by registry slot ------------------------------------ */

/* A client's packet counters, one copy per CPU (plain increments, no atomics on the hot path);
 * written by XDP, summed over CPUs by the reader, zeroed by the daemon when a slot gets a new
 * client. */
struct psd2_client_stats {
	__u64 pass_packets;
	__u64 pass_bytes;
	__u64 drop_revoked;
	__u64 drop_policed;
	__u32 pkt_prepaid; /* packets charged to the client's GCRA and not sent yet, on this CPU */
	__u32 limit_gen;   /* the client's limit_gen when they were charged */
};

/* --- flows / flows_v6: HASHes of authenticated TCP connections ---------------------------- */

/* An IPv4 TCP connection as seen on ingress (key of `flows`): the peer (TPP) is the source, the
 * gateway the destination. 12 bytes, no padding: the hash covers nothing but the 4-tuple
 * (a third of the IPv6 key's hashing). A dual-stack listener's IPv4-mapped peers are IPv4. */
struct psd2_flow_key {
	__u8 saddr[4]; /* peer address */
	__u8 daddr[4]; /* local address */
	__be16 sport;  /* peer port */
	__be16 dport;  /* local (listener) port */
};

/* An IPv6 TCP connection (key of `flows_v6`), 36 bytes, no padding. */
struct psd2_flow6_key {
	__u8 saddr[16]; /* peer address */
	__u8 daddr[16]; /* local address */
	__be16 sport;   /* peer port */
	__be16 dport;   /* local (listener) port */
};

/* Value of both flow maps. Written by a worker after the handshake and binding check, deleted
 * when the connection closes; all of them are purged when the daemon starts. */
struct psd2_flow {
	__u32 slot;       /* client slot in `clients` */
	__u32 pad;        /* 0 */
	__u64 created_ns; /* CLOCK_MONOTONIC (same clock as bpf_ktime_get_ns) */
};

/* --- flow_index / flow_index_v6: direct-mapped ARRAYs in front of the flow hashes ---------- *
 * A hash map lookup (jhash, bucket walk, key compare in a helper) costs XDP more than the rest
 * of a bound flow's checks together; these arrays answer it with one inlined load. Entry
 * psd2_flow_hash_v4(key) % SIZE holds at most one flow (the first to land there) with its slot;
 * the flows that collide with it are only in the hash, and `overflow` counts them, so XDP
 * searches the hash only when an entry says a flow may be there. The flow hashes stay the
 * record (`bpftool map dump pinned .../flows`); the daemon alone writes both, under a
 * sequence count: odd while it rewrites an entry, so XDP never trusts a half-written one
 * (it falls back to the hash then). Written through mmap (BPF_F_MMAPABLE), field by field.
 * An empty entry has an all-zero key, which no packet to a listener port can have. The reader
 * relies on loads not being reordered with loads (x86); see user/flow_index.c. */
#define PSD2_FLOW_INDEX_V4_SIZE (1u << 18)
#define PSD2_FLOW_INDEX_V6_SIZE (1u << 17)

struct psd2_flow_index_v4 {
	__u32 seq;      /* even: stable; odd: being rewritten */
	__u32 overflow; /* flows with this index that are only in `flows` */
	__u32 slot;
	struct psd2_flow_key key;
};

struct psd2_flow_index_v6 {
	__u32 seq;
	__u32 overflow;
	__u32 slot;
	struct psd2_flow6_key key;
};

/* Multiplicative mixing of the key's words: cheap in XDP, and spread enough for real peers.
 * Only the daemon places flows, so a peer cannot choose what collides: crafted packets can
 * make XDP search the hash at worst, as it did for every packet before the index. */
static inline __u32 psd2_word(const __u8 *p)
{
	__u32 w;

	__builtin_memcpy(&w, p, 4);
	return w;
}

static inline __u32 psd2_flow_hash_v4(const struct psd2_flow_key *k)
{
	__u32 h = psd2_word(k->saddr) * 0x9E3779B1u ^ psd2_word(k->daddr) * 0x85EBCA6Bu ^
		  psd2_word((const __u8 *)&k->sport) * 0xC2B2AE35u;

	return (h ^ (h >> 15)) & (PSD2_FLOW_INDEX_V4_SIZE - 1);
}

static inline __u32 psd2_flow_hash_v6(const struct psd2_flow6_key *k)
{
	__u32 h = (psd2_word(k->saddr + 12) ^ psd2_word(k->saddr + 8)) * 0x9E3779B1u ^
		  (psd2_word(k->saddr + 4) ^ psd2_word(k->saddr)) * 0x27D4EB2Fu ^
		  (psd2_word(k->daddr + 12) ^ psd2_word(k->daddr + 8)) * 0x85EBCA6Bu ^
		  psd2_word((const __u8 *)&k->sport) * 0xC2B2AE35u;

	return (h ^ (h >> 15)) & (PSD2_FLOW_INDEX_V6_SIZE - 1);
}

/* --- deny_v4 / deny_v6: LPM tries of source prefixes ---------------------------------------- */

struct psd2_deny_v4_key {
	__u32 prefixlen; /* 0..32 */
	__u8 addr[4];
};

struct psd2_deny_v6_key {
	__u32 prefixlen; /* 0..128 */
	__u8 addr[16];
};

/* Value of both tries: written as zeros by the daemon, incremented by XDP on each drop (plain
 * increments: approximate when several CPUs drop for one prefix at once; stats.drop_deny is
 * exact). */
struct psd2_deny {
	__u64 packets;
	__u64 bytes;
};

/* --- deny_index: ARRAY of 64-bit words, a prefilter in front of the tries ------------------ *
 * A set bit says "a deny prefix may cover this source"; only then does XDP walk the LPM trie,
 * so sources far from every denied prefix pay one or two array loads instead of a trie walk.
 * Maintained by the daemon: a bit is set right after its trie entry is added, and the whole
 * index is rebuilt from the tries at start and after every deny del.
 *
 *   words [V4, V4 + 1024): bit i = an IPv4 prefix overlaps the /16 whose first two address
 *       bytes, read as a __u16 in memory order, are i (prefixes shorter than
 *       /16 set every /16 they cover);
 *   words [V6_32, +1024): bit PSD2_DENY_H32(w0): an IPv6 prefix of length 32..47 whose first 32
 *       bits (w0: the first four address bytes read as a __u32 in memory order) hash there;
 *   words [V6_48, +1024): bit PSD2_DENY_H48(w0, h2): a prefix of length >= 48 (h2: address
 *       bytes 4-5 read as a __u16 in memory order);
 *   word FLAGS: PSD2_DENY_F_V6_SHORT when an IPv6 prefix shorter than /32 exists (then every
 *       IPv6 source walks the trie). */
#define PSD2_DENY_INDEX_V4 0
#define PSD2_DENY_INDEX_V6_32 1024
#define PSD2_DENY_INDEX_V6_48 2048
#define PSD2_DENY_INDEX_FLAGS 3072
#define PSD2_DENY_INDEX_WORDS 3073
#define PSD2_DENY_F_V6_SHORT 1ULL
#define PSD2_DENY_H32(w0) ((__u32)((__u32)(w0) * 0x9E3779B1u) >> 16)
#define PSD2_DENY_H48(w0, h2) \
	((__u32)(((__u32)(w0) ^ ((__u32)(h2) * 0x85EBCA6Bu)) * 0x9E3779B1u) >> 16)

/* --- src_rate / src_rate_v6: LRU hashes of per-source SYN buckets --------------------------- */

/* The source, masked to the configured prefix (IPv4 /32 and IPv6 /64 by default). IPv4 sources
 * have their own map with a 4-byte key: hashing a quarter of the bytes makes the SYN path about
 * 2 ns cheaper (bench/xdp_cost.c). A dual-stack listener's IPv4-mapped peers are IPv4. */
struct psd2_src_v4_key {
	__u8 addr[4];
};

struct psd2_src_v6_key {
	__u8 addr[16];
};

/* Created by XDP at the first SYN of a source; the LRU evicts the coldest when full. */
struct psd2_src_bucket {
	__u64 tat_ns;      /* GCRA theoretical arrival time */
	__u64 syn_packets; /* SYNs charged here (a batch of prepaid SYNs counts once) */
	__u64 syn_dropped; /* SYNs refused here (not those a CPU refuses from src_prepaid) */
};

/* --- src_prepaid: PERCPU_ARRAY in front of src_rate, for IPv4 sources (not pinned) ------- *
 * A CPU charges an IPv4 source's bucket for src_cfg.batch SYNs at once and lets the next ones
 * through from here without the LRU lookup, clock and compare-and-swap; after a refusal it
 * remembers until when the bucket refuses (should the LRU evict the bucket meanwhile, the source
 * stays refused on that CPU until then, one burst's time at most). The bucket stays the only
 * place a SYN is paid for: nothing passes that it did not admit, and what a CPU prepaid and did
 * not use (another source took the entry, the rate changed) is lost. Direct-mapped by a hash of
 * the source. */
#define PSD2_SRC_PREPAID_BITS 10

struct psd2_src_prepaid {
	__u8 addr[4];   /* the (masked) source */
	__u32 tokens;   /* SYNs charged to its bucket and not seen yet on this CPU */
	__u64 until_ns; /* its bucket refuses SYNs until then (0: not known) */
	__u32 cfg_gen;  /* src_cfg.gen when written; entries of another one are ignored */
	__u32 pad;
};

/* Runtime-tunable per-source new-connection rate (a .data global of the program, written by
 * the daemon through the skeleton; 0 = off). */
struct psd2_src_cfg {
	__u64 interval_ns; /* 1e9 / per_sec */
	__u64 burst_ns;    /* max(burst * interval_ns, PSD2_MIN_BURST_NS) */
	__u32 batch;       /* SYNs a CPU charges at once (src_prepaid): a quarter of burst, <= 16 */
	__u32 gen;         /* changed with every rate, from 1: voids what src_prepaid holds */
};

/* --- stats: PERCPU_ARRAY indexed by reason --------------------------------------------------- */

/* Every packet the program sees is counted under exactly one verdict reason; the two EVENT_
 * reasons count things that happen on the way (a bucket created or not). */
#define PSD2_STAT_REASONS(X)                                                                \
	X(PASS_NOT_IP, "pass_not_ip")             /* not IPv4/IPv6 (ARP, LLDP...) */       \
	X(PASS_NOT_LISTENER, "pass_not_listener") /* not TCP/UDP to a listener port */     \
	X(PASS_FRAGMENT, "pass_fragment")         /* non-first fragment: no port */        \
	X(PASS, "pass")                           /* listener traffic outside a flow */    \
	X(PASS_FLOW, "pass_flow")                 /* packet of a bound flow, in policy */  \
	X(DROP_MALFORMED, "drop_malformed")       /* truncated or invalid headers */       \
	X(DROP_VLAN_DEPTH, "drop_vlan_depth")     /* too many VLAN tags, any port */     \
	X(DROP_FRAGMENT, "drop_fragment")         /* first fragment to a listener */       \
	X(DROP_DENY, "drop_deny")                 /* source in deny_v4/deny_v6 */          \
	X(DROP_SYN_RATE, "drop_syn_rate")         /* SYN over the source's bucket */       \
	X(DROP_REVOKED, "drop_revoked")           /* flow of a revoked client */           \
	X(DROP_UNBOUND, "drop_unbound")           /* flow of a freed slot */               \
	X(DROP_POLICED, "drop_policed")           /* over the client's pps/bps */          \
	X(DROP_NO_CLIENT, "drop_no_client")       /* flow slot out of range: fail closed */ \
	X(EVENT_SRC_NEW, "event_src_bucket_new")  /* per-source bucket created */          \
	X(EVENT_SRC_FAIL, "event_src_bucket_fail") /* bucket insert failed (SYN passed) */

enum psd2_stat_reason {
#define PSD2_STAT_ENUM(name, text) PSD2_STAT_##name,
	PSD2_STAT_REASONS(PSD2_STAT_ENUM)
#undef PSD2_STAT_ENUM
	PSD2_STAT_MAX
};

struct psd2_stat {
	__u64 packets;
	__u64 bytes;
};

/* --- quota and breakers: the daemon's policy state (bpf/psd2edge_state.bpf.c) -------------- */

/* Neither map is read by an XDP program: they are BPF maps so that their state outlives the
 * process (pinned), is shared by every worker through one mmap, and reads as named fields in
 * `bpftool map dump`. Only the daemon writes them. Both are BPF_F_MMAPABLE arrays; a free
 * entry is all zeros. */
#ifndef PSD2_MAX_QUOTA_ENTRIES
#define PSD2_MAX_QUOTA_ENTRIES 65536 /* (quota, client_id, key value) counters */
#endif
#ifndef PSD2_MAX_BREAKERS
#define PSD2_MAX_BREAKERS 64 /* one per configured upstream */
#endif
#define PSD2_NAME_LEN 64      /* quota and upstream names (<= 63 bytes) + NUL */
#define PSD2_QUOTA_KEY_LEN 136 /* value of the quota's request key (<= 128 bytes) + NUL, rounded */
#define PSD2_QUOTA_SUBWINDOWS 16 /* a rolling window is judged over this many sub-windows + 1 */

enum psd2_quota_window {
	PSD2_QUOTA_MINUTE = 1, /* fixed UTC windows: they reset at :00 of the minute, hour, day */
	PSD2_QUOTA_HOUR = 2,
	PSD2_QUOTA_DAY = 3,
	PSD2_QUOTA_ROLLING = 4, /* any period of window_seconds */
};

/* One counter. Identified by (name, client_id, key); key is "" for a quota per client_id. */
struct psd2_quota {
	char name[PSD2_NAME_LEN];          /* the quota's name (config routes[].quota.name) */
	char client_id[PSD2_CLIENT_ID_LEN];
	char key[PSD2_QUOTA_KEY_LEN];
	__u64 limit;          /* requests per window, as configured when last counted */
	__u32 window;         /* enum psd2_quota_window */
	__u32 window_seconds; /* length of the window (60, 3600, 86400 or the rolling length) */
	__s64 window_start;   /* unix seconds: start of the counted window (rolling: of sub[0]) */
	__u64 count;          /* requests counted in the window (rolling: sum of sub[]) */
	__u32 sub[PSD2_QUOTA_SUBWINDOWS + 1]; /* rolling only: counts per sub-window, oldest first */
	__u32 lock;           /* daemon-side spin lock (threads of one process) */
	__s64 updated;        /* unix seconds of the last count (checkpoint and eviction order) */
};

enum psd2_breaker_state {
	PSD2_BREAKER_CLOSED = 0,
	PSD2_BREAKER_OPEN = 1,      /* requests refused with 503 until opened_at_ms + cool-down */
	PSD2_BREAKER_HALF_OPEN = 2, /* a configured number of probes go through */
};

/* One circuit breaker per upstream, identified by name. Times are unix ms (readable as dates). */
struct psd2_breaker {
	char name[PSD2_NAME_LEN];
	__u32 state;                /* enum psd2_breaker_state */
	__u32 consecutive_failures;
	__s64 opened_at_ms;         /* 0 when closed */
	__s64 window_start_ms;      /* failure-ratio window */
	__u32 window_requests;
	__u32 window_failures;
	__u32 probes_in_flight;     /* half-open: admitted, outcome not known yet */
	__u32 probes_succeeded;
	__u64 opened_total;         /* times it opened */
	__u64 rejected_total;       /* requests refused while open */
	__u32 lock;                 /* daemon-side spin lock */
	__u32 pad;
};

#endif
