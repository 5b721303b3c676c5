/* Control plane: control_handle_line against a real registry (temp dir) and a real trust store,
 * and the socket server on an event loop in a thread.
 *
 * Every refused request must leave the registry as it was and fire no event; every accepted
 * mutation fires exactly one event, after the registry committed it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <grp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "breaker.h"
#include "control.h"
#include "ctl_client.h"
#include "policy_store.h"
#include "precondition.h"
#include "quota.h"
#include "spinlock.h"
#include "testpki.h"

/* --- a throwaway PKI ---------------------------------------------------------------------- */

static char *pem_of(X509 *x)
{
	char *s = testpki_pem(x);
	assert_non_null(s);
	return s;
}

static void thumb_hex_of(X509 *x, char out[CERT_THUMB_HEX_LEN + 1])
{
	uint8_t t[CERT_THUMB_LEN];
	unsigned int n = 0;
	assert_int_equal(X509_digest(x, EVP_sha256(), t, &n), 1);
	for (unsigned i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", t[i]);
}

enum {
	GOOD1, GOOD2, GOOD3, GOOD4, EXPIRED, FUTURE, FOREIGN, REVOKED, RSA1024, PSD2_AI, BAD_QC,
	SHORT, LONG, N_CERTS
};

/* The qcStatements extension of a PSP_AI certificate of the FCA, DER (from `openssl asn1parse
 * -genconf`); byte QC_AI_ROLE_OID_LAST is the last of the role's OID 0.4.0.19495.1.3. */
static const unsigned char qc_ai[] = {
	0x30, 0x46, 0x30, 0x44, 0x06, 0x06, 0x04, 0x00, 0x81, 0x98, 0x27, 0x02, 0x30, 0x3a, 0x30,
	0x13, 0x30, 0x11, 0x06, 0x07, 0x04, 0x00, 0x81, 0x98, 0x27, 0x01, 0x03, 0x0c, 0x06, 0x50,
	0x53, 0x50, 0x5f, 0x41, 0x49, 0x0c, 0x1b, 0x46, 0x69, 0x6e, 0x61, 0x6e, 0x63, 0x69, 0x61,
	0x6c, 0x20, 0x43, 0x6f, 0x6e, 0x64, 0x75, 0x63, 0x74, 0x20, 0x41, 0x75, 0x74, 0x68, 0x6f,
	0x72, 0x69, 0x74, 0x79, 0x0c, 0x06, 0x47, 0x42, 0x2d, 0x46, 0x43, 0x41};
#define QC_AI_ROLE_OID_LAST 26

/* A leaf of PSDGB-FCA-123456 with the qcStatements value der. */
static X509 *psd2_leaf(struct testpki *p, long serial, const unsigned char *der, size_t len)
{
	X509 *x = testpki_leaf("tpp-psd2", p->leaf_key, p->ca, p->ca_key, serial);
	assert_non_null(x);
	assert_int_equal(testpki_add_subject(x, p->ca_key, NID_organizationIdentifier,
					     "PSDGB-FCA-123456"),
			 0);
	assert_int_equal(testpki_add_der_ext(x, p->ca_key, NID_qcStatements, der, len), 0);
	return x;
}

static struct pki {
	char dir[64];
	char ca_path[128], crl_path[128];
	char *pem[N_CERTS];
	char thumb[N_CERTS][CERT_THUMB_HEX_LEN + 1];
} pki;

/* tests/unit/testpki.h's cast (CA + CRL, expired, CRL-revoked, foreign) plus a few more good
 * leaves, one not valid yet and one with a key below the TLS policy. */
static int pki_setup(void **state)
{
	(void)state;
	struct testpki p;
	assert_int_equal(testpki_init(&p), 0);
	EVP_PKEY *rsa1024 = EVP_RSA_gen(1024);
	assert_non_null(rsa1024);
	/* The role's OID says PSP_PI, its name PSP_AI. */
	unsigned char bad_qc[sizeof(qc_ai)];
	memcpy(bad_qc, qc_ai, sizeof(qc_ai));
	bad_qc[QC_AI_ROLE_OID_LAST] = 0x02;
	snprintf(pki.dir, sizeof(pki.dir), "/tmp/test_control_pki.XXXXXX");
	assert_non_null(mkdtemp(pki.dir));
	snprintf(pki.ca_path, sizeof(pki.ca_path), "%s/ca.pem", pki.dir);
	snprintf(pki.crl_path, sizeof(pki.crl_path), "%s/ca.crl", pki.dir);
	assert_int_equal(testpki_append(pki.ca_path, p.ca, NULL), 0);
	assert_int_equal(testpki_append(pki.crl_path, NULL, p.crl), 0);
	X509 *x[N_CERTS] = {
		[GOOD1] = p.good,
		[GOOD2] = testpki_leaf("tpp-two", p.leaf_key, p.ca, p.ca_key, 200),
		[GOOD3] = testpki_leaf("tpp-three", p.leaf_key, p.ca, p.ca_key, 201),
		[GOOD4] = testpki_leaf("tpp-four", p.leaf_key, p.ca, p.ca_key, 202),
		[EXPIRED] = p.expired,
		[FUTURE] = testpki_cert("tpp-future", p.leaf_key, p.ca, p.ca_key, 203, TESTPKI_DAY,
					2 * TESTPKI_DAY, 0),
		[FOREIGN] = p.foreign,
		[REVOKED] = p.revoked,
		[RSA1024] = testpki_leaf("tpp-rsa1024", rsa1024, p.ca, p.ca_key, 204),
		[PSD2_AI] = psd2_leaf(&p, 205, qc_ai, sizeof(qc_ai)),
		[BAD_QC] = psd2_leaf(&p, 206, bad_qc, sizeof(bad_qc)),
		[SHORT] = testpki_cert("tpp-short", p.leaf_key, p.ca, p.ca_key, 207, -TESTPKI_DAY,
				       10 * TESTPKI_DAY + 3600, 0),
		/* An hour over whole days, as SHORT: days_left does not depend on when the second
		 * turns between signing and listing. */
		[LONG] = testpki_cert("tpp-long", p.leaf_key, p.ca, p.ca_key, 208, -TESTPKI_DAY,
				      364 * TESTPKI_DAY + 3600, 0),
	};
	for (int i = 0; i < N_CERTS; i++) {
		assert_non_null(x[i]);
		pki.pem[i] = pem_of(x[i]);
		thumb_hex_of(x[i], pki.thumb[i]);
	}
	X509_free(x[GOOD2]);
	X509_free(x[GOOD3]);
	X509_free(x[GOOD4]);
	X509_free(x[FUTURE]);
	X509_free(x[RSA1024]);
	X509_free(x[PSD2_AI]);
	X509_free(x[BAD_QC]);
	X509_free(x[SHORT]);
	X509_free(x[LONG]);
	EVP_PKEY_free(rsa1024);
	testpki_free(&p);
	return 0;
}

static int pki_teardown(void **state)
{
	(void)state;
	for (int i = 0; i < N_CERTS; i++)
		free(pki.pem[i]);
	unlink(pki.ca_path);
	unlink(pki.crl_path);
	rmdir(pki.dir);
	return 0;
}

/* --- fixture: a registry, a trust store, recorded events ----------------------------------- */

struct rec_event {
	enum control_event_kind kind;
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint32_t slot;
	bool has_thumb;
	uint8_t thumb[CERT_THUMB_LEN];
	char cidr[64];
	bool has_limit;
	struct registry_limit limit;
	uint64_t src_per_sec, src_burst;
	bool src_default;
};

struct fixture {
	char dir[64];
	char db[128];
	char bpffs[96];    /* store fixture: a bpffs of its own, in a private mount namespace */
	char pin_dir[128];
	struct config cfg; /* store fixture: pin_dir and the upstreams */
	struct control_ctx ctx;
	struct rec_event ev[32];
	int n_ev;
};

static void on_event(void *arg, const struct control_event *ev)
{
	struct fixture *fx = arg;
	assert_true(fx->n_ev < 32);
	struct rec_event *r = &fx->ev[fx->n_ev++];
	memset(r, 0, sizeof(*r));
	r->kind = ev->kind;
	r->slot = ev->slot;
	if (ev->client_id)
		snprintf(r->client_id, sizeof(r->client_id), "%s", ev->client_id);
	if (ev->thumb) {
		r->has_thumb = true;
		memcpy(r->thumb, ev->thumb, CERT_THUMB_LEN);
	}
	if (ev->cidr)
		snprintf(r->cidr, sizeof(r->cidr), "%s", ev->cidr);
	if (ev->limit) {
		r->has_limit = true;
		r->limit = *ev->limit;
	}
	r->src_per_sec = ev->src_per_sec;
	r->src_burst = ev->src_burst;
	r->src_default = ev->src_default;
}

static void fill_stats(void *arg, json_t *obj)
{
	(void)arg;
	json_object_set_new(obj, "connections", json_integer(7));
}

static int fx_setup(void **state)
{
	struct fixture *fx = calloc(1, sizeof(*fx));
	assert_non_null(fx);
	snprintf(fx->dir, sizeof(fx->dir), "/tmp/test_control.XXXXXX");
	assert_non_null(mkdtemp(fx->dir));
	snprintf(fx->db, sizeof(fx->db), "%s/registry.db", fx->dir);
	char err[256] = "";
	if (registry_open(fx->db, &fx->ctx.reg, err, sizeof(err)) < 0)
		fail_msg("registry_open: %s", err);
	if (cert_store_load(pki.ca_path, pki.crl_path, &fx->ctx.trust, err, sizeof(err)) < 0)
		fail_msg("cert_store_load: %s", err);
	fx->ctx.hooks = (struct control_hooks){.arg = fx, .on_event = on_event,
					       .fill_stats = fill_stats};
	*state = fx;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fixture *fx = *state;
	registry_close(fx->ctx.reg);
	cert_store_free(fx->ctx.trust);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
	assert_int_equal(system(cmd), 0);
	free(fx);
	return 0;
}

/* Sends line from a peer with the given access, checks the answer is one JSON object line with
 * a boolean ok, returns it. */
static json_t *call_as(struct fixture *fx, const char *line, enum control_access access)
{
	char *resp = control_handle_line(&fx->ctx, line, strlen(line), 0, access);
	assert_non_null(resp);
	assert_null(strchr(resp, '\n'));
	json_error_t jerr;
	json_t *r = json_loads(resp, 0, &jerr);
	if (!r)
		fail_msg("answer is not JSON: %s", resp);
	free(resp);
	assert_true(json_is_object(r));
	assert_true(json_is_boolean(json_object_get(r, "ok")));
	return r;
}

static json_t *call(struct fixture *fx, const char *line)
{
	return call_as(fx, line, CONTROL_ACCESS_WRITE);
}

static json_t *callj(struct fixture *fx, json_t *req)
{
	char *line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	json_t *r = call(fx, line);
	free(line);
	return r;
}

/* The result of a request that must succeed (reference owned by the caller). */
static json_t *ok(struct fixture *fx, json_t *req)
{
	json_t *r = callj(fx, req);
	if (!json_is_true(json_object_get(r, "ok")))
		fail_msg("expected ok, got error: %s",
			 json_string_value(json_object_get(r, "error")));
	assert_int_equal(json_object_size(r), 2);
	json_t *res = json_incref(json_object_get(r, "result"));
	assert_non_null(res);
	json_decref(r);
	return res;
}

static json_t *bind_req(const char *id, int cert, int rotate)
{
	json_t *o = json_pack("{s:s, s:s, s:s}", "cmd", "bind", "client_id", id, "cert_pem",
			      pki.pem[cert]);
	if (rotate >= 0)
		json_object_set_new(o, "rotate", json_boolean(rotate));
	return o;
}

static void bind_ok(struct fixture *fx, const char *id, int cert, int rotate)
{
	json_decref(ok(fx, bind_req(id, cert, rotate)));
}

/* Everything a refused request could have changed, as one string. */
static char *snapshot(struct fixture *fx)
{
	int saved = fx->n_ev;
	json_t *l = ok(fx, json_pack("{s:s}", "cmd", "list"));
	json_t *d = ok(fx, json_pack("{s:s}", "cmd", "deny-list"));
	json_t *a = ok(fx, json_pack("{s:s, s:i}", "cmd", "audit", "limit", 10000));
	json_t *all = json_pack("{s:o, s:o, s:o}", "list", l, "deny", d, "audit", a);
	char *s = json_dumps(all, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(all);
	assert_int_equal(fx->n_ev, saved);
	return s;
}

/* A request from a peer with the given access that must be refused with an error containing
 * want, change nothing and fire no event. */
static void refused_line_as(struct fixture *fx, const char *line, enum control_access access,
			    const char *want)
{
	char *before = snapshot(fx);
	int n_ev = fx->n_ev;
	json_t *r = call_as(fx, line, access);
	const char *err = json_string_value(json_object_get(r, "error"));
	if (json_is_true(json_object_get(r, "ok")) || !err)
		fail_msg("expected refusal for %.200s", line);
	assert_int_equal(json_object_size(r), 2);
	if (want && !strstr(err, want))
		fail_msg("error '%s' does not contain '%s'", err, want);
	assert_null(strchr(err, '\n'));
	assert_int_equal(fx->n_ev, n_ev);
	char *after = snapshot(fx);
	assert_string_equal(before, after);
	free(before);
	free(after);
	json_decref(r);
}

static void refused_line(struct fixture *fx, const char *line, const char *want)
{
	refused_line_as(fx, line, CONTROL_ACCESS_WRITE, want);
}

static void refused(struct fixture *fx, json_t *req, const char *want)
{
	char *line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	refused_line(fx, line, want);
	free(line);
}

static void assert_event(struct fixture *fx, int i, enum control_event_kind kind, const char *id,
			 const char *thumb_hex)
{
	assert_true(i < fx->n_ev);
	struct rec_event *e = &fx->ev[i];
	assert_int_equal(e->kind, kind);
	if (id)
		assert_string_equal(e->client_id, id);
	if (thumb_hex) {
		assert_true(e->has_thumb);
		char hex[CERT_THUMB_HEX_LEN + 1];
		cert_thumb_to_hex(e->thumb, hex);
		assert_string_equal(hex, thumb_hex);
	} else {
		assert_false(e->has_thumb);
	}
}

/* --- request handling ---------------------------------------------------------------------- */

static void test_bind_and_read_back(void **state)
{
	struct fixture *fx = *state;
	json_t *r = ok(fx, bind_req("PSDGB-FCA-1", GOOD1, -1));
	assert_string_equal(json_string_value(json_object_get(r, "client_id")), "PSDGB-FCA-1");
	assert_string_equal(json_string_value(json_object_get(r, "thumbprint")), pki.thumb[GOOD1]);
	assert_string_equal(json_string_value(json_object_get(r, "action")), "bind");
	assert_non_null(strstr(json_string_value(json_object_get(r, "subject")), "tpp-good"));
	assert_true(json_is_string(json_object_get(r, "not_after")));
	json_int_t slot = json_integer_value(json_object_get(r, "slot"));
	json_decref(r);

	assert_int_equal(fx->n_ev, 1);
	assert_event(fx, 0, CONTROL_CLIENT_BOUND, "PSDGB-FCA-1", pki.thumb[GOOD1]);
	assert_int_equal(fx->ev[0].slot, slot);

	r = ok(fx, json_pack("{s:s}", "cmd", "list"));
	json_t *clients = json_object_get(r, "clients");
	assert_int_equal(json_array_size(clients), 1);
	json_t *c = json_array_get(clients, 0);
	assert_string_equal(json_string_value(json_object_get(c, "client_id")), "PSDGB-FCA-1");
	assert_string_equal(json_string_value(json_object_get(c, "state")), "active");
	assert_int_equal(json_integer_value(json_object_get(c, "slot")), slot);
	assert_int_equal(json_array_size(json_object_get(c, "certs")), 1);
	json_decref(r);

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "PSDGB-FCA-1"));
	json_t *cert = json_array_get(json_object_get(r, "certs"), 0);
	assert_string_equal(json_string_value(json_object_get(cert, "thumbprint")),
			    pki.thumb[GOOD1]);
	assert_string_equal(json_string_value(json_object_get(cert, "state")), "active");
	assert_true(json_is_null(json_object_get(cert, "revoked_at")));
	json_decref(r);

	r = ok(fx, json_pack("{s:s, s:s, s:i}", "cmd", "audit", "client_id", "PSDGB-FCA-1",
			     "limit", 10));
	json_t *entries = json_object_get(r, "entries");
	assert_true(json_array_size(entries) >= 1);
	json_t *e = json_array_get(entries, 0);
	assert_string_equal(json_string_value(json_object_get(e, "action")), "bind");
	assert_string_equal(json_string_value(json_object_get(e, "thumbprint")), pki.thumb[GOOD1]);
	assert_int_equal(json_integer_value(json_object_get(e, "uid")), 0);
	assert_true(json_is_string(json_object_get(e, "time")));
	json_decref(r);

	r = ok(fx, json_pack("{s:s}", "cmd", "audit"));
	assert_true(json_array_size(json_object_get(r, "entries")) >= 1);
	json_decref(r);

	r = ok(fx, json_pack("{s:s}", "cmd", "stats"));
	assert_int_equal(json_integer_value(json_object_get(r, "connections")), 7);
	assert_int_equal(json_integer_value(json_object_get(r, "clients")), 1);
	assert_int_equal(json_integer_value(json_object_get(r, "certs_active")), 1);
	assert_int_equal(json_integer_value(json_object_get(r, "certs_revoked")), 0);
	assert_int_equal(json_integer_value(json_object_get(r, "deny_entries")), 0);
	json_decref(r);
	assert_int_equal(fx->n_ev, 1); /* reads fire nothing */
}

