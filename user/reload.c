#include "reload.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cert.h"
#include "control.h"
#include "daemon.h"
#include "jwt.h"
#include "hub_service.h"
#include "log.h"
#include "registry.h"
#include "tls.h"
#include "worker.h"

/* One complete set: what a reload replaces at once. */
struct tls_set {
	struct cert_store *trust;
	SSL_CTX *server_ctx;
	SSL_CTX *upstream_ctx[CONFIG_MAX_UPSTREAMS]; /* as cfg.upstreams; NULL for http ones */
};

static void tls_set_free(struct tls_set *s)
{
	SSL_CTX_free(s->server_ctx);
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		SSL_CTX_free(s->upstream_ctx[i]);
	cert_store_free(s->trust);
	memset(s, 0, sizeof(*s));
}

/* The key path of an upstream in the configuration: the legacy "upstream" is "default". */
static void upstream_key(const struct config_upstream *u, char *out, size_t outlen)
{
	if (strcmp(u->name, "default") == 0)
		snprintf(out, outlen, "upstream");
	else
		snprintf(out, outlen, "upstreams.%s", u->name);
}

static int tls_set_load(const struct config *cfg, struct tls_set *out, char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	if (cert_store_load(cfg->tls.client_ca, cfg->tls.crl, &out->trust, err, errlen) < 0 ||
	    !(out->server_ctx = tls_server_ctx_new(cfg, out->trust, err, errlen)))
		goto fail;
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		const struct config_upstream *u = &cfg->upstreams[i];
		char key[CONFIG_NAME_MAX + 16];
		if (!u->https)
			continue;
		upstream_key(u, key, sizeof(key));
		if (!(out->upstream_ctx[i] = tls_upstream_ctx_new(u, key, err, errlen)))
			goto fail;
	}
	return 0;
fail:
	tls_set_free(out);
	return -1;
}

/* The key paths of the files a reload read, for its answer. */
static json_t *tls_set_files(const struct config *cfg, const struct jwt_verifier *jwt)
{
	json_t *keys = json_pack("[s, s, s]", "tls.cert", "tls.key", "tls.client_ca");
	if (keys && cfg->tls.crl)
		json_array_append_new(keys, json_string("tls.crl"));
	if (keys && jwt)
		json_array_append_new(keys, json_string("jwt.jwks"));
	for (unsigned i = 0; keys && i < cfg->n_upstreams; i++) {
		const struct config_upstream *u = &cfg->upstreams[i];
		char key[CONFIG_NAME_MAX + 16], path[CONFIG_NAME_MAX + 32];
		if (!u->https)
			continue;
		upstream_key(u, key, sizeof(key));
		snprintf(path, sizeof(path), "%s.ca", key);
		json_array_append_new(keys, json_string(path));
		if (!u->cert)
			continue;
		snprintf(path, sizeof(path), "%s.cert", key);
		json_array_append_new(keys, json_string(path));
		snprintf(path, sizeof(path), "%s.key", key);
		json_array_append_new(keys, json_string(path));
	}
	return keys;
}

/* --- re-verification of the bound certificates ------------------------------------------- */

struct rejected_cert {
	struct registry_cert c;
	char why[256];
};

struct reverify {
	struct daemon *d;
	const char *origin; /* in the log and the audit rows */
	uid_t uid;
	bool live;          /* the XDP maps and the workers serve: revocations reach them */
	struct rejected_cert *rejected;
	size_t n_rejected, cap_rejected;
	bool out_of_memory;
	json_t *revoked;  /* the answer's rows */
	size_t n_revoked; /* of them, those the registry revoked */
};

