/* The durable registry: clients, their bound certificates, the deny-list, an audit trail and
 * the checkpoint of the quota counters, in SQLite (WAL, synchronous=FULL), plus an in-memory
 * index by thumbprint that the workers read on every request. Every mutation commits before
 * it returns (and only then is acknowledged) and is recorded in the audit trail with the peer
 * uid that made it.
 *
 * Threads: mutations and listings run on one thread (the control plane); registry_lookup()
 * may be called from any thread at any time. */
#ifndef PSD2EDGE_REGISTRY_H
#define PSD2EDGE_REGISTRY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/types.h>

#include "cert.h"
#include "psd2edge_abi.h"

#define REGISTRY_SCHEMA_VERSION 5
#define REGISTRY_CLIENT_ID_MAX 64 /* bytes, printable ASCII without space, '"' or '\' */
#define REGISTRY_MAX_ACTIVE_CERTS 2 /* one, plus one during a rotation */
#define REGISTRY_SLOT_MAX 65535 /* highest client slot: the BPF clients map has this + 1 entries */
#define REGISTRY_SLOT_NONE UINT32_MAX /* binding.slot of a revoked certificate whose client is gone */

enum registry_status {
	REG_OK = 0,
	REG_ERR_INVALID = -1,     /* bad argument (client_id syntax, ...) */
	REG_ERR_NOT_FOUND = -2,   /* no such client / certificate */
	REG_ERR_CONFLICT = -3,    /* certificate bound to another client, or already bound here */
	REG_ERR_REVOKED = -4,     /* certificate was revoked: final */
	REG_ERR_NEED_ROTATE = -5, /* client has an active certificate and --rotate was not given */
	REG_ERR_LIMIT = -6,       /* would exceed REGISTRY_MAX_ACTIVE_CERTS */
	REG_ERR_IO = -7,          /* SQLite failure; nothing was changed */
};

enum cert_state { CERT_ACTIVE = 0, CERT_REVOKED = 1 };

/* What a worker needs to decide a request, copied out of the index. */
struct registry_binding {
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint32_t slot;     /* the client's index in the BPF clients map, stable for its lifetime */
	enum cert_state state;
	int64_t not_before, not_after;
	uint32_t psd2_roles; /* PSD2_ROLE_* of the certificate's PSD2 QCStatement (qcstatement.h) */
	char org_id[PSD2_ORG_ID_MAX + 1]; /* its subject's organizationIdentifier, "" when none */
};

enum binding_usability { BINDING_USABLE, BINDING_REVOKED, BINDING_OUTSIDE_VALIDITY };

/* The one rule for whether a bound certificate may be used at unix time now: the handshake
 * fast path and the request pipeline both ask it. Valid from not_before up to, not including,
 * not_after, as the handshake's chain check counts it (OpenSSL's X509_cmp_time). */
static inline enum binding_usability registry_binding_usability(const struct registry_binding *b,
								int64_t now)
{
	if (b->state != CERT_ACTIVE)
		return BINDING_REVOKED;
	if (now < b->not_before || now >= b->not_after)
		return BINDING_OUTSIDE_VALIDITY;
	return BINDING_USABLE;
}

struct registry_cert {
	struct cert_info info;
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	enum cert_state state;
	int64_t bound_at, revoked_at; /* unix seconds; revoked_at 0 when active */
};

/* A client's own XDP policing (psd2edgectl limit set); 0 means unlimited. bps counts bytes of
 * whole frames per second; burst is in packets (>= 1); burst_bytes 0 means burst * 1514.
 * Bounds: RATE_* in config.h. */
struct registry_limit {
	uint64_t pps, bps, burst, burst_bytes;
};

/* The per-source new-connection rate set at run time (psd2edgectl limit src). */
struct registry_src_rate {
	uint64_t per_sec; /* 0: off */
	uint64_t burst;   /* >= 1 */
};

