/* cert: thumbprints, hex, PEM input rules, certificate fields and trust-store verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/rsa.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cert.h"
#include "testpki.h"

/* Self-signed; the expected values come from the openssl CLI:
 *   openssl x509 -in ka.pem -outform DER | sha256sum
 *   openssl x509 -in ka.pem -noout -subject -issuer -serial -nameopt RFC2253
 *   date -d "$(openssl x509 -in ka.pem -noout -startdate | cut -d= -f2)" +%s (and -enddate) */
static const char known_pem[] =
	"-----BEGIN CERTIFICATE-----\n"
	"MIIBzTCCAXOgAwIBAgIGChssPU5fMAoGCCqGSM49BAMCMEIxHjAcBgNVBAMMFXBz\n"
	"ZDJlZGdlIGtub3duIGFuc3dlcjETMBEGA1UECgwKVGVzdCwgSW5jLjELMAkGA1UE\n"
	"BhMCREUwIBcNMjYxMTIyMDM0MzA3WhgPMjEyNjEwMjkwMzQzMDdaMEIxHjAcBgNV\n"
	"BAMMFXBzZDJlZGdlIGtub3duIGFuc3dlcjETMBEGA1UECgwKVGVzdCwgSW5jLjEL\n"
	"MAkGA1UEBhMCREUwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAR6bUT6342JMNYI\n"
	"ecOCYoHloJdGZFwXwE1tSZRutyM6xbnSIo+atTibsyvTDNYMcg1yeq2edTJ2+zHV\n"
	"UmuWyMxoo1MwUTAdBgNVHQ4EFgQUm+6rVTdVH2lT9S4X34rkegBreOEwHwYDVR0j\n"
	"BBgwFoAUm+6rVTdVH2lT9S4X34rkegBreOEwDwYDVR0TAQH/BAUwAwEB/zAKBggq\n"
	"hkjOPQQDAgNIADBFAiEAm/d0Qcoev2vwenB95mgR+8mPzXxnagzlzeobg3s/OjUC\n"
	"IHAdvpP1T4ERstUWAtraWxITCz+iST64SCvjr4pJJQh1\n"
	"-----END CERTIFICATE-----\n";
static const char known_sha256[] =
	"7d108ff0a4e222d8cf04fef812913acbc1d5f7d0b555264f26f996360e6a8b6d";

static const char key_pem[] = "-----BEGIN PRIVATE KEY-----\n"
			      "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
			      "-----END PRIVATE KEY-----\n";

static X509 *parse_ok(const char *pem, size_t len)
{
	X509 *x = NULL;
	char err[128] = "";
	assert_int_equal(cert_from_pem(pem, len, &x, err, sizeof(err)), 0);
	assert_non_null(x);
	assert_int_equal(ERR_peek_error(), 0);
	return x;
}

static void expect_pem_error(const char *pem, size_t len, const char *want)
{
	X509 *x = (X509 *)1;
	char err[128] = "";
	assert_int_equal(cert_from_pem(pem, len, &x, err, sizeof(err)), -1);
	assert_null(x);
	if (!strstr(err, want))
		fail_msg("error '%s' does not mention '%s'", err, want);
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_thumbprint_known_answer(void **state)
{
	(void)state;
	X509 *x = parse_ok(known_pem, strlen(known_pem));
	uint8_t thumb[CERT_THUMB_LEN];
	char hex[CERT_THUMB_HEX_LEN + 1];
	assert_int_equal(cert_thumbprint(x, thumb), 0);
	cert_thumb_to_hex(thumb, hex);
	assert_string_equal(hex, known_sha256);

	struct cert_info ci;
	assert_int_equal(cert_get_info(x, &ci), 0);
	assert_memory_equal(ci.thumb, thumb, CERT_THUMB_LEN);
	assert_string_equal(ci.subject, "C=DE,O=Test\\, Inc.,CN=psd2edge known answer");
	assert_string_equal(ci.issuer, ci.subject);
	assert_string_equal(ci.serial, "0A1B2C3D4E5F");
	assert_int_equal(ci.not_before, 1795318987);
	assert_int_equal(ci.not_after, 4948918987); /* GeneralizedTime, past 2038 */
	X509_free(x);
}

static void test_thumb_hex_round_trip(void **state)
{
	(void)state;
	uint8_t in[CERT_THUMB_LEN], out[CERT_THUMB_LEN];
	char hex[CERT_THUMB_HEX_LEN + 1];
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 37 + 11);
	cert_thumb_to_hex(in, hex);
	assert_int_equal(strlen(hex), CERT_THUMB_HEX_LEN);
	assert_int_equal(cert_thumb_from_hex(hex, strlen(hex), out), 0);
	assert_memory_equal(in, out, sizeof(in));

	char upper[] = "7D108FF0A4E222D8CF04FEF812913ACBC1D5F7D0B555264F26F996360E6A8B6D";
	assert_int_equal(cert_thumb_from_hex(upper, strlen(upper), out), 0);
	cert_thumb_to_hex(out, hex);
	assert_string_equal(hex, known_sha256);

	/* A failed parse leaves the output untouched. */
	memcpy(out, in, sizeof(out));
	assert_int_equal(cert_thumb_from_hex(upper, 63, out), -1);
	assert_int_equal(cert_thumb_from_hex(upper, 65, out), -1);
	upper[63] = 'g';
	assert_int_equal(cert_thumb_from_hex(upper, 64, out), -1);
	assert_int_equal(cert_thumb_from_hex(NULL, 64, out), -1);
	assert_memory_equal(in, out, sizeof(in));
}

