/* A throwaway PKI built in memory with OpenSSL for unit tests: EC P-256 CAs, leaf client
 * certificates with chosen validity, CRLs, and PEM/file output. Header-only (static inline,
 * so a test that uses only part of it still builds with -Werror); helpers return NULL or -1
 * on failure and the tests assert on that. Never use any of it for anything real. */
#ifndef PSD2EDGE_TESTPKI_H
#define PSD2EDGE_TESTPKI_H

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TESTPKI_DAY 86400

static inline EVP_PKEY *testpki_key(void) { return EVP_EC_gen("P-256"); }

static inline int testpki_add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
	X509V3_CTX ctx;
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
	int ok = ext && X509_add_ext(x, ext, -1) == 1;
	X509_EXTENSION_free(ext);
	return ok ? 0 : -1;
}

/* A certificate for key signed by issuer/issuer_key (self-signed when issuer is NULL), valid
 * from now + nb_off to now + na_off seconds. A CA gets basicConstraints CA:TRUE; a leaf gets
 * extendedKeyUsage clientAuth, as a QWAC has. */
static inline X509 *testpki_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
				 long serial, long nb_off, long na_off, int is_ca)
{
	X509 *x = X509_new();
	X509_NAME *name = x ? X509_get_subject_name(x) : NULL;
	if (!name || X509_set_version(x, X509_VERSION_3) != 1 ||
	    ASN1_INTEGER_set(X509_get_serialNumber(x), serial) != 1 ||
	    !X509_gmtime_adj(X509_getm_notBefore(x), nb_off) ||
	    !X509_gmtime_adj(X509_getm_notAfter(x), na_off) ||
	    X509_NAME_add_entry_by_txt(name, "C", MBSTRING_ASC, (const unsigned char *)"DE", -1, -1,
				       0) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"Test TPP", -1,
				       -1, 0) != 1 ||
	    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1,
				       0) != 1 ||
	    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name) != 1 ||
	    X509_set_pubkey(x, key) != 1)
		goto fail;
	if (is_ca ? testpki_add_ext(x, issuer, NID_basic_constraints, "critical,CA:TRUE") < 0 ||
			    testpki_add_ext(x, issuer, NID_key_usage, "critical,keyCertSign,cRLSign") < 0
		  : testpki_add_ext(x, issuer, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
			    testpki_add_ext(x, issuer, NID_key_usage, "critical,digitalSignature") < 0 ||
			    testpki_add_ext(x, issuer, NID_ext_key_usage, "clientAuth") < 0)
		goto fail;
	if (testpki_add_ext(x, issuer, NID_subject_key_identifier, "hash") < 0 ||
	    testpki_add_ext(x, issuer, NID_authority_key_identifier, "keyid:always") < 0 ||
	    X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) <= 0)
		goto fail;
	return x;
fail:
	X509_free(x);
	return NULL;
}

static inline X509 *testpki_ca(const char *cn, EVP_PKEY *key)
{
	return testpki_cert(cn, key, NULL, NULL, 1, -365L * TESTPKI_DAY, 3650L * TESTPKI_DAY, 1);
}

/* A leaf valid from yesterday for a year. */
static inline X509 *testpki_leaf(const char *cn, EVP_PKEY *key, X509 *ca, EVP_PKEY *ca_key,
				 long serial)
{
	return testpki_cert(cn, key, ca, ca_key, serial, -TESTPKI_DAY, 365L * TESTPKI_DAY, 0);
}

/* A CRL of ca, valid from now for a week, revoking the n given certificates. */
static inline X509_CRL *testpki_crl(X509 *ca, EVP_PKEY *ca_key, X509 *const *revoked, int n)
{
	X509_CRL *crl = X509_CRL_new();
	ASN1_TIME *t = ASN1_TIME_new();
	if (!crl || !t || X509_CRL_set_version(crl, 1) != 1 ||
	    X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca)) != 1 ||
	    !X509_gmtime_adj(t, 0) || X509_CRL_set1_lastUpdate(crl, t) != 1 ||
	    !X509_gmtime_adj(t, 7L * TESTPKI_DAY) || X509_CRL_set1_nextUpdate(crl, t) != 1)
		goto fail;
	for (int i = 0; i < n; i++) {
		X509_REVOKED *r = X509_REVOKED_new();
		if (!r || X509_REVOKED_set_serialNumber(r, X509_get_serialNumber(revoked[i])) != 1 ||
		    !X509_gmtime_adj(t, 0) || X509_REVOKED_set_revocationDate(r, t) != 1 ||
		    X509_CRL_add0_revoked(crl, r) != 1) {
			X509_REVOKED_free(r);
			goto fail;
		}
	}
	if (X509_CRL_sort(crl) != 1 || X509_CRL_sign(crl, ca_key, EVP_sha256()) <= 0)
		goto fail;
	ASN1_TIME_free(t);
	return crl;
