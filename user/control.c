/* The control plane: JSON-lines request handling (control_handle_line) and the Unix-socket
 * server that feeds it. The protocol is documented in docs/control-protocol.md.
 *
 * Request handling is table-driven: each command names its fields (type, required) and a
 * handler. Every field is checked before anything is changed; a handler calls the registry
 * once for a mutation and reports the event through the hooks only after the registry
 * committed it. */
#include "control.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/bio.h>
#include <openssl/pem.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "breaker.h"
#include "buf.h"
#include "cidr.h"
#include "config.h"
#include "log.h"
#include "policy_store.h"
#include "quota.h"
#include "spinlock.h"

#define CONTROL_AUDIT_DEFAULT 50
#define CONTROL_AUDIT_MAX 10000
#define CONTROL_MAX_CONNS 64
#define CONTROL_IDLE_MS 60000
#define CONTROL_SWEEP_MS 5000
#define CONTROL_ECHO_MAX 64 /* bytes of a client-supplied name echoed in an error */

/* --- request handling ------------------------------------------------------------------ */

struct request {
	struct control_ctx *ctx;
	json_t *obj;
	uid_t uid;
	char err[512];
};

enum field_type { F_STRING, F_BOOL, F_INT };

struct field_spec {
	const char *name;
	enum field_type type;
	bool required;
};

typedef json_t *command_fn(struct request *rq);

struct command {
	const char *name;
	enum control_access need; /* READ: changes nothing (list, show...); WRITE: anything else */
	command_fn *fn;
	struct field_spec fields[6]; /* terminated by a NULL name */
};

static void rq_fail(struct request *rq, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void rq_fail(struct request *rq, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rq->err, sizeof(rq->err), fmt, ap);
	va_end(ap);
	/* One printable ASCII line, whatever the input echoed into it (jansson quotes tokens). */
	for (char *p = rq->err; *p; p++)
		if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
			*p = '?';
}

static const char *reg_status_text(int st)
{
	switch (st) {
	case REG_ERR_INVALID: return "invalid argument";
	case REG_ERR_NOT_FOUND: return "not found";
	case REG_ERR_CONFLICT: return "conflict";
	case REG_ERR_REVOKED: return "certificate was revoked";
	case REG_ERR_NEED_ROTATE: return "client already has an active certificate (use rotate)";
	case REG_ERR_LIMIT: return "client already has the maximum number of active certificates";
	case REG_ERR_IO: return "registry I/O error";
	default: return "registry error";
	}
}

/* Copies the registry's message (or a generic one for st) into the request error. */
static void rq_fail_reg(struct request *rq, int st, const char *regerr)
{
	rq_fail(rq, "%s", regerr && regerr[0] ? regerr : reg_status_text(st));
}

/* A printable, bounded rendering of client-supplied text for error messages. */
static void echo_text(const char *s, char *out, size_t outlen)
{
	size_t j = 0;
	for (size_t i = 0; s[i] && j + 4 < outlen && i < CONTROL_ECHO_MAX; i++) {
		unsigned char c = (unsigned char)s[i];
		out[j++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	if (strlen(s) > CONTROL_ECHO_MAX && j + 4 <= outlen) {
		memcpy(out + j, "...", 3);
		j += 3;
	}
	out[j] = '\0';
}

static json_t *json_time(int64_t t)
{
	char s[CERT_TIME_TEXT_LEN];
	cert_time_text(t, s);
	return json_string(s);
}

static json_t *json_thumb(const uint8_t thumb[CERT_THUMB_LEN])
{
	char hex[CERT_THUMB_HEX_LEN + 1];
	cert_thumb_to_hex(thumb, hex);
	return json_string(hex);
}

/* json_string() refuses invalid UTF-8; registry text comes from certificates and could hold
 * anything, so fall back to a sanitised copy. */
static json_t *json_text(const char *s)
{
	json_t *j = json_string(s);
	if (j)
		return j;
	size_t n = strlen(s);
	char *c = malloc(n + 1);
	if (!c)
		return NULL;
	for (size_t i = 0; i <= n; i++)
		c[i] = (s[i] & 0x80) ? '?' : s[i];
	j = json_string(c);
	free(c);
	return j;
}

/* Text a certificate may lack: null when empty. */
static json_t *json_text_or_null(const char *s)
{
	return s[0] ? json_text(s) : json_null();
}

static json_t *psd2_roles_json(uint32_t roles)
{
	json_t *arr = json_array();
	for (unsigned i = 0; arr && i < PSD2_ROLE_COUNT; i++)
		if (roles & (1u << i))
			json_array_append_new(arr, json_string(psd2_role_name(i)));
	return arr;
}

static json_t *cert_info_json(const struct cert_info *ci)
{
	const struct psd2_identity *p = &ci->psd2;
	return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o}", "thumbprint",
			 json_thumb(ci->thumb), "subject", json_text(ci->subject), "issuer",
			 json_text(ci->issuer), "serial", json_text(ci->serial), "not_before",
			 json_time(ci->not_before), "not_after", json_time(ci->not_after),
			 "psd2_roles", psd2_roles_json(p->roles), "organization_identifier",
			 json_text_or_null(p->org_id), "nca_name", json_text_or_null(p->nca_name),
			 "nca_id", json_text_or_null(p->nca_id));
}

static json_t *registry_cert_json(const struct registry_cert *c)
{
	json_t *o = cert_info_json(&c->info);
	if (!o)
		return NULL;
	json_object_set_new(o, "state", json_string(c->state == CERT_ACTIVE ? "active" : "revoked"));
	json_object_set_new(o, "bound_at", json_time(c->bound_at));
	json_object_set_new(o, "revoked_at", c->state == CERT_REVOKED ? json_time(c->revoked_at)
								       : json_null());
	return o;
}

static const char *client_state(const struct registry_client *c)
{
	bool any = false;
	for (unsigned i = 0; i < c->n_certs; i++) {
		if (c->certs[i].state == CERT_ACTIVE)
			return "active";
		any = true;
	}
	return any ? "revoked" : "empty";
}

/* A client's own limit, or null when the configured default applies. Every value is at most
 * RATE_BPS_MAX, well inside json_int_t. */
static json_t *limit_json(const struct registry_limit *l)
{
	if (!l)
		return json_null();
	return json_pack("{s:I, s:I, s:I, s:I}", "pps", (json_int_t)l->pps, "bps",
			 (json_int_t)l->bps, "burst", (json_int_t)l->burst, "burst_bytes",
			 (json_int_t)l->burst_bytes);
}

static json_t *src_rate_json(const struct registry_src_rate *r)
{
	if (!r)
		return json_null();
	return json_pack("{s:I, s:I}", "per_sec", (json_int_t)r->per_sec, "burst",
			 (json_int_t)r->burst);
}

static json_t *registry_client_json(const struct registry_client *c)
{
	json_t *certs = json_array();
	for (unsigned i = 0; certs && i < c->n_certs; i++)
		json_array_append_new(certs, registry_cert_json(&c->certs[i]));
	return json_pack("{s:s, s:I, s:s, s:o, s:o, s:o}", "client_id", c->client_id, "slot",
			 (json_int_t)c->slot, "state", client_state(c), "created_at",
			 json_time(c->created_at), "limit", limit_json(c->has_limit ? &c->limit : NULL),
			 "certs", certs);
}

static void emit_event(struct request *rq, const struct control_event *ev)
{
	struct control_hooks *h = &rq->ctx->hooks;
	if (h->on_event)
		h->on_event(h->arg, ev);
}