static char *concat(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);
	char *s = malloc(la + lb + 1);
	assert_non_null(s);
	memcpy(s, a, la);
	memcpy(s + la, b, lb + 1);
	return s;
}

static void test_pem_rules(void **state)
{
	(void)state;
	/* Surrounding whitespace is fine. */
	char *padded = concat("\n  \r\n", known_pem);
	char *padded2 = concat(padded, "\n\n\t ");
	X509_free(parse_ok(padded2, strlen(padded2)));
	/* The length bounds the parse: a cut-off block is refused, not read past. */
	expect_pem_error(known_pem, strlen(known_pem) - 30, "not a PEM certificate");

	expect_pem_error("", 0, "not a PEM certificate");
	expect_pem_error(NULL, 0, "not a PEM certificate");
	expect_pem_error("   \n", 4, "not a PEM certificate");
	expect_pem_error("hello", 5, "not a PEM certificate");
	expect_pem_error(key_pem, strlen(key_pem), "private key");

	char *leading = concat("Subject: x\n", known_pem);
	expect_pem_error(leading, strlen(leading), "not a PEM certificate");
	char *trailing = concat(known_pem, "junk\n");
	expect_pem_error(trailing, strlen(trailing), "trailing text");
	char *two = concat(known_pem, known_pem);
	expect_pem_error(two, strlen(two), "more than one certificate");
	char *with_key = concat(known_pem, key_pem);
	expect_pem_error(with_key, strlen(with_key), "private key");

	static const char pubkey[] = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
	expect_pem_error(pubkey, strlen(pubkey), "not a PEM certificate");
	char *with_other = concat(known_pem, pubkey);
	expect_pem_error(with_other, strlen(with_other), "unexpected PEM block");
	free(with_other);

	char nul[sizeof(known_pem)];
	memcpy(nul, known_pem, sizeof(nul));
	nul[100] = '\0';
	expect_pem_error(nul, sizeof(nul) - 1, "NUL");

	/* Valid base64 that is not a certificate. */
	static const char notder[] = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
	expect_pem_error(notder, strlen(notder), "invalid DER");

	size_t big = CERT_MAX_PEM_BYTES + 1;
	char *huge = malloc(big);
	assert_non_null(huge);
	memset(huge, ' ', big);
	memcpy(huge, known_pem, strlen(known_pem));
	expect_pem_error(huge, big, "too large");
	/* Exactly at the limit it is accepted. */
	X509_free(parse_ok(huge, CERT_MAX_PEM_BYTES));

	free(huge);
	free(padded);
	free(padded2);
	free(leading);
	free(trailing);
	free(two);
	free(with_key);
}

struct store_fixture {
	struct testpki pki;
	EVP_PKEY *rsa2048, *rsa1024, *weak_ca_key;
	X509 *weak_ca;
	/* Leaves of the trusted CA: RSA keys of both sizes, one signed with SHA-1; and an EC leaf
	 * of weak_ca, a trusted CA with an RSA-1024 key. */
	X509 *leaf_rsa2048, *leaf_rsa1024, *leaf_sha1, *leaf_of_weak_ca;
	char dir[64];
	char ca_path[96], crl_path[96];
};

