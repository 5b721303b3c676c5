/* Certificates close to their notAfter: the bound client certificates (the registry's active
 * ones) and the daemon's own (its server certificate, the client certificates it presents to
 * https upstreams). One list for `psd2edgectl certs --expiring DAYS` and for the daily warning
 * of tls.expiry_warning_days. */
#ifndef PSD2EDGE_EXPIRY_H
#define PSD2EDGE_EXPIRY_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>

#include "cert.h"
#include "config.h"
#include "registry.h"

#define EXPIRY_DAYS_MAX 36500
#define EXPIRY_DAY_S 86400

enum expiry_kind {
	EXPIRY_CLIENT,   /* bound to a client (owner: its client_id) */
	EXPIRY_SERVER,   /* tls.cert (owner: "") */
	EXPIRY_UPSTREAM, /* an https upstream's cert (owner: the upstream's name) */
};

struct expiry_cert {
	enum expiry_kind kind;
	char owner[REGISTRY_CLIENT_ID_MAX > CONFIG_NAME_MAX ? REGISTRY_CLIENT_ID_MAX + 1
							     : CONFIG_NAME_MAX + 1];
	uint8_t thumb[CERT_THUMB_LEN];
	char subject[256];
	int64_t not_after;
};

/* Grows with each add; soonest first after expiry_list_sort. */
struct expiry_list {
	struct expiry_cert *certs;
	size_t n, cap;
	int64_t until; /* what expires after it is left out (unix seconds) */
};

/* The certificates expiring within days of now (already expired ones included). */
void expiry_list_init(struct expiry_list *l, int64_t now, unsigned days);
/* Adds the active bound certificates that expire by l->until. -1 on a registry error or out
 * of memory. */
int expiry_add_bound(struct expiry_list *l, struct registry *reg);
/* Adds x when it expires by l->until. -1 when x cannot be read or out of memory. */
int expiry_add(struct expiry_list *l, enum expiry_kind kind, const char *owner, X509 *x);
void expiry_list_sort(struct expiry_list *l);
void expiry_list_free(struct expiry_list *l);

const char *expiry_kind_name(enum expiry_kind kind); /* "client", "server", "upstream" */
/* Whole days from now to c->not_after, rounded down (negative once expired). */
int64_t expiry_days_left(const struct expiry_cert *c, int64_t now);
/* One warning line in the log for each certificate of l. */
void expiry_log(const struct expiry_list *l, int64_t now);

#endif