fail:
	ASN1_TIME_free(t);
	X509_CRL_free(crl);
	return NULL;
}

/* The PEM text of x as a NUL-terminated malloc'd string. */
static inline char *testpki_pem(X509 *x)
{
	BIO *bio = BIO_new(BIO_s_mem());
	char *p = NULL, *out = NULL;
	long n;
	if (bio && PEM_write_bio_X509(bio, x) == 1 && (n = BIO_get_mem_data(bio, &p)) > 0 &&
	    (out = malloc((size_t)n + 1))) {
		memcpy(out, p, (size_t)n);
		out[n] = '\0';
	}
	BIO_free(bio);
	return out;
}

/* Appends certificates (and, when crl is non-NULL, a CRL) to path in PEM. */
static inline int testpki_append(const char *path, X509 *x, X509_CRL *crl)
{
	FILE *f = fopen(path, "a");
	if (!f)
		return -1;
	int ok = (!x || PEM_write_X509(f, x) == 1) && (!crl || PEM_write_X509_CRL(f, crl) == 1);
	return fclose(f) == 0 && ok ? 0 : -1;
}

/* The usual cast: a trusted CA with good, expired and revoked leaves, and a second CA that
 * is not trusted with a leaf of its own. */
struct testpki {
	EVP_PKEY *ca_key, *other_ca_key, *leaf_key;
	X509 *ca, *other_ca;
	X509 *good, *expired, *revoked, *foreign;
	X509_CRL *crl;
};

static inline void testpki_free(struct testpki *p)
{
	EVP_PKEY_free(p->ca_key);
	EVP_PKEY_free(p->other_ca_key);
	EVP_PKEY_free(p->leaf_key);
	X509_free(p->ca);
	X509_free(p->other_ca);
	X509_free(p->good);
	X509_free(p->expired);
	X509_free(p->revoked);
	X509_free(p->foreign);
	X509_CRL_free(p->crl);
	memset(p, 0, sizeof(*p));
}

static inline int testpki_init(struct testpki *p)
{
	memset(p, 0, sizeof(*p));
	p->ca_key = testpki_key();
	p->other_ca_key = testpki_key();
	p->leaf_key = testpki_key();
	if (!p->ca_key || !p->other_ca_key || !p->leaf_key)
		goto fail;
	p->ca = testpki_ca("Test TPP CA", p->ca_key);
	p->other_ca = testpki_ca("Untrusted CA", p->other_ca_key);
	if (!p->ca || !p->other_ca)
		goto fail;
	p->good = testpki_leaf("tpp-good", p->leaf_key, p->ca, p->ca_key, 100);
	p->expired = testpki_cert("tpp-expired", p->leaf_key, p->ca, p->ca_key, 101,
				  -30L * TESTPKI_DAY, -TESTPKI_DAY, 0);
	p->revoked = testpki_leaf("tpp-revoked", p->leaf_key, p->ca, p->ca_key, 102);
	p->foreign = testpki_leaf("tpp-foreign", p->leaf_key, p->other_ca, p->other_ca_key, 100);
	if (!p->good || !p->expired || !p->revoked || !p->foreign)
		goto fail;
	p->crl = testpki_crl(p->ca, p->ca_key, &p->revoked, 1);
	if (!p->crl)
		goto fail;
	return 0;
fail:
	testpki_free(p);
	return -1;
}

/* Adds an extension nid whose value is the DER bytes given (what no X509V3 config string can
 * say: malformed encodings, duplicates), then signs x again with issuer_key. */
static inline int testpki_add_der_ext(X509 *x, EVP_PKEY *issuer_key, int nid,
				      const unsigned char *der, size_t len)
{
	ASN1_OCTET_STRING *v = ASN1_OCTET_STRING_new();
	X509_EXTENSION *ext = NULL;
	int ok = v && ASN1_OCTET_STRING_set(v, der, (int)len) == 1 &&
		 (ext = X509_EXTENSION_create_by_NID(NULL, nid, 0, v)) &&
		 X509_add_ext(x, ext, -1) == 1 && X509_sign(x, issuer_key, EVP_sha256()) > 0;
	X509_EXTENSION_free(ext);
	ASN1_OCTET_STRING_free(v);
	return ok ? 0 : -1;
}

/* Adds a subject attribute nid (e.g. NID_organizationIdentifier) holding the UTF-8 text
 * value, then signs x again with issuer_key. */
static inline int testpki_add_subject(X509 *x, EVP_PKEY *issuer_key, int nid, const char *value)
{
	return X509_NAME_add_entry_by_NID(X509_get_subject_name(x), nid, MBSTRING_UTF8,
					  (const unsigned char *)value, -1, -1, 0) == 1 &&
			       X509_sign(x, issuer_key, EVP_sha256()) > 0
		       ? 0
		       : -1;
}

#endif