static int store_setup(void **state)
{
	struct store_fixture *f = calloc(1, sizeof(*f));
	if (!f || testpki_init(&f->pki) < 0)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_cert.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->ca_path, sizeof(f->ca_path), "%s/ca.pem", f->dir);
	snprintf(f->crl_path, sizeof(f->crl_path), "%s/ca.crl", f->dir);
	/* A bundle of two CAs in which ours comes second, so loading must read every entry; the
	 * CRL file likewise holds the other CA's (empty) CRL first. */
	EVP_PKEY *k = testpki_key();
	X509 *extra = testpki_ca("Extra CA", k);
	X509_CRL *extra_crl = testpki_crl(extra, k, NULL, 0);
	int rc = testpki_append(f->ca_path, extra, NULL) | testpki_append(f->ca_path, f->pki.ca, NULL) |
		 testpki_append(f->crl_path, NULL, extra_crl) |
		 testpki_append(f->crl_path, NULL, f->pki.crl);
	X509_CRL_free(extra_crl);
	X509_free(extra);
	EVP_PKEY_free(k);
	*state = f;

	struct testpki *p = &f->pki;
	f->rsa2048 = EVP_RSA_gen(2048);
	f->rsa1024 = EVP_RSA_gen(1024);
	f->weak_ca_key = EVP_RSA_gen(1024);
	f->weak_ca = f->weak_ca_key ? testpki_ca("Weak CA", f->weak_ca_key) : NULL;
	f->leaf_rsa2048 = testpki_leaf("tpp-rsa2048", f->rsa2048, p->ca, p->ca_key, 110);
	f->leaf_rsa1024 = testpki_leaf("tpp-rsa1024", f->rsa1024, p->ca, p->ca_key, 111);
	f->leaf_sha1 = testpki_leaf("tpp-sha1", p->leaf_key, p->ca, p->ca_key, 112);
	f->leaf_of_weak_ca = f->weak_ca ? testpki_leaf("tpp-weak-ca", p->leaf_key, f->weak_ca,
						       f->weak_ca_key, 113)
					: NULL;
	if (!f->leaf_rsa2048 || !f->leaf_rsa1024 || !f->leaf_sha1 || !f->leaf_of_weak_ca ||
	    X509_sign(f->leaf_sha1, p->ca_key, EVP_sha1()) <= 0)
		return -1;
	/* Every CA of the bundle has its CRL: it is checked for every certificate of a chain. */
	X509_CRL *weak_crl = testpki_crl(f->weak_ca, f->weak_ca_key, NULL, 0);
	rc |= testpki_append(f->ca_path, f->weak_ca, NULL) |
	      testpki_append(f->crl_path, NULL, weak_crl);
	X509_CRL_free(weak_crl);
	return rc;
}

static int store_teardown(void **state)
{
	struct store_fixture *f = *state;
	unlink(f->ca_path);
	unlink(f->crl_path);
	rmdir(f->dir);
	testpki_free(&f->pki);
	X509_free(f->leaf_rsa2048);
	X509_free(f->leaf_rsa1024);
	X509_free(f->leaf_sha1);
	X509_free(f->leaf_of_weak_ca);
	X509_free(f->weak_ca);
	EVP_PKEY_free(f->rsa2048);
	EVP_PKEY_free(f->rsa1024);
	EVP_PKEY_free(f->weak_ca_key);
	free(f);
	return 0;
}