static void test_malformed_requests(void **state)
{
	struct fixture *fx = *state;
	bind_ok(fx, "tpp-a", GOOD1, -1);
	fx->n_ev = 0;

	refused_line(fx, "", "invalid JSON");
	refused_line(fx, "not json", "invalid JSON");
	refused_line(fx, "{\"cmd\":\"list\"", "invalid JSON");
	refused_line(fx, "{\"cmd\":\"list\"} trailing", "invalid JSON");
	refused_line(fx, "{\"cmd\":\"list\",\"cmd\":\"stats\"}", "invalid JSON");
	refused_line(fx, "{\"cmd\":\"show\",\"client_id\":\"a\\u0000b\"}", "invalid JSON");
	refused_line(fx, "\xff\xfe", "invalid JSON");
	refused_line(fx, "[1,2]", "request must be a JSON object");
	refused_line(fx, "\"list\"", "request must be a JSON object");
	refused_line(fx, "{}", "missing field cmd");
	refused_line(fx, "{\"cmd\":1}", "field cmd must be a string");
	refused_line(fx, "{\"cmd\":\"frob\"}", "unknown command 'frob'");
	refused_line(fx, "{\"cmd\":\"list\",\"verbose\":true}", "unknown field 'verbose'");
	refused_line(fx, "{\"cmd\":\"stats\",\"x\":null}", "unknown field 'x'");

	refused(fx, json_pack("{s:s, s:s}", "cmd", "bind", "cert_pem", pki.pem[GOOD2]),
		"missing field client_id");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "bind", "client_id", "tpp-b"),
		"missing field cert_pem");
	refused(fx, json_pack("{s:s, s:i, s:s}", "cmd", "bind", "client_id", 5, "cert_pem",
			      pki.pem[GOOD2]),
		"field client_id must be a string");
	refused(fx, json_pack("{s:s, s:s, s:i}", "cmd", "bind", "client_id", "tpp-b", "cert_pem", 5),
		"field cert_pem must be a string");
	refused(fx, json_pack("{s:s, s:s, s:s, s:s}", "cmd", "bind", "client_id", "tpp-b",
			      "cert_pem", pki.pem[GOOD2], "rotate", "yes"),
		"field rotate must be a boolean");
	refused(fx, json_pack("{s:s, s:s, s:s, s:b}", "cmd", "bind", "client_id", "tpp-b",
			      "cert_pem", pki.pem[GOOD2], "force", 1),
		"unknown field 'force'");
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "bind", "client_id", "has space",
			      "cert_pem", pki.pem[GOOD2]),
		"invalid client_id");
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "bind", "client_id", "", "cert_pem",
			      pki.pem[GOOD2]),
		"invalid client_id");
	refused(fx, json_pack("{s:s}", "cmd", "show"), "missing field client_id");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "nobody"), "no such client");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "audit", "limit", "5"),
		"field limit must be an integer");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "audit", "limit", 0), "field limit must be");
	refused(fx, json_pack("{s:s, s:f}", "cmd", "audit", "limit", 1.5),
		"field limit must be an integer");
	refused(fx, json_pack("{s:s}", "cmd", "deny-add"), "missing field cidr");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "10.0.0.0/33"),
		"invalid cidr");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "bogus"), "invalid cidr");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "10.0.0.0/"), "invalid cidr");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-del", "cidr", "192.0.2.0/24"), NULL);
	refused(fx, json_pack("{s:s, s:s}", "cmd", "revoke", "client_id", "nobody"), NULL);
	refused(fx, json_pack("{s:s, s:s}", "cmd", "unbind", "client_id", "nobody"), NULL);
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a", "thumbprint",
			      "abc"),
		"invalid thumbprint");
	refused(fx, json_pack("{s:s, s:s, s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a",
			      "thumbprint", pki.thumb[GOOD1], "cert_pem", pki.pem[GOOD1]),
		"mutually exclusive");
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a", "cert_pem",
			      "garbage"),
		"invalid cert_pem");
	/* A long unknown command is echoed truncated, on one line. */
	char line[600];
	snprintf(line, sizeof(line), "{\"cmd\":\"%0500d\\n\"}", 0);
	refused_line(fx, line, "unknown command");
	assert_int_equal(fx->n_ev, 0);
}

