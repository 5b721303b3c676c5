/* JWS verification for bearer tokens (jwt.h): base64url and JSON decoding, the JWK set and
 * its reload, signatures through EVP_DigestVerify, the claims. Every signature, key and ASN.1
 * operation is OpenSSL's; only the JOSE framing around them is read here. */
#include "jwt.h"

#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RSA_MIN_BITS 2048
#define P256_COORD_LEN 32
#define SHA256_LEN 32

enum jwk_type { JWK_RSA, JWK_EC_P256 };

/* What each algorithm of config.h's list needs. */
static const struct {
	enum jwk_type key_type;
	int rsa_padding; /* 0 for EC */
} alg_spec[CONFIG_JWT_N_ALGS] = {
	[CONFIG_JWT_PS256] = {JWK_RSA, RSA_PKCS1_PSS_PADDING},
	[CONFIG_JWT_ES256] = {JWK_EC_P256, 0},
	[CONFIG_JWT_RS256] = {JWK_RSA, RSA_PKCS1_PADDING},
};

/* The algorithm named name, or -1 ("none", HS256 and every other name). */
static int alg_by_name(const char *name)
{
	for (int a = 0; a < CONFIG_JWT_N_ALGS; a++)
		if (strcmp(config_jwt_alg_name((enum config_jwt_alg)a), name) == 0)
			return a;
	return -1;
}

struct jwk {
	char *kid; /* NULL: none (a set of one key) */
	enum jwk_type type;
	int alg; /* the key's own "alg", or -1: any of its type */
	EVP_PKEY *pkey;
};

/* An immutable key set, freed by whoever drops the last reference. */
struct jwk_set {
	atomic_uint refs;
	size_t n;
	struct jwk key[];
};

struct jwt_verifier {
	const struct config_jwt *cfg;
	pthread_mutex_t lock; /* held to read or swap keys and take a reference */
	struct jwk_set *keys;
};

static void jwk_set_release(struct jwk_set *set)
{
	if (!set || atomic_fetch_sub(&set->refs, 1) != 1)
		return;
	for (size_t i = 0; i < set->n; i++) {
		free(set->key[i].kid);
		EVP_PKEY_free(set->key[i].pkey);
	}
	free(set);
}

static struct jwk_set *jwk_set_acquire(struct jwt_verifier *v)
{
	pthread_mutex_lock(&v->lock);
	struct jwk_set *set = v->keys;
	atomic_fetch_add(&set->refs, 1);
	pthread_mutex_unlock(&v->lock);
	return set;
}

/* --- base64url (RFC 7515 §2) ---------------------------------------------------------------- */

/* Decodes base64url without padding into a new buffer (*out_len bytes). Only the URL-safe
 * alphabet is taken, no '=', and only the canonical spelling (the unused low bits of the last
 * character zero): the bytes must encode back to the same text. NULL when not so. */
static unsigned char *b64url_decode(const char *s, size_t len, size_t *out_len)
{
	if (len % 4 == 1 || len > JWT_TOKEN_MAX)
		return NULL;
	size_t padded = (len + 3) / 4 * 4;
	char *std = malloc(padded + 1), *again = malloc(padded + 1);
	unsigned char *out = malloc(padded / 4 * 3 + 1);
	if (!std || !again || !out)
		goto fail;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '-')
			c = '+';
		else if (c == '_')
			c = '/';
		else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
			goto fail;
		std[i] = c;
	}
	memset(std + len, '=', padded - len);
	int n = EVP_DecodeBlock(out, (const unsigned char *)std, (int)padded);
	if (n < 0)
		goto fail;
	n -= (int)(padded - len); /* EVP_DecodeBlock counts the padding as zero bytes */
	if (EVP_EncodeBlock((unsigned char *)again, out, n) != (int)padded ||
	    memcmp(again, std, padded) != 0)
		goto fail;
	free(std);
	free(again);
	*out_len = (size_t)n;
	return out;
fail:
	free(std);
	free(again);
	free(out);
	return NULL;
}