static void test_store_verify(void **state)
{
	struct store_fixture *f = *state;
	struct testpki *p = &f->pki;
	struct cert_store *plain = NULL, *with_crl = NULL;
	char err[256] = "";
	time_t now = time(NULL);
	assert_int_equal(cert_store_load(f->ca_path, NULL, &plain, err, sizeof(err)), 0);
	assert_int_equal(cert_store_load(f->ca_path, f->crl_path, &with_crl, err, sizeof(err)), 0);
	assert_non_null(cert_store_x509(plain));

	static const long day = TESTPKI_DAY;
	const struct {
		const char *what;
		X509 *x;
		bool crl;
		long at; /* verification time, seconds from now: the caller's, not the clock */
		enum cert_verdict verdict;
		const char *err;
	} rows[] = {
		{"good", p->good, false, 0, CERT_VERIFY_OK, NULL},
		{"revoked, no CRL loaded", p->revoked, false, 0, CERT_VERIFY_OK, NULL},
		{"expired", p->expired, false, 0, CERT_VERIFY_UNTRUSTED, "certificate has expired"},
		{"other CA", p->foreign, false, 0, CERT_VERIFY_UNTRUSTED,
		 "unable to get local issuer certificate"},
		{"expired, at a time it was valid", p->expired, false, -10 * day, CERT_VERIFY_OK, NULL},
		{"good, after its notAfter", p->good, false, 400 * day, CERT_VERIFY_UNTRUSTED,
		 "certificate has expired"},
		{"good, before its notBefore", p->good, false, -2 * day, CERT_VERIFY_UNTRUSTED,
		 "certificate is not yet valid"},
		{"good, with the CRL", p->good, true, 0, CERT_VERIFY_OK, NULL},
		{"revoked, with the CRL", p->revoked, true, 0, CERT_VERIFY_REVOKED, "certificate revoked"},
		/* CERT_SECURITY_LEVEL, as in the handshake */
		{"RSA-2048 key", f->leaf_rsa2048, false, 0, CERT_VERIFY_OK, NULL},
		{"RSA-1024 key", f->leaf_rsa1024, false, 0, CERT_VERIFY_WEAK,
		 "EE certificate key too weak"},
		{"signed with SHA-1", f->leaf_sha1, false, 0, CERT_VERIFY_WEAK,
		 "CA signature digest algorithm too weak"},
		{"issued by an RSA-1024 CA", f->leaf_of_weak_ca, false, 0, CERT_VERIFY_WEAK,
		 "CA certificate key too weak"},
		{"RSA-1024 key, with the CRL", f->leaf_rsa1024, true, 0, CERT_VERIFY_WEAK,
		 "EE certificate key too weak"},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		err[0] = '\0';
		enum cert_verdict v = cert_store_verify(rows[i].crl ? with_crl : plain, rows[i].x,
							now + rows[i].at, err, sizeof(err));
		assert_int_equal(ERR_peek_error(), 0);
		if (v != rows[i].verdict || (rows[i].err && strcmp(err, rows[i].err) != 0))
			fail_msg("%s: got verdict %d '%s', want %d '%s'", rows[i].what, v, err,
				 rows[i].verdict, rows[i].err ? rows[i].err : "");
	}
	cert_store_free(plain);
	cert_store_free(with_crl);
}

/* An empty CRL of ca valid from now + last to now + next seconds (next 0: no nextUpdate). */
static X509_CRL *crl_at(X509 *ca, EVP_PKEY *key, long last, long next)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	assert_non_null(crl);
	assert_non_null(t);
	assert_int_equal(X509_CRL_set_version(crl, 1), 1);
	assert_int_equal(X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)), 1);
	assert_non_null(X509_gmtime_adj(t, last));
	assert_int_equal(X509_CRL_set1_lastUpdate(crl, t), 1);
	if (next) {
		assert_non_null(X509_gmtime_adj(t, next));
		assert_int_equal(X509_CRL_set1_nextUpdate(crl, t), 1);
	}
	assert_true(X509_CRL_sign(crl, key, EVP_sha256()) > 0);
	ASN1_TIME_free(t);
	return crl;
}

/* The CRL is checked for every certificate of a chain: an intermediate revoked by its root's
 * CRL refuses its leaves, as does a CA whose CRL is missing. */
