/* X.509 helpers. Every function leaves OpenSSL's thread-local error queue empty, because a
 * stale entry would be misreported by the next SSL_get_error() on the same thread. */
#include "cert.h"

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hex.h"

struct cert_store {
	X509_STORE *store;
	int64_t good_until; /* cert_store_good_until() */
};

/* Fetched once: an implicit fetch per call would look the algorithm up in the provider
 * store on every handshake. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void) { sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL); }

int cert_thumbprint(X509 *x, uint8_t out[CERT_THUMB_LEN])
{
	unsigned char *der = NULL;
	int ret = -1;

	pthread_once(&sha256_once, sha256_fetch);
	int n = x && sha256_md ? i2d_X509(x, &der) : -1;
	if (n <= 0)
		goto out;
	unsigned int mdlen = 0;
	if (EVP_Digest(der, (size_t)n, out, &mdlen, sha256_md, NULL) != 1 ||
	    mdlen != CERT_THUMB_LEN)
		goto out;
	ret = 0;
out:
	OPENSSL_free(der);
	ERR_clear_error();
	return ret;
}

void cert_thumb_to_hex(const uint8_t thumb[CERT_THUMB_LEN], char out[CERT_THUMB_HEX_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < CERT_THUMB_LEN; i++) {
		out[2 * i] = digits[thumb[i] >> 4];
		out[2 * i + 1] = digits[thumb[i] & 0xf];
	}
	out[CERT_THUMB_HEX_LEN] = '\0';
}

int cert_thumb_from_hex(const char *hex, size_t len, uint8_t out[CERT_THUMB_LEN])
{
	uint8_t tmp[CERT_THUMB_LEN];
	if (!hex || len != CERT_THUMB_HEX_LEN)
		return -1;
	for (size_t i = 0; i < CERT_THUMB_LEN; i++) {
		int hi = hex_digit_value(hex[2 * i]), lo = hex_digit_value(hex[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		tmp[i] = (uint8_t)(hi << 4 | lo);
	}
	/* Written only once fully parsed, so a bad input never leaves half a thumbprint. */
	memcpy(out, tmp, sizeof(tmp));
	return 0;
}

static int fail(char *err, size_t errlen, const char *msg)
{
	if (err && errlen)
		snprintf(err, errlen, "%s", msg);
	return -1;
}