/* A base64url part holding a JSON object without repeated members, or NULL. */
static json_t *b64url_json_object(const char *s, size_t len)
{
	size_t n;
	unsigned char *text = b64url_decode(s, len, &n);
	if (!text)
		return NULL;
	json_error_t jerr;
	json_t *obj = json_loadb((const char *)text, n, JSON_REJECT_DUPLICATES, &jerr);
	free(text);
	if (obj && !json_is_object(obj)) {
		json_decref(obj);
		obj = NULL;
	}
	return obj;
}

/* --- the JWK set --------------------------------------------------------------------------- */

static int __attribute__((format(printf, 3, 4)))
set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -1;
}

/* key[member] as a string: 1 present, 0 absent, -1 (err) when not a string. */
static int jwk_string(json_t *key, size_t i, const char *member, const char **out, char *err,
		      size_t errlen)
{
	json_t *v = json_object_get(key, member);
	*out = NULL;
	if (!v)
		return 0;
	if (!json_is_string(v))
		return set_err(err, errlen, "keys[%zu].%s: must be a string", i, member);
	*out = json_string_value(v);
	return 1;
}

/* key[member], required, base64url-decoded. */
static unsigned char *jwk_bytes(json_t *key, size_t i, const char *member, size_t *len, char *err,
				size_t errlen)
{
	const char *s;
	int rc = jwk_string(key, i, member, &s, err, errlen);
	if (rc == 0)
		set_err(err, errlen, "keys[%zu].%s: missing", i, member);
	if (rc <= 0)
		return NULL;
	unsigned char *bytes = b64url_decode(s, strlen(s), len);
	if (!bytes)
		set_err(err, errlen, "keys[%zu].%s: not base64url", i, member);
	return bytes;
}

/* A public key from its parameters (OSSL_PKEY_PARAM_*), checked as OpenSSL checks one. */
static EVP_PKEY *pkey_from_params(const char *type, OSSL_PARAM_BLD *bld)
{
	EVP_PKEY *pkey = NULL;
	OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL);
	if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1)
		goto out;
	EVP_PKEY_CTX *check = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	if (!check || EVP_PKEY_public_check(check) != 1) {
		EVP_PKEY_free(pkey);
		pkey = NULL;
	}
	EVP_PKEY_CTX_free(check);
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	return pkey;
}

static int jwk_rsa(json_t *key, size_t i, struct jwk *out, char *err, size_t errlen)
{
	size_t n_len = 0, e_len = 0;
	unsigned char *n = jwk_bytes(key, i, "n", &n_len, err, errlen);
	unsigned char *e = n ? jwk_bytes(key, i, "e", &e_len, err, errlen) : NULL;
	BIGNUM *bn_n = e ? BN_bin2bn(n, (int)n_len, NULL) : NULL;
	BIGNUM *bn_e = bn_n ? BN_bin2bn(e, (int)e_len, NULL) : NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	int rc = -1;
	if (!e)
		goto out;
	if (!bn_e || !bld || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) ||
	    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) ||
	    !(out->pkey = pkey_from_params("RSA", bld))) {
		set_err(err, errlen, "keys[%zu]: not a valid RSA public key", i);
		goto out;
	}
	if (EVP_PKEY_get_bits(out->pkey) < RSA_MIN_BITS) {
		set_err(err, errlen, "keys[%zu].n: %d bits, at least %d are needed", i,
			EVP_PKEY_get_bits(out->pkey), RSA_MIN_BITS);
		goto out;
	}
	rc = 0;
out:
	free(n);
	free(e);
	BN_free(bn_n);
	BN_free(bn_e);
	OSSL_PARAM_BLD_free(bld);
	return rc;
}

static int jwk_ec_p256(json_t *key, size_t i, struct jwk *out, char *err, size_t errlen)
{
	size_t x_len = 0, y_len = 0;
	unsigned char *x = jwk_bytes(key, i, "x", &x_len, err, errlen);
	unsigned char *y = x ? jwk_bytes(key, i, "y", &y_len, err, errlen) : NULL;
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	unsigned char point[1 + 2 * P256_COORD_LEN] = {POINT_CONVERSION_UNCOMPRESSED};
	int rc = -1;
	if (!y)
		goto out;
	if (x_len != P256_COORD_LEN || y_len != P256_COORD_LEN) {
		set_err(err, errlen, "keys[%zu]: x and y of a P-256 key are %d bytes each", i,
			P256_COORD_LEN);
		goto out;
	}
	memcpy(point + 1, x, P256_COORD_LEN);
	memcpy(point + 1 + P256_COORD_LEN, y, P256_COORD_LEN);
	if (!bld || !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "P-256", 0) ||
	    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point)) ||
	    !(out->pkey = pkey_from_params("EC", bld))) {
		set_err(err, errlen, "keys[%zu]: not a point of P-256", i);
		goto out;
	}
	rc = 0;