static void test_bind_refusals(void **state)
{
	struct fixture *fx = *state;
	bind_ok(fx, "tpp-a", GOOD1, -1);
	fx->n_ev = 0;

	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "bind", "client_id", "tpp-b", "cert_pem",
			      "not a certificate"),
		"invalid cert_pem");
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "bind", "client_id", "tpp-b", "cert_pem",
			      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
		"invalid cert_pem");
	refused(fx, bind_req("tpp-b", FOREIGN, -1), "certificate does not chain to client_ca");
	refused(fx, bind_req("tpp-b", EXPIRED, -1), "certificate expired");
	refused(fx, bind_req("tpp-b", FUTURE, -1), "certificate not yet valid");
	refused(fx, bind_req("tpp-b", REVOKED, -1), "CRL");
	refused(fx, bind_req("tpp-b", RSA1024, -1),
		"certificate too weak for the TLS policy: EE certificate key too weak");
	/* The certificate is already bound to tpp-a. */
	refused(fx, bind_req("tpp-b", GOOD1, -1), NULL);
	refused(fx, bind_req("tpp-b", GOOD1, 1), NULL);
	/* And bound here already. */
	refused(fx, bind_req("tpp-a", GOOD1, 1), NULL);
	/* A second certificate needs rotate. */
	refused(fx, bind_req("tpp-a", GOOD2, -1), NULL);
	refused(fx, bind_req("tpp-a", GOOD2, 0), NULL);
	assert_int_equal(fx->n_ev, 0);

	json_t *r = ok(fx, bind_req("tpp-a", GOOD2, 1));
	assert_string_equal(json_string_value(json_object_get(r, "action")), "rotate");
	json_decref(r);
	assert_int_equal(fx->n_ev, 1);
	assert_event(fx, 0, CONTROL_CLIENT_BOUND, "tpp-a", pki.thumb[GOOD2]);

	/* Never more than two. */
	refused(fx, bind_req("tpp-a", GOOD3, 1), NULL);
	refused(fx, bind_req("tpp-a", GOOD3, -1), NULL);
	assert_int_equal(fx->n_ev, 1);

	r = ok(fx, json_pack("{s:s}", "cmd", "stats"));
	assert_int_equal(json_integer_value(json_object_get(r, "certs_active")), 2);
	json_decref(r);
}

static void expect_psd2_json(json_t *cert, const char *roles, const char *org_id,
			     const char *nca_name, const char *nca_id)
{
	char *got = json_dumps(json_object_get(cert, "psd2_roles"), JSON_COMPACT);
	assert_string_equal(got, roles);
	free(got);
	static const char *const keys[] = {"organization_identifier", "nca_name", "nca_id"};
	const char *want[] = {org_id, nca_name, nca_id};
	for (int i = 0; i < 3; i++) {
		json_t *v = json_object_get(cert, keys[i]);
		if (want[i])
			assert_string_equal(json_string_value(v), want[i]);
		else
			assert_true(json_is_null(v));
	}
}

/* bind reads the certificate's PSD2 roles, competent authority and organizationIdentifier,
 * and shows them; a malformed PSD2 QCStatement is refused, naming the problem. */
static void test_bind_psd2(void **state)
{
	struct fixture *fx = *state;
	refused(fx, bind_req("tpp-bad", BAD_QC, -1),
		"certificate refused: PSD2 QCStatement: rolesOfPSP[0]: OID 0.4.0.19495.1.2 is "
		"PSP_PI but its name is 'PSP_AI'");
	assert_int_equal(fx->n_ev, 0);

	json_t *r = ok(fx, bind_req("tpp-ai", PSD2_AI, -1));
	expect_psd2_json(r, "[\"PSP_AI\"]", "PSDGB-FCA-123456", "Financial Conduct Authority",
			 "GB-FCA");
	json_decref(r);
	bind_ok(fx, "tpp-plain", GOOD1, -1);

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-ai"));
	expect_psd2_json(json_array_get(json_object_get(r, "certs"), 0), "[\"PSP_AI\"]",
			 "PSDGB-FCA-123456", "Financial Conduct Authority", "GB-FCA");
	json_decref(r);
	r = ok(fx, json_pack("{s:s}", "cmd", "list"));
	json_t *clients = json_object_get(r, "clients");
	assert_int_equal(json_array_size(clients), 2);
	json_t *plain = json_array_get(clients, 1);
	assert_string_equal(json_string_value(json_object_get(plain, "client_id")), "tpp-plain");
	expect_psd2_json(json_array_get(json_object_get(plain, "certs"), 0), "[]", NULL, NULL,
			 NULL);
	json_decref(r);
}

/* The daemon's own certificates, as the `certs` hook adds them: a server certificate valid
 * for 20 days more. */
static int own_certs(void *arg, struct expiry_list *l)
{
	(void)arg;
	struct testpki p;
	assert_int_equal(testpki_init(&p), 0);
	X509 *server = testpki_cert("gateway.test", p.leaf_key, p.ca, p.ca_key, 300, -TESTPKI_DAY,
				    20 * TESTPKI_DAY + 3600, 0);
	assert_non_null(server);
	int rc = expiry_add(l, EXPIRY_SERVER, "", server);
	X509_free(server);
	testpki_free(&p);
	return rc;
}

/* The listed certificates as "kind owner days_left subject-CN" lines. */
static void expect_certs(struct fixture *fx, int days, const char *want)
{
	json_t *r = ok(fx, json_pack("{s:s, s:i}", "cmd", "certs", "days", days));
	char got[512] = "";
	size_t n = 0, i;
	json_t *c;
	assert_int_equal(json_integer_value(json_object_get(r, "days")), days);
	json_array_foreach(json_object_get(r, "certs"), i, c) {
		const char *subject = json_string_value(json_object_get(c, "subject"));
		const char *cn = strstr(subject, "CN=");
		json_t *owner = json_object_get(c, "owner");
		assert_non_null(cn);
		assert_int_equal(strlen(json_string_value(json_object_get(c, "thumbprint"))), 64);
		assert_true(json_is_string(json_object_get(c, "not_after")));
		n += (size_t)snprintf(got + n, sizeof(got) - n, "%s%s %s %lld %.*s", n ? "; " : "",
				      json_string_value(json_object_get(c, "kind")),
				      json_is_null(owner) ? "-" : json_string_value(owner),
				      json_integer_value(json_object_get(c, "days_left")),
				      (int)strcspn(cn + 3, ","), cn + 3);
	}
	assert_string_equal(got, want);
	json_decref(r);
}

/* certs: the active bound certificates and the daemon's own that expire within the days asked,
 * soonest first; revoked ones never. */
static void test_certs_expiring(void **state)
{
	struct fixture *fx = *state;
	fx->ctx.hooks.own_certs = own_certs;
	expect_certs(fx, 30, "server - 20 gateway.test");
	bind_ok(fx, "tpp-long", LONG, -1);
	bind_ok(fx, "tpp-short", SHORT, -1);
	bind_ok(fx, "tpp-gone", GOOD2, -1);
	json_decref(ok(fx, json_pack("{s:s, s:s}", "cmd", "revoke", "client_id", "tpp-gone")));
	expect_certs(fx, 0, "");
	expect_certs(fx, 10, ""); /* 10 days and an hour */
	expect_certs(fx, 11, "client tpp-short 10 tpp-short");
	expect_certs(fx, 30, "client tpp-short 10 tpp-short; server - 20 gateway.test");
	expect_certs(fx, 400, "client tpp-short 10 tpp-short; server - 20 gateway.test; "
			      "client tpp-long 364 tpp-long");
	fx->ctx.hooks.own_certs = NULL;
	expect_certs(fx, 30, "client tpp-short 10 tpp-short");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "certs", "days", -1),
		"days must be between 0 and 36500");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "certs", "days", 36501),
		"days must be between 0 and 36500");
	refused(fx, json_pack("{s:s}", "cmd", "certs"), "missing field days");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "certs", "days", "30"),
		"field days must be an integer");
}

static void test_unbind_and_revoke(void **state)
{
	struct fixture *fx = *state;
	bind_ok(fx, "tpp-a", GOOD1, -1);
	bind_ok(fx, "tpp-a", GOOD2, 1);
	bind_ok(fx, "tpp-b", GOOD3, -1);
	assert_int_equal(fx->n_ev, 3);
	uint32_t slot_a = fx->ev[0].slot, slot_b = fx->ev[2].slot;
	assert_int_equal(fx->ev[1].slot, slot_a);
	assert_int_not_equal(slot_a, slot_b);
	fx->n_ev = 0;

	/* End the rotation: remove the first certificate by its PEM. */
	json_t *r = ok(fx, json_pack("{s:s, s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a",
				     "cert_pem", pki.pem[GOOD1]));
	assert_string_equal(json_string_value(json_object_get(r, "removed")), "cert");
	assert_string_equal(json_string_value(json_object_get(r, "thumbprint")), pki.thumb[GOOD1]);
	json_decref(r);
	assert_int_equal(fx->n_ev, 1);
	assert_event(fx, 0, CONTROL_CERT_UNBOUND, "tpp-a", pki.thumb[GOOD1]);
	assert_int_equal(fx->ev[0].slot, slot_a);
	/* Gone: a second removal is refused. */
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a",
			      "thumbprint", pki.thumb[GOOD1]),
		NULL);
	/* Another client's certificate cannot be removed through this one. */
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a",
			      "thumbprint", pki.thumb[GOOD3]),
		NULL);

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "revoke", "client_id", "tpp-a"));
	json_t *rev = json_object_get(r, "revoked");
	assert_int_equal(json_array_size(rev), 1);
	assert_string_equal(json_string_value(json_array_get(rev, 0)), pki.thumb[GOOD2]);
	json_decref(r);
	assert_int_equal(fx->n_ev, 2);
	assert_event(fx, 1, CONTROL_CLIENT_REVOKED, "tpp-a", NULL);
	assert_int_equal(fx->ev[1].slot, slot_a);

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-a"));
	assert_string_equal(json_string_value(json_object_get(r, "state")), "revoked");
	json_t *c0 = json_array_get(json_object_get(r, "certs"), 0);
	assert_string_equal(json_string_value(json_object_get(c0, "state")), "revoked");
	assert_true(json_is_string(json_object_get(c0, "revoked_at")));
	json_decref(r);

	/* Revocation is final. */
	refused(fx, bind_req("tpp-a", GOOD2, 1), NULL);
	refused(fx, bind_req("tpp-c", GOOD2, -1), NULL);

	r = ok(fx, json_pack("{s:s}", "cmd", "stats"));
	assert_int_equal(json_integer_value(json_object_get(r, "certs_revoked")), 1);
	json_decref(r);

	/* Remove tpp-b entirely; it can then be enrolled again. */
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "unbind", "client_id", "tpp-b"));
	assert_string_equal(json_string_value(json_object_get(r, "removed")), "client");
	json_decref(r);
	assert_int_equal(fx->n_ev, 3);
	assert_event(fx, 2, CONTROL_CLIENT_UNBOUND, "tpp-b", NULL);
	assert_int_equal(fx->ev[2].slot, slot_b);
	refused(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-b"), "no such client");
	bind_ok(fx, "tpp-b", GOOD3, -1);
	assert_int_equal(fx->n_ev, 4);
	assert_event(fx, 3, CONTROL_CLIENT_BOUND, "tpp-b", pki.thumb[GOOD3]);
}