struct registry_client {
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint32_t slot;
	int64_t created_at;
	bool has_limit; /* false: the configured default (bpf.client_rate) applies */
	struct registry_limit limit;
	unsigned n_certs; /* active and revoked ones, newest first */
	struct registry_cert *certs;
};

struct registry_audit_entry {
	int64_t id, ts;
	uid_t uid;
	char action[32]; /* bind, rotate, unbind, unbind-cert, revoke, deny-add, deny-del,
			  * limit-set, limit-del, src-rate-set, src-rate-del, quota-reset,
			  * breaker-reset, migrate */
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	char thumb_hex[CERT_THUMB_HEX_LEN + 1]; /* "" when not about one certificate */
	char detail[256];
};

struct registry;

/* Opens or creates the database (creating its directory), migrates the schema to
 * REGISTRY_SCHEMA_VERSION and builds the index. -1 with err on failure. */
int registry_open(const char *path, struct registry **out, char *err, size_t errlen);
void registry_close(struct registry *reg);

/* The syntax of a client_id, the one definition of the rule: 1..REGISTRY_CLIENT_ID_MAX bytes
 * of 0x21..0x7e except '"' and a backslash (so it is safe in JSON, headers and logs as is).
 * Inline so that request parsing can check a claimed id without linking the registry. */
static inline bool registry_client_id_valid_n(const char *s, size_t len)
{
	if (!s || len == 0 || len > REGISTRY_CLIENT_ID_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
			return false;
	}
	return true;
}

static inline bool registry_client_id_valid(const char *client_id)
{
	return client_id &&
	       registry_client_id_valid_n(client_id, strnlen(client_id, REGISTRY_CLIENT_ID_MAX + 1));
}

/* Index lookup by thumbprint: REG_OK and *out filled, or REG_ERR_NOT_FOUND. */
int registry_lookup(struct registry *reg, const uint8_t thumb[CERT_THUMB_LEN],
		    struct registry_binding *out);

/* Mutations. The caller has already verified the certificate (chain, validity) and read its
 * PSD2 attributes into ci->psd2, which bind stores with it. On failure nothing changed and err
 * names the problem; on success *slot (when non-NULL) is the client's slot. */
int registry_bind(struct registry *reg, const char *client_id, const struct cert_info *ci,
		  const char *pem, bool rotate, uid_t uid, uint32_t *slot, char *err, size_t errlen);
/* Removes every active certificate, the client's limit and the client itself (it can be
 * enrolled again); revoked certificates stay revoked. */
int registry_unbind_client(struct registry *reg, const char *client_id, uid_t uid, uint32_t *slot,
			   char *err, size_t errlen);
int registry_unbind_cert(struct registry *reg, const char *client_id,
			 const uint8_t thumb[CERT_THUMB_LEN], uid_t uid, uint32_t *slot, char *err,
			 size_t errlen);
/* Marks every active certificate of the client revoked (final). */
int registry_revoke(struct registry *reg, const char *client_id, uid_t uid, uint32_t *slot,
		    char *err, size_t errlen);
/* Marks one active certificate revoked (final), with detail (why) in its audit row: a reload
 * whose trust store no longer verifies it. Its client in client_id, the client's slot in *slot
 * and the number of active certificates it has left in *n_active_left (each when non-NULL). */
int registry_revoke_cert(struct registry *reg, const uint8_t thumb[CERT_THUMB_LEN], uid_t uid,
			 const char *detail, char client_id[REGISTRY_CLIENT_ID_MAX + 1],
			 uint32_t *slot, size_t *n_active_left, char *err, size_t errlen);

/* Run-time rates. A limit belongs to an existing client (REG_ERR_NOT_FOUND otherwise) and
 * replaces the one it had; values out of bounds are REG_ERR_INVALID. limit_del returns the
 * client to the default (REG_ERR_NOT_FOUND when it has no limit of its own). *slot (when
 * non-NULL) is the client's slot. */