/* Collected during the registry's walk, acted on after it. */
static void reverify_reject(void *arg, const struct registry_cert *c, const char *why)
{
	struct reverify *rv = arg;
	if (rv->n_rejected == rv->cap_rejected) {
		size_t cap = rv->cap_rejected ? rv->cap_rejected * 2 : 8;
		void *p = realloc(rv->rejected, cap * sizeof(*rv->rejected));
		if (!p) {
			rv->out_of_memory = true;
			return;
		}
		rv->rejected = p;
		rv->cap_rejected = cap;
	}
	struct rejected_cert *r = &rv->rejected[rv->n_rejected++];
	r->c = *c;
	snprintf(r->why, sizeof(r->why), "%s", why);
}

static void reverify_revoke(struct reverify *rv, const struct rejected_cert *r, int64_t now)
{
	const struct registry_cert *c = &r->c;
	char hex[CERT_THUMB_HEX_LEN + 1], detail[320], err[256] = "";
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint32_t slot = 0;
	size_t n_left = 0;

	cert_thumb_to_hex(c->info.thumb, hex);
	struct registry_binding b = {
		.state = c->state, .not_before = c->info.not_before, .not_after = c->info.not_after};
	if (registry_binding_usability(&b, now) == BINDING_OUTSIDE_VALIDITY) {
		log_warn("%s: certificate %s of client %s no longer verifies against "
			 "tls.client_ca/tls.crl (%s): outside its validity, refused as it is",
			 rv->origin, hex, c->client_id, r->why);
		return;
	}
	snprintf(detail, sizeof(detail), "%s: its chain no longer verifies: %s", rv->origin, r->why);
	int st = registry_revoke_cert(rv->d->reg, c->info.thumb, rv->uid, detail, client_id, &slot,
				      &n_left, err, sizeof(err));
	if (st != REG_OK) {
		/* Still refused: the full path verifies it and fails. */
		log_error("%s: certificate %s of client %s no longer verifies against "
			  "tls.client_ca/tls.crl (%s) and cannot be revoked: %s",
			  rv->origin, hex, c->client_id, r->why, err);
		json_array_append_new(rv->revoked,
				      json_pack("{s:s, s:s, s:s, s:s}", "client_id", c->client_id,
						"thumbprint", hex, "reason", r->why, "error", err));
		return;
	}
	rv->n_revoked++;
	log_warn("%s: certificate %s of client %s no longer verifies against tls.client_ca/tls.crl "
		 "(%s): revoked",
		 rv->origin, hex, client_id, r->why);
	json_array_append_new(rv->revoked, json_pack("{s:s, s:s, s:s}", "client_id", client_id,
						     "thumbprint", hex, "reason", r->why));
	if (!rv->live)
		return;
	struct control_event ev = {.client_id = client_id, .slot = slot, .thumb = c->info.thumb};
	ev.kind = n_left ? CONTROL_CERT_REVOKED : CONTROL_CLIENT_REVOKED;
	daemon_on_control_event(rv->d, &ev);
}

/* Attaches the fast path to set's server context and lists the bound certificates the set's
 * trust store no longer verifies; nothing changes but set. -1 with err when the registry cannot
 * be read whole. */
static int reverify_collect(struct reverify *rv, struct tls_set *set, char *err, size_t errlen)
{
	rv->revoked = json_array();
	if (!rv->revoked) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (tls_fastpath_enable(set->server_ctx, rv->d->reg, set->trust, reverify_reject, rv, err,
				errlen) < 0)
		return -1;
	if (rv->out_of_memory) {
		snprintf(err, errlen, "out of memory listing the certificates to revoke");
		return -1;
	}
	return 0;
}

/* Revokes what reverify_collect listed. */
static void reverify_apply(struct reverify *rv)
{
	int64_t now = (int64_t)time(NULL);
	for (size_t i = 0; i < rv->n_rejected; i++)
		reverify_revoke(rv, &rv->rejected[i], now);
}

static void reverify_done(struct reverify *rv)
{
	free(rv->rejected);
	json_decref(rv->revoked);
	memset(rv, 0, sizeof(*rv));
}

/* --- the daemon's set ------------------------------------------------------------------- */