out:
	free(x);
	free(y);
	OSSL_PARAM_BLD_free(bld);
	return rc;
}

/* keys[i]: 1 usable (out set), 0 skipped, -1 (err) malformed. Keys for another use, of
 * another type or curve, or for an algorithm not verified here are skipped (RFC 7517 §5). */
static int jwk_parse(json_t *key, size_t i, struct jwk *out, char *err, size_t errlen)
{
	const char *kty, *crv, *use, *alg, *kid;
	if (!json_is_object(key))
		return set_err(err, errlen, "keys[%zu]: must be an object", i);
	int rc = jwk_string(key, i, "kty", &kty, err, errlen);
	if (rc == 0)
		return set_err(err, errlen, "keys[%zu].kty: missing", i);
	if (rc < 0 || jwk_string(key, i, "use", &use, err, errlen) < 0 ||
	    jwk_string(key, i, "alg", &alg, err, errlen) < 0 ||
	    jwk_string(key, i, "crv", &crv, err, errlen) < 0 ||
	    jwk_string(key, i, "kid", &kid, err, errlen) < 0)
		return -1;
	if (use && strcmp(use, "sig") != 0)
		return 0;
	out->alg = alg ? alg_by_name(alg) : -1;
	if (alg && out->alg < 0)
		return 0;
	if (strcmp(kty, "RSA") == 0)
		out->type = JWK_RSA;
	else if (strcmp(kty, "EC") == 0 && crv && strcmp(crv, "P-256") == 0)
		out->type = JWK_EC_P256;
	else
		return 0;
	if (out->alg >= 0 && alg_spec[out->alg].key_type != out->type)
		return set_err(err, errlen, "keys[%zu].alg: %s does not take a %s key", i, alg, kty);
	if ((out->type == JWK_RSA ? jwk_rsa : jwk_ec_p256)(key, i, out, err, errlen) < 0)
		return -1;
	if (kid && !(out->kid = strdup(kid)))
		return set_err(err, errlen, "keys[%zu]: out of memory", i);
	return 1;
}

/* The usable keys of the JWK set file at path (at least one). */
static struct jwk_set *jwk_set_load(const char *path, char *err, size_t errlen)
{
	FILE *fp = fopen(path, "re");
	if (!fp) {
		set_err(err, errlen, "%s", strerror(errno));
		return NULL;
	}
	json_error_t jerr;
	json_t *doc = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
	fclose(fp);
	if (!doc) {
		set_err(err, errlen, "line %d column %d: %s", jerr.line, jerr.column, jerr.text);
		return NULL;
	}
	json_t *keys = json_object_get(doc, "keys");
	struct jwk_set *set = NULL;
	if (!json_is_array(keys)) {
		set_err(err, errlen, "keys: missing or not an array (a JWK set is {\"keys\": [...]})");
		goto out;
	}
	if (json_array_size(keys) > JWT_MAX_KEYS) {
		set_err(err, errlen, "keys: at most %d keys", JWT_MAX_KEYS);
		goto out;
	}
	set = calloc(1, sizeof(*set) + json_array_size(keys) * sizeof(set->key[0]));
	if (!set) {
		set_err(err, errlen, "out of memory");
		goto out;
	}
	atomic_init(&set->refs, 1);
	size_t i, first_without_kid = SIZE_MAX;
	json_t *key;
	json_array_foreach(keys, i, key) {
		struct jwk *k = &set->key[set->n];
		int rc = jwk_parse(key, i, k, err, errlen);
		if (rc <= 0) {
			EVP_PKEY_free(k->pkey);
			free(k->kid);
			memset(k, 0, sizeof(*k));
			if (rc < 0)
				goto fail;
			continue;
		}
		set->n++;
		if (!k->kid && first_without_kid == SIZE_MAX)
			first_without_kid = i;
		for (size_t j = 0; k->kid && j + 1 < set->n; j++)
			if (set->key[j].kid && strcmp(set->key[j].kid, k->kid) == 0) {
				set_err(err, errlen, "keys[%zu].kid: '%s' repeated", i, k->kid);
				goto fail;
			}
	}
	if (set->n == 0) {
		set_err(err, errlen, "keys: no usable key (RSA, or EC on P-256, for signatures)");
		goto fail;
	}
	if (set->n > 1 && first_without_kid != SIZE_MAX) {
		set_err(err, errlen, "keys[%zu].kid: missing (needed when the set has several keys)",
			first_without_kid);
		goto fail;
	}
	goto out;
fail:
	jwk_set_release(set);
	set = NULL;
out:
	json_decref(doc);
	ERR_clear_error();
	return set;
}

