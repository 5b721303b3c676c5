#include "expiry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void expiry_list_init(struct expiry_list *l, int64_t now, unsigned days)
{
	memset(l, 0, sizeof(*l));
	l->until = now + (int64_t)days * EXPIRY_DAY_S;
}

static struct expiry_cert *expiry_push(struct expiry_list *l)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 16;
		struct expiry_cert *c = realloc(l->certs, cap * sizeof(*c));
		if (!c)
			return NULL;
		l->certs = c;
		l->cap = cap;
	}
	struct expiry_cert *c = &l->certs[l->n++];
	memset(c, 0, sizeof(*c));
	return c;
}

static int expiry_add_info(struct expiry_list *l, enum expiry_kind kind, const char *owner,
			   const struct cert_info *ci)
{
	if (ci->not_after > l->until)
		return 0;
	struct expiry_cert *c = expiry_push(l);
	if (!c)
		return -1;
	c->kind = kind;
	snprintf(c->owner, sizeof(c->owner), "%s", owner);
	memcpy(c->thumb, ci->thumb, sizeof(c->thumb));
	snprintf(c->subject, sizeof(c->subject), "%s", ci->subject);
	c->not_after = ci->not_after;
	return 0;
}

struct bound_scan {
	struct expiry_list *l;
	int rc;
};

static void expiry_on_bound(void *arg, const struct registry_cert *c, const char *pem)
{
	(void)pem;
	struct bound_scan *s = arg;
	if (expiry_add_info(s->l, EXPIRY_CLIENT, c->client_id, &c->info) < 0)
		s->rc = -1;
}

int expiry_add_bound(struct expiry_list *l, struct registry *reg)
{
	struct bound_scan s = {.l = l};
	if (registry_foreach_active_cert(reg, expiry_on_bound, &s) != REG_OK)
		return -1;
	return s.rc;
}

int expiry_add(struct expiry_list *l, enum expiry_kind kind, const char *owner, X509 *x)
{
	struct cert_info ci;
	if (cert_get_info(x, &ci) < 0)
		return -1;
	return expiry_add_info(l, kind, owner, &ci);
}

static int by_not_after(const void *a, const void *b)
{
	const struct expiry_cert *x = a, *y = b;
	return (x->not_after > y->not_after) - (x->not_after < y->not_after);
}

void expiry_list_sort(struct expiry_list *l)
{
	if (l->n)
		qsort(l->certs, l->n, sizeof(*l->certs), by_not_after);
}

void expiry_list_free(struct expiry_list *l)
{
	free(l->certs);
	l->certs = NULL;
	l->n = l->cap = 0;
}

const char *expiry_kind_name(enum expiry_kind kind)
{
	switch (kind) {
	case EXPIRY_CLIENT: return "client";
	case EXPIRY_SERVER: return "server";
	case EXPIRY_UPSTREAM: return "upstream";
	}
	return "?";
}

int64_t expiry_days_left(const struct expiry_cert *c, int64_t now)
{
	int64_t s = c->not_after - now;
	/* Rounded towards minus infinity: a certificate expired a second ago has -1 days. */
	return s >= 0 ? s / EXPIRY_DAY_S : -((-s + EXPIRY_DAY_S - 1) / EXPIRY_DAY_S);
}

void expiry_log(const struct expiry_list *l, int64_t now)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct expiry_cert *c = &l->certs[i];
		char hex[CERT_THUMB_HEX_LEN + 1], when[CERT_TIME_TEXT_LEN];
		cert_thumb_to_hex(c->thumb, hex);
		cert_time_text(c->not_after, when);
		int64_t days = expiry_days_left(c, now);
		log_warn("certificate %s: %s%s%s certificate %s (%s) %s %s, %lld days %s",
			 days < 0 ? "expired" : "expiring", expiry_kind_name(c->kind),
			 c->owner[0] ? " " : "", c->owner, hex, c->subject,
			 days < 0 ? "expired" : "expires", when,
			 (long long)(days < 0 ? -days : days), days < 0 ? "ago" : "from now");
	}
}
