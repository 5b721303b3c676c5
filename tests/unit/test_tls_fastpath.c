/* The handshake fast path never accepts what the full path would refuse. Each row runs one
 * certificate, bound in the registry, at one time through both paths with one trust store: the
 * full path is cert_store_verify (the chain check of the handshake), the fast path
 * tls_fastpath_accepts; the handshake's verdict is the fast path's acceptance or else the full
 * path's, and it must be the full path's. Rows also say whether the fast path accepts, so that
 * the good ones prove it is in use.
 *
 * The PKI: a root with three intermediates (one the root's CRL revokes, one that expires in three
 * days), each CRL valid for a week; a second root missing from the trust store. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cert.h"
#include "registry.h"
#include "testpki.h"
#include "tls.h"

#define DAY TESTPKI_DAY

enum {
	GOOD,            /* leaf of the good intermediate */
	REVOKED_LEAF,    /* listed in the good intermediate's CRL */
	OF_REVOKED_CA,   /* leaf of the intermediate the root's CRL revokes */
	OF_SHORT_CA,     /* leaf (a year) of the intermediate that expires in three days */
	WEAK,            /* RSA-1024 leaf of the good intermediate */
	OF_REMOVED_ROOT, /* leaf of a root that is not in the store */
	EXPIRED,         /* leaf of the good intermediate, expired yesterday */
	ONE_DAY,         /* leaf of the good intermediate that expires tomorrow */
	UNBOUND,         /* good, but not in the registry */
	N_LEAVES
};

static struct fixture {
	char dir[64], ca[96], crl[96], db[96];
	EVP_PKEY *key, *rsa1024;
	X509 *root, *other_root, *inter, *revoked_inter, *short_inter;
	X509 *leaf[N_LEAVES];
	struct cert_store *with_crl, *without_crl;
	struct registry *reg;
} fx;

static X509 *leaf_of(const char *cn, EVP_PKEY *key, X509 *ca, long serial, long nb, long na)
{
	X509 *x = testpki_cert(cn, key, ca, fx.key, serial, nb, na, 0);
	assert_non_null(x);
	return x;
}

static void bind_leaf(int i, const char *client_id)
{
	struct cert_info ci;
	char *pem = testpki_pem(fx.leaf[i]), err[256] = "";
	uint32_t slot;
	assert_non_null(pem);
	assert_int_equal(cert_get_info(fx.leaf[i], &ci), 0);
	/* The registry trusts its caller: these stand for bindings made under an older store. */
	if (registry_bind(fx.reg, client_id, &ci, pem, false, 0, &slot, err, sizeof(err)) != REG_OK)
		fail_msg("bind %s: %s", client_id, err);
	free(pem);
}