struct jwt_verifier *jwt_verifier_new(const struct config_jwt *cfg, char *err, size_t errlen)
{
	char why[256];
	struct jwt_verifier *v = calloc(1, sizeof(*v));
	if (!v) {
		set_err(err, errlen, "jwt: out of memory");
		return NULL;
	}
	v->cfg = cfg;
	if (!(v->keys = jwk_set_load(cfg->jwks, why, sizeof(why)))) {
		set_err(err, errlen, "jwt.jwks: %s", why);
		free(v);
		return NULL;
	}
	pthread_mutex_init(&v->lock, NULL);
	return v;
}

void jwt_verifier_free(struct jwt_verifier *v)
{
	if (!v)
		return;
	jwk_set_release(v->keys);
	pthread_mutex_destroy(&v->lock);
	free(v);
}

int jwt_keys_reload(struct jwt_verifier *v, char *err, size_t errlen)
{
	char why[256];
	struct jwk_set *fresh = jwk_set_load(v->cfg->jwks, why, sizeof(why));
	if (!fresh)
		return set_err(err, errlen, "jwt.jwks: %s", why);
	pthread_mutex_lock(&v->lock);
	struct jwk_set *old = v->keys;
	v->keys = fresh;
	pthread_mutex_unlock(&v->lock);
	jwk_set_release(old);
	return (int)fresh->n;
}

/* --- signatures ------------------------------------------------------------------------------ */

/* An ES256 signature, R||S (RFC 7518 §3.4), as the DER ECDSA-Sig-Value OpenSSL verifies. */
static unsigned char *es256_der(const unsigned char *sig, size_t len, size_t *der_len)
{
	if (len != 2 * P256_COORD_LEN)
		return NULL;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *r = BN_bin2bn(sig, P256_COORD_LEN, NULL);
	BIGNUM *s = BN_bin2bn(sig + P256_COORD_LEN, P256_COORD_LEN, NULL);
	unsigned char *der = NULL;
	if (!es || !r || !s || ECDSA_SIG_set0(es, r, s) != 1) {
		BN_free(r);
		BN_free(s);
	} else {
		int n = i2d_ECDSA_SIG(es, &der);
		*der_len = n > 0 ? (size_t)n : 0;
	}
	ECDSA_SIG_free(es);
	return der;
}

static bool signature_valid(const struct jwk *k, int alg, const char *input, size_t input_len,
			    const unsigned char *sig, size_t sig_len)
{
	unsigned char *der = NULL;
	if (alg_spec[alg].key_type == JWK_EC_P256) {
		if (!(der = es256_der(sig, sig_len, &sig_len)))
			return false;
		sig = der;
	} else if (sig_len != (size_t)EVP_PKEY_get_size(k->pkey)) {
		return false;
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	bool ok = md && EVP_DigestVerifyInit_ex(md, &pctx, "SHA256", NULL, NULL, k->pkey, NULL) == 1;
	if (ok && alg_spec[alg].rsa_padding)
		ok = EVP_PKEY_CTX_set_rsa_padding(pctx, alg_spec[alg].rsa_padding) == 1;
	if (ok && alg_spec[alg].rsa_padding == RSA_PKCS1_PSS_PADDING)
		ok = EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
	ok = ok && EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input, input_len) == 1;
	EVP_MD_CTX_free(md);
	OPENSSL_free(der);
	ERR_clear_error();
	return ok;
}