static void emit(struct request *rq, enum control_event_kind kind, const char *client_id,
		 uint32_t slot, const uint8_t *thumb, const char *cidr)
{
	struct control_event ev = {
		.kind = kind, .client_id = client_id, .slot = slot, .thumb = thumb, .cidr = cidr};
	emit_event(rq, &ev);
}

static const char *str_field(struct request *rq, const char *name)
{
	json_t *v = json_object_get(rq->obj, name);
	return v ? json_string_value(v) : NULL;
}

/* client_id fields are checked here so that the message is the same for every command. */
static const char *client_id_field(struct request *rq)
{
	const char *id = str_field(rq, "client_id");
	if (id && !registry_client_id_valid(id)) {
		char e[CONTROL_ECHO_MAX + 8];
		echo_text(id, e, sizeof(e));
		rq_fail(rq,
			"invalid client_id '%s': 1-%d printable ASCII characters without space, "
			"'\"' or '\\'",
			e, REGISTRY_CLIENT_ID_MAX);
		return NULL;
	}
	return id;
}

/* Parses the PEM in field name into x. */
static int pem_field(struct request *rq, const char *name, X509 **x)
{
	json_t *v = json_object_get(rq->obj, name);
	char err[256] = "";
	if (cert_from_pem(json_string_value(v), json_string_length(v), x, err, sizeof(err)) < 0) {
		rq_fail(rq, "invalid %s: %s", name, err[0] ? err : "not a PEM certificate");
		return -1;
	}
	return 0;
}

static char *pem_encode(X509 *x)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data, *pem = NULL;
	if (b && PEM_write_bio_X509(b, x) == 1) {
		long n = BIO_get_mem_data(b, &data);
		if (n > 0 && (pem = malloc((size_t)n + 1))) {
			memcpy(pem, data, (size_t)n);
			pem[n] = '\0';
		}
	}
	BIO_free(b);
	return pem;
}

static json_t *cmd_bind(struct request *rq)
{
	const char *id = client_id_field(rq);
	if (!id)
		return NULL;
	json_t *rot = json_object_get(rq->obj, "rotate");
	bool rotate = rot && json_is_true(rot);
	X509 *x = NULL;
	char *pem = NULL;
	json_t *res = NULL;
	if (pem_field(rq, "cert_pem", &x) < 0)
		return NULL;
	struct cert_info ci;
	if (cert_get_info(x, &ci) < 0) {
		rq_fail(rq, "invalid cert_pem: cannot read the certificate's fields");
		goto out;
	}
	time_t now = time(NULL);
	char when[CERT_TIME_TEXT_LEN];
	if (ci.not_after < (int64_t)now) {
		cert_time_text(ci.not_after, when);
		rq_fail(rq, "certificate expired (not_after %s)", when);
		goto out;
	}
	if (ci.not_before > (int64_t)now) {
		cert_time_text(ci.not_before, when);
		rq_fail(rq, "certificate not yet valid (not_before %s)", when);
		goto out;
	}
	char err[256] = "";
	if (!rq->ctx->trust) {
		rq_fail(rq, "no client_ca is configured: cannot verify the certificate");
		goto out;
	}
	switch (cert_store_verify(rq->ctx->trust, x, now, err, sizeof(err))) {
	case CERT_VERIFY_OK: break;
	case CERT_VERIFY_REVOKED:
		rq_fail(rq, "certificate rejected by the client_ca CRL: %s", err);
		goto out;
	case CERT_VERIFY_WEAK:
		/* The handshake would refuse it: RSA below 2048 bits, EC below 224, SHA-1. */
		rq_fail(rq, "certificate too weak for the TLS policy: %s (keys need 112-bit "
			    "security, e.g. RSA 2048 or EC P-256, and signatures SHA-256 or better)",
			err);
		goto out;
	case CERT_VERIFY_UNTRUSTED:
		rq_fail(rq, "certificate does not chain to client_ca: %s",
			err[0] ? err : "verification failed");
		goto out;
	}
	/* A route may require PSD2 roles: what the certificate claims must read unambiguously. */
	if (qcstatement_read(x, &ci.psd2, err, sizeof(err)) < 0) {
		rq_fail(rq, "certificate refused: %s", err);
		goto out;
	}
	/* The registry stores the PEM as re-encoded here: exactly one canonical block. */
	pem = pem_encode(x);
	if (!pem) {
		rq_fail(rq, "out of memory encoding the certificate");
		goto out;
	}
	uint32_t slot = 0;
	err[0] = '\0';
	int st = registry_bind(rq->ctx->reg, id, &ci, pem, rotate, rq->uid, &slot, err,
			       sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		goto out;
	}
	emit(rq, CONTROL_CLIENT_BOUND, id, slot, ci.thumb, NULL);
	res = cert_info_json(&ci);
	if (res) {
		json_object_set_new(res, "client_id", json_string(id));
		json_object_set_new(res, "slot", json_integer(slot));
		json_object_set_new(res, "action", json_string(rotate ? "rotate" : "bind"));
	}
out:
	free(pem);
	X509_free(x);
	return res;
}