static int setup(void **state)
{
	(void)state;
	char err[256] = "";
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/test_tls_fastpath.XXXXXX");
	assert_non_null(mkdtemp(fx.dir));
	snprintf(fx.ca, sizeof(fx.ca), "%s/ca.pem", fx.dir);
	snprintf(fx.crl, sizeof(fx.crl), "%s/ca.crl", fx.dir);
	snprintf(fx.db, sizeof(fx.db), "%s/registry.db", fx.dir);
	fx.key = testpki_key();
	fx.rsa1024 = EVP_RSA_gen(1024);
	assert_non_null(fx.key);
	assert_non_null(fx.rsa1024);
	fx.root = testpki_ca("Fast Root", fx.key);
	fx.other_root = testpki_ca("Removed Root", fx.key);
	fx.inter = testpki_cert("Good Intermediate", fx.key, fx.root, fx.key, 2, -DAY, 100 * DAY, 1);
	fx.revoked_inter =
		testpki_cert("Revoked Intermediate", fx.key, fx.root, fx.key, 3, -DAY, 100 * DAY, 1);
	fx.short_inter =
		testpki_cert("Short Intermediate", fx.key, fx.root, fx.key, 4, -DAY, 3 * DAY, 1);
	assert_non_null(fx.root);
	assert_non_null(fx.other_root);
	assert_non_null(fx.inter);
	assert_non_null(fx.revoked_inter);
	assert_non_null(fx.short_inter);
	fx.leaf[GOOD] = leaf_of("good", fx.key, fx.inter, 10, -DAY, 365 * DAY);
	fx.leaf[REVOKED_LEAF] = leaf_of("revoked", fx.key, fx.inter, 11, -DAY, 365 * DAY);
	fx.leaf[OF_REVOKED_CA] = leaf_of("of-revoked-ca", fx.key, fx.revoked_inter, 12, -DAY,
					 365 * DAY);
	fx.leaf[OF_SHORT_CA] = leaf_of("of-short-ca", fx.key, fx.short_inter, 13, -DAY, 365 * DAY);
	fx.leaf[WEAK] = leaf_of("weak", fx.rsa1024, fx.inter, 14, -DAY, 365 * DAY);
	fx.leaf[OF_REMOVED_ROOT] = leaf_of("of-removed-root", fx.key, fx.other_root, 15, -DAY,
					   365 * DAY);
	fx.leaf[EXPIRED] = leaf_of("expired", fx.key, fx.inter, 16, -30 * DAY, -DAY);
	fx.leaf[ONE_DAY] = leaf_of("one-day", fx.key, fx.inter, 18, -DAY, DAY);
	fx.leaf[UNBOUND] = leaf_of("unbound", fx.key, fx.inter, 17, -DAY, 365 * DAY);

	X509_CRL *crls[] = {
		testpki_crl(fx.root, fx.key, &fx.revoked_inter, 1),
		testpki_crl(fx.inter, fx.key, &fx.leaf[REVOKED_LEAF], 1),
		testpki_crl(fx.revoked_inter, fx.key, NULL, 0),
		testpki_crl(fx.short_inter, fx.key, NULL, 0),
	};
	X509 *cas[] = {fx.root, fx.inter, fx.revoked_inter, fx.short_inter};
	for (size_t i = 0; i < 4; i++) {
		assert_non_null(crls[i]);
		assert_int_equal(testpki_append(fx.ca, cas[i], NULL), 0);
		assert_int_equal(testpki_append(fx.crl, NULL, crls[i]), 0);
		X509_CRL_free(crls[i]);
	}
	if (cert_store_load(fx.ca, fx.crl, &fx.with_crl, err, sizeof(err)) < 0 ||
	    cert_store_load(fx.ca, NULL, &fx.without_crl, err, sizeof(err)) < 0)
		fail_msg("trust store: %s", err);
	if (registry_open(fx.db, &fx.reg, err, sizeof(err)) < 0)
		fail_msg("registry: %s", err);
	static const char *const ids[N_LEAVES] = {
		[GOOD] = "good", [REVOKED_LEAF] = "revoked", [OF_REVOKED_CA] = "of-revoked-ca",
		[OF_SHORT_CA] = "of-short-ca", [WEAK] = "weak", [OF_REMOVED_ROOT] = "of-removed-root",
		[EXPIRED] = "expired", [ONE_DAY] = "one-day"};
	for (int i = 0; i < N_LEAVES; i++)
		if (ids[i])
			bind_leaf(i, ids[i]);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	registry_close(fx.reg);
	cert_store_free(fx.with_crl);
	cert_store_free(fx.without_crl);
	for (int i = 0; i < N_LEAVES; i++)
		X509_free(fx.leaf[i]);
	X509_free(fx.root);
	X509_free(fx.other_root);
	X509_free(fx.inter);
	X509_free(fx.revoked_inter);
	X509_free(fx.short_inter);
	EVP_PKEY_free(fx.key);
	EVP_PKEY_free(fx.rsa1024);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
	return system(cmd) == 0 ? 0 : -1;
}

struct rejects {
	char ids[N_LEAVES][REGISTRY_CLIENT_ID_MAX + 1];
	int n;
};

static void note_reject(void *arg, const struct registry_cert *c, const char *why)
{
	struct rejects *r = arg;
	assert_true(why[0] != '\0');
	assert_true(r->n < N_LEAVES);
	snprintf(r->ids[r->n++], sizeof(r->ids[0]), "%s", c->client_id);
}

static bool rejected(const struct rejects *r, const char *id)
{
	for (int i = 0; i < r->n; i++)
		if (strcmp(r->ids[i], id) == 0)
			return true;
	return false;
}

/* A server context whose fast path was enabled with store: the bound certificates are
 * verified again, and those that fail are reported. */
static SSL_CTX *ctx_with(struct cert_store *store, struct rejects *r)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char err[256] = "";
	assert_non_null(ctx);
	assert_int_equal(SSL_CTX_set1_verify_cert_store(ctx, cert_store_x509(store)), 1);
	memset(r, 0, sizeof(*r));
	if (tls_fastpath_enable(ctx, fx.reg, store, note_reject, r, err, sizeof(err)) < 0)
		fail_msg("tls_fastpath_enable: %s", err);
	return ctx;
}