static void test_deny_list(void **state)
{
	struct fixture *fx = *state;
	json_t *r = ok(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "10.1.2.3/8"));
	assert_string_equal(json_string_value(json_object_get(r, "cidr")), "10.0.0.0/8");
	json_decref(r);
	assert_int_equal(fx->n_ev, 1);
	assert_int_equal(fx->ev[0].kind, CONTROL_DENY_ADDED);
	assert_string_equal(fx->ev[0].cidr, "10.0.0.0/8");

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "2001:DB8::1/32"));
	assert_string_equal(json_string_value(json_object_get(r, "cidr")), "2001:db8::/32");
	json_decref(r);
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "192.0.2.7"));
	assert_string_equal(json_string_value(json_object_get(r, "cidr")), "192.0.2.7/32");
	json_decref(r);
	assert_int_equal(fx->n_ev, 3);

	/* The IPv4-mapped form is stored, reported and applied as the IPv4 prefix. */
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "::ffff:198.51.100.9/120"));
	assert_string_equal(json_string_value(json_object_get(r, "cidr")), "198.51.100.0/24");
	json_decref(r);
	assert_int_equal(fx->n_ev, 4);
	assert_string_equal(fx->ev[3].cidr, "198.51.100.0/24");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "198.51.100.0/24"),
		"198.51.100.0/24 is already denied");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "::ffff:198.51.100.9/95"),
		"invalid cidr '::ffff:198.51.100.9/95': an IPv4-mapped prefix");
	assert_int_equal(fx->n_ev, 4);
	r = ok(fx, json_pack("{s:s, s:i}", "cmd", "audit", "limit", 1));
	json_t *entry = json_array_get(json_object_get(r, "entries"), 0);
	assert_string_equal(json_string_value(json_object_get(entry, "action")), "deny-add");
	assert_string_equal(json_string_value(json_object_get(entry, "detail")), "198.51.100.0/24");
	json_decref(r);
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "deny-del", "cidr", "::ffff:198.51.100.0/120"));
	assert_string_equal(json_string_value(json_object_get(r, "cidr")), "198.51.100.0/24");
	json_decref(r);
	assert_int_equal(fx->n_ev, 5);
	assert_int_equal(fx->ev[4].kind, CONTROL_DENY_REMOVED);

	r = ok(fx, json_pack("{s:s}", "cmd", "deny-list"));
	assert_int_equal(json_array_size(json_object_get(r, "cidrs")), 3);
	json_decref(r);

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "deny-del", "cidr", "10.0.0.0/8"));
	json_decref(r);
	assert_int_equal(fx->n_ev, 6);
	assert_int_equal(fx->ev[5].kind, CONTROL_DENY_REMOVED);
	assert_string_equal(fx->ev[5].cidr, "10.0.0.0/8");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "deny-del", "cidr", "10.0.0.0/8"), NULL);

	r = ok(fx, json_pack("{s:s}", "cmd", "stats"));
	assert_int_equal(json_integer_value(json_object_get(r, "deny_entries")), 2);
	json_decref(r);
}

static json_int_t jint(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	assert_true(json_is_integer(v));
	return json_integer_value(v);
}

static void expect_limit_json(json_t *lim, json_int_t pps, json_int_t bps, json_int_t burst,
			      json_int_t burst_bytes)
{
	assert_true(json_is_object(lim));
	assert_int_equal(json_object_size(lim), 4);
	assert_int_equal(jint(lim, "pps"), pps);
	assert_int_equal(jint(lim, "bps"), bps);
	assert_int_equal(jint(lim, "burst"), burst);
	assert_int_equal(jint(lim, "burst_bytes"), burst_bytes);
}

static json_t *limit_set_req(const char *id, json_int_t pps, json_int_t bps, json_int_t burst,
			     json_int_t burst_bytes)
{
	return json_pack("{s:s, s:s, s:I, s:I, s:I, s:I}", "cmd", "limit-set", "client_id", id,
			 "pps", pps, "bps", bps, "burst", burst, "burst_bytes", burst_bytes);
}

static void test_limits(void **state)
{
	struct fixture *fx = *state;
	bind_ok(fx, "tpp-a", GOOD1, -1);
	bind_ok(fx, "tpp-b", GOOD2, -1);
	uint32_t slot_b = fx->ev[1].slot;
	fx->n_ev = 0;

	/* Clients start with the default: limit null; no source rate stored. */
	json_t *r = ok(fx, json_pack("{s:s}", "cmd", "list"));
	assert_true(json_is_null(json_object_get(r, "src_rate")));
	json_t *c = json_array_get(json_object_get(r, "clients"), 0);
	assert_true(json_is_null(json_object_get(c, "limit")));
	json_decref(r);

	/* Refusals: nothing changes, nothing fires. */
	refused(fx, limit_set_req("nobody", 10, 0, 1, 0), "no client nobody");
	refused(fx, limit_set_req("bad id", 10, 0, 1, 0), "invalid client_id");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "limit-set", "pps", 10),
		"missing field client_id");
	refused(fx, limit_set_req("tpp-b", -1, 0, 1, 0), "field pps must not be negative");
	refused(fx, limit_set_req("tpp-b", 1, -5, 1, 0), "field bps must not be negative");
	refused(fx, limit_set_req("tpp-b", 1000000001LL, 0, 1, 0), "pps must be at most 1000000000");
	refused(fx, limit_set_req("tpp-b", 10, 0, 0, 0), "burst must be between 1 and");
	refused(fx, limit_set_req("tpp-b", 10, 100, 1, 1000), "burst_bytes must be 0");
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "limit-set", "client_id", "tpp-b", "pps",
			      "10"),
		"field pps must be an integer");
	refused(fx, json_pack("{s:s, s:s, s:f}", "cmd", "limit-set", "client_id", "tpp-b", "bps",
			      1.5),
		"field bps must be an integer");
	refused(fx, json_pack("{s:s, s:s, s:i}", "cmd", "limit-set", "client_id", "tpp-b", "rate",
			      10),
		"unknown field 'rate'");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "limit-del", "client_id", "tpp-b"), "no limit");
	refused(fx, json_pack("{s:s, s:s}", "cmd", "limit-del", "client_id", "nobody"),
		"no client nobody");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "src-rate-set", "per_sec", 10),
		"missing field burst");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "src-rate-set", "burst", 10),
		"missing field per_sec");
	refused(fx, json_pack("{s:s, s:i, s:i}", "cmd", "src-rate-set", "per_sec", 10, "burst", 0),
		"burst must be between 1 and");
	refused(fx, json_pack("{s:s, s:i, s:i}", "cmd", "src-rate-set", "per_sec", -10, "burst", 1),
		"field per_sec must not be negative");
	refused(fx, json_pack("{s:s, s:i, s:i, s:i}", "cmd", "src-rate-set", "per_sec", 10, "burst",
			      1, "v4_prefix", 24),
		"unknown field 'v4_prefix'");
	assert_int_equal(fx->n_ev, 0);

	/* Set: the answer, one event with the new limit, show and list report it. */
	r = ok(fx, limit_set_req("tpp-b", 100, 1000000, 10, 0));
	assert_string_equal(json_string_value(json_object_get(r, "client_id")), "tpp-b");
	assert_int_equal(jint(r, "slot"), slot_b);
	expect_limit_json(json_object_get(r, "limit"), 100, 1000000, 10, 0);
	json_decref(r);
	assert_int_equal(fx->n_ev, 1);
	assert_event(fx, 0, CONTROL_LIMIT_CHANGED, "tpp-b", NULL);
	assert_int_equal(fx->ev[0].slot, slot_b);
	assert_true(fx->ev[0].has_limit);
	assert_int_equal(fx->ev[0].limit.pps, 100);
	assert_int_equal(fx->ev[0].limit.bps, 1000000);
	assert_int_equal(fx->ev[0].limit.burst, 10);
	assert_int_equal(fx->ev[0].limit.burst_bytes, 0);

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-b"));
	expect_limit_json(json_object_get(r, "limit"), 100, 1000000, 10, 0);
	json_decref(r);
	r = ok(fx, json_pack("{s:s}", "cmd", "list"));
	json_t *clients = json_object_get(r, "clients");
	assert_true(json_is_null(json_object_get(json_array_get(clients, 0), "limit")));
	expect_limit_json(json_object_get(json_array_get(clients, 1), "limit"), 100, 1000000, 10, 0);
	json_decref(r);

	/* Omitted fields take their defaults: a limit-set replaces the whole limit. */
	r = ok(fx, json_pack("{s:s, s:s, s:i}", "cmd", "limit-set", "client_id", "tpp-b", "pps", 7));
	expect_limit_json(json_object_get(r, "limit"), 7, 0, 1, 0);
	json_decref(r);
	assert_int_equal(fx->n_ev, 2);
	assert_int_equal(fx->ev[1].limit.pps, 7);
	assert_int_equal(fx->ev[1].limit.burst, 1);

	/* Delete: back to the default, the event carries no limit. */
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "limit-del", "client_id", "tpp-b"));
	assert_true(json_is_null(json_object_get(r, "limit")));
	assert_int_equal(jint(r, "slot"), slot_b);
	json_decref(r);
	assert_int_equal(fx->n_ev, 3);
	assert_event(fx, 2, CONTROL_LIMIT_CHANGED, "tpp-b", NULL);
	assert_false(fx->ev[2].has_limit);
	assert_int_equal(fx->ev[2].slot, slot_b);
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-b"));
	assert_true(json_is_null(json_object_get(r, "limit")));
	json_decref(r);

	/* Source rate. */
	r = ok(fx, json_pack("{s:s, s:i, s:i}", "cmd", "src-rate-set", "per_sec", 20, "burst", 5));
	json_t *src = json_object_get(r, "src_rate");
	assert_int_equal(jint(src, "per_sec"), 20);
	assert_int_equal(jint(src, "burst"), 5);
	json_decref(r);
	assert_int_equal(fx->n_ev, 4);
	assert_int_equal(fx->ev[3].kind, CONTROL_SRC_RATE_CHANGED);
	assert_int_equal(fx->ev[3].src_per_sec, 20);
	assert_int_equal(fx->ev[3].src_burst, 5);
	assert_false(fx->ev[3].src_default);
	r = ok(fx, json_pack("{s:s}", "cmd", "list"));
	src = json_object_get(r, "src_rate");
	assert_int_equal(jint(src, "per_sec"), 20);
	assert_int_equal(jint(src, "burst"), 5);
	json_decref(r);

	/* Forget it: back to the configuration's. */
	r = ok(fx, json_pack("{s:s}", "cmd", "src-rate-del"));
	assert_true(json_is_null(json_object_get(r, "src_rate")));
	json_decref(r);
	assert_int_equal(fx->n_ev, 5);
	assert_int_equal(fx->ev[4].kind, CONTROL_SRC_RATE_CHANGED);
	assert_true(fx->ev[4].src_default);
	refused(fx, json_pack("{s:s}", "cmd", "src-rate-del"), "no source rate");
	refused(fx, json_pack("{s:s, s:i}", "cmd", "src-rate-del", "burst", 1),
		"unknown field 'burst'");
	r = ok(fx, json_pack("{s:s}", "cmd", "list"));
	assert_true(json_is_null(json_object_get(r, "src_rate")));
	json_decref(r);

	/* Audited. */
	r = ok(fx, json_pack("{s:s, s:i}", "cmd", "audit", "limit", 4));
	json_t *e = json_object_get(r, "entries");
	const char *want[] = {"src-rate-del", "src-rate-set", "limit-del", "limit-set"};
	for (size_t i = 0; i < 4; i++)
		assert_string_equal(
			json_string_value(json_object_get(json_array_get(e, i), "action")), want[i]);
	json_decref(r);

	/* Unbinding the client removes its limit: enrolled again, it has the default. */
	json_decref(ok(fx, limit_set_req("tpp-a", 50, 0, 5, 0)));
	json_decref(ok(fx, json_pack("{s:s, s:s}", "cmd", "unbind", "client_id", "tpp-a")));
	bind_ok(fx, "tpp-a", GOOD3, -1);
	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-a"));
	assert_true(json_is_null(json_object_get(r, "limit")));
	json_decref(r);
}