/* The key of the header's kid (without one: the set's only key). */
static const struct jwk *key_for(const struct jwk_set *set, json_t *header, const char **why)
{
	json_t *kid = json_object_get(header, "kid");
	if (!kid) {
		if (set->n == 1)
			return &set->key[0];
		*why = "token has no kid and the key set has several keys";
		return NULL;
	}
	if (!json_is_string(kid)) {
		*why = "token kid is not a string";
		return NULL;
	}
	for (size_t i = 0; i < set->n; i++)
		if (set->key[i].kid && strcmp(set->key[i].kid, json_string_value(kid)) == 0)
			return &set->key[i];
	*why = "token kid unknown";
	return NULL;
}

/* --- claims ----------------------------------------------------------------------------------- */

static bool audience_holds(json_t *aud, const char *audience)
{
	if (json_is_string(aud))
		return strcmp(json_string_value(aud), audience) == 0;
	size_t i;
	json_t *a;
	bool found = false;
	json_array_foreach(aud, i, a) {
		if (!json_is_string(a))
			return false;
		found = found || strcmp(json_string_value(a), audience) == 0;
	}
	return found;
}

/* RFC 8705 §3: cnf.x5t#S256 against the certificate of the handshake. */
static const char *binding_problem(const struct config_jwt *cfg, json_t *claims,
				   const uint8_t *cert_sha256)
{
	json_t *cnf = json_object_get(claims, "cnf");
	if (cnf && !json_is_object(cnf))
		return "token cnf is not an object";
	json_t *x5t = cnf ? json_object_get(cnf, "x5t#S256") : NULL;
	if (!x5t)
		return cfg->require_cnf ? "token is not bound to a certificate (no cnf x5t#S256)"
					: NULL;
	size_t len;
	unsigned char *thumb = json_is_string(x5t) ?
		b64url_decode(json_string_value(x5t), json_string_length(x5t), &len) : NULL;
	const char *problem = NULL;
	if (!thumb || len != SHA256_LEN)
		problem = "token cnf x5t#S256 is not a base64url SHA-256";
	else if (!cert_sha256 || CRYPTO_memcmp(thumb, cert_sha256, SHA256_LEN) != 0)
		problem = "token is bound to another certificate";
	free(thumb);
	return problem;
}

static const char *claims_problem(const struct config_jwt *cfg, json_t *claims,
				  const uint8_t *cert_sha256, int64_t now)
{
	json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
	json_t *iss = json_object_get(claims, "iss"), *aud = json_object_get(claims, "aud");
	if (!exp || !json_is_number(exp))
		return "token has no numeric exp";
	if (!((double)(now - (int64_t)cfg->leeway_s) < json_number_value(exp)))
		return "token expired";
	if (nbf && !json_is_number(nbf))
		return "token nbf is not a number";
	if (nbf && !((double)(now + (int64_t)cfg->leeway_s) >= json_number_value(nbf)))
		return "token not valid yet (nbf)";
	if (cfg->issuer && !(json_is_string(iss) && strcmp(json_string_value(iss), cfg->issuer) == 0))
		return "token issuer (iss) not accepted";
	if (!(json_is_string(aud) || (json_is_array(aud) && json_array_size(aud) > 0)) ||
	    !audience_holds(aud, cfg->audience))
		return "token audience (aud) not accepted";
	return binding_problem(cfg, claims, cert_sha256);
}

/* --- verification ------------------------------------------------------------------------------ */