static void test_same_verdict(void **state)
{
	(void)state;
	struct rejects with_crl, without_crl;
	SSL_CTX *ctx_crl = ctx_with(fx.with_crl, &with_crl);
	SSL_CTX *ctx_plain = ctx_with(fx.without_crl, &without_crl);

	/* Re-verification at enable (now): the certificates whose chain fails are reported. */
	static const char *const fail_with_crl[] = {"revoked", "of-revoked-ca", "weak",
						    "of-removed-root", "expired"};
	assert_int_equal(with_crl.n, 5);
	for (size_t i = 0; i < 5; i++)
		if (!rejected(&with_crl, fail_with_crl[i]))
			fail_msg("%s was not reported by the re-verification", fail_with_crl[i]);
	assert_int_equal(without_crl.n, 3); /* weak, of-removed-root, expired */

	const struct {
		const char *what;
		bool crl;
		int leaf;
		enum { FROM_NOW, FROM_NOT_AFTER } from; /* what at counts from: now, the leaf's notAfter */
		long at;                                /* seconds */
		bool full_ok, fast_accepts;
	} rows[] = {
		{"good", true, GOOD, FROM_NOW, 0, true, true},
		{"good, the CRL expired (past nextUpdate)", true, GOOD, FROM_NOW, 8 * DAY,
		 false, false},
		{"good, an unrelated intermediate expired", true, GOOD, FROM_NOW, 4 * DAY,
		 true, false},
		{"leaf revoked by the CRL", true, REVOKED_LEAF, FROM_NOW, 0, false, false},
		{"intermediate revoked by the root's CRL", true, OF_REVOKED_CA, FROM_NOW, 0,
		 false, false},
		{"its own intermediate expired", true, OF_SHORT_CA, FROM_NOW, 4 * DAY,
		 false, false},
		{"its own intermediate still valid", true, OF_SHORT_CA, FROM_NOW, 0, true, true},
		{"key below the security level", true, WEAK, FROM_NOW, 0, false, false},
		{"root removed from the store", true, OF_REMOVED_ROOT, FROM_NOW, 0, false, false},
		{"leaf expired", true, EXPIRED, FROM_NOW, 0, false, false},
		{"leaf a second before its notAfter", true, ONE_DAY, FROM_NOT_AFTER, -1,
		 true, true},
		{"leaf at its notAfter", true, ONE_DAY, FROM_NOT_AFTER, 0, false, false},
		{"not bound", true, UNBOUND, FROM_NOW, 0, true, false},
		{"no CRL: the listed leaf passes", false, REVOKED_LEAF, FROM_NOW, 0, true, true},
		{"no CRL: the listed intermediate passes", false, OF_REVOKED_CA, FROM_NOW, 0,
		 true, true},
		{"no CRL: good after a week", false, GOOD, FROM_NOW, 8 * DAY, true, false},
		{"no CRL: its own intermediate expired", false, OF_SHORT_CA, FROM_NOW, 4 * DAY,
		 false, false},
		{"no CRL: key below the security level", false, WEAK, FROM_NOW, 0, false, false},
	};
	time_t now = time(NULL);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char err[256] = "";
		X509 *x = fx.leaf[rows[i].leaf];
		struct cert_info ci;
		assert_int_equal(cert_get_info(x, &ci), 0);
		int64_t at = (rows[i].from == FROM_NOT_AFTER ? ci.not_after : (int64_t)now) + rows[i].at;
		bool full = cert_store_verify(rows[i].crl ? fx.with_crl : fx.without_crl, x,
					      (time_t)at, err, sizeof(err)) == CERT_VERIFY_OK;
		bool fast = tls_fastpath_accepts(rows[i].crl ? ctx_crl : ctx_plain, x, at);
		bool handshake = fast || full;
		if (full != rows[i].full_ok || fast != rows[i].fast_accepts || handshake != full)
			fail_msg("%s: full path %s (%s), fast path %s; want full %s, fast %s", rows[i].what,
				 full ? "accepts" : "refuses", err, fast ? "accepts" : "defers",
				 rows[i].full_ok ? "accepts" : "refuses",
				 rows[i].fast_accepts ? "accepts" : "defers");
		assert_int_equal(ERR_peek_error(), 0);
	}
	SSL_CTX_free(ctx_crl);
	SSL_CTX_free(ctx_plain);
}

/* A revoked binding is refused by the fast path at once, whatever its chain. */
static void test_revoked_binding(void **state)
{
	(void)state;
	struct rejects r;
	SSL_CTX *ctx = ctx_with(fx.without_crl, &r);
	uint8_t thumb[CERT_THUMB_LEN];
	char client_id[REGISTRY_CLIENT_ID_MAX + 1], err[256] = "";
	size_t left = 9;
	assert_true(tls_fastpath_accepts(ctx, fx.leaf[GOOD], time(NULL)));
	assert_int_equal(cert_thumbprint(fx.leaf[GOOD], thumb), 0);
	assert_int_equal(registry_revoke_cert(fx.reg, thumb, 0, "test", client_id, NULL, &left, err,
					      sizeof(err)),
			 REG_OK);
	assert_string_equal(client_id, "good");
	assert_int_equal(left, 0);
	assert_false(tls_fastpath_accepts(ctx, fx.leaf[GOOD], time(NULL)));
	/* Final: a second time it is not actively bound. */
	assert_int_equal(registry_revoke_cert(fx.reg, thumb, 0, "test", client_id, NULL, NULL, err,
					      sizeof(err)),
			 REG_ERR_NOT_FOUND);
	SSL_CTX_free(ctx);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_verdict),
		cmocka_unit_test(test_revoked_binding),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