static int fail_fmt(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail_fmt(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (err && errlen)
		vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

static size_t skip_space(const char *p, size_t len)
{
	size_t i = 0;
	while (i < len && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
		i++;
	return i;
}

static const char pem_begin[] = "-----BEGIN ";

static bool starts_pem_block(const char *p, size_t len)
{
	return len >= sizeof(pem_begin) - 1 && memcmp(p, pem_begin, sizeof(pem_begin) - 1) == 0;
}

/* Why the text after the certificate (whitespace skipped, len > 0) is refused, judged from
 * its first line only. */
static const char *refuse_rest(const char *p, size_t len)
{
	static const char cert_line[] = "-----BEGIN CERTIFICATE-----";
	if (!starts_pem_block(p, len))
		return "trailing text after the certificate";
	const char *eol = memchr(p, '\n', len);
	size_t line = eol ? (size_t)(eol - p) : len;
	if (memmem(p, line, "PRIVATE KEY", 11))
		return "the PEM text contains a private key: send the certificate only";
	if (line >= sizeof(cert_line) - 1 && memcmp(p, cert_line, sizeof(cert_line) - 1) == 0)
		return "more than one certificate in the PEM text";
	return "unexpected PEM block after the certificate";
}

int cert_from_pem(const char *pem, size_t len, X509 **out, char *err, size_t errlen)
{
	BIO *bio = NULL;
	X509 *x = NULL;
	char *name = NULL, *header = NULL, *rest = NULL;
	unsigned char *data = NULL;
	long dlen = 0;
	int ret = -1;

	*out = NULL;
	if (!pem || len == 0) {
		fail(err, errlen, "not a PEM certificate (empty)");
		goto out;
	}
	if (len > CERT_MAX_PEM_BYTES) {
		fail(err, errlen, "PEM text too large (limit 64 KiB)");
		goto out;
	}
	/* The PEM reader works line by line on C strings and would silently stop at a NUL. */
	if (memchr(pem, '\0', len)) {
		fail(err, errlen, "not a PEM certificate (contains a NUL byte)");
		goto out;
	}
	/* PEM_read_bio() skips any text before a BEGIN line; refuse it instead, so that exactly
	 * one certificate and nothing else is accepted. */
	size_t off = skip_space(pem, len);
	if (!starts_pem_block(pem + off, len - off)) {
		fail(err, errlen, "not a PEM certificate");
		goto out;
	}
	bio = BIO_new_mem_buf(pem + off, (int)(len - off));
	if (!bio) {
		fail(err, errlen, "out of memory");
		goto out;
	}
	if (PEM_read_bio(bio, &name, &header, &data, &dlen) != 1) {
		fail(err, errlen, "not a PEM certificate (malformed PEM block)");
		goto out;
	}
	if (strcmp(name, "CERTIFICATE") != 0) {
		fail(err, errlen,
		     strstr(name, "PRIVATE KEY")
			     ? "the PEM text contains a private key: send the certificate only"
			     : "not a PEM certificate");
		goto out;
	}
	const unsigned char *p = data;
	x = d2i_X509(NULL, &p, dlen);
	if (!x || p != data + dlen) {
		fail(err, errlen, "not a PEM certificate (invalid DER content)");
		goto out;
	}
	/* The reader consumed whole lines up to the END line; what is left must be blank. */
	long left = BIO_get_mem_data(bio, &rest);
	if (left > 0) {
		size_t skip = skip_space(rest, (size_t)left);
		if (skip < (size_t)left) {
			fail(err, errlen, refuse_rest(rest + skip, (size_t)left - skip));
			goto out;
		}
	}
	*out = x;
	x = NULL;
	ret = 0;
out:
	OPENSSL_free(name);
	OPENSSL_free(header);
	OPENSSL_free(data);
	X509_free(x);
	BIO_free(bio);
	ERR_clear_error();
	return ret;
}

/* Copies at most outlen - 1 bytes without splitting a UTF-8 sequence. */
static void copy_truncated(char *out, size_t outlen, const char *s, size_t n)
{
	if (n >= outlen) {
		n = outlen - 1;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out, s, n);
	out[n] = '\0';
}

static int name_rfc2253(const X509_NAME *name, char *out, size_t outlen)
{
	BIO *bio = BIO_new(BIO_s_mem());
	int ret = -1;
	char *p = NULL;
	if (!bio || X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) < 0)
		goto out;
	long n = BIO_get_mem_data(bio, &p);
	if (n < 0)
		goto out;
	copy_truncated(out, outlen, p ? p : "", (size_t)n);
	ret = 0;
out:
	BIO_free(bio);
	return ret;
}

static int serial_hex(const ASN1_INTEGER *serial, char *out, size_t outlen)
{
	BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
	char *hex = bn ? BN_bn2hex(bn) : NULL;
	int ret = -1;
	if (!hex)
		goto out;
	copy_truncated(out, outlen, hex, strlen(hex));
	ret = 0;
out:
	OPENSSL_free(hex);
	BN_free(bn);
	return ret;
}

static int time_unix(const ASN1_TIME *t, int64_t *out)
{
	struct tm tm;
	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return -1;
	*out = (int64_t)timegm(&tm);
	return 0;
}

int cert_get_info(X509 *x, struct cert_info *out)
{
	int ret = -1;
	memset(out, 0, sizeof(*out));
	if (!x || cert_thumbprint(x, out->thumb) < 0 ||
	    name_rfc2253(X509_get_subject_name(x), out->subject, sizeof(out->subject)) < 0 ||
	    name_rfc2253(X509_get_issuer_name(x), out->issuer, sizeof(out->issuer)) < 0 ||
	    serial_hex(X509_get0_serialNumber(x), out->serial, sizeof(out->serial)) < 0 ||
	    time_unix(X509_get0_notBefore(x), &out->not_before) < 0 ||
	    time_unix(X509_get0_notAfter(x), &out->not_after) < 0)
		goto out;
	ret = 0;
out:
	ERR_clear_error();
	return ret;
}

/* "path: reason" from the newest OpenSSL error, or fallback when the queue is empty. */
static void fail_openssl(char *err, size_t errlen, const char *path, const char *fallback)
{
	unsigned long e = ERR_peek_last_error();
	const char *reason = e ? ERR_reason_error_string(e) : NULL;
	if (err && errlen)
		snprintf(err, errlen, "%s: %s", path, reason ? reason : fallback);
}

void cert_time_text(int64_t t, char out[CERT_TIME_TEXT_LEN])
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) ||
	    strftime(out, CERT_TIME_TEXT_LEN, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, CERT_TIME_TEXT_LEN, "%lld", (long long)t);
}