static json_t *cmd_unbind(struct request *rq)
{
	const char *id = client_id_field(rq);
	if (!id)
		return NULL;
	json_t *pemv = json_object_get(rq->obj, "cert_pem");
	const char *hex = str_field(rq, "thumbprint");
	char err[256] = "";
	uint32_t slot = 0;
	if (pemv && hex) {
		rq_fail(rq, "fields cert_pem and thumbprint are mutually exclusive");
		return NULL;
	}
	if (!pemv && !hex) {
		int st = registry_unbind_client(rq->ctx->reg, id, rq->uid, &slot, err, sizeof(err));
		if (st != REG_OK) {
			rq_fail_reg(rq, st, err);
			return NULL;
		}
		emit(rq, CONTROL_CLIENT_UNBOUND, id, slot, NULL, NULL);
		return json_pack("{s:s, s:I, s:s}", "client_id", id, "slot", (json_int_t)slot,
				 "removed", "client");
	}
	uint8_t thumb[CERT_THUMB_LEN];
	if (hex) {
		if (cert_thumb_from_hex(hex, strlen(hex), thumb) < 0) {
			rq_fail(rq, "invalid thumbprint: expected 64 hex digits");
			return NULL;
		}
	} else {
		X509 *x = NULL;
		if (pem_field(rq, "cert_pem", &x) < 0)
			return NULL;
		int r = cert_thumbprint(x, thumb);
		X509_free(x);
		if (r < 0) {
			rq_fail(rq, "invalid cert_pem: cannot compute its thumbprint");
			return NULL;
		}
	}
	int st = registry_unbind_cert(rq->ctx->reg, id, thumb, rq->uid, &slot, err, sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	emit(rq, CONTROL_CERT_UNBOUND, id, slot, thumb, NULL);
	return json_pack("{s:s, s:I, s:s, s:o}", "client_id", id, "slot", (json_int_t)slot,
			 "removed", "cert", "thumbprint", json_thumb(thumb));
}

static json_t *cmd_revoke(struct request *rq)
{
	const char *id = client_id_field(rq);
	if (!id)
		return NULL;
	/* Note which certificates are about to be revoked, for the answer. */
	json_t *thumbs = json_array();
	struct registry_client before;
	if (thumbs && registry_get_client(rq->ctx->reg, id, &before) == REG_OK) {
		for (unsigned i = 0; i < before.n_certs; i++)
			if (before.certs[i].state == CERT_ACTIVE)
				json_array_append_new(thumbs, json_thumb(before.certs[i].info.thumb));
		registry_client_free(&before);
	}
	char err[256] = "";
	uint32_t slot = 0;
	int st = registry_revoke(rq->ctx->reg, id, rq->uid, &slot, err, sizeof(err));
	if (st != REG_OK) {
		json_decref(thumbs);
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	emit(rq, CONTROL_CLIENT_REVOKED, id, slot, NULL, NULL);
	return json_pack("{s:s, s:I, s:o}", "client_id", id, "slot", (json_int_t)slot, "revoked",
			 thumbs ? thumbs : json_array());
}

static json_t *cmd_list(struct request *rq)
{
	struct registry_client *list = NULL;
	struct registry_src_rate src;
	size_t n = 0;
	int st = registry_list_clients(rq->ctx->reg, &list, &n);
	int sst = st == REG_OK ? registry_src_rate_get(rq->ctx->reg, &src) : REG_OK;
	if (st != REG_OK || (sst != REG_OK && sst != REG_ERR_NOT_FOUND)) {
		registry_clients_free(list, n);
		rq_fail_reg(rq, st != REG_OK ? st : sst, NULL);
		return NULL;
	}
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		json_array_append_new(arr, registry_client_json(&list[i]));
	registry_clients_free(list, n);
	return arr ? json_pack("{s:o, s:o}", "clients", arr, "src_rate",
			       src_rate_json(sst == REG_OK ? &src : NULL))
		   : NULL;
}

/* The client named by the client_id field, loaded into *c (free with registry_client_free);
 * NULL with rq->err set when the field is invalid or the registry has no such client. */
static const char *known_client_field(struct request *rq, struct registry_client *c)
{
	const char *id = client_id_field(rq);
	if (!id)
		return NULL;
	int st = registry_get_client(rq->ctx->reg, id, c);
	if (st == REG_ERR_NOT_FOUND) {
		rq_fail(rq, "no such client '%s'", id);
		return NULL;
	}
	if (st != REG_OK) {
		rq_fail_reg(rq, st, NULL);
		return NULL;
	}
	return id;
}

static json_t *cmd_show(struct request *rq)
{
	struct registry_client c;
	if (!known_client_field(rq, &c))
		return NULL;
	json_t *o = registry_client_json(&c);
	if (o && rq->ctx->hooks.fill_client)
		rq->ctx->hooks.fill_client(rq->ctx->hooks.arg, c.slot, o);
	registry_client_free(&c);
	return o;
}

static json_t *cmd_audit(struct request *rq)
{
	const char *id = NULL;
	if (json_object_get(rq->obj, "client_id") && !(id = client_id_field(rq)))
		return NULL;
	json_int_t limit = CONTROL_AUDIT_DEFAULT;
	json_t *lv = json_object_get(rq->obj, "limit");
	if (lv) {
		limit = json_integer_value(lv);
		if (limit < 1 || limit > CONTROL_AUDIT_MAX) {
			rq_fail(rq, "field limit must be between 1 and %d", CONTROL_AUDIT_MAX);
			return NULL;
		}
	}
	struct registry_audit_entry *e = NULL;
	size_t n = 0;
	int st = registry_audit(rq->ctx->reg, id, (size_t)limit, &e, &n);
	if (st != REG_OK) {
		rq_fail_reg(rq, st, NULL);
		return NULL;
	}
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < n; i++)
		json_array_append_new(
			arr, json_pack("{s:I, s:o, s:I, s:o, s:o, s:o, s:o}", "id", (json_int_t)e[i].id,
				       "time", json_time(e[i].ts), "uid", (json_int_t)e[i].uid,
				       "action", json_text(e[i].action), "client_id",
				       json_text(e[i].client_id), "thumbprint",
				       json_text(e[i].thumb_hex), "detail", json_text(e[i].detail)));
	free(e);
	return arr ? json_pack("{s:o}", "entries", arr) : NULL;
}

static const char *cidr_field(struct request *rq, char *out, size_t outlen)
{
	const char *cidr = str_field(rq, "cidr"), *why;
	if (cidr_canonical(cidr, out, outlen, &why) < 0) {
		char e[CONTROL_ECHO_MAX + 8];
		echo_text(cidr, e, sizeof(e));
		rq_fail(rq, "invalid cidr '%s': %s", e, why);
		return NULL;
	}
	return out;
}

static json_t *cmd_deny(struct request *rq, bool add)
{
	char cidr[CIDR_TEXT_MAX + 1];
	if (!cidr_field(rq, cidr, sizeof(cidr)))
		return NULL;
	char err[256] = "";
	int st = add ? registry_deny_add(rq->ctx->reg, cidr, rq->uid, err, sizeof(err))
		     : registry_deny_del(rq->ctx->reg, cidr, rq->uid, err, sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	emit(rq, add ? CONTROL_DENY_ADDED : CONTROL_DENY_REMOVED, NULL, 0, NULL, cidr);
	return json_pack("{s:s}", "cidr", cidr);
}

static json_t *cmd_deny_add(struct request *rq) { return cmd_deny(rq, true); }
static json_t *cmd_deny_del(struct request *rq) { return cmd_deny(rq, false); }

static json_t *cmd_deny_list(struct request *rq)
{
	char **list = NULL;
	size_t n = 0;
	int st = registry_deny_list(rq->ctx->reg, &list, &n);
	if (st != REG_OK) {
		rq_fail_reg(rq, st, NULL);
		return NULL;
	}
	json_t *arr = json_array();
	for (size_t i = 0; i < n; i++) {
		if (arr)
			json_array_append_new(arr, json_text(list[i]));
		free(list[i]);
	}
	free(list);
	return arr ? json_pack("{s:o}", "cidrs", arr) : NULL;
}

/* An optional non-negative integer field (its type was checked); def when absent. */
static int u64_field(struct request *rq, const char *name, uint64_t def, uint64_t *out)
{
	json_t *v = json_object_get(rq->obj, name);
	*out = def;
	if (!v)
		return 0;
	if (json_integer_value(v) < 0) {
		rq_fail(rq, "field %s must not be negative", name);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static json_t *cmd_limit_set(struct request *rq)
{
	const char *id = client_id_field(rq);
	struct registry_limit lim;
	if (!id || u64_field(rq, "pps", 0, &lim.pps) < 0 || u64_field(rq, "bps", 0, &lim.bps) < 0 ||
	    u64_field(rq, "burst", 1, &lim.burst) < 0 ||
	    u64_field(rq, "burst_bytes", 0, &lim.burst_bytes) < 0)
		return NULL;
	char err[256] = "";
	uint32_t slot = 0;
	int st = registry_limit_set(rq->ctx->reg, id, &lim, rq->uid, &slot, err, sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	struct control_event ev = {
		.kind = CONTROL_LIMIT_CHANGED, .client_id = id, .slot = slot, .limit = &lim};
	emit_event(rq, &ev);
	return json_pack("{s:s, s:I, s:o}", "client_id", id, "slot", (json_int_t)slot, "limit",
			 limit_json(&lim));
}

static json_t *cmd_limit_del(struct request *rq)
{
	const char *id = client_id_field(rq);
	if (!id)
		return NULL;
	char err[256] = "";
	uint32_t slot = 0;
	int st = registry_limit_del(rq->ctx->reg, id, rq->uid, &slot, err, sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	struct control_event ev = {.kind = CONTROL_LIMIT_CHANGED, .client_id = id, .slot = slot};
	emit_event(rq, &ev);
	return json_pack("{s:s, s:I, s:n}", "client_id", id, "slot", (json_int_t)slot, "limit");
}

static json_t *cmd_src_rate_set(struct request *rq)
{
	struct registry_src_rate r;
	if (u64_field(rq, "per_sec", 0, &r.per_sec) < 0 || u64_field(rq, "burst", 1, &r.burst) < 0)
		return NULL;
	char err[256] = "";
	int st = registry_src_rate_set(rq->ctx->reg, &r, rq->uid, err, sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	struct control_event ev = {
		.kind = CONTROL_SRC_RATE_CHANGED, .src_per_sec = r.per_sec, .src_burst = r.burst};
	emit_event(rq, &ev);
	return json_pack("{s:o}", "src_rate", src_rate_json(&r));
}

static json_t *cmd_src_rate_del(struct request *rq)
{
	char err[256] = "";
	int st = registry_src_rate_del(rq->ctx->reg, rq->uid, err, sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	struct control_event ev = {.kind = CONTROL_SRC_RATE_CHANGED, .src_default = true};
	emit_event(rq, &ev);
	return json_pack("{s:n}", "src_rate");
}

static json_t *cmd_stats(struct request *rq)
{
	json_t *o = json_object();
	if (!o)
		return NULL;
	struct control_hooks *h = &rq->ctx->hooks;
	if (h->fill_stats)
		h->fill_stats(h->arg, o);
	struct registry_counts n;
	if (registry_counts(rq->ctx->reg, &n) != REG_OK) {
		json_decref(o);
		rq_fail(rq, "registry I/O error");
		return NULL;
	}
	json_object_set_new(o, "clients", json_integer(n.clients));
	json_object_set_new(o, "certs_active", json_integer(n.certs_active));
	json_object_set_new(o, "certs_revoked", json_integer(n.certs_revoked));
	json_object_set_new(o, "deny_entries", json_integer(n.deny_entries));
	return o;
}

/* --- quota counters and circuit breakers (the pinned maps, through the policy store) ---- */

static struct policy_store *policy_store_of(struct request *rq)
{
	if (!rq->ctx->policy)
		rq_fail(rq, "no quota or circuit breaker is configured (no route has a quota, no upstream a circuit_breaker)");
	return rq->ctx->policy;
}

/* The optional key field (a quota key value, "" for the counters per client_id only); *key
 * NULL for every key. */
static int quota_key_field(struct request *rq, const char **key)
{
	*key = str_field(rq, "key");
	if (*key && strlen(*key) > CONFIG_QUOTA_KEY_MAX) {
		rq_fail(rq, "invalid key: a quota key value has at most %d bytes",
			CONFIG_QUOTA_KEY_MAX);
		return -1;
	}
	return 0;
}

static const char *quota_window_name(uint32_t window)
{
	switch (window) {
	case PSD2_QUOTA_MINUTE: return "minute";
	case PSD2_QUOTA_HOUR: return "hour";
	case PSD2_QUOTA_DAY: return "day";
	case PSD2_QUOTA_ROLLING: return "rolling";
	default: return "unknown";
	}
}

/* Copies of the counters a quota_each visit saw, each taken under its entry's lock. */
struct quota_copies {
	struct psd2_quota *q;
	size_t n, cap;
	bool oom;
};

static void quota_copy(struct psd2_quota *q, void *arg)
{
	struct quota_copies *c = arg;
	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 16;
		struct psd2_quota *grown = realloc(c->q, cap * sizeof(*grown));
		if (!grown) {
			c->oom = true;
			return;
		}
		c->q = grown;
		c->cap = cap;
	}
	struct psd2_quota *copy = &c->q[c->n++];
	spin_lock(&q->lock);
	*copy = *q;
	spin_unlock(&q->lock);
	/* Text read from shared memory: bounded before it is used as strings. */
	copy->name[sizeof(copy->name) - 1] = '\0';
	copy->client_id[sizeof(copy->client_id) - 1] = '\0';
	copy->key[sizeof(copy->key) - 1] = '\0';
}

static int quota_order(const void *a, const void *b)
{
	const struct psd2_quota *x = a, *y = b;
	int r = strcmp(x->name, y->name);
	return r ? r : strcmp(x->key, y->key);
}

/* A counter as quota_peek sees it at now, judged by the rule written into the entry when it
 * was last counted: the configuration may no longer name the quota. */
static json_t *quota_json(const struct psd2_quota *q, int64_t now)
{
	struct quota_rule rule = {
		.limit = q->limit, .window = q->window, .window_seconds = q->window_seconds};
	struct quota_state st;
	quota_peek(q, &rule, now, &st);
	return json_pack("{s:o, s:o, s:o, s:I, s:s, s:I, s:I, s:I, s:I, s:o}", "name",
			 json_text(q->name), "client_id", json_text(q->client_id), "key",
			 json_text(q->key), "limit", (json_int_t)st.limit,
			 "window", quota_window_name(q->window), "window_seconds",
			 (json_int_t)q->window_seconds, "used", (json_int_t)st.used, "remaining",
			 (json_int_t)st.remaining, "reset_in", (json_int_t)st.reset, "reset_at",
			 json_time(now + st.reset));
}

/* The counters a quota command names: the store, the optional --key and a known client_id.
 * NULL (an error reply is set) when one of them is missing. */
static struct policy_store *quota_target(struct request *rq, const char **key, const char **id)
{
	struct policy_store *ps = policy_store_of(rq);
	struct registry_client c;
	if (!ps || quota_key_field(rq, key) < 0 || !(*id = known_client_field(rq, &c)))
		return NULL;
	registry_client_free(&c);
	return ps;
}

static json_t *cmd_quota_show(struct request *rq)
{
	const char *key, *id;
	struct policy_store *ps = quota_target(rq, &key, &id);
	if (!ps)
		return NULL;
	struct quota_copies copies = {0};
	policy_store_quota_each(ps, id, key, quota_copy, &copies);
	json_t *arr = copies.oom ? NULL : json_array();
	if (arr && copies.n) {
		qsort(copies.q, copies.n, sizeof(*copies.q), quota_order);
		int64_t now = time(NULL);
		for (size_t i = 0; i < copies.n; i++) {
			/* Allocated for a request that has not counted yet: no rule to judge by. */
			if (!copies.q[i].window_seconds)
				continue;
			json_array_append_new(arr, quota_json(&copies.q[i], now));
		}
	}
	free(copies.q);
	return arr;
}

/* Zeroes a counter; counts it in *arg when quota-show would list it (it was counted in). */
static void quota_zero(struct psd2_quota *q, void *arg)
{
	size_t *n = arg;
	spin_lock(&q->lock);
	if (q->window_seconds)
		(*n)++;
	quota_clear(q);
	spin_unlock(&q->lock);
}

static json_t *cmd_quota_reset(struct request *rq)
{
	const char *key, *id;
	struct policy_store *ps = quota_target(rq, &key, &id);
	if (!ps)
		return NULL;
	char detail[CONFIG_QUOTA_KEY_MAX + 64], err[256] = "";
	if (key)
		snprintf(detail, sizeof(detail), "quota counters of key '%s'", key);
	else
		snprintf(detail, sizeof(detail), "every quota counter");
	int st = registry_audit_record(rq->ctx->reg, rq->uid, "quota-reset", id, detail, err,
				       sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	size_t n = 0;
	policy_store_quota_each(ps, id, key, quota_zero, &n);
	return json_pack("{s:s, s:o, s:I}", "client_id", id, "key",
			 key ? json_string(key) : json_null(), "reset", (json_int_t)n);
}

/* A consistent copy of a breaker entry (the workers change it under its lock). */
static struct psd2_breaker breaker_copy(struct psd2_breaker *b)
{
	spin_lock(&b->lock);
	struct psd2_breaker copy = *b;
	spin_unlock(&b->lock);
	return copy;
}

static json_t *cmd_breaker_list(struct request *rq)
{
	struct policy_store *ps = policy_store_of(rq);
	if (!ps)
		return NULL;
	json_t *arr = json_array();
	for (unsigned i = 0; arr && i < rq->ctx->n_upstreams; i++) {
		struct psd2_breaker b = breaker_copy(policy_store_breaker(ps, i));
		json_array_append_new(
			arr, json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:I, s:I}", "name",
				       rq->ctx->upstreams[i].name, "state", breaker_state_name(b.state),
				       "consecutive_failures", (json_int_t)b.consecutive_failures,
				       "window_requests", (json_int_t)b.window_requests,
				       "window_failures", (json_int_t)b.window_failures, "opened_at",
				       b.opened_at_ms ? json_time(b.opened_at_ms / 1000) : json_null(),
				       "opened_total", (json_int_t)b.opened_total, "rejected_total",
				       (json_int_t)b.rejected_total));
	}
	return arr;
}

static json_t *cmd_breaker_reset(struct request *rq)
{
	struct policy_store *ps = policy_store_of(rq);
	if (!ps)
		return NULL;
	const char *name = str_field(rq, "upstream");
	unsigned i = 0;
	while (i < rq->ctx->n_upstreams && strcmp(rq->ctx->upstreams[i].name, name) != 0)
		i++;
	if (i == rq->ctx->n_upstreams) {
		char e[CONTROL_ECHO_MAX + 8];
		echo_text(name, e, sizeof(e));
		rq_fail(rq, "no such upstream '%s'", e);
		return NULL;
	}
	struct psd2_breaker *b = policy_store_breaker(ps, i);
	const char *was = breaker_state_name(breaker_copy(b).state);
	char detail[CONFIG_NAME_MAX + 64], err[256] = "";
	snprintf(detail, sizeof(detail), "upstream %s (was %s)", name, was);
	int st = registry_audit_record(rq->ctx->reg, rq->uid, "breaker-reset", "", detail, err,
				       sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	breaker_reset(b);
	return json_pack("{s:s, s:s, s:s}", "upstream", name, "state",
			 breaker_state_name(PSD2_BREAKER_CLOSED), "was", was);
}

static json_t *cmd_reload(struct request *rq)
{
	struct control_hooks *h = &rq->ctx->hooks;
	char err[sizeof(rq->err)] = "";
	json_t *res = NULL;
	if (!h->reload) {
		rq_fail(rq, "reload is not available");
		return NULL;
	}
	if (h->reload(h->arg, rq->uid, &res, err, sizeof(err)) < 0) {
		rq_fail(rq, "reload refused, nothing changed: %s", err);
		return NULL;
	}
	if (!res)
		rq_fail(rq, "reloaded, but out of memory building the answer");
	return res;
}

/* Audited once done (a refusal leaves the registry as it was). A rotation that stops half-way
 * loses nothing: each row names the KEK that wraps it, and the next one finishes the job. */
static json_t *cmd_rotate_kek(struct request *rq)
{
	struct control_hooks *h = &rq->ctx->hooks;
	const char *label = json_string_value(json_object_get(rq->obj, "label"));
	char err[sizeof(rq->err)] = "", detail[160];
	if (!h->rotate_kek) {
		rq_fail(rq, "rotate-kek: no route is a hub route, there is no token store");
		return NULL;
	}
	if (h->rotate_kek(h->arg, label, err, sizeof(err)) < 0) {
		rq_fail(rq, "rotate-kek: %s", err);
		return NULL;
	}
	snprintf(detail, sizeof(detail), "token store KEK -> %s", label);
	int st = registry_audit_record(rq->ctx->reg, rq->uid, "rotate-kek", "", detail, err,
				       sizeof(err));
	if (st != REG_OK) {
		rq_fail_reg(rq, st, err);
		return NULL;
	}
	return json_pack("{s:s}", "kek_label", label);
}

/* The certificates that expire within `days`: bound ones and the daemon's own, soonest first. */
static json_t *cmd_certs(struct request *rq)
{
	json_int_t days = json_integer_value(json_object_get(rq->obj, "days"));
	struct control_hooks *h = &rq->ctx->hooks;
	struct expiry_list l;
	int64_t now = (int64_t)time(NULL);
	if (days < 0 || days > EXPIRY_DAYS_MAX) {
		rq_fail(rq, "days must be between 0 and %d", EXPIRY_DAYS_MAX);
		return NULL;
	}
	expiry_list_init(&l, now, (unsigned)days);
	if (expiry_add_bound(&l, rq->ctx->reg) < 0 ||
	    (h->own_certs && h->own_certs(h->arg, &l) < 0)) {
		expiry_list_free(&l);
		rq_fail(rq, "cannot read every certificate");
		return NULL;
	}
	expiry_list_sort(&l);
	json_t *arr = json_array();
	for (size_t i = 0; arr && i < l.n; i++) {
		const struct expiry_cert *c = &l.certs[i];
		json_array_append_new(
			arr, json_pack("{s:s, s:o, s:o, s:o, s:o, s:I}", "kind",
				       expiry_kind_name(c->kind), "owner",
				       json_text_or_null(c->owner), "thumbprint", json_thumb(c->thumb),
				       "subject", json_text(c->subject), "not_after",
				       json_time(c->not_after), "days_left",
				       (json_int_t)expiry_days_left(c, now)));
	}
	expiry_list_free(&l);
	return arr ? json_pack("{s:I, s:o}", "days", days, "certs", arr) : NULL;
}

static const struct command commands[] = {
	{"bind", CONTROL_ACCESS_WRITE, cmd_bind,
	 {{"client_id", F_STRING, true}, {"cert_pem", F_STRING, true}, {"rotate", F_BOOL, false}}},
	{"unbind", CONTROL_ACCESS_WRITE, cmd_unbind,
	 {{"client_id", F_STRING, true}, {"cert_pem", F_STRING, false},
	  {"thumbprint", F_STRING, false}}},
	{"revoke", CONTROL_ACCESS_WRITE, cmd_revoke, {{"client_id", F_STRING, true}}},
	{"list", CONTROL_ACCESS_READ, cmd_list, {{0}}},
	{"show", CONTROL_ACCESS_READ, cmd_show, {{"client_id", F_STRING, true}}},
	{"audit", CONTROL_ACCESS_READ, cmd_audit,
	 {{"client_id", F_STRING, false}, {"limit", F_INT, false}}},
	{"deny-add", CONTROL_ACCESS_WRITE, cmd_deny_add, {{"cidr", F_STRING, true}}},
	{"deny-del", CONTROL_ACCESS_WRITE, cmd_deny_del, {{"cidr", F_STRING, true}}},
	{"deny-list", CONTROL_ACCESS_READ, cmd_deny_list, {{0}}},
	{"limit-set", CONTROL_ACCESS_WRITE, cmd_limit_set,
	 {{"client_id", F_STRING, true}, {"pps", F_INT, false}, {"bps", F_INT, false},
	  {"burst", F_INT, false}, {"burst_bytes", F_INT, false}}},
	{"limit-del", CONTROL_ACCESS_WRITE, cmd_limit_del, {{"client_id", F_STRING, true}}},
	{"src-rate-set", CONTROL_ACCESS_WRITE, cmd_src_rate_set,
	 {{"per_sec", F_INT, true}, {"burst", F_INT, true}}},
	{"src-rate-del", CONTROL_ACCESS_WRITE, cmd_src_rate_del, {{0}}},
	{"stats", CONTROL_ACCESS_READ, cmd_stats, {{0}}},
	{"quota-show", CONTROL_ACCESS_READ, cmd_quota_show,
	 {{"client_id", F_STRING, true}, {"key", F_STRING, false}}},
	{"quota-reset", CONTROL_ACCESS_WRITE, cmd_quota_reset,
	 {{"client_id", F_STRING, true}, {"key", F_STRING, false}}},
	{"breaker-list", CONTROL_ACCESS_READ, cmd_breaker_list, {{0}}},
	{"breaker-reset", CONTROL_ACCESS_WRITE, cmd_breaker_reset, {{"upstream", F_STRING, true}}},
	{"certs", CONTROL_ACCESS_READ, cmd_certs, {{"days", F_INT, true}}},
	{"reload", CONTROL_ACCESS_WRITE, cmd_reload, {{0}}},
	{"rotate-kek", CONTROL_ACCESS_WRITE, cmd_rotate_kek, {{"label", F_STRING, true}}},
};

static const char *const type_names[] = {"a string", "a boolean", "an integer"};

static bool type_ok(json_t *v, enum field_type t)
{
	switch (t) {
	case F_STRING: return json_is_string(v);
	case F_BOOL: return json_is_boolean(v);
	case F_INT: return json_is_integer(v);
	}
	return false;
}

/* Presence, type and unknown-field checks for cmd. 0 or -1 with rq->err set. */
static int check_fields(struct request *rq, const struct command *cmd)
{
	const char *key;
	json_t *v;
	json_object_foreach(rq->obj, key, v) {
		if (strcmp(key, "cmd") == 0)
			continue;
		const struct field_spec *f = cmd->fields;
		while (f->name && strcmp(f->name, key) != 0)
			f++;
		if (!f->name) {
			char e[CONTROL_ECHO_MAX + 8];
			echo_text(key, e, sizeof(e));
			rq_fail(rq, "unknown field '%s' for command %s", e, cmd->name);
			return -1;
		}
		if (!type_ok(v, f->type)) {
			rq_fail(rq, "field %s must be %s", f->name, type_names[f->type]);
			return -1;
		}
	}
	for (const struct field_spec *f = cmd->fields; f->name; f++) {
		if (f->required && !json_object_get(rq->obj, f->name)) {
			rq_fail(rq, "missing field %s", f->name);
			return -1;
		}
	}
	return 0;
}

static char *reply(json_t *result, const char *error)
{
	json_t *o = result ? json_pack("{s:b, s:o}", "ok", 1, "result", result)
			   : json_pack("{s:b, s:s}", "ok", 0, "error", error);
	char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!s)
		s = strdup(result ? "{\"ok\":false,\"error\":\"out of memory building the answer\"}"
				  : "{\"ok\":false,\"error\":\"out of memory\"}");
	return s;
}

char *control_handle_line(struct control_ctx *ctx, const char *line, size_t len, uid_t uid,
			  enum control_access access)
{
	struct request rq = {.ctx = ctx, .uid = uid};
	json_error_t jerr;
	json_t *res = NULL;
	/* Strip a trailing CR so that CRLF-terminated lines work. */
	if (len && line[len - 1] == '\r')
		len--;
	rq.obj = json_loadb(line, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	if (!rq.obj) {
		rq_fail(&rq, "invalid JSON: %s (at byte %d)", jerr.text, jerr.position);
		goto out;
	}
	if (!json_is_object(rq.obj)) {
		rq_fail(&rq, "request must be a JSON object");
		goto out;
	}
	json_t *cmdv = json_object_get(rq.obj, "cmd");
	if (!cmdv) {
		rq_fail(&rq, "missing field cmd");
		goto out;
	}
	if (!json_is_string(cmdv)) {
		rq_fail(&rq, "field cmd must be a string");
		goto out;
	}
	const char *name = json_string_value(cmdv);
	const struct command *cmd = NULL;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(commands[i].name, name) == 0)
			cmd = &commands[i];
	if (!cmd) {
		char e[CONTROL_ECHO_MAX + 8];
		echo_text(name, e, sizeof(e));
		rq_fail(&rq, "unknown command '%s'", e);
		goto out;
	}
	/* Before the fields: a peer learns nothing from a command it may not run. */
	if (access < cmd->need) {
		log_warn("control: refused %s from uid %u (%s)", cmd->name, (unsigned)uid,
			 access == CONTROL_ACCESS_READ ? "read-only" : "no access");
		if (access == CONTROL_ACCESS_READ)
			rq_fail(&rq, "permission denied: %s changes state and uid %u may only read "
				     "(control_readonly_group)", cmd->name, (unsigned)uid);
		else
			rq_fail(&rq, "permission denied: uid %u may not use the control socket",
				(unsigned)uid);
		goto out;
	}
	if (check_fields(&rq, cmd) < 0)
		goto out;
	res = cmd->fn(&rq);
	if (!res && !rq.err[0])
		rq_fail(&rq, "out of memory");
out:
	json_decref(rq.obj);
	return reply(res, rq.err);
}

/* --- socket server ---------------------------------------------------------------------- */

struct control_conn {
	struct control_server *srv;
	struct control_conn *next, **pprev;
	int fd;
	uid_t uid;
	pid_t pid;
	enum control_access access; /* never NONE: such peers are refused at accept */
	struct buf in, out;
	int64_t last_active;
	bool closing; /* close once out is flushed; read nothing more */
};

struct control_server {
	struct ev_loop *loop;
	struct control_ctx *ctx;
	int fd;
	char *path;
	const char *name; /* the socket's file name: the last component of path */
	int dir_fd;       /* its directory, checked by socket_dir_open, held for unlinkat */
	dev_t dev;
	ino_t ino;
	struct control_groups groups;
	uid_t euid;
	unsigned n_conns;
	struct control_conn *conns;
	struct ev_timer *sweep;
};

static void conn_close(struct control_conn *c)
{
	ev_set(c->srv->loop, c->fd, EV_NONE, NULL, NULL);
	close(c->fd);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	c->srv->n_conns--;
	buf_free(&c->in);
	buf_free(&c->out);
	free(c);
}

static void conn_event(struct ev_loop *loop, int fd, int mask, void *arg);

/* Writes what it can of c->out and sets the interest accordingly. 0, or -1 when c was closed. */
static int conn_flush(struct control_conn *c)
{
	while (c->out.len) {
		ssize_t w = send(c->fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (w <= 0) {
			conn_close(c);
			return -1;
		}
		buf_consume(&c->out, (size_t)w);
	}
	if (!c->out.len && c->closing) {
		conn_close(c);
		return -1;
	}
	/* While an answer is pending, read nothing more: a peer that does not read its answers
	 * cannot make us buffer without bound. */
	int want = c->out.len ? EV_WRITE : EV_READ;
	if (ev_get(c->srv->loop, c->fd) != want &&
	    ev_set(c->srv->loop, c->fd, want, conn_event, c) < 0) {
		conn_close(c);
		return -1;
	}
	return 0;
}

static int conn_queue(struct control_conn *c, const char *resp)
{
	if (!resp || buf_append_str(&c->out, resp) < 0 || buf_append(&c->out, "\n", 1) < 0) {
		c->closing = true;
		return -1;
	}
	return 0;
}

static void conn_queue_error(struct control_conn *c, const char *msg)
{
	char *r = reply(NULL, msg);
	conn_queue(c, r);
	free(r);
	c->closing = true;
}

static void conn_too_long(struct control_conn *c)
{
	char msg[96];
	snprintf(msg, sizeof(msg), "request line too long (limit %d bytes)", CONTROL_MAX_LINE);
	conn_queue_error(c, msg);
}

static void conn_handle_line(struct control_conn *c, const char *line, size_t len)
{
	char *resp = control_handle_line(c->srv->ctx, line, len, c->uid, c->access);
	conn_queue(c, resp);
	free(resp);
}

/* Handles every complete line in c->in. */
static void conn_process(struct control_conn *c)
{
	while (!c->closing && c->in.len) {
		char *head = buf_head(&c->in);
		char *nl = memchr(head, '\n', c->in.len);
		if (!nl)
			break;
		size_t n = (size_t)(nl - head);
		if (n > CONTROL_MAX_LINE) {
			conn_too_long(c);
			return;
		}
		if (n)
			conn_handle_line(c, head, n);
		buf_consume(&c->in, n + 1);
	}
	if (!c->closing && c->in.len > CONTROL_MAX_LINE)
		conn_too_long(c);
}

static void conn_read(struct control_conn *c)
{
	for (;;) {
		if (buf_reserve(&c->in, 16384) < 0) {
			conn_queue_error(c, "out of memory");
			return;
		}
		char *tail = buf_head(&c->in) + c->in.len;
		size_t room = c->in.cap - c->in.off - c->in.len;
		ssize_t r = recv(c->fd, tail, room, MSG_DONTWAIT);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (r <= 0) {
			/* EOF: answer a last unterminated line, then close. */
			if (r == 0 && c->in.len && c->in.len <= CONTROL_MAX_LINE)
				conn_handle_line(c, buf_head(&c->in), c->in.len);
			buf_reset(&c->in);
			c->closing = true;
			return;
		}
		c->in.len += (size_t)r;
		c->last_active = ev_now_ms();
		conn_process(c);
		if (c->closing || c->out.len)
			return;
	}
}

static void conn_event(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	(void)fd;
	struct control_conn *c = arg;
	if ((mask & EV_READ) && !c->closing && !c->out.len)
		conn_read(c);
	if (conn_flush(c) < 0)
		return;
	/* Lines that arrived while an answer was pending. */
	if (!c->out.len && !c->closing && c->in.len) {
		conn_process(c);
		conn_flush(c);
	}
}

static bool in_group(gid_t want, gid_t gid, const gid_t *supplementary, size_t n)
{
	if (want == CONTROL_NO_GROUP)
		return false;
	if (gid == want)
		return true;
	for (size_t i = 0; i < n; i++)
		if (supplementary[i] == want)
			return true;
	return false;
}

enum control_access control_peer_access(const struct control_groups *groups, uid_t daemon_uid,
					 uid_t uid, gid_t gid, const gid_t *supplementary,
					 size_t n_supplementary)
{
	if (uid == 0 || uid == daemon_uid ||
	    in_group(groups->admin, gid, supplementary, n_supplementary))
		return CONTROL_ACCESS_WRITE;
	if (in_group(groups->readonly, gid, supplementary, n_supplementary))
		return CONTROL_ACCESS_READ;
	return CONTROL_ACCESS_NONE;
}

/* The peer's supplementary groups as the kernel recorded them at connect() (malloc'd; NULL when
 * none). Read from the socket, not from the user database: no NSS lookup per connection, and
 * the process is judged by the groups it has, as the socket file's mode judges it. */
static int peer_groups(int fd, gid_t **out, size_t *n)
{
	socklen_t len = 0;
	*out = NULL;
	*n = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, NULL, &len) == 0)
		return 0;
	if (errno != ERANGE)
		return -1;
	gid_t *g = malloc(len);
	if (!g || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &len) < 0) {
		free(g);
		return -1;
	}
	*out = g;
	*n = len / sizeof(*g);
	return 0;
}

static enum control_access server_peer_access(struct control_server *srv, int fd,
					       const struct ucred *cr)
{
	gid_t *groups = NULL;
	size_t n = 0;
	if (cr->uid != 0 && cr->uid != srv->euid && peer_groups(fd, &groups, &n) < 0)
		log_warn("control: supplementary groups of pid %d unknown (%s): judged by its "
			 "primary group", (int)cr->pid, strerror(errno));
	enum control_access a =
		control_peer_access(&srv->groups, srv->euid, cr->uid, cr->gid, groups, n);
	free(groups);
	return a;
}

static void server_accept(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	(void)mask;
	struct control_server *srv = arg;
	for (int i = 0; i < 16; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("control: accept: %s", strerror(errno));
			return;
		}
		struct ucred cr;
		socklen_t crlen = sizeof(cr);
		if (getsockopt(cfd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0) {
			log_warn("control: SO_PEERCRED: %s", strerror(errno));
			close(cfd);
			continue;
		}
		const char *refusal = NULL;
		char msg[128];
		enum control_access access = server_peer_access(srv, cfd, &cr);
		if (access == CONTROL_ACCESS_NONE) {
			log_warn("control: refused peer uid %u pid %d", (unsigned)cr.uid, (int)cr.pid);
			snprintf(msg, sizeof(msg), "permission denied: uid %u may not use the control "
						   "socket", (unsigned)cr.uid);
			refusal = msg;
		} else if (srv->n_conns >= CONTROL_MAX_CONNS) {
			log_warn("control: too many connections, refusing pid %d", (int)cr.pid);
			refusal = "too many control connections";
		}
		if (refusal) {
			char *r = reply(NULL, refusal);
			if (r) {
				ssize_t w = send(cfd, r, strlen(r), MSG_NOSIGNAL | MSG_DONTWAIT);
				w = send(cfd, "\n", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
				(void)w;
			}
			free(r);
			close(cfd);
			continue;
		}
		struct control_conn *c = calloc(1, sizeof(*c));
		if (!c || ev_set(loop, cfd, EV_READ, conn_event, c) < 0) {
			log_warn("control: cannot serve a connection: %s",
				 c ? strerror(errno) : "out of memory");
			free(c);
			close(cfd);
			continue;
		}
		c->srv = srv;
		c->fd = cfd;
		c->uid = cr.uid;
		c->pid = cr.pid;
		c->access = access;
		c->last_active = ev_now_ms();
		c->next = srv->conns;
		if (c->next)
			c->next->pprev = &c->next;
		c->pprev = &srv->conns;
		srv->conns = c;
		srv->n_conns++;
	}
}

static int64_t server_sweep(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	(void)loop;
	(void)t;
	struct control_server *srv = arg;
	int64_t now = ev_now_ms();
	struct control_conn *c = srv->conns;
	while (c) {
		struct control_conn *next = c->next;
		if (now - c->last_active > CONTROL_IDLE_MS)
			conn_close(c);
		c = next;
	}
	return CONTROL_SWEEP_MS;
}

/* Checks one directory on the way to the socket, open as fd. Each must belong to root or the
 * daemon's user and be writable by nobody else, so that nobody else can rename, replace or add
 * what comes after it; an ancestor that is writable by others but sticky (/tmp) will do, as
 * there only an entry's owner may rename or remove it. The socket's own directory gets no such
 * exception: the daemon creates, removes and chmods names in it. */
static int dir_check(int fd, const char *shown, bool socket_dir, uid_t euid, char *err,
		     size_t errlen)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		snprintf(err, errlen, "directory %s: %s", shown, strerror(errno));
		return -1;
	}
	if (st.st_uid != 0 && st.st_uid != euid) {
		snprintf(err, errlen, "directory %s is owned by uid %u, not by root or the daemon's "
				      "user (uid %u)", shown, (unsigned)st.st_uid, (unsigned)euid);
		return -1;
	}
	if (!socket_dir && (st.st_mode & S_ISVTX))
		return 0;
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "directory %s is %s", shown,
			 st.st_mode & S_IWOTH ? "world-writable" : "group-writable");
		return -1;
	}
	return 0;
}

/* Opens the directory of the socket at path (absolute), creating missing directories with
 * dir_mode (and group dir_gid unless CONTROL_NO_GROUP). No symbolic link is followed: each
 * component is opened with O_NOFOLLOW under its parent's descriptor and checked (dir_check)
 * before anything is done in it, so what was checked is what is used. An O_PATH descriptor,
 * or -1 with err naming the component at fault. */
static int socket_dir_open(const char *path, mode_t dir_mode, gid_t dir_gid, uid_t euid,
			   char *err, size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char shown[sizeof(dir)] = "/";
	size_t shown_len = 0;
	snprintf(dir, sizeof(dir), "%.*s", (int)(strrchr(path, '/') - path), path);
	int fd = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "directory /: %s", strerror(errno));
		return -1;
	}
	char *save = NULL, *comp = strtok_r(dir, "/", &save);
	if (dir_check(fd, shown, comp == NULL, euid, err, errlen) < 0)
		goto fail;
	while (comp) {
		char *next = strtok_r(NULL, "/", &save);
		shown_len += (size_t)snprintf(shown + shown_len, sizeof(shown) - shown_len, "/%s",
					      comp);
		int sub = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (sub < 0 && errno == ENOENT) {
			if (mkdirat(fd, comp, dir_mode) == 0) {
				/* mkdirat() applied the umask. The parent passed dir_check, so the
				 * name is still the directory just made. */
				if (fchmodat(fd, comp, dir_mode, 0) < 0 ||
				    (dir_gid != CONTROL_NO_GROUP &&
				     fchownat(fd, comp, (uid_t)-1, dir_gid, AT_SYMLINK_NOFOLLOW) < 0)) {
					snprintf(err, errlen, "setting the mode of %s: %s", shown,
						 strerror(errno));
					goto fail;
				}
			} else if (errno != EEXIST) {
				snprintf(err, errlen, "mkdir %s: %s", shown, strerror(errno));
				goto fail;
			}
			sub = openat(fd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		}
		if (sub < 0) {
			int e = errno;
			struct stat st;
			if ((e == ELOOP || e == ENOTDIR) &&
			    fstatat(fd, comp, &st, AT_SYMLINK_NOFOLLOW) == 0)
				snprintf(err, errlen, S_ISLNK(st.st_mode)
							      ? "%s is a symbolic link (the path to the "
								"socket may not go through one)"
							      : "%s is not a directory",
					 shown);
			else
				snprintf(err, errlen, "%s: %s", shown, strerror(e));
			goto fail;
		}
		close(fd);
		fd = sub;
		if (dir_check(fd, shown, next == NULL, euid, err, errlen) < 0)
			goto fail;
		comp = next;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

/* Removes a socket file left by a dead daemon; refuses when something is listening there or
 * the name is not a socket. */
static int clear_stale(struct control_server *srv, const struct sockaddr_un *sa, char *err,
		       size_t errlen)
{
	struct stat st;
	if (fstatat(srv->dir_fd, srv->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", srv->path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s exists and is not a socket", srv->path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int r = connect(fd, (const struct sockaddr *)sa, sizeof(*sa));
	int e = errno;
	close(fd);
	if (r == 0) {
		snprintf(err, errlen, "%s: another daemon is listening there", srv->path);
		return -1;
	}
	if (e != ECONNREFUSED) {
		snprintf(err, errlen, "%s: cannot tell whether a daemon owns it: %s", srv->path,
			 strerror(e));
		return -1;
	}
	if (unlinkat(srv->dir_fd, srv->name, 0) < 0 && errno != ENOENT) {
		snprintf(err, errlen, "cannot remove stale socket %s: %s", srv->path,
			 strerror(errno));
		return -1;
	}
	log_info("control: removed stale socket %s", srv->path);
	return 0;
}

/* Why the socket is safe to create by its path (bind() takes no directory descriptor): every
 * directory on the path passed dir_check, so only root and the daemon's user can change which
 * directories the path goes through or what names the last one holds; bind() itself never
 * follows a symbolic link in the last component (an existing name makes it fail). Everything
 * else (stat, chmod, chown, unlink) goes through the directory descriptor. */
int control_server_start(struct ev_loop *loop, const char *path,
			 const struct control_groups *groups, struct control_ctx *ctx,
			 struct control_server **out, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct control_server *srv = NULL;
	bool bound = false;
	int fd = -1;
	*out = NULL;
	if (!path || path[0] != '/' || strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "control socket path must be absolute and at most %zu bytes",
			 sizeof(sa.sun_path) - 1);
		return -1;
	}
	const char *name = strrchr(path, '/') + 1;
	if (!name[0] || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
		snprintf(err, errlen, "%s does not name a file", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	bool admin = groups->admin != CONTROL_NO_GROUP, readonly = groups->readonly != CONTROL_NO_GROUP;
	/* The file mode names one group at most: with both, anyone may connect and SO_PEERCRED
	 * decides alone, as it does for every connection anyway. */
	gid_t file_gid = admin && readonly ? CONTROL_NO_GROUP
					   : admin ? groups->admin : groups->readonly;
	mode_t sock_mode = admin && readonly ? 0666 : admin || readonly ? 0660 : 0600;
	srv = calloc(1, sizeof(*srv));
	if (!srv || !(srv->path = strdup(path))) {
		snprintf(err, errlen, "out of memory");
		free(srv);
		return -1;
	}
	srv->name = srv->path + (name - path);
	srv->euid = geteuid();
	srv->groups = *groups;
	srv->dir_fd = socket_dir_open(path, admin && readonly ? 0755 : 0750, file_gid, srv->euid,
				      err, errlen);
	if (srv->dir_fd < 0 || clear_stale(srv, &sa, err, errlen) < 0)
		goto fail;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
		goto fail;
	}
	bound = true;
	/* Nobody can connect before listen(), so the mode is right before the first peer. */
	if (fchmodat(srv->dir_fd, srv->name, sock_mode, 0) < 0 ||
	    (file_gid != CONTROL_NO_GROUP &&
	     fchownat(srv->dir_fd, srv->name, (uid_t)-1, file_gid, AT_SYMLINK_NOFOLLOW) < 0)) {
		snprintf(err, errlen, "setting the mode of %s: %s", path, strerror(errno));
		goto fail;
	}
	struct stat st;
	if (fstatat(srv->dir_fd, srv->name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		snprintf(err, errlen, "stat %s: %s", path, strerror(errno));
		goto fail;
	}
	if (listen(fd, 64) < 0) {
		snprintf(err, errlen, "listen %s: %s", path, strerror(errno));
		goto fail;
	}
	srv->loop = loop;
	srv->ctx = ctx;
	srv->fd = fd;
	srv->dev = st.st_dev;
	srv->ino = st.st_ino;
	if (ev_set(loop, fd, EV_READ, server_accept, srv) < 0) {
		snprintf(err, errlen, "event loop: %s", strerror(errno));
		goto fail;
	}
	srv->sweep = ev_timer_add(loop, CONTROL_SWEEP_MS, server_sweep, srv);
	if (!srv->sweep) {
		ev_set(loop, fd, EV_NONE, NULL, NULL);
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	*out = srv;
	return 0;
fail:
	if (bound)
		unlinkat(srv->dir_fd, srv->name, 0);
	if (fd >= 0)
		close(fd);
	if (srv->dir_fd >= 0)
		close(srv->dir_fd);
	free(srv->path);
	free(srv);
	return -1;
}

void control_server_stop(struct control_server *srv)
{
	if (!srv)
		return;
	while (srv->conns)
		conn_close(srv->conns);
	ev_timer_del(srv->loop, srv->sweep);
	ev_set(srv->loop, srv->fd, EV_NONE, NULL, NULL);
	close(srv->fd);
	/* Unlink only our own socket: a successor may already have replaced it. */
	struct stat st;
	if (fstatat(srv->dir_fd, srv->name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
	    st.st_dev == srv->dev && st.st_ino == srv->ino)
		unlinkat(srv->dir_fd, srv->name, 0);
	close(srv->dir_fd);
	free(srv->path);
	free(srv);
}
