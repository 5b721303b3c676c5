/* Fuzzes jwt_verify. Input: a first byte, then
 *   - first byte even: the token as it comes;
 *   - first byte odd: a header JSON text, '\n', a payload JSON text, which the harness encodes
 *     and signs (ES256, with the set's EC key, whatever the header says), so that the claims
 *     and header checks behind the signature are reached.
 * The key set (made at start): an EC P-256 key "ec" and an RSA key "rsa"; PS256 and ES256
 * allowed, require_cnf, issuer "iss", audience "aud", leeway 30 s, now 2000000000.
 * Invariants:
 *   - the same verdict twice; claims exactly when valid, and a reason exactly when not;
 *   - a valid token is at most JWT_TOKEN_MAX bytes and was signed here (raw tokens never
 *     verify: the keys are new each run), its header's alg is ES256 and its kid, if any,
 *     "ec", its claims meet the rules (exp, nbf, iss, aud, cnf of the certificate). */
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jwt.h"

#define NOW 2000000000
#define CNF "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo" /* base64url of cert */

static const uint8_t cert[32] = {[0 ... 31] = 0xaa};
static EVP_PKEY *ec_key;
static struct config_jwt cfg;
static struct jwt_verifier *verifier;

static char *b64url(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *c = out; *c; c++)
		*c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
	return out;
}

static char *bn_b64url(EVP_PKEY *k, const char *param, int pad)
{
	BIGNUM *bn = NULL;
	unsigned char buf[512];
	if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
		abort();
	int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
	BN_free(bn);
	return b64url(buf, (size_t)n);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc, (void)argv;
	ec_key = EVP_EC_gen("P-256");
	EVP_PKEY *rsa = EVP_RSA_gen(2048);
	static char path[64];
	snprintf(path, sizeof(path), "/tmp/psd2e-fuzz-jwks.%d", (int)getpid());
	char *x = bn_b64url(ec_key, OSSL_PKEY_PARAM_EC_PUB_X, 32);
	char *y = bn_b64url(ec_key, OSSL_PKEY_PARAM_EC_PUB_Y, 32);
	char *n = bn_b64url(rsa, OSSL_PKEY_PARAM_RSA_N, 0);
	FILE *fp = fopen(path, "w");
	if (!fp)
		abort();
	fprintf(fp, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"ec\",\"x\":\"%s\","
		    "\"y\":\"%s\"},{\"kty\":\"RSA\",\"kid\":\"rsa\",\"n\":\"%s\",\"e\":\"AQAB\"}]}",
		x, y, n);
	fclose(fp);
	free(x);
	free(y);
	free(n);
	EVP_PKEY_free(rsa);
	cfg = (struct config_jwt){.jwks = path, .issuer = "iss", .audience = "aud",
				  .algorithms = CONFIG_JWT_DEFAULT_ALGS, .leeway_s = 30,
				  .require_cnf = true};
	char err[256];
	verifier = jwt_verifier_new(&cfg, err, sizeof(err));
	if (!verifier) {
		fprintf(stderr, "fuzz_jwt: %s\n", err);
		abort();
	}
	unlink(path);
	return 0;
}

/* header '\n' payload, encoded and signed ES256 (R||S). */
static char *signed_token(const uint8_t *data, size_t size, size_t *len)
{
	const uint8_t *nl = memchr(data, '\n', size);
	if (!nl)
		return NULL;
	char *header = b64url(data, (size_t)(nl - data));
	char *payload = b64url(nl + 1, size - (size_t)(nl + 1 - data));
	char *input;
	if (asprintf(&input, "%s.%s", header, payload) < 0)
		abort();
	free(header);
	free(payload);
	unsigned char der[128], raw[64];
	size_t der_len = sizeof(der);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, ec_key, NULL) != 1 ||
	    EVP_DigestSign(md, der, &der_len, (unsigned char *)input, strlen(input)) != 1)
		abort();
	EVP_MD_CTX_free(md);
	const unsigned char *p = der;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
	if (!es || BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32) != 32 ||
	    BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32) != 32)
		abort();
	ECDSA_SIG_free(es);
	char *sig = b64url(raw, sizeof(raw)), *token;
	if (asprintf(&token, "%s.%s", input, sig) < 0)
		abort();
	free(input);
	free(sig);
	*len = strlen(token);
	return token;
}

static void check_valid(json_t *header, json_t *claims)
{
	json_t *alg = json_object_get(header, "alg"), *kid = json_object_get(header, "kid");
	if (!json_is_string(alg) || strcmp(json_string_value(alg), "ES256") != 0)
		abort();
	if (kid && (!json_is_string(kid) || strcmp(json_string_value(kid), "ec") != 0))
		abort();
	json_t *exp = json_object_get(claims, "exp"), *nbf = json_object_get(claims, "nbf");
	json_t *iss = json_object_get(claims, "iss"), *aud = json_object_get(claims, "aud");
	json_t *cnf = json_object_get(claims, "cnf");
	json_t *x5t = json_is_object(cnf) ? json_object_get(cnf, "x5t#S256") : NULL;
	if (!json_is_number(exp) || !(json_number_value(exp) > NOW - 30))
		abort();
	if (nbf && (!json_is_number(nbf) || json_number_value(nbf) > NOW + 30))
		abort();
	if (!json_is_string(iss) || strcmp(json_string_value(iss), "iss") != 0)
		abort();
	if (!json_is_string(aud) && !json_is_array(aud))
		abort();
	if (!json_is_string(x5t) || strcmp(json_string_value(x5t), CNF) != 0)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	bool sign = data[0] & 1;
	size_t len = size - 1;
	char *token = sign ? signed_token(data + 1, size - 1, &len) : malloc(len ? len : 1);
	if (!token)
		return 0;
	if (!sign)
		memcpy(token, data + 1, len);
	json_t *claims, *again;
	const char *why, *why_again;
	enum jwt_verdict v = jwt_verify(verifier, token, len, cert, NOW, &claims, &why);
	enum jwt_verdict v2 = jwt_verify(verifier, token, len, cert, NOW, &again, &why_again);
	if (v != v2 || (v == JWT_VALID) != (claims != NULL) || (v == JWT_VALID) != (why == NULL) ||
	    (v != JWT_VALID && v != JWT_INVALID))
		abort();
	if (v == JWT_VALID) {
		if (!sign || len > JWT_TOKEN_MAX)
			abort();
		const uint8_t *nl = memchr(data + 1, '\n', size - 1);
		json_error_t jerr;
		json_t *header = json_loadb((const char *)data + 1, (size_t)(nl - data - 1), 0, &jerr);
		check_valid(header, claims);
		json_decref(header);
	}
	json_decref(claims);
	json_decref(again);
	free(token);
	return 0;
}