static void test_store_chain_crls(void **state)
{
	struct store_fixture *f = *state;
	EVP_PKEY *k = testpki_key();
	X509 *root = testpki_ca("Chain Root", k);
	X509 *inter = testpki_cert("Chain Intermediate", k, root, k, 2, -TESTPKI_DAY,
				   100 * TESTPKI_DAY, 1);
	X509 *revoked_inter = testpki_cert("Chain Revoked Intermediate", k, root, k, 3,
					   -TESTPKI_DAY, 100 * TESTPKI_DAY, 1);
	X509 *leaf = testpki_leaf("chain-leaf", k, inter, k, 10);
	X509 *leaf_of_revoked = testpki_leaf("chain-leaf-2", k, revoked_inter, k, 11);
	X509_CRL *root_crl = testpki_crl(root, k, &revoked_inter, 1);
	X509_CRL *inter_crl = testpki_crl(inter, k, NULL, 0);
	X509_CRL *revoked_inter_crl = testpki_crl(revoked_inter, k, NULL, 0);
	assert_non_null(leaf_of_revoked);
	assert_non_null(revoked_inter_crl);
	char ca[128], crl[128], err[256] = "";
	snprintf(ca, sizeof(ca), "%s/chain.pem", f->dir);
	snprintf(crl, sizeof(crl), "%s/chain.crl", f->dir);
	assert_int_equal(testpki_append(ca, root, NULL) | testpki_append(ca, inter, NULL) |
				 testpki_append(ca, revoked_inter, NULL) |
				 testpki_append(crl, NULL, root_crl) |
				 testpki_append(crl, NULL, inter_crl) |
				 testpki_append(crl, NULL, revoked_inter_crl),
			 0);
	struct cert_store *s = NULL, *plain = NULL;
	assert_int_equal(cert_store_load(ca, crl, &s, err, sizeof(err)), 0);
	assert_int_equal(cert_store_load(ca, NULL, &plain, err, sizeof(err)), 0);
	/* The intermediates' 100 days bound it; the CRLs' week comes first. */
	int64_t week = (int64_t)time(NULL) + 7 * TESTPKI_DAY;
	assert_true(cert_store_good_until(s) >= week - 5 && cert_store_good_until(s) <= week);
	assert_true(cert_store_good_until(plain) > week);

	const struct {
		const char *what;
		struct cert_store *store;
		X509 *x;
		enum cert_verdict verdict;
		const char *err;
	} rows[] = {
		{"leaf of a good intermediate", s, leaf, CERT_VERIFY_OK, NULL},
		{"leaf of a revoked intermediate", s, leaf_of_revoked, CERT_VERIFY_REVOKED,
		 "certificate revoked"},
		{"leaf of that intermediate, no CRL", plain, leaf_of_revoked, CERT_VERIFY_OK, NULL},
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		err[0] = '\0';
		enum cert_verdict v = cert_store_verify(rows[i].store, rows[i].x, time(NULL), err,
							sizeof(err));
		if (v != rows[i].verdict || (rows[i].err && strcmp(err, rows[i].err) != 0))
			fail_msg("%s: got verdict %d '%s', want %d '%s'", rows[i].what, v, err,
				 rows[i].verdict, rows[i].err ? rows[i].err : "");
	}
	cert_store_free(s);
	cert_store_free(plain);
	unlink(ca);
	unlink(crl);
	X509_CRL_free(root_crl);
	X509_CRL_free(inter_crl);
	X509_CRL_free(revoked_inter_crl);
	X509_free(leaf);
	X509_free(leaf_of_revoked);
	X509_free(inter);
	X509_free(revoked_inter);
	X509_free(root);
	EVP_PKEY_free(k);
}

/* A CRL file that would refuse every chain through a CA, or revoke nothing it is meant to, is
 * refused at load, naming the file and the CA. */