static void tls_set_take(struct daemon *d, struct tls_set *out)
{
	out->trust = d->trust;
	out->server_ctx = d->server_ctx;
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		out->upstream_ctx[i] = d->upstreams[i].ctx;
}

static void tls_set_give(struct daemon *d, const struct tls_set *s)
{
	d->trust = s->trust;
	d->server_ctx = s->server_ctx;
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		d->upstreams[i].ctx = s->upstream_ctx[i];
	if (d->control)
		d->control->trust = s->trust;
}

int daemon_tls_open(struct daemon *d, char *err, size_t errlen)
{
	struct tls_set set;
	if (tls_set_load(&d->cfg, &set, err, errlen) < 0)
		return -1;
	tls_set_give(d, &set);
	return 0;
}

int daemon_tls_reverify(struct daemon *d, char *err, size_t errlen)
{
	struct reverify rv = {.d = d, .origin = "start-up", .uid = geteuid()};
	struct tls_set set;
	tls_set_take(d, &set);
	int rc = reverify_collect(&rv, &set, err, errlen);
	if (rc == 0)
		reverify_apply(&rv);
	reverify_done(&rv);
	return rc;
}

/* Each worker gets its own references; the daemon's to the old set go, and the old contexts
 * with the last worker that lets them go and the last connection made from them. */
static void tls_set_publish(struct daemon *d, struct tls_set *next)
{
	for (unsigned w = 0; w < d->n_workers; w++) {
		struct worker_cmd cmd = {.kind = WORKER_SET_TLS, .server_ctx = next->server_ctx};
		SSL_CTX_up_ref(next->server_ctx);
		for (unsigned i = 0; i < d->cfg.n_upstreams; i++) {
			cmd.upstream_ctx[i] = next->upstream_ctx[i];
			if (cmd.upstream_ctx[i])
				SSL_CTX_up_ref(cmd.upstream_ctx[i]);
		}
		worker_post(&d->workers[w], &cmd);
	}
	if (d->hub)
		hub_service_set_tls(d->hub, next->upstream_ctx);
	struct tls_set old;
	tls_set_take(d, &old);
	tls_set_give(d, next);
	tls_set_free(&old);
}

/* The JWK set is read last: jwt_keys_reload swaps the new keys in as soon as they load, so
 * every other file must have loaded first, and nothing may fail after it. */
int daemon_reload(struct daemon *d, const char *origin, uid_t uid, json_t **result, char *err,
		  size_t errlen)
{
	char label[64];
	snprintf(label, sizeof(label), "reload (%s)", origin);
	struct reverify rv = {.d = d, .origin = label, .uid = uid, .live = true};
	struct tls_set next;
	if (tls_set_load(&d->cfg, &next, err, errlen) < 0)
		goto refused;
	if (reverify_collect(&rv, &next, err, errlen) < 0 ||
	    (d->routes.jwt && jwt_keys_reload(d->routes.jwt, err, errlen) < 0)) {
		tls_set_free(&next);
		goto refused;
	}
	reverify_apply(&rv);
	tls_set_publish(d, &next);
	log_info("%s done: the TLS files%s read again, %zu bound certificate%s revoked", label,
		 d->routes.jwt ? " and the JWK set" : "", rv.n_revoked, rv.n_revoked == 1 ? "" : "s");
	if (result)
		*result = json_pack("{s:o, s:O}", "reloaded", tls_set_files(&d->cfg, d->routes.jwt),
				    "revoked", rv.revoked);
	reverify_done(&rv);
	return 0;
refused:
	reverify_done(&rv);
	log_error("%s refused, nothing changed: %s", label, err);
	return -1;
}

void daemon_tls_close(struct daemon *d)
{
	struct tls_set set;
	tls_set_take(d, &set);
	tls_set_free(&set);
	d->trust = NULL;
	d->server_ctx = NULL;
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		d->upstreams[i].ctx = NULL;
}