static void test_no_hooks(void **state)
{
	struct fixture *fx = *state;
	fx->ctx.hooks = (struct control_hooks){0};
	bind_ok(fx, "tpp-a", GOOD1, -1);
	json_t *r = ok(fx, json_pack("{s:s}", "cmd", "stats"));
	assert_int_equal(json_integer_value(json_object_get(r, "clients")), 1);
	json_decref(r);
}

/* `reload` runs the daemon's hook on behalf of the peer: its refusal comes back whole after
 * "reload refused, nothing changed: ", its result as is; without the hook, or for a reader, it
 * is refused without calling it. */
static struct {
	int calls;
	uid_t uid;
	const char *fail; /* NULL: the reload succeeds */
} fake_reload_state;

static int fake_reload(void *arg, uid_t uid, json_t **result, char *err, size_t errlen)
{
	(void)arg;
	fake_reload_state.calls++;
	fake_reload_state.uid = uid;
	if (fake_reload_state.fail) {
		snprintf(err, errlen, "%s", fake_reload_state.fail);
		return -1;
	}
	*result = json_pack("{s:[s], s:[]}", "reloaded", "tls.crl", "revoked");
	return 0;
}

static void test_reload_command(void **state)
{
	struct fixture *fx = *state;
	static const char line[] = "{\"cmd\":\"reload\"}";
	memset(&fake_reload_state, 0, sizeof(fake_reload_state));

	fx->ctx.hooks.reload = NULL;
	refused_line(fx, line, "reload is not available");

	fx->ctx.hooks.reload = fake_reload;
	refused_line_as(fx, line, CONTROL_ACCESS_READ, "permission denied: reload changes state");
	refused_line(fx, "{\"cmd\":\"reload\",\"crl\":\"x\"}", "unknown field 'crl' for command reload");
	assert_int_equal(fake_reload_state.calls, 0);

	fake_reload_state.fail = "tls.key (/etc/psd2edge/server.key): key values mismatch";
	refused_line(fx, line,
		     "reload refused, nothing changed: tls.key (/etc/psd2edge/server.key): key "
		     "values mismatch");
	assert_int_equal(fake_reload_state.calls, 1);

	fake_reload_state.fail = NULL;
	json_t *r = ok(fx, json_pack("{s:s}", "cmd", "reload"));
	assert_int_equal(fake_reload_state.calls, 2);
	assert_int_equal(fake_reload_state.uid, 0);
	assert_string_equal(json_string_value(json_array_get(json_object_get(r, "reloaded"), 0)),
			    "tls.crl");
	assert_int_equal(json_array_size(json_object_get(r, "revoked")), 0);
	json_decref(r);
}

static struct {
	unsigned calls;
	char label[64];
	const char *fail;
} fake_rotate_state;

static int fake_rotate_kek(void *arg, const char *label, char *err, size_t errlen)
{
	(void)arg;
	fake_rotate_state.calls++;
	snprintf(fake_rotate_state.label, sizeof(fake_rotate_state.label), "%s", label);
	if (fake_rotate_state.fail) {
		snprintf(err, errlen, "%s", fake_rotate_state.fail);
		return -1;
	}
	return 0;
}

/* rotate-kek: a writer's command, audited once the hub has rotated, refused without a hub. */
static void test_rotate_kek_command(void **state)
{
	struct fixture *fx = *state;
	static const char line[] = "{\"cmd\":\"rotate-kek\",\"label\":\"kek-2\"}";
	memset(&fake_rotate_state, 0, sizeof(fake_rotate_state));
	fx->ctx.hooks.rotate_kek = NULL;
	refused_line(fx, line, "rotate-kek: no route is a hub route, there is no token store");
	fx->ctx.hooks.rotate_kek = fake_rotate_kek;
	refused_line_as(fx, line, CONTROL_ACCESS_READ, "permission denied: rotate-kek changes state");
	refused_line(fx, "{\"cmd\":\"rotate-kek\"}", "missing field label");
	assert_int_equal(fake_rotate_state.calls, 0);

	fake_rotate_state.fail = "PKCS#11: C_Login: CKR_PIN_INCORRECT";
	refused_line(fx, line, "rotate-kek: PKCS#11: C_Login: CKR_PIN_INCORRECT");
	fake_rotate_state.fail = NULL;
	json_t *r = ok(fx, json_pack("{s:s, s:s}", "cmd", "rotate-kek", "label", "kek-2"));
	assert_string_equal(json_string_value(json_object_get(r, "kek_label")), "kek-2");
	assert_string_equal(fake_rotate_state.label, "kek-2");
	assert_int_equal(fake_rotate_state.calls, 2);
	json_decref(r);

	r = ok(fx, json_pack("{s:s}", "cmd", "audit"));
	json_t *e = json_object_get(r, "entries");
	assert_int_equal(json_array_size(e), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(e, 0), "action")),
			    "rotate-kek");
	assert_string_equal(json_string_value(json_object_get(json_array_get(e, 0), "detail")),
			    "token store KEK -> kek-2");
	json_decref(r);
	fx->ctx.hooks.rotate_kek = NULL;
}

/* --- who may run what --------------------------------------------------------------------------- */

/* Every command, in an order in which each succeeds for a writer: a reader runs the ones that
 * change nothing and is refused the others with the registry unchanged and no event; a peer
 * without access (the server never serves one, but the handler refuses it too) runs nothing. */
static void test_command_access(void **state)
{
	struct fixture *fx = *state;
	bind_ok(fx, "tpp-a", GOOD1, -1);
	fx->n_ev = 0;
	const struct {
		json_t *req;
		bool reads; /* changes nothing */
	} rows[] = {
		{json_pack("{s:s}", "cmd", "list"), true},
		{json_pack("{s:s, s:s}", "cmd", "show", "client_id", "tpp-a"), true},
		{json_pack("{s:s}", "cmd", "audit"), true},
		{json_pack("{s:s}", "cmd", "deny-list"), true},
		{json_pack("{s:s}", "cmd", "stats"), true},
		{json_pack("{s:s, s:i}", "cmd", "certs", "days", 30), true},
		{bind_req("tpp-b", GOOD2, -1), false},
		{json_pack("{s:s, s:s}", "cmd", "unbind", "client_id", "tpp-b"), false},
		{json_pack("{s:s, s:s}", "cmd", "deny-add", "cidr", "192.0.2.0/24"), false},
		{json_pack("{s:s, s:s}", "cmd", "deny-del", "cidr", "192.0.2.0/24"), false},
		{json_pack("{s:s, s:s, s:i}", "cmd", "limit-set", "client_id", "tpp-a", "pps", 100),
		 false},
		{json_pack("{s:s, s:s}", "cmd", "limit-del", "client_id", "tpp-a"), false},
		{json_pack("{s:s, s:i, s:i}", "cmd", "src-rate-set", "per_sec", 20, "burst", 5), false},
		{json_pack("{s:s}", "cmd", "src-rate-del"), false},
		{json_pack("{s:s, s:s}", "cmd", "revoke", "client_id", "tpp-a"), false},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char *line = json_dumps(rows[i].req, JSON_COMPACT);
		const char *name = json_string_value(json_object_get(rows[i].req, "cmd"));
		char want[128];
		int n_ev = fx->n_ev;
		refused_line_as(fx, line, CONTROL_ACCESS_NONE,
				"permission denied: uid 0 may not use the control socket");
		if (rows[i].reads) {
			json_t *r = call_as(fx, line, CONTROL_ACCESS_READ);
			if (!json_is_true(json_object_get(r, "ok")))
				fail_msg("a reader may run %s: %s", name,
					 json_string_value(json_object_get(r, "error")));
			json_decref(r);
		} else {
			snprintf(want, sizeof(want),
				 "permission denied: %s changes state and uid 0 may only read "
				 "(control_readonly_group)",
				 name);
			refused_line_as(fx, line, CONTROL_ACCESS_READ, want);
		}
		assert_int_equal(fx->n_ev, n_ev);
		json_t *r = call_as(fx, line, CONTROL_ACCESS_WRITE);
		if (!json_is_true(json_object_get(r, "ok")))
			fail_msg("a writer may run %s: %s", name,
				 json_string_value(json_object_get(r, "error")));
		json_decref(r);
		assert_int_equal(fx->n_ev, n_ev + (rows[i].reads ? 0 : 1));
		free(line);
		json_decref(rows[i].req);
	}
	/* The permission comes before the field checks, and unknown commands stay unknown. */
	refused_line_as(fx, "{\"cmd\":\"bind\"}", CONTROL_ACCESS_READ,
			"permission denied: bind changes state");
	refused_line_as(fx, "{\"cmd\":\"frob\"}", CONTROL_ACCESS_READ, "unknown command 'frob'");
}

static void test_peer_access(void **state)
{
	(void)state;
	const uid_t daemon_uid = 999;
	const struct control_groups none = {CONTROL_NO_GROUP, CONTROL_NO_GROUP},
				    both = {.admin = 100, .readonly = 200},
				    admin_only = {.admin = 100, .readonly = CONTROL_NO_GROUP},
				    readonly_only = {.admin = CONTROL_NO_GROUP, .readonly = 200};
	static const gid_t g_admin[] = {7, 100}, g_ro[] = {200}, g_both[] = {200, 100},
			   g_other[] = {8, 9};
	const enum control_access W = CONTROL_ACCESS_WRITE, R = CONTROL_ACCESS_READ,
				  N = CONTROL_ACCESS_NONE;
	const struct {
		const char *who;
		const struct control_groups *groups;
		uid_t uid;
		gid_t gid;
		const gid_t *supp;
		size_t n_supp;
		enum control_access want;
	} rows[] = {
		{"root", &none, 0, 0, NULL, 0, W},
		{"root, groups configured", &both, 0, 0, NULL, 0, W},
		{"the daemon's uid", &none, daemon_uid, 50, NULL, 0, W},
		{"anyone, no groups configured", &none, 5000, 100, g_both, 2, N},
		{"admin group as primary gid", &both, 5000, 100, NULL, 0, W},
		{"admin group as supplementary", &both, 5000, 7, g_admin, 2, W},
		{"read-only group as primary gid", &both, 5000, 200, NULL, 0, R},
		{"read-only group as supplementary", &both, 5000, 7, g_ro, 1, R},
		{"in both groups", &both, 5000, 200, g_both, 2, W},
		{"in neither group", &both, 5000, 7, g_other, 2, N},
		{"read-only group, only control_group set", &admin_only, 5000, 200, g_ro, 1, N},
		{"admin gid, only the read-only group set", &readonly_only, 5000, 100, g_admin, 2, N},
		{"read-only group, only it set", &readonly_only, 5000, 7, g_ro, 1, R},
		{"gid (gid_t)-1 is no group", &none, 5000, (gid_t)-1, NULL, 0, N},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		enum control_access got =
			control_peer_access(rows[i].groups, daemon_uid, rows[i].uid, rows[i].gid,
					    rows[i].supp, rows[i].n_supp);
		if (got != rows[i].want)
			fail_msg("%s: access %d, want %d", rows[i].who, got, rows[i].want);
	}
}