static void test_store_crl_refused(void **state)
{
	struct store_fixture *f = *state;
	struct testpki *p = &f->pki;
	static const long day = TESTPKI_DAY;
	EVP_PKEY *impostor = testpki_key();
	assert_non_null(impostor);
	const struct {
		const char *what;
		X509 *ca; /* the CRL's issuer */
		EVP_PKEY *key;
		long last, next;
		const char *err;
	} rows[] = {
		{"expired", p->ca, p->ca_key, -10 * day, -day, "expired at"},
		{"expired a second ago", p->ca, p->ca_key, -10 * day, -1, "expired at"},
		{"not valid yet", p->ca, p->ca_key, day, 8 * day, "is not valid before"},
		{"signed by another key", p->ca, impostor, 0, 7 * day,
		 "is not signed by a certificate of"},
		{"of a CA not in the bundle", p->other_ca, p->other_ca_key, 0, 7 * day,
		 "is not signed by a certificate of"},
		{"without nextUpdate: accepted", p->ca, p->ca_key, 0, 0, NULL},
	};
	char crl_path[128], ca_path[128];
	snprintf(crl_path, sizeof(crl_path), "%s/case.crl", f->dir);
	snprintf(ca_path, sizeof(ca_path), "%s/one-ca.pem", f->dir);
	assert_int_equal(testpki_append(ca_path, p->ca, NULL), 0);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		X509_CRL *crl = crl_at(rows[i].ca, rows[i].key, rows[i].last, rows[i].next);
		X509_CRL *good = testpki_crl(p->ca, p->ca_key, NULL, 0);
		unlink(crl_path);
		/* Next to a good CRL of the CA, so that only the bad one can be the reason. */
		assert_int_equal(testpki_append(crl_path, NULL, crl) |
					 testpki_append(crl_path, NULL, good),
				 0);
		struct cert_store *s = NULL;
		char err[256] = "";
		int rc = cert_store_load(ca_path, crl_path, &s, err, sizeof(err));
		if (!rows[i].err) {
			if (rc != 0)
				fail_msg("%s: refused: %s", rows[i].what, err);
		} else if (rc != -1 || !strstr(err, rows[i].err) || !strstr(err, crl_path)) {
			fail_msg("%s: got %d '%s', want a refusal naming %s: '%s'", rows[i].what, rc,
				 err, crl_path, rows[i].err);
		}
		assert_int_equal(ERR_peek_error(), 0);
		cert_store_free(s);
		X509_CRL_free(crl);
		X509_CRL_free(good);
	}
	/* The bundle of the fixture holds three CAs: a CRL file with one CA's CRL lacks two (the
	 * store sorts them: either may be named). */
	X509_CRL *only = testpki_crl(p->ca, p->ca_key, NULL, 0);
	unlink(crl_path);
	assert_int_equal(testpki_append(crl_path, NULL, only), 0);
	struct cert_store *s = NULL;
	char err[256] = "";
	assert_int_equal(cert_store_load(f->ca_path, crl_path, &s, err, sizeof(err)), -1);
	if ((!strstr(err, "no CRL of CN=Extra CA") && !strstr(err, "no CRL of CN=Weak CA")) ||
	    !strstr(err, crl_path))
		fail_msg("a CA without a CRL: '%s'", err);
	assert_null(s);
	X509_CRL_free(only);
	EVP_PKEY_free(impostor);
	unlink(crl_path);
	unlink(ca_path);
}

static void test_store_load_errors(void **state)
{
	struct store_fixture *f = *state;
	struct cert_store *s = (struct cert_store *)1;
	char err[256] = "";

	assert_int_equal(cert_store_load("/nonexistent/ca.pem", NULL, &s, err, sizeof(err)), -1);
	assert_null(s);
	assert_non_null(strstr(err, "/nonexistent/ca.pem"));
	assert_int_equal(ERR_peek_error(), 0);

	/* A CRL file is not a CA bundle, and a CA bundle is not a CRL file. */
	assert_int_equal(cert_store_load(f->crl_path, NULL, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, f->crl_path));
	assert_int_equal(cert_store_load(f->ca_path, f->ca_path, &s, err, sizeof(err)), -1);
	assert_non_null(strstr(err, f->ca_path));
	assert_int_equal(ERR_peek_error(), 0);
}

static void test_info_truncation(void **state)
{
	(void)state;
	/* A CN of 64 two-byte characters plus O/C renders past 255 bytes after escaping. */
	char cn[3 * 64 + 1] = "";
	for (int i = 0; i < 64; i++)
		strcat(cn, "\xc3\xa9");
	EVP_PKEY *k = testpki_key();
	X509 *x = testpki_ca(cn, k);
	assert_non_null(x);
	struct cert_info ci;
	assert_int_equal(cert_get_info(x, &ci), 0);
	assert_true(strlen(ci.subject) < sizeof(ci.subject));
	assert_true(strlen(ci.subject) > 200);
	assert_int_equal(strncmp(ci.subject, "CN=", 3), 0);
	assert_string_equal(ci.serial, "01");
	X509_free(x);
	EVP_PKEY_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_thumbprint_known_answer),
		cmocka_unit_test(test_thumb_hex_round_trip),
		cmocka_unit_test(test_pem_rules),
		cmocka_unit_test(test_info_truncation),
		cmocka_unit_test_setup_teardown(test_store_verify, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_store_load_errors, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_store_chain_crls, store_setup, store_teardown),
		cmocka_unit_test_setup_teardown(test_store_crl_refused, store_setup, store_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