int registry_limit_set(struct registry *reg, const char *client_id, const struct registry_limit *lim,
		       uid_t uid, uint32_t *slot, char *err, size_t errlen);
int registry_limit_del(struct registry *reg, const char *client_id, uid_t uid, uint32_t *slot,
		       char *err, size_t errlen);
/* REG_OK and *out, REG_ERR_NOT_FOUND when the client has no limit of its own (or no client). */
int registry_limit_get(struct registry *reg, const char *client_id, struct registry_limit *out);
int registry_src_rate_set(struct registry *reg, const struct registry_src_rate *rate, uid_t uid,
			  char *err, size_t errlen);
/* Forgets the run-time source rate, so that the configuration's applies again
 * (REG_ERR_NOT_FOUND when none is stored). */
int registry_src_rate_del(struct registry *reg, uid_t uid, char *err, size_t errlen);
/* REG_OK and *out, REG_ERR_NOT_FOUND when none is stored (the configuration's applies). */
int registry_src_rate_get(struct registry *reg, struct registry_src_rate *out);

/* Listings (allocating; free with registry_client_free / free()). */
int registry_get_client(struct registry *reg, const char *client_id, struct registry_client *out);
void registry_client_free(struct registry_client *c);
int registry_list_clients(struct registry *reg, struct registry_client **out, size_t *n);
void registry_clients_free(struct registry_client *list, size_t n);
/* The registry's size: clients, their active and revoked certificates, deny-list entries. */
struct registry_counts {
	int64_t clients, certs_active, certs_revoked, deny_entries;
};
int registry_counts(struct registry *reg, struct registry_counts *out);
/* Newest first; client_id NULL for all; at most limit entries. */
int registry_audit(struct registry *reg, const char *client_id, size_t limit,
		   struct registry_audit_entry **out, size_t *n);
/* Records a change to state kept outside the registry (quota counters and breakers live in
 * pinned BPF maps) in the audit trail: the caller makes the change only once this committed.
 * client_id "" when the change is about no client. */
int registry_audit_record(struct registry *reg, uid_t uid, const char *action,
			  const char *client_id, const char *detail, char *err, size_t errlen);

/* Deny-list: CIDRs stored in the canonical text form of cidr_canonical() ("10.0.0.0/8",
 * "2001:db8::/32"; "::ffff:192.0.2.7" is stored as "192.0.2.7/32"). add and del take any
 * spelling; a text that is not a CIDR is REG_ERR_INVALID, with the reason in err. */
int registry_deny_add(struct registry *reg, const char *cidr, uid_t uid, char *err, size_t errlen);
int registry_deny_del(struct registry *reg, const char *cidr, uid_t uid, char *err, size_t errlen);
int registry_deny_list(struct registry *reg, char ***out, size_t *n); /* free each and the array */

/* Quota counters: the checkpoint of the pinned `quota` map (user/policy_store.c), one row per
 * map entry, read back when the map is new (after a reboot). Not audited: a copy, written
 * every second, of state that lives in the map. */
struct registry_quota {
	uint32_t slot;       /* the entry's index in the map */
	struct psd2_quota q; /* lock is not kept */
};
/* Saves the rows in one transaction; each replaces the row of its slot and the row of its
 * (name, client_id, key). */
int registry_quota_save(struct registry *reg, const struct registry_quota *rows, size_t n,
			char *err, size_t errlen);
/* Calls fn for each stored counter by slot; a row that does not fit struct psd2_quota is
 * skipped. */
typedef void registry_quota_fn(void *arg, const struct registry_quota *row);
int registry_quota_load(struct registry *reg, registry_quota_fn *fn, void *arg);

/* PEMs of every active certificate, for re-verification when the CA bundle or CRL changes. */
typedef void registry_cert_fn(void *arg, const struct registry_cert *c, const char *pem);
int registry_foreach_active_cert(struct registry *reg, registry_cert_fn *fn, void *arg);

#endif