/* --- the socket server ----------------------------------------------------------------------- */

struct loop_thread {
	struct ev_loop *loop;
	int efd;
	pthread_t th;
};

static void on_wake(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)mask;
	(void)arg;
	uint64_t v;
	ssize_t r = read(fd, &v, sizeof(v));
	(void)r;
	ev_stop(loop);
}

static void *loop_main(void *arg)
{
	ev_run(((struct loop_thread *)arg)->loop);
	return NULL;
}

static void loop_start(struct loop_thread *lt)
{
	lt->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(lt->efd >= 0);
	assert_int_equal(ev_set(lt->loop, lt->efd, EV_READ, on_wake, NULL), 0);
	assert_int_equal(pthread_create(&lt->th, NULL, loop_main, lt), 0);
}

static void loop_join(struct loop_thread *lt)
{
	uint64_t one = 1;
	assert_int_equal(write(lt->efd, &one, sizeof(one)), sizeof(one));
	pthread_join(lt->th, NULL);
	ev_set(lt->loop, lt->efd, EV_NONE, NULL, NULL);
	close(lt->efd);
}

static int raw_connect(const char *path)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	struct timeval tv = {5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	return fd;
}

/* Reads until EOF (or 64 KiB); returns the bytes read. */
static size_t read_all(int fd, char *out, size_t cap)
{
	size_t n = 0;
	for (;;) {
		ssize_t r = recv(fd, out + n, cap - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n == cap - 1)
			break;
	}
	out[n] = '\0';
	return n;
}

/* In a child with the given credentials (supplementary groups supp[0..n_supp)): connect, send
 * line and report whether the daemon answered ok. Exit status: 0 ok, 1 permission denied,
 * 2 could not connect, 4 another answer. */
static int as_peer(const char *path, gid_t gid, uid_t uid, const gid_t *supp, size_t n_supp,
		   const char *line)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (setgroups(n_supp, supp) < 0 || setgid(gid) < 0 || setuid(uid) < 0)
			_exit(3);
		char *resp = NULL, err[256];
		if (ctl_request(path, line, strlen(line), 5000, &resp, err, sizeof(err)) != CTL_OK)
			_exit(2);
		_exit(strstr(resp, "\"ok\":true") ? 0 : strstr(resp, "permission denied") ? 1 : 4);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static const char list_line[] = "{\"cmd\":\"list\"}";
static const char deny_add_line[] = "{\"cmd\":\"deny-add\",\"cidr\":\"203.0.113.0/24\"}";

/* A list request with the given credentials and no supplementary group. */
static int as_user(const char *path, gid_t gid, uid_t uid)
{
	return as_peer(path, gid, uid, NULL, 0, list_line);
}

static const struct control_groups no_groups = {CONTROL_NO_GROUP, CONTROL_NO_GROUP};

static bool line_is(const char *l, const char *want)
{
	size_t n = strlen(want);
	return strncmp(l, want, n) == 0 && l[n] == '\n';
}

static void test_socket_server(void **state)
{
	struct fixture *fx = *state;
	char path[192], err[256] = "";
	snprintf(path, sizeof(path), "%s/run/sub/control.sock", fx->dir);
	struct loop_thread lt = {.loop = ev_loop_new(1024)};
	assert_non_null(lt.loop);
	struct control_server *srv = NULL;
	if (control_server_start(lt.loop, path, &no_groups, &fx->ctx, &srv, err, sizeof(err)) < 0)
		fail_msg("control_server_start: %s", err);

	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0600);
	char dir[192];
	snprintf(dir, sizeof(dir), "%s/run/sub", fx->dir);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0750);

	/* A live daemon owns the path: a second server is refused. */
	struct control_server *srv2 = NULL;
	assert_int_equal(control_server_start(lt.loop, path, &no_groups, &fx->ctx, &srv2, err,
					      sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "listening"));

	loop_start(&lt);

	/* One request, one answer, through the CLI's client. */
	char *resp = NULL;
	const char *line = "{\"cmd\":\"deny-add\",\"cidr\":\"198.51.100.0/24\"}";
	assert_int_equal(ctl_request(path, line, strlen(line), 5000, &resp, err, sizeof(err)),
			 CTL_OK);
	assert_string_equal(resp, "{\"ok\":true,\"result\":{\"cidr\":\"198.51.100.0/24\"}}");
	free(resp);

	/* Several pipelined lines, CRLF, and a final unterminated line answered at EOF. */
	int fd = raw_connect(path);
	assert_true(fd >= 0);
	const char *many = "{\"cmd\":\"deny-list\"}\r\n\n{\"cmd\":\"frob\"}\n{\"cmd\":\"stats\"}";
	assert_int_equal(send(fd, many, strlen(many), MSG_NOSIGNAL), (ssize_t)strlen(many));
	shutdown(fd, SHUT_WR);
	static char big[512 * 1024];
	read_all(fd, big, sizeof(big));
	close(fd);
	char *l1 = big, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
	assert_true(line_is(l1, "{\"ok\":true,\"result\":{\"cidrs\":[\"198.51.100.0/24\"]}}"));
	assert_true(line_is(l2, "{\"ok\":false,\"error\":\"unknown command 'frob'\"}"));
	assert_true(strncmp(l3, "{\"ok\":true,", 11) == 0);
	assert_non_null(strchr(l3, '\n'));
	assert_int_equal(strchr(l3, '\n')[1], '\0');

	/* An overlong line: one error answer, then the connection is closed. */
	fd = raw_connect(path);
	assert_true(fd >= 0);
	size_t n_long = CONTROL_MAX_LINE + 4096;
	char *longline = malloc(n_long);
	memset(longline, 'x', n_long);
	size_t sent = 0;
	while (sent < n_long) {
		ssize_t w = send(fd, longline + sent, n_long - sent, MSG_NOSIGNAL);
		if (w <= 0)
			break; /* the daemon may close before taking it all */
		sent += (size_t)w;
	}
	free(longline);
	read_all(fd, big, sizeof(big));
	close(fd);
	assert_non_null(strstr(big, "\"ok\":false"));
	assert_non_null(strstr(big, "request line too long"));
	assert_int_equal(strchr(big, '\n') - big + 1, (long)strlen(big)); /* one line only */

	/* Peer credentials: make the file reachable, then a stranger is refused by SO_PEERCRED. */
	assert_int_equal(chmod(fx->dir, 0755), 0);
	assert_int_equal(chmod(path, 0666), 0);
	char rundir[192];
	snprintf(rundir, sizeof(rundir), "%s/run", fx->dir);
	assert_int_equal(chmod(rundir, 0755), 0);
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(as_user(path, 65534, 65534), 1);
	assert_int_equal(as_user(path, 0, 0), 0);

	/* The server still works after all that. */
	assert_int_equal(ctl_request(path, "{\"cmd\":\"list\"}", 14, 5000, &resp, err, sizeof(err)),
			 CTL_OK);
	assert_non_null(strstr(resp, "\"ok\":true"));
	free(resp);

	loop_join(&lt);
	control_server_stop(srv);
	assert_int_equal(lstat(path, &st), -1);
	assert_int_equal(errno, ENOENT);
	assert_int_equal(ctl_request(path, "{}", 2, 1000, &resp, err, sizeof(err)), CTL_ERR_CONNECT);
	ev_loop_free(lt.loop);
}