static enum jwt_verdict verify_with(const struct config_jwt *cfg, const struct jwk_set *set,
				    const char *token, size_t len, const uint8_t *cert_sha256,
				    int64_t now, json_t **claims, const char **why)
{
	if (len > JWT_TOKEN_MAX) {
		*why = "token too large";
		return JWT_INVALID;
	}
	const char *end = token + len, *dot1 = memchr(token, '.', len);
	const char *dot2 = dot1 ? memchr(dot1 + 1, '.', (size_t)(end - dot1 - 1)) : NULL;
	if (!dot2 || memchr(dot2 + 1, '.', (size_t)(end - dot2 - 1))) {
		*why = "token is not a JWS in compact form (three parts)";
		return JWT_INVALID;
	}
	enum jwt_verdict verdict = JWT_INVALID;
	unsigned char *sig = NULL;
	json_t *payload = NULL, *header = b64url_json_object(token, (size_t)(dot1 - token));
	json_t *alg_name = header ? json_object_get(header, "alg") : NULL;
	int alg = json_is_string(alg_name) ? alg_by_name(json_string_value(alg_name)) : -1;
	const struct jwk *key;
	size_t sig_len;
	if (!header) {
		*why = "token header is not base64url of a JSON object";
	} else if (alg < 0 || !(cfg->algorithms & (1u << alg))) {
		*why = "token algorithm not allowed";
	} else if (json_object_get(header, "crit")) {
		*why = "token header has crit extensions";
	} else if (!(key = key_for(set, header, why))) {
		/* why set */
	} else if (key->type != alg_spec[alg].key_type || (key->alg >= 0 && key->alg != alg)) {
		*why = "token algorithm does not match its key";
	} else if (!(sig = b64url_decode(dot2 + 1, (size_t)(end - dot2 - 1), &sig_len))) {
		*why = "token signature is not base64url";
	} else if (!signature_valid(key, alg, token, (size_t)(dot2 - token), sig, sig_len)) {
		*why = "token signature invalid";
	} else if (!(payload = b64url_json_object(dot1 + 1, (size_t)(dot2 - dot1 - 1)))) {
		*why = "token payload is not base64url of a JSON object";
	} else if (!(*why = claims_problem(cfg, payload, cert_sha256, now))) {
		*claims = payload;
		payload = NULL;
		verdict = JWT_VALID;
	}
	json_decref(header);
	json_decref(payload);
	free(sig);
	return verdict;
}

enum jwt_verdict jwt_verify(struct jwt_verifier *v, const char *token, size_t len,
			    const uint8_t *cert_sha256, int64_t now, json_t **claims,
			    const char **why)
{
	*claims = NULL;
	*why = NULL;
	struct jwk_set *set = jwk_set_acquire(v);
	enum jwt_verdict verdict = verify_with(v->cfg, set, token, len, cert_sha256, now, claims,
					       why);
	jwk_set_release(set);
	return verdict;
}

/* --- requests ------------------------------------------------------------------------------- */

/* RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"=" */
static bool is_b64token(const char *s, size_t len)
{
	size_t i = 0;
	while (i < len && ((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') ||
			   (s[i] >= '0' && s[i] <= '9') || strchr("-._~+/", s[i])))
		i++;
	if (i == 0)
		return false;
	while (i < len && s[i] == '=')
		i++;
	return i == len;
}

enum jwt_verdict jwt_check_request(struct jwt_check *c, struct jwt_verifier *v,
				   const struct http_msg *req, const uint8_t *cert_sha256,
				   int64_t now)
{
	if (c->verdict != JWT_UNCHECKED)
		return c->verdict;
	static const char scheme[] = "Bearer";
	size_t len, skip = sizeof(scheme) - 1;
	unsigned count;
	const char *value = http_msg_header(req, "authorization", &len, &count);
	if (value && count > 1) {
		c->verdict = JWT_INVALID;
		c->why = "more than one Authorization header";
	} else if (!value || len < skip || strncasecmp(value, scheme, skip) != 0 ||
		   (len > skip && value[skip] != ' ')) {
		c->verdict = JWT_MISSING;
		c->why = "no bearer token (Authorization: Bearer)";
	} else {
		while (skip < len && value[skip] == ' ')
			skip++;
		if (!is_b64token(value + skip, len - skip)) {
			c->verdict = JWT_INVALID;
			c->why = "bearer token malformed";
		} else {
			c->verdict = jwt_verify(v, value + skip, len - skip, cert_sha256, now,
						&c->claims, &c->why);
		}
	}
	return c->verdict;
}

int jwt_check_challenge(const struct jwt_check *c, struct buf *headers)
{
	return buf_append_str(headers, c->verdict == JWT_MISSING
					       ? "WWW-Authenticate: Bearer\r\n"
					       : "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n");
}

void jwt_check_clear(struct jwt_check *c)
{
	json_decref(c->claims);
	memset(c, 0, sizeof(*c));
}