static int64_t min_time(int64_t a, int64_t b) { return a < b ? a : b; }

/* The certificate of the bundle that signed crl, or NULL. */
static X509 *crl_signer(STACK_OF(X509_OBJECT) *objs, X509_CRL *crl)
{
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		if (ca && X509_NAME_cmp(X509_get_subject_name(ca), X509_CRL_get_issuer(crl)) == 0 &&
		    X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1)
			return ca;
	}
	return NULL;
}

static bool has_crl_of(STACK_OF(X509_OBJECT) *objs, X509 *ca)
{
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
		if (crl && X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0)
			return true;
	}
	return false;
}

/* Every CRL must be signed by a certificate of the bundle and current, and every certificate
 * of the bundle must have one: the CRL is checked for every certificate of a chain, so a CA
 * without one, or with a stale one, would refuse every chain through it. A file that breaks
 * this is refused whole, before it can refuse (or, at a reload, revoke) anyone. */
static int crls_check(STACK_OF(X509_OBJECT) *objs, const char *ca_path, const char *crl_path,
		      int64_t now, char *err, size_t errlen)
{
	char who[256], when[32];
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509_CRL *crl = X509_OBJECT_get0_X509_CRL(sk_X509_OBJECT_value(objs, i));
		if (!crl)
			continue;
		int64_t last, next;
		if (name_rfc2253(X509_CRL_get_issuer(crl), who, sizeof(who)) < 0 ||
		    time_unix(X509_CRL_get0_lastUpdate(crl), &last) < 0)
			return fail_fmt(err, errlen, "%s: a CRL without a readable issuer or "
						     "lastUpdate", crl_path);
		if (!crl_signer(objs, crl))
			return fail_fmt(err, errlen, "%s: the CRL of %s is not signed by a "
						     "certificate of %s", crl_path, who, ca_path);
		if (last > now) {
			cert_time_text(last, when);
			return fail_fmt(err, errlen, "%s: the CRL of %s is not valid before %s",
					crl_path, who, when);
		}
		if (X509_CRL_get0_nextUpdate(crl) &&
		    time_unix(X509_CRL_get0_nextUpdate(crl), &next) == 0 && next <= now) {
			cert_time_text(next, when);
			return fail_fmt(err, errlen, "%s: the CRL of %s expired at %s (its "
						     "nextUpdate)", crl_path, who, when);
		}
	}
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509 *ca = X509_OBJECT_get0_X509(sk_X509_OBJECT_value(objs, i));
		if (!ca || has_crl_of(objs, ca))
			continue;
		if (name_rfc2253(X509_get_subject_name(ca), who, sizeof(who)) < 0)
			who[0] = '\0';
		return fail_fmt(err, errlen, "%s: no CRL of %s (a certificate of %s): the CRL "
					     "is checked for every certificate of a chain",
				crl_path, who, ca_path);
	}
	return 0;
}

/* The earliest time a verdict of the store can change by the clock alone: a CRL's nextUpdate
 * or the notAfter of a certificate of the bundle that is valid now (an expired one is in no
 * chain that verifies). */