static void test_socket_group_and_stale(void **state)
{
	struct fixture *fx = *state;
	char path[192], err[256] = "";
	snprintf(path, sizeof(path), "%s/control.sock", fx->dir);

	/* A socket file left behind by a dead daemon. */
	int sfd = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	assert_true(strlen(path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(sfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	close(sfd);

	/* A group that "nobody" belongs to (primary group 65534) and one it does not (12345). */
	struct ev_loop *loop = ev_loop_new(256);
	struct control_server *srv = NULL;
	const struct control_groups nogroup = {.admin = 65534, .readonly = CONTROL_NO_GROUP};
	if (control_server_start(loop, path, &nogroup, &fx->ctx, &srv, err, sizeof(err)) < 0)
		fail_msg("control_server_start over a stale socket: %s", err);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	assert_int_equal(st.st_gid, 65534);
	struct loop_thread lt = {.loop = loop};
	loop_start(&lt);
	assert_int_equal(chmod(fx->dir, 0755), 0);
	assert_int_equal(chmod(path, 0666), 0);
	assert_int_equal(as_user(path, 65534, 65534), 0); /* primary gid */
	assert_int_equal(as_user(path, 12345, 54321), 1); /* no such user, wrong gid */
	loop_join(&lt);
	control_server_stop(srv);

	/* A regular file at the path is never removed. */
	FILE *f = fopen(path, "w");
	fclose(f);
	assert_int_equal(control_server_start(loop, path, &no_groups, &fx->ctx, &srv, err,
					      sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "not a socket"));
	assert_int_equal(lstat(path, &st), 0);
	ev_loop_free(loop);
}

/* Through the socket, with the peer's groups as the kernel reports them: a member of the
 * read-only group (as a supplementary group) lists but cannot change anything, a member of the
 * admin group can, anyone else is turned away. With both groups the file is 0666 in a 0755
 * directory; with only the read-only group it is 0660 and that group's. */
static void test_socket_peer_groups(void **state)
{
	struct fixture *fx = *state;
	char path[192], dir[128], err[256] = "";
	snprintf(dir, sizeof(dir), "%.64s/run", fx->dir);
	snprintf(path, sizeof(path), "%s/control.sock", dir);
	assert_int_equal(chmod(fx->dir, 0755), 0);
	const gid_t admin = 54320, readonly = 54321, other = 54322;
	const struct control_groups both = {.admin = admin, .readonly = readonly};
	struct loop_thread lt = {.loop = ev_loop_new(256)};
	struct control_server *srv = NULL;
	if (control_server_start(lt.loop, path, &both, &fx->ctx, &srv, err, sizeof(err)) < 0)
		fail_msg("control_server_start: %s", err);
	struct stat st;
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0666);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0755);
	loop_start(&lt);

	char *before = snapshot(fx);
	const gid_t in_readonly[] = {other, readonly}, in_admin[] = {admin};
	assert_int_equal(as_peer(path, 65534, 65534, in_readonly, 2, list_line), 0);
	assert_int_equal(as_peer(path, 65534, 65534, in_readonly, 2, deny_add_line), 1);
	assert_int_equal(as_peer(path, readonly, 65534, NULL, 0, deny_add_line), 1);
	char *after = snapshot(fx);
	assert_string_equal(before, after);
	assert_int_equal(as_peer(path, 65534, 65534, &other, 1, list_line), 1);
	assert_int_equal(as_peer(path, 65534, 65534, in_admin, 1, deny_add_line), 0);
	json_t *r = ok(fx, json_pack("{s:s}", "cmd", "deny-list"));
	assert_int_equal(json_array_size(json_object_get(r, "cidrs")), 1);
	json_decref(r);
	free(before);
	free(after);
	loop_join(&lt);
	control_server_stop(srv);

	const struct control_groups readers = {.admin = CONTROL_NO_GROUP, .readonly = readonly};
	if (control_server_start(lt.loop, path, &readers, &fx->ctx, &srv, err, sizeof(err)) < 0)
		fail_msg("control_server_start: %s", err);
	assert_int_equal(lstat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	assert_int_equal(st.st_gid, readonly);
	loop_start(&lt);
	assert_int_equal(as_peer(path, 65534, 65534, in_readonly, 2, list_line), 0);
	assert_int_equal(as_peer(path, 65534, 65534, &other, 1, list_line), 2); /* file mode */
	loop_join(&lt);
	control_server_stop(srv);
	ev_loop_free(lt.loop);
}

/* The directories on the way to the socket: each row prepares a fresh directory (mode 0700)
 * with shell commands and names the socket under it; the server must refuse to start with the
 * error given and create nothing there, or (want NULL) start. */
static void test_socket_dir_checks(void **state)
{
	struct fixture *fx = *state;
	const struct {
		const char *what;
		const char *setup;  /* run in the fresh directory */
		const char *sock;   /* under it */
		const char *want;   /* the error; %s: the fresh directory */
		const char *absent; /* must not exist afterwards */
		const char *kept;   /* must still exist afterwards */
	} rows[] = {
		{"socket directory is a symlink", "mkdir -m 700 real && ln -s real link",
		 "link/control.sock", "%s/link is a symbolic link", "real/control.sock", "link"},
		{"symlink further up", "mkdir -m 700 real && ln -s real link", "link/sub/control.sock",
		 "%s/link is a symbolic link", "real/sub", NULL},
		{"group-writable socket directory", "mkdir -m 770 gw", "gw/control.sock",
		 "directory %s/gw is group-writable", "gw/control.sock", NULL},
		{"world-writable socket directory", "mkdir -m 707 ww", "ww/control.sock",
		 "directory %s/ww is world-writable", "ww/control.sock", NULL},
		{"sticky is no excuse for the socket's own directory", "mkdir -m 1777 st",
		 "st/control.sock", "directory %s/st is world-writable", "st/control.sock", NULL},
		{"group-writable ancestor", "mkdir -m 770 gw", "gw/sub/control.sock",
		 "directory %s/gw is group-writable", "gw/sub", NULL},
		{"directory of another user", "mkdir -m 755 theirs && chown 65534 theirs",
		 "theirs/control.sock", "directory %s/theirs is owned by uid 65534",
		 "theirs/control.sock", NULL},
		{"ancestor of another user", "mkdir -m 755 theirs && chown 65534 theirs",
		 "theirs/sub/control.sock", "directory %s/theirs is owned by uid 65534", "theirs/sub",
		 NULL},
		{"a file on the way", "touch file", "file/control.sock", "%s/file is not a directory", NULL,
		 "file"},
		{"the socket's name is a symlink to a socket",
		 "mkdir -m 700 d && python3 -c 'import socket; socket.socket(socket.AF_UNIX)"
		 ".bind(\"elsewhere.sock\")' && ln -s ../elsewhere.sock d/control.sock",
		 "d/control.sock", "%s/d/control.sock exists and is not a socket", NULL,
		 "elsewhere.sock"},
		{"a sticky world-writable ancestor (/tmp) is fine", "mkdir -m 1777 tmp",
		 "tmp/sub/control.sock", NULL, NULL, NULL},
	};
	char base[128], cmd[512], path[192], file[192], want[256], err[256];
	struct stat st;
	snprintf(base, sizeof(base), "%s/d", fx->dir);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mkdir -m 700 '%s' && cd '%s' && %s", base,
			 base, base, rows[i].setup);
		assert_int_equal(system(cmd), 0);
		snprintf(path, sizeof(path), "%s/%s", base, rows[i].sock);
		struct ev_loop *loop = ev_loop_new(64);
		struct control_server *srv = NULL;
		err[0] = '\0';
		int rc = control_server_start(loop, path, &no_groups, &fx->ctx, &srv, err, sizeof(err));
		if (!rows[i].want) {
			if (rc < 0)
				fail_msg("%s: %s", rows[i].what, err);
			assert_int_equal(lstat(path, &st), 0);
			assert_true(S_ISSOCK(st.st_mode));
			control_server_stop(srv);
		} else {
			snprintf(want, sizeof(want), rows[i].want, base);
			if (rc == 0 || !strstr(err, want))
				fail_msg("%s: got %d '%s', want '%s'", rows[i].what, rc, err, want);
		}
		snprintf(file, sizeof(file), "%s/%s", base, rows[i].absent ? rows[i].absent : "");
		if (rows[i].absent && lstat(file, &st) == 0)
			fail_msg("%s: %s was created", rows[i].what, file);
		snprintf(file, sizeof(file), "%s/%s", base, rows[i].kept ? rows[i].kept : "");
		if (rows[i].kept && lstat(file, &st) < 0)
			fail_msg("%s: %s was removed", rows[i].what, file);
		ev_loop_free(loop);
	}
	struct control_server *srv = NULL;
	assert_int_equal(control_server_start(NULL, "run/control.sock", &no_groups, &fx->ctx, &srv,
					      err, sizeof(err)),
			 -1);
	assert_non_null(strstr(err, "must be absolute"));
}

/* --- quota counters and circuit breakers ------------------------------------------------------ */

#define STORE_ABSENT "no quota or circuit breaker is configured (no route has a quota, no upstream a circuit_breaker)"

/* Without bpf.pin_dir there is no policy store: the four commands are refused and change
 * nothing; a reader is still refused a reset for its access first. */
static void test_policy_absent(void **state)
{
	struct fixture *fx = *state;
	bind_ok(fx, "tpp-a", GOOD1, -1);
	const char *const lines[] = {
		"{\"cmd\":\"quota-show\",\"client_id\":\"tpp-a\"}",
		"{\"cmd\":\"quota-reset\",\"client_id\":\"tpp-a\",\"key\":\"acc-1\"}",
		"{\"cmd\":\"breaker-list\"}",
		"{\"cmd\":\"breaker-reset\",\"upstream\":\"default\"}",
	};
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		refused_line(fx, lines[i], STORE_ABSENT);
	refused_line_as(fx, lines[0], CONTROL_ACCESS_READ, STORE_ABSENT);
	refused_line_as(fx, lines[1], CONTROL_ACCESS_READ, "permission denied: quota-reset");
	refused_line_as(fx, lines[3], CONTROL_ACCESS_READ, "permission denied: breaker-reset");
}

static const struct config_breaker accounts_breaker = {
	.enabled = true, .consecutive_failures = 2, .window_ms = 10000, .min_requests = 10,
	.cooldown_ms = 3600000, .probes = 1};

/* fx_setup plus a policy store on a bpffs of the test's own (a private mount namespace, as in
 * test_dataplane), with two upstreams: "default" without a breaker and "accounts" with one. */