static int64_t store_good_until(STACK_OF(X509_OBJECT) *objs, int64_t now)
{
	int64_t until = INT64_MAX;
	for (int i = 0; i < sk_X509_OBJECT_num(objs); i++) {
		X509_OBJECT *o = sk_X509_OBJECT_value(objs, i);
		X509_CRL *crl = X509_OBJECT_get0_X509_CRL(o);
		X509 *ca = X509_OBJECT_get0_X509(o);
		int64_t t;
		if (crl && X509_CRL_get0_nextUpdate(crl) &&
		    time_unix(X509_CRL_get0_nextUpdate(crl), &t) == 0)
			until = min_time(until, t);
		if (ca && time_unix(X509_get0_notAfter(ca), &t) == 0 && t > now)
			until = min_time(until, t);
	}
	return until;
}

int cert_store_load(const char *ca_path, const char *crl_path, struct cert_store **out, char *err,
		    size_t errlen)
{
	struct cert_store *s = calloc(1, sizeof(*s));
	int64_t now = (int64_t)time(NULL);
	int ret = -1;

	*out = NULL;
	if (!s || !(s->store = X509_STORE_new())) {
		fail(err, errlen, "out of memory");
		goto out;
	}
	X509_LOOKUP *lookup = X509_STORE_add_lookup(s->store, X509_LOOKUP_file());
	if (!lookup) {
		fail(err, errlen, "out of memory");
		goto out;
	}
	/* Both loaders read every PEM object of their kind in the file. */
	if (X509_load_cert_file(lookup, ca_path, X509_FILETYPE_PEM) <= 0) {
		fail_openssl(err, errlen, ca_path, "no CA certificate found");
		goto out;
	}
	/* The store holds what the files held and nothing is looked up later (a file lookup
	 * loads everything at once), so the objects read here are the ones verification uses. */
	STACK_OF(X509_OBJECT) *objs = X509_STORE_get0_objects(s->store);
	if (crl_path) {
		if (X509_load_crl_file(lookup, crl_path, X509_FILETYPE_PEM) <= 0) {
			fail_openssl(err, errlen, crl_path, "no CRL found");
			goto out;
		}
		if (crls_check(objs, ca_path, crl_path, now, err, errlen) < 0)
			goto out;
		/* Every certificate of the chain: a revoked intermediate refuses its leaves. */
		X509_STORE_set_flags(s->store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
	}
	s->good_until = store_good_until(objs, now);
	*out = s;
	s = NULL;
	ret = 0;
out:
	cert_store_free(s);
	ERR_clear_error();
	return ret;
}

void cert_store_free(struct cert_store *s)
{
	if (!s)
		return;
	X509_STORE_free(s->store);
	free(s);
}

X509_STORE *cert_store_x509(struct cert_store *s) { return s->store; }

int64_t cert_store_good_until(const struct cert_store *s) { return s->good_until; }

static enum cert_verdict verdict_of(int x509_err)
{
	switch (x509_err) {
	case X509_V_ERR_CERT_REVOKED: return CERT_VERIFY_REVOKED;
	case X509_V_ERR_EE_KEY_TOO_SMALL:
	case X509_V_ERR_CA_KEY_TOO_SMALL:
	case X509_V_ERR_CA_MD_TOO_WEAK: return CERT_VERIFY_WEAK;
	default: return CERT_VERIFY_UNTRUSTED;
	}
}

enum cert_verdict cert_store_verify(struct cert_store *s, X509 *x, time_t now, char *err,
				    size_t errlen)
{
	X509_STORE_CTX *ctx = X509_STORE_CTX_new();
	enum cert_verdict ret = CERT_VERIFY_UNTRUSTED;

	if (!ctx || X509_STORE_CTX_init(ctx, s->store, x, NULL) != 1 ||
	    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT) != 1) {
		fail(err, errlen, "cannot set up certificate verification");
		goto out;
	}
	X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
	X509_VERIFY_PARAM_set_time(param, now);
	/* What the handshake's own chain check enforces (OpenSSL sets the SSL's level there). */
	X509_VERIFY_PARAM_set_auth_level(param, CERT_SECURITY_LEVEL);
	if (X509_verify_cert(ctx) != 1) {
		int e = X509_STORE_CTX_get_error(ctx);
		fail(err, errlen, X509_verify_cert_error_string(e));
		ret = verdict_of(e);
		goto out;
	}
	ret = CERT_VERIFY_OK;
out:
	X509_STORE_CTX_free(ctx);
	ERR_clear_error();
	return ret;
}