static int store_setup(void **state)
{
	static bool unshared;
	fx_setup(state);
	struct fixture *fx = *state;
	if (geteuid() != 0)
		return 0; /* the test reports the missing precondition */
	if (!unshared) {
		if (unshare(CLONE_NEWNS) || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
			return 0;
		unshared = true;
	}
	snprintf(fx->bpffs, sizeof(fx->bpffs), "%s/bpf", fx->dir);
	snprintf(fx->pin_dir, sizeof(fx->pin_dir), "%s/psd2edge", fx->bpffs);
	fx->cfg.bpf.pin_dir = fx->pin_dir;
	fx->cfg.n_upstreams = 2;
	snprintf(fx->cfg.upstreams[0].name, sizeof(fx->cfg.upstreams[0].name), "default");
	snprintf(fx->cfg.upstreams[1].name, sizeof(fx->cfg.upstreams[1].name), "accounts");
	fx->cfg.upstreams[1].breaker = accounts_breaker;
	char err[256] = "";
	if (policy_store_open(&fx->cfg, fx->ctx.reg, &fx->ctx.policy, err, sizeof(err)) < 0) {
		print_message("policy_store_open: %s\n", err);
		return 0;
	}
	fx->ctx.upstreams = fx->cfg.upstreams;
	fx->ctx.n_upstreams = fx->cfg.n_upstreams;
	return 0;
}

static int store_teardown(void **state)
{
	struct fixture *fx = *state;
	policy_store_close(fx->ctx.policy);
	if (fx->bpffs[0]) {
		umount2(fx->bpffs, MNT_DETACH);
		rmdir(fx->bpffs);
	}
	return fx_teardown(state);
}

static void need_store(struct fixture *fx)
{
	if (!fx->ctx.policy)
		precondition_missing("root, a private mount namespace and bpffs for the policy store");
}

/* Counts n requests of client_id (key) against quota name under rule r, as a worker would. */
static void count(struct fixture *fx, const char *name, const char *client_id, const char *key,
		  const struct quota_rule *r, int n)
{
	struct psd2_quota *q = policy_store_quota(fx->ctx.policy, name, client_id, key, true);
	assert_non_null(q);
	for (int i = 0; i < n; i++) {
		struct quota_state st;
		spin_lock(&q->lock);
		bool taken = quota_take(q, r, time(NULL), &st);
		spin_unlock(&q->lock);
		assert_true(taken);
	}
}

static json_t *quota_show(struct fixture *fx, const char *client_id, const char *key)
{
	json_t *req = json_pack("{s:s, s:s}", "cmd", "quota-show", "client_id", client_id);
	if (key)
		json_object_set_new(req, "key", json_string(key));
	json_t *r = ok(fx, req);
	assert_true(json_is_array(r));
	return r;
}

/* "name/key used" of every counter quota-show lists, in its order, space-separated. */
static char *quota_used(struct fixture *fx, const char *client_id, const char *key)
{
	json_t *arr = quota_show(fx, client_id, key), *q;
	char *out = calloc(1, 1024);
	assert_non_null(out);
	size_t i, len = 0;
	json_array_foreach(arr, i, q) {
		len += (size_t)snprintf(out + len, 1024 - len, "%s%s/%s %" JSON_INTEGER_FORMAT,
					i ? " " : "", json_string_value(json_object_get(q, "name")),
					json_string_value(json_object_get(q, "key")),
					json_integer_value(json_object_get(q, "used")));
		assert_true(len < 1024);
	}
	json_decref(arr);
	return out;
}

static void assert_quota_used(struct fixture *fx, const char *client_id, const char *key,
			      const char *want)
{
	char *got = quota_used(fx, client_id, key);
	assert_string_equal(got, want);
	free(got);
}

/* The newest audit entry: action, client_id and detail. */
static void assert_last_audit(struct fixture *fx, const char *action, const char *client_id,
			      const char *detail)
{
	json_t *r = ok(fx, json_pack("{s:s, s:i}", "cmd", "audit", "limit", 1));
	json_t *e = json_array_get(json_object_get(r, "entries"), 0);
	assert_non_null(e);
	assert_string_equal(json_string_value(json_object_get(e, "action")), action);
	assert_string_equal(json_string_value(json_object_get(e, "client_id")), client_id);
	assert_string_equal(json_string_value(json_object_get(e, "detail")), detail);
	json_decref(r);
}

static void test_quota_commands(void **state)
{
	struct fixture *fx = *state;
	need_store(fx);
	bind_ok(fx, "tpp-a", GOOD1, -1);
	bind_ok(fx, "tpp-b", GOOD2, -1);
	refused_line(fx, "{\"cmd\":\"quota-show\",\"client_id\":\"nobody\"}",
		     "no such client 'nobody'");
	refused_line(fx, "{\"cmd\":\"quota-reset\",\"client_id\":\"nobody\"}",
		     "no such client 'nobody'");
	assert_quota_used(fx, "tpp-a", NULL, "");

	/* A rolling window of 30 days keeps every count of the test; a UTC day may end during it,
	 * so the daily counter's used is only checked against its remaining. */
	const struct quota_rule rolling = {.limit = 5, .window = PSD2_QUOTA_ROLLING,
					   .window_seconds = 30 * 86400};
	const struct quota_rule daily = {.limit = 4, .window = PSD2_QUOTA_DAY, .window_seconds = 86400};
	count(fx, "psu", "tpp-a", "", &rolling, 2);
	count(fx, "ais", "tpp-a", "acc-2", &rolling, 3);
	count(fx, "ais", "tpp-a", "acc-1", &rolling, 1);
	count(fx, "daily", "tpp-a", "", &daily, 1);
	count(fx, "ais", "tpp-b", "acc-1", &rolling, 1);
	/* Allocated for a request that has not counted yet: nothing to show or reset. */
	assert_non_null(policy_store_quota(fx->ctx.policy, "ais", "tpp-a", "acc-3", true));

	const struct {
		const char *name, *key, *window;
		json_int_t limit, window_seconds, used; /* used -1: the daily one */
	} rows[] = {
		{"ais", "acc-1", "rolling", 5, 30 * 86400, 1},
		{"ais", "acc-2", "rolling", 5, 30 * 86400, 3},
		{"daily", "", "day", 4, 86400, -1},
		{"psu", "", "rolling", 5, 30 * 86400, 2},
	};
	json_t *arr = quota_show(fx, "tpp-a", NULL), *q;
	assert_int_equal(json_array_size(arr), sizeof(rows) / sizeof(rows[0]));
	size_t i;
	json_array_foreach(arr, i, q) {
		assert_string_equal(json_string_value(json_object_get(q, "name")), rows[i].name);
		assert_string_equal(json_string_value(json_object_get(q, "client_id")), "tpp-a");
		assert_string_equal(json_string_value(json_object_get(q, "key")), rows[i].key);
		assert_string_equal(json_string_value(json_object_get(q, "window")), rows[i].window);
		assert_int_equal(json_integer_value(json_object_get(q, "limit")), rows[i].limit);
		assert_int_equal(json_integer_value(json_object_get(q, "window_seconds")),
				 rows[i].window_seconds);
		json_int_t used = json_integer_value(json_object_get(q, "used"));
		json_int_t remaining = json_integer_value(json_object_get(q, "remaining"));
		json_int_t reset_in = json_integer_value(json_object_get(q, "reset_in"));
		if (rows[i].used >= 0)
			assert_int_equal(used, rows[i].used);
		assert_int_equal(used + remaining, rows[i].limit);
		/* A rolling window frees its oldest sub-window whole, up to one after its end. */
		assert_true(reset_in >= 1 &&
			    reset_in <= rows[i].window_seconds +
						rows[i].window_seconds / PSD2_QUOTA_SUBWINDOWS);
		assert_true(json_is_string(json_object_get(q, "reset_at")));
		assert_int_equal(json_object_size(q), 10);
	}
	json_decref(arr);

	/* --key selects one key value; "" the counters per client_id alone. */
	assert_quota_used(fx, "tpp-a", "acc-2", "ais/acc-2 3");
	assert_quota_used(fx, "tpp-a", "zzz", "");
	assert_quota_used(fx, "tpp-b", NULL, "ais/acc-1 1");
	char *per_client = quota_used(fx, "tpp-a", "");
	assert_non_null(strstr(per_client, "daily/ "));
	assert_non_null(strstr(per_client, "psu/ 2"));
	free(per_client);
	char long_key[CONFIG_QUOTA_KEY_MAX + 2];
	memset(long_key, 'k', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = '\0';
	refused(fx, json_pack("{s:s, s:s, s:s}", "cmd", "quota-reset", "client_id", "tpp-a", "key",
			      long_key),
		"invalid key: a quota key value has at most 128 bytes");
	refused_line(fx, "{\"cmd\":\"quota-reset\",\"client_id\":\"tpp-a\",\"key\":1}",
		     "field key must be a string");

	/* A reader may look, not reset; a refused reset changes no counter. */
	const char *reset_acc2 = "{\"cmd\":\"quota-reset\",\"client_id\":\"tpp-a\",\"key\":\"acc-2\"}";
	json_t *r = call_as(fx, "{\"cmd\":\"quota-show\",\"client_id\":\"tpp-a\"}",
			    CONTROL_ACCESS_READ);
	assert_true(json_is_true(json_object_get(r, "ok")));
	json_decref(r);
	refused_line_as(fx, reset_acc2, CONTROL_ACCESS_READ,
			"permission denied: quota-reset changes state");
	assert_quota_used(fx, "tpp-a", "acc-2", "ais/acc-2 3");

	r = ok(fx, json_loads(reset_acc2, 0, NULL));
	assert_int_equal(json_integer_value(json_object_get(r, "reset")), 1);
	assert_string_equal(json_string_value(json_object_get(r, "key")), "acc-2");
	assert_string_equal(json_string_value(json_object_get(r, "client_id")), "tpp-a");
	json_decref(r);
	assert_last_audit(fx, "quota-reset", "tpp-a", "quota counters of key 'acc-2'");
	assert_quota_used(fx, "tpp-a", "acc-2", "ais/acc-2 0");
	assert_quota_used(fx, "tpp-a", "acc-1", "ais/acc-1 1");
	assert_quota_used(fx, "tpp-b", NULL, "ais/acc-1 1");

	r = ok(fx, json_pack("{s:s, s:s}", "cmd", "quota-reset", "client_id", "tpp-a"));
	assert_int_equal(json_integer_value(json_object_get(r, "reset")), 4);
	assert_true(json_is_null(json_object_get(r, "key")));
	json_decref(r);
	assert_last_audit(fx, "quota-reset", "tpp-a", "every quota counter");
	assert_quota_used(fx, "tpp-a", NULL, "ais/acc-1 0 ais/acc-2 0 daily/ 0 psu/ 0");
	assert_quota_used(fx, "tpp-b", NULL, "ais/acc-1 1");
	assert_int_equal(fx->n_ev, 2); /* the two binds: the maps are changed directly */
}

static json_t *breaker_row(json_t *list, const char *name)
{
	size_t i;
	json_t *b;
	json_array_foreach(list, i, b)
		if (strcmp(json_string_value(json_object_get(b, "name")), name) == 0)
			return b;
	fail_msg("breaker-list has no row %s", name);
	return NULL;
}

static void test_breaker_commands(void **state)
{
	struct fixture *fx = *state;
	need_store(fx);
	json_t *list = ok(fx, json_pack("{s:s}", "cmd", "breaker-list"));
	assert_int_equal(json_array_size(list), 2);
	/* In the configuration's order. */
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 0), "name")),
			    "default");
	assert_string_equal(json_string_value(json_object_get(json_array_get(list, 1), "name")),
			    "accounts");
	json_decref(list);

	/* Two failures in a row open "accounts"; one more request is refused while open. */
	struct psd2_breaker *b = policy_store_breaker(fx->ctx.policy, 1);
	uint32_t retry = 0;
	int64_t now_ms = (int64_t)time(NULL) * 1000;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(breaker_admit(b, &accounts_breaker, now_ms, &retry), BREAKER_PASS);
		breaker_record(b, &accounts_breaker, false, true, now_ms);
	}
	assert_int_equal(breaker_admit(b, &accounts_breaker, now_ms, &retry), BREAKER_REFUSE);

	const struct breaker_want {
		const char *name, *state;
		json_int_t failures, opened_total, rejected_total;
		bool opened_at;
	} before[] = {
		{"default", "closed", 0, 0, 0, false},
		{"accounts", "open", 2, 1, 1, true},
	}, after[] = {
		{"default", "closed", 0, 0, 0, false},
		{"accounts", "closed", 0, 1, 1, false}, /* totals kept */
	};
	for (int round = 0; round < 2; round++) {
		list = ok(fx, json_pack("{s:s}", "cmd", "breaker-list"));
		for (size_t i = 0; i < 2; i++) {
			const struct breaker_want *want = round ? &after[i] : &before[i];
			json_t *row = breaker_row(list, want->name);
			assert_string_equal(json_string_value(json_object_get(row, "state")),
					    want->state);
			assert_int_equal(json_integer_value(json_object_get(row, "consecutive_failures")),
					 want->failures);
			assert_int_equal(json_integer_value(json_object_get(row, "opened_total")),
					 want->opened_total);
			assert_int_equal(json_integer_value(json_object_get(row, "rejected_total")),
					 want->rejected_total);
			assert_true(want->opened_at ? json_is_string(json_object_get(row, "opened_at"))
						    : json_is_null(json_object_get(row, "opened_at")));
			assert_true(json_is_integer(json_object_get(row, "window_requests")));
			assert_true(json_is_integer(json_object_get(row, "window_failures")));
			assert_int_equal(json_object_size(row), 8);
		}
		json_decref(list);
		if (round)
			break;

		json_t *r = call_as(fx, "{\"cmd\":\"breaker-list\"}", CONTROL_ACCESS_READ);
		assert_true(json_is_true(json_object_get(r, "ok")));
		json_decref(r);
		const char *reset = "{\"cmd\":\"breaker-reset\",\"upstream\":\"accounts\"}";
		refused_line_as(fx, reset, CONTROL_ACCESS_READ,
				"permission denied: breaker-reset changes state");
		refused_line(fx, "{\"cmd\":\"breaker-reset\",\"upstream\":\"nope\"}",
			     "no such upstream 'nope'");
		refused_line(fx, "{\"cmd\":\"breaker-reset\"}", "missing field upstream");
		assert_int_equal(b->state, PSD2_BREAKER_OPEN); /* the refusals left it open */
		r = ok(fx, json_loads(reset, 0, NULL));
		assert_string_equal(json_string_value(json_object_get(r, "upstream")), "accounts");
		assert_string_equal(json_string_value(json_object_get(r, "state")), "closed");
		assert_string_equal(json_string_value(json_object_get(r, "was")), "open");
		json_decref(r);
		assert_last_audit(fx, "breaker-reset", "", "upstream accounts (was open)");
	}
	assert_int_equal(breaker_admit(b, &accounts_breaker, now_ms, &retry), BREAKER_PASS);
	assert_int_equal(fx->n_ev, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_bind_and_read_back, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_malformed_requests, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bind_refusals, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bind_psd2, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_certs_expiring, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_unbind_and_revoke, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_deny_list, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_limits, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_no_hooks, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_rotate_kek_command, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_reload_command, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_command_access, fx_setup, fx_teardown),
		cmocka_unit_test(test_peer_access),
		cmocka_unit_test_setup_teardown(test_socket_server, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_socket_group_and_stale, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_socket_peer_groups, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_socket_dir_checks, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_policy_absent, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_quota_commands, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_breaker_commands, store_setup, store_teardown),
	};
	return cmocka_run_group_tests(tests, pki_setup, pki_teardown);
}
