/* JWS verification (jwt.h) against keys and tokens this test makes with OpenSSL: a fixture
 * table of tokens (good PS256 and ES256, every claim and header refusal, algorithm confusion
 * with the public key as an HMAC secret, malformed base64url and JSON, size), one of JWK set
 * files, one of Authorization headers, and the key set's reload, alone and under concurrent
 * verifications. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "jwt.h"

#define NOW 2000000000 /* the verifier's clock in every case */
#define ISSUER "https://as.bank.example"
#define AUDIENCE "psd2edge"

/* The client certificates' SHA-256 (32 bytes of 0xaa, of 0xbb) and their base64url. */
#define CERT_A_X5T "qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqo"
#define CERT_B_X5T "u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7u7s"
static const uint8_t cert_a[32] = {[0 ... 31] = 0xaa};
static const uint8_t cert_b[32] = {[0 ... 31] = 0xbb};

#define ISS "\"iss\":\"" ISSUER "\""
#define AUD "\"aud\":\"" AUDIENCE "\""
#define EXP "\"exp\":2000000060"
#define CNF_A "\"cnf\":{\"x5t#S256\":\"" CERT_A_X5T "\"}"
#define GOOD_CLAIMS "{" ISS "," AUD "," EXP "," CNF_A ",\"client_id\":\"tpp-a\"}"

enum key_id { KEY_RSA1, KEY_RSA_RS, KEY_EC1, KEY_RSA_FOREIGN, KEY_EC_FOREIGN, KEY_RSA_1024, N_KEYS };

enum sig_kind {
	SIG_PS256,
	SIG_PS256_SALT_MAX, /* PSS with the longest salt instead of the hash's length */
	SIG_RS256,
	SIG_ES256,
	SIG_ES256_DER, /* the DER ECDSA-Sig-Value instead of R||S */
	SIG_HS256_PEM, /* HMAC keyed with the key's public PEM */
	SIG_HS256_DER, /* HMAC keyed with the key's public DER */
	SIG_NONE,      /* empty */
};

struct keys {
	EVP_PKEY *k[N_KEYS];
	char dir[64];
	char jwks[128];        /* rsa-1, ec-1 (alg ES256), rsa-rs (alg RS256), an oct and an enc key */
	char jwks_single[128]; /* ec-1 without a kid */
};

/* --- encoding helpers ------------------------------------------------------------------------- */

static char *b64url(const void *data, size_t len)
{
	char *out = malloc(4 * ((len + 2) / 3) + 1);
	assert_non_null(out);
	int n = EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (char *c = out; *c; c++)
		*c = *c == '+' ? '-' : *c == '/' ? '_' : *c;
	return out;
}

static char *bn_b64url(const BIGNUM *bn, int pad)
{
	unsigned char buf[1024];
	int n = pad ? BN_bn2binpad(bn, buf, pad) : BN_bn2bin(bn, buf);
	assert_true(n > 0);
	return b64url(buf, (size_t)n);
}

/* A JWK of the key's public part; kid and alg NULL to leave them out. */
static char *jwk_json(EVP_PKEY *pkey, const char *kid, const char *alg)
{
	char *a, *b, *out;
	BIGNUM *p = NULL, *q = NULL;
	bool rsa = EVP_PKEY_is_a(pkey, "RSA");
	assert_int_equal(EVP_PKEY_get_bn_param(pkey, rsa ? OSSL_PKEY_PARAM_RSA_N : OSSL_PKEY_PARAM_EC_PUB_X, &p), 1);
	assert_int_equal(EVP_PKEY_get_bn_param(pkey, rsa ? OSSL_PKEY_PARAM_RSA_E : OSSL_PKEY_PARAM_EC_PUB_Y, &q), 1);
	a = bn_b64url(p, rsa ? 0 : 32);
	b = bn_b64url(q, rsa ? 0 : 32);
	char kid_member[80] = "", alg_member[40] = "";
	if (kid)
		snprintf(kid_member, sizeof(kid_member), ",\"kid\":\"%s\"", kid);
	if (alg)
		snprintf(alg_member, sizeof(alg_member), ",\"alg\":\"%s\"", alg);
	assert_true(asprintf(&out, rsa ? "{\"kty\":\"RSA\",\"n\":\"%s\",\"e\":\"%s\"%s%s}"
				      : "{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"%s\",\"y\":\"%s\"%s%s}",
			     a, b, kid_member, alg_member) > 0);
	free(a);
	free(b);
	BN_free(p);
	BN_free(q);
	return out;
}

static void write_file(const char *path, const char *text)
{
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(text, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
}

/* text with each @NAME@ replaced: RSA1, RSA1_NOKID, RSA1_AS_ES256, RSA1024, EC1, EC1_NOKID. */
static char *expand(const struct keys *k, const char *text)
{
	static const struct {
		const char *name;
		enum key_id key;
		const char *kid, *alg;
	} names[] = {
		{"@RSA1@", KEY_RSA1, "rsa-1", NULL},     {"@RSA1_NOKID@", KEY_RSA1, NULL, NULL},
		{"@RSA1_AS_ES256@", KEY_RSA1, "x", "ES256"}, {"@RSA1024@", KEY_RSA_1024, "small", NULL},
		{"@EC1@", KEY_EC1, "ec-1", "ES256"},     {"@EC1_NOKID@", KEY_EC1, NULL, NULL},
	};
	char *out = strdup(text);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *at;
		while ((at = strstr(out, names[i].name))) {
			char *jwk = jwk_json(k->k[names[i].key], names[i].kid, names[i].alg), *next;
			assert_true(asprintf(&next, "%.*s%s%s", (int)(at - out), out, jwk,
					     at + strlen(names[i].name)) > 0);
			free(jwk);
			free(out);
			out = next;
		}
	}
	return out;
}

static int setup(void **state)
{
	struct keys *k = calloc(1, sizeof(*k));
	assert_non_null(k);
	k->k[KEY_RSA1] = EVP_RSA_gen(2048);
	k->k[KEY_RSA_RS] = EVP_RSA_gen(2048);
	k->k[KEY_RSA_FOREIGN] = EVP_RSA_gen(2048);
	k->k[KEY_RSA_1024] = EVP_RSA_gen(1024);
	k->k[KEY_EC1] = EVP_EC_gen("P-256");
	k->k[KEY_EC_FOREIGN] = EVP_EC_gen("P-256");
	for (int i = 0; i < N_KEYS; i++)
		assert_non_null(k->k[i]);
	snprintf(k->dir, sizeof(k->dir), "/tmp/psd2e-jwt.XXXXXX");
	assert_non_null(mkdtemp(k->dir));
	snprintf(k->jwks, sizeof(k->jwks), "%s/jwks.json", k->dir);
	snprintf(k->jwks_single, sizeof(k->jwks_single), "%s/single.json", k->dir);
	char *rs = jwk_json(k->k[KEY_RSA_RS], "rsa-rs", "RS256"), *text, *set;
	assert_true(asprintf(&text, "{\"keys\":[@RSA1@,@EC1@,%s,"
				    "{\"kty\":\"oct\",\"kid\":\"hmac\",\"k\":\"c2VjcmV0\"},"
				    "{\"kty\":\"EC\",\"kid\":\"enc\",\"use\":\"enc\",\"crv\":\"P-256\","
				    "\"x\":\"AA\",\"y\":\"AA\"}]}", rs) > 0);
	write_file(k->jwks, set = expand(k, text));
	free(set);
	free(text);
	free(rs);
	write_file(k->jwks_single, set = expand(k, "{\"keys\":[@EC1_NOKID@]}"));
	free(set);
	*state = k;
	return 0;
}

static int teardown(void **state)
{
	struct keys *k = *state;
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", k->dir);
	assert_int_equal(system(cmd), 0);
	for (int i = 0; i < N_KEYS; i++)
		EVP_PKEY_free(k->k[i]);
	free(k);
	return 0;
}

/* --- signing -------------------------------------------------------------------------------- */

static char *public_key_bytes(EVP_PKEY *pkey, bool pem, size_t *len)
{
	BIO *bio = BIO_new(BIO_s_mem());
	assert_int_equal(pem ? PEM_write_bio_PUBKEY(bio, pkey) : i2d_PUBKEY_bio(bio, pkey), 1);
	char *data;
	long n = BIO_get_mem_data(bio, &data);
	char *copy = malloc((size_t)n);
	memcpy(copy, data, (size_t)n);
	*len = (size_t)n;
	BIO_free(bio);
	return copy;
}

/* The base64url signature of input by key, as sig says. */
static char *sign(EVP_PKEY *key, enum sig_kind sig, const char *input, size_t input_len)
{
	unsigned char out[1024];
	size_t len = sizeof(out);
	if (sig == SIG_NONE)
		return strdup("");
	if (sig == SIG_HS256_PEM || sig == SIG_HS256_DER) {
		size_t secret_len;
		char *secret = public_key_bytes(key, sig == SIG_HS256_PEM, &secret_len);
		unsigned int mac_len;
		assert_non_null(HMAC(EVP_sha256(), secret, (int)secret_len,
				     (const unsigned char *)input, input_len, out, &mac_len));
		free(secret);
		return b64url(out, mac_len);
	}
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx;
	assert_int_equal(EVP_DigestSignInit_ex(md, &pctx, "SHA256", NULL, NULL, key, NULL), 1);
	if (sig == SIG_PS256 || sig == SIG_PS256_SALT_MAX) {
		assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
		assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(
					 pctx, sig == SIG_PS256 ? 32 : RSA_PSS_SALTLEN_MAX), 1);
	}
	assert_int_equal(EVP_DigestSign(md, out, &len, (const unsigned char *)input, input_len), 1);
	EVP_MD_CTX_free(md);
	if (sig == SIG_ES256) {
		const unsigned char *p = out;
		ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
		assert_non_null(es);
		assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), out, 32), 32);
		assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), out + 32, 32), 32);
		ECDSA_SIG_free(es);
		len = 64;
	}
	return b64url(out, len);
}

/* --- the token table -------------------------------------------------------------------------- */

enum mutation {
	MUT_NONE,
	MUT_PAD_HEADER,         /* the header padded with '=' (signed so) */
	MUT_PAD_PAYLOAD,        /* the payload padded with '=' (signed so) */
	MUT_PAD_SIGNATURE,      /* the signature padded with '=' */
	MUT_PAYLOAD_CHAR,       /* payload[5] = bad_char (signed so) */
	MUT_NONCANONICAL,       /* the payload's last character with an unused bit set (signed so) */
	MUT_TWO_PARTS,          /* no signature part */
	MUT_FOUR_PARTS,         /* a fourth part */
	MUT_FLIP_SIGNATURE,     /* one bit of the signature changed */
	MUT_FILLER,             /* a "filler" claim of filler bytes */
};

struct token_case {
	const char *desc;
	const char *header; /* JSON text; NULL: {"alg":alg,"kid":kid} */
	const char *alg, *kid;
	enum key_id key;
	enum sig_kind sig;
	const char *claims;
	enum mutation mut;
	char bad_char;
	size_t filler;
	uint32_t algorithms; /* 0: the default */
	bool cnf_optional;
	bool single_key_set;
	const uint8_t *cert; /* default cert_a; &no_cert for none */
	enum jwt_verdict want;
	const char *why; /* a part of the reason */
};

static const uint8_t no_cert[1];

#define PS256_RSA1 .alg = "PS256", .kid = "rsa-1", .key = KEY_RSA1, .sig = SIG_PS256
#define ES256_EC1 .alg = "ES256", .kid = "ec-1", .key = KEY_EC1, .sig = SIG_ES256
#define RS256_RSA1 .alg = "RS256", .kid = "rsa-1", .key = KEY_RSA1, .sig = SIG_RS256
#define ALL_ALGS (1u << CONFIG_JWT_PS256 | 1u << CONFIG_JWT_ES256 | 1u << CONFIG_JWT_RS256)

static const struct token_case token_cases[] = {
	/* good tokens */
	{"PS256", PS256_RSA1, .claims = GOOD_CLAIMS, .want = JWT_VALID},
	{"ES256", ES256_EC1, .claims = GOOD_CLAIMS, .want = JWT_VALID},
	{"RS256 when listed", RS256_RSA1, .claims = GOOD_CLAIMS, .algorithms = ALL_ALGS,
	 .want = JWT_VALID},
	{"aud an array holding the audience", PS256_RSA1,
	 .claims = "{" ISS ",\"aud\":[\"other\",\"" AUDIENCE "\"]," EXP "," CNF_A "}", .want = JWT_VALID},
	{"no cnf, not required", PS256_RSA1, .claims = "{" ISS "," AUD "," EXP "}",
	 .cnf_optional = true, .want = JWT_VALID},
	{"exp a real number", PS256_RSA1, .claims = "{" ISS "," AUD ",\"exp\":2000000000.5," CNF_A "}",
	 .want = JWT_VALID},
	{"no kid, a set of one key", .alg = "ES256", .key = KEY_EC1, .sig = SIG_ES256,
	 .claims = GOOD_CLAIMS, .single_key_set = true, .want = JWT_VALID},
	{"just under the size limit", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_FILLER,
	 .filler = 11500, .want = JWT_VALID},

	/* algorithms */
	{"RS256 not listed", RS256_RSA1, .claims = GOOD_CLAIMS, .want = JWT_INVALID,
	 .why = "algorithm not allowed"},
	{"PS256 not listed", PS256_RSA1, .claims = GOOD_CLAIMS, .algorithms = 1u << CONFIG_JWT_ES256,
	 .want = JWT_INVALID, .why = "algorithm not allowed"},
	{"alg none, no signature", .alg = "none", .kid = "rsa-1", .key = KEY_RSA1, .sig = SIG_NONE,
	 .claims = GOOD_CLAIMS, .algorithms = ALL_ALGS, .want = JWT_INVALID,
	 .why = "algorithm not allowed"},
	{"alg None", .alg = "None", .kid = "rsa-1", .key = KEY_RSA1, .sig = SIG_NONE,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "algorithm not allowed"},
	{"HS256 keyed with the RSA key's public PEM", .alg = "HS256", .kid = "rsa-1", .key = KEY_RSA1,
	 .sig = SIG_HS256_PEM, .claims = GOOD_CLAIMS, .algorithms = ALL_ALGS, .want = JWT_INVALID,
	 .why = "algorithm not allowed"},
	{"HS256 keyed with the RSA key's public DER", .alg = "HS256", .kid = "rsa-1", .key = KEY_RSA1,
	 .sig = SIG_HS256_DER, .claims = GOOD_CLAIMS, .want = JWT_INVALID,
	 .why = "algorithm not allowed"},
	{"HS256 keyed with the EC key's public PEM", .alg = "HS256", .kid = "ec-1", .key = KEY_EC1,
	 .sig = SIG_HS256_PEM, .claims = GOOD_CLAIMS, .want = JWT_INVALID,
	 .why = "algorithm not allowed"},
	{"HS256 naming the set's oct key", .alg = "HS256", .kid = "hmac", .key = KEY_RSA1,
	 .sig = SIG_HS256_PEM, .claims = GOOD_CLAIMS, .want = JWT_INVALID,
	 .why = "algorithm not allowed"},
	{"alg not a string", .header = "{\"alg\":[\"PS256\"],\"kid\":\"rsa-1\"}", .key = KEY_RSA1,
	 .sig = SIG_PS256, .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "algorithm not allowed"},
	{"ES256 header, RSA key", .alg = "ES256", .kid = "rsa-1", .key = KEY_EC1, .sig = SIG_ES256,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "does not match its key"},
	{"PS256 on a key whose alg is RS256", .alg = "PS256", .kid = "rsa-rs", .key = KEY_RSA_RS,
	 .sig = SIG_PS256, .claims = GOOD_CLAIMS, .algorithms = ALL_ALGS, .want = JWT_INVALID,
	 .why = "does not match its key"},
	{"RS256 signature under a PS256 header", .alg = "PS256", .kid = "rsa-1", .key = KEY_RSA1,
	 .sig = SIG_RS256, .claims = GOOD_CLAIMS, .algorithms = ALL_ALGS, .want = JWT_INVALID,
	 .why = "signature invalid"},
	{"PSS with another salt length", .alg = "PS256", .kid = "rsa-1", .key = KEY_RSA1,
	 .sig = SIG_PS256_SALT_MAX, .claims = GOOD_CLAIMS, .want = JWT_INVALID,
	 .why = "signature invalid"},
	{"ES256 signature in DER", .alg = "ES256", .kid = "ec-1", .key = KEY_EC1, .sig = SIG_ES256_DER,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "signature invalid"},
	{"crit extension", .header = "{\"alg\":\"PS256\",\"kid\":\"rsa-1\",\"crit\":[\"b64\"],"
				     "\"b64\":false}",
	 .key = KEY_RSA1, .sig = SIG_PS256, .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "crit"},

	/* keys and signatures */
	{"kid unknown", .alg = "PS256", .kid = "rsa-9", .key = KEY_RSA1, .sig = SIG_PS256,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "kid unknown"},
	{"kid of a key for encryption", .alg = "ES256", .kid = "enc", .key = KEY_EC1, .sig = SIG_ES256,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "kid unknown"},
	{"kid naming the set's key that has none", ES256_EC1, .claims = GOOD_CLAIMS,
	 .single_key_set = true, .want = JWT_INVALID, .why = "kid unknown"},
	{"no kid, a set of several keys", .alg = "PS256", .key = KEY_RSA1, .sig = SIG_PS256,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "several keys"},
	{"kid a number", .header = "{\"alg\":\"PS256\",\"kid\":1}", .key = KEY_RSA1, .sig = SIG_PS256,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "kid is not a string"},
	{"signed by another RSA key", .alg = "PS256", .kid = "rsa-1", .key = KEY_RSA_FOREIGN,
	 .sig = SIG_PS256, .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "signature invalid"},
	{"signed by another EC key", .alg = "ES256", .kid = "ec-1", .key = KEY_EC_FOREIGN,
	 .sig = SIG_ES256, .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "signature invalid"},
	{"one signature bit flipped", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_FLIP_SIGNATURE,
	 .want = JWT_INVALID, .why = "signature invalid"},
	{"ES256 one signature bit flipped", ES256_EC1, .claims = GOOD_CLAIMS,
	 .mut = MUT_FLIP_SIGNATURE, .want = JWT_INVALID, .why = "signature invalid"},

	/* times: now 2000000000, leeway 30 */
	{"expired", PS256_RSA1, .claims = "{" ISS "," AUD ",\"exp\":1999999000," CNF_A "}",
	 .want = JWT_INVALID, .why = "expired"},
	{"exp = now - leeway", PS256_RSA1, .claims = "{" ISS "," AUD ",\"exp\":1999999970," CNF_A "}",
	 .want = JWT_INVALID, .why = "expired"},
	{"exp = now - leeway + 1", PS256_RSA1,
	 .claims = "{" ISS "," AUD ",\"exp\":1999999971," CNF_A "}", .want = JWT_VALID},
	{"no exp", PS256_RSA1, .claims = "{" ISS "," AUD "," CNF_A "}", .want = JWT_INVALID,
	 .why = "no numeric exp"},
	{"exp a string", PS256_RSA1, .claims = "{" ISS "," AUD ",\"exp\":\"2000000060\"," CNF_A "}",
	 .want = JWT_INVALID, .why = "no numeric exp"},
	{"nbf in the future", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"nbf\":2000000100," CNF_A "}", .want = JWT_INVALID,
	 .why = "not valid yet"},
	{"nbf = now + leeway", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"nbf\":2000000030," CNF_A "}", .want = JWT_VALID},
	{"nbf = now + leeway + 1", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"nbf\":2000000031," CNF_A "}", .want = JWT_INVALID,
	 .why = "not valid yet"},
	{"nbf a string", PS256_RSA1, .claims = "{" ISS "," AUD "," EXP ",\"nbf\":\"0\"," CNF_A "}",
	 .want = JWT_INVALID, .why = "nbf is not a number"},

	/* issuer and audience */
	{"wrong iss", PS256_RSA1,
	 .claims = "{\"iss\":\"https://evil.example\"," AUD "," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "issuer"},
	{"no iss", PS256_RSA1, .claims = "{" AUD "," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "issuer"},
	{"iss a prefix of the issuer", PS256_RSA1,
	 .claims = "{\"iss\":\"https://as.bank\"," AUD "," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "issuer"},
	{"wrong aud", PS256_RSA1, .claims = "{" ISS ",\"aud\":\"other\"," EXP "," CNF_A "}",
	 .want = JWT_INVALID, .why = "audience"},
	{"no aud", PS256_RSA1, .claims = "{" ISS "," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "audience"},
	{"aud an array without the audience", PS256_RSA1,
	 .claims = "{" ISS ",\"aud\":[\"other\"]," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "audience"},
	{"aud an empty array", PS256_RSA1, .claims = "{" ISS ",\"aud\":[]," EXP "," CNF_A "}",
	 .want = JWT_INVALID, .why = "audience"},
	{"aud an array with a number", PS256_RSA1,
	 .claims = "{" ISS ",\"aud\":[\"" AUDIENCE "\",1]," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "audience"},

	/* certificate binding (RFC 8705) */
	{"bound to another certificate", PS256_RSA1, .claims = GOOD_CLAIMS, .cert = cert_b,
	 .want = JWT_INVALID, .why = "bound to another certificate"},
	{"bound to B, presented with B", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"cnf\":{\"x5t#S256\":\"" CERT_B_X5T "\"}}",
	 .cert = cert_b, .want = JWT_VALID},
	{"bound, no client certificate", PS256_RSA1, .claims = GOOD_CLAIMS, .cert = no_cert,
	 .want = JWT_INVALID, .why = "bound to another certificate"},
	{"no cnf, required", PS256_RSA1, .claims = "{" ISS "," AUD "," EXP "}", .want = JWT_INVALID,
	 .why = "not bound to a certificate"},
	{"cnf without x5t#S256, required", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"cnf\":{\"jkt\":\"abc\"}}", .want = JWT_INVALID,
	 .why = "not bound to a certificate"},
	{"wrong cnf, not required: still checked", PS256_RSA1, .claims = GOOD_CLAIMS, .cert = cert_b,
	 .cnf_optional = true, .want = JWT_INVALID, .why = "bound to another certificate"},
	{"cnf x5t#S256 of 31 bytes", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"cnf\":{\"x5t#S256\":\"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqg\"}}",
	 .want = JWT_INVALID, .why = "not a base64url SHA-256"},
	{"cnf x5t#S256 padded", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"cnf\":{\"x5t#S256\":\"" CERT_A_X5T "=\"}}",
	 .want = JWT_INVALID, .why = "not a base64url SHA-256"},
	{"cnf x5t#S256 in hex", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP ",\"cnf\":{\"x5t#S256\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}}",
	 .want = JWT_INVALID, .why = "not a base64url SHA-256"},
	{"cnf a string", PS256_RSA1, .claims = "{" ISS "," AUD "," EXP ",\"cnf\":\"" CERT_A_X5T "\"}",
	 .want = JWT_INVALID, .why = "cnf is not an object"},

	/* base64url */
	{"header padded", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAD_HEADER,
	 .want = JWT_INVALID, .why = "header is not base64url"},
	{"payload padded", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAD_PAYLOAD,
	 .want = JWT_INVALID, .why = "payload is not base64url"},
	{"signature padded", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAD_SIGNATURE,
	 .want = JWT_INVALID, .why = "signature is not base64url"},
	{"payload with '+'", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAYLOAD_CHAR,
	 .bad_char = '+', .want = JWT_INVALID, .why = "payload is not base64url"},
	{"payload with '/'", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAYLOAD_CHAR,
	 .bad_char = '/', .want = JWT_INVALID, .why = "payload is not base64url"},
	{"payload with a space", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAYLOAD_CHAR,
	 .bad_char = ' ', .want = JWT_INVALID, .why = "payload is not base64url"},
	{"payload with a newline", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAYLOAD_CHAR,
	 .bad_char = '\n', .want = JWT_INVALID, .why = "payload is not base64url"},
	{"payload with a NUL", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_PAYLOAD_CHAR,
	 .bad_char = '\0', .want = JWT_INVALID, .why = "payload is not base64url"},
	{"payload's last character not canonical", PS256_RSA1, .claims = GOOD_CLAIMS,
	 .mut = MUT_NONCANONICAL, .want = JWT_INVALID, .why = "payload is not base64url"},
	{"two parts", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_TWO_PARTS, .want = JWT_INVALID,
	 .why = "three parts"},
	{"four parts", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_FOUR_PARTS, .want = JWT_INVALID,
	 .why = "three parts"},

	/* JSON */
	{"header not JSON", .header = "{\"alg\":\"PS256\",\"kid\":\"rsa-1\"", .key = KEY_RSA1,
	 .sig = SIG_PS256, .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "header is not"},
	{"header an array", .header = "[\"PS256\"]", .key = KEY_RSA1, .sig = SIG_PS256,
	 .claims = GOOD_CLAIMS, .want = JWT_INVALID, .why = "header is not"},
	{"header alg repeated", .header = "{\"alg\":\"none\",\"kid\":\"rsa-1\",\"alg\":\"PS256\"}",
	 .key = KEY_RSA1, .sig = SIG_PS256, .claims = GOOD_CLAIMS, .want = JWT_INVALID,
	 .why = "header is not"},
	{"payload not JSON", PS256_RSA1, .claims = "{" ISS "," AUD "," EXP ",", .want = JWT_INVALID,
	 .why = "payload is not"},
	{"payload a string", PS256_RSA1, .claims = "\"" AUDIENCE "\"", .want = JWT_INVALID,
	 .why = "payload is not"},
	{"payload aud repeated", PS256_RSA1,
	 .claims = "{" ISS ",\"aud\":\"other\"," AUD "," EXP "," CNF_A "}", .want = JWT_INVALID,
	 .why = "payload is not"},
	{"payload cnf repeated", PS256_RSA1,
	 .claims = "{" ISS "," AUD "," EXP "," CNF_A ",\"cnf\":{\"x5t#S256\":\"" CERT_B_X5T "\"}}",
	 .cert = cert_b, .want = JWT_INVALID, .why = "payload is not"},

	/* size */
	{"over the size limit", PS256_RSA1, .claims = GOOD_CLAIMS, .mut = MUT_FILLER, .filler = 12500,
	 .want = JWT_INVALID, .why = "too large"},
};

static const char b64url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The base64url of *text, after spaces appended to the JSON text until the encoding ends
 * in a partial quantum (so that it can be padded, or have unused bits). */
static char *b64url_unaligned(char **text)
{
	char *out;
	while (strlen(out = b64url(*text, strlen(*text))) % 4 == 0) {
		char *spaced;
		assert_true(asprintf(&spaced, "%s ", *text) > 0);
		free(*text);
		*text = spaced;
		free(out);
	}
	return out;
}

/* part + '=' up to a multiple of 4. */
static char *padded(char *part)
{
	size_t len = strlen(part), pad = (4 - len % 4) % 4;
	assert_true(pad > 0);
	char *out;
	assert_true(asprintf(&out, "%s%.*s", part, (int)pad, "===") > 0);
	free(part);
	return out;
}

/* The token of case c; *len its length (it may hold a NUL). */
static char *make_token(const struct keys *k, const struct token_case *c, size_t *len)
{
	char *header_text = NULL, *claims = strdup(c->claims);
	if (c->header)
		header_text = strdup(c->header);
	else if (c->kid)
		assert_true(asprintf(&header_text, "{\"alg\":\"%s\",\"kid\":\"%s\",\"typ\":\"JWT\"}",
				     c->alg, c->kid) > 0);
	else
		assert_true(asprintf(&header_text, "{\"alg\":\"%s\"}", c->alg) > 0);
	if (c->mut == MUT_FILLER) {
		char *filled;
		assert_true(asprintf(&filled, "{\"filler\":\"%0*d\",%s", (int)c->filler, 0,
				     claims + 1) > 0);
		free(claims);
		claims = filled;
	}
	char *header = c->mut == MUT_PAD_HEADER ? padded(b64url_unaligned(&header_text))
						: b64url(header_text, strlen(header_text));
	char *payload = c->mut == MUT_PAD_PAYLOAD    ? padded(b64url_unaligned(&claims))
			: c->mut == MUT_NONCANONICAL ? b64url_unaligned(&claims)
						     : b64url(claims, strlen(claims));
	size_t header_len = strlen(header), payload_len = strlen(payload);
	if (c->mut == MUT_PAYLOAD_CHAR)
		payload[5] = c->bad_char;
	if (c->mut == MUT_NONCANONICAL) {
		char *last = &payload[payload_len - 1];
		*last = b64url_alphabet[(strchr(b64url_alphabet, *last) - b64url_alphabet) | 1];
	}
	size_t input_len = header_len + 1 + payload_len;
	char *input = malloc(input_len + 1);
	memcpy(input, header, header_len);
	input[header_len] = '.';
	memcpy(input + header_len + 1, payload, payload_len);
	input[input_len] = '\0';
	char *sig = sign(k->k[c->key], c->sig, input, input_len);
	if (c->mut == MUT_PAD_SIGNATURE)
		sig = padded(sig);
	if (c->mut == MUT_FLIP_SIGNATURE)
		sig[10] = sig[10] == 'A' ? 'B' : 'A';
	size_t sig_len = strlen(sig);
	char *token = malloc(input_len + sig_len + 4); /* input "." sig ".x" */
	memcpy(token, input, input_len);
	snprintf(token + input_len, sig_len + 4, ".%s.x", sig);
	*len = input_len + 1 + sig_len + (c->mut == MUT_FOUR_PARTS ? 2 : 0);
	if (c->mut == MUT_TWO_PARTS)
		*len = input_len;
	token[*len] = '\0';
	free(header_text);
	free(claims);
	free(header);
	free(payload);
	free(input);
	free(sig);
	return token;
}

static struct config_jwt case_config(const struct keys *k, const struct token_case *c)
{
	return (struct config_jwt){
		.jwks = (char *)(c->single_key_set ? k->jwks_single : k->jwks),
		.issuer = ISSUER,
		.audience = AUDIENCE,
		.algorithms = c->algorithms ? c->algorithms : CONFIG_JWT_DEFAULT_ALGS,
		.leeway_s = 30,
		.require_cnf = !c->cnf_optional,
	};
}

static void test_tokens(void **state)
{
	struct keys *k = *state;
	for (size_t i = 0; i < sizeof(token_cases) / sizeof(token_cases[0]); i++) {
		const struct token_case *c = &token_cases[i];
		struct config_jwt cfg = case_config(k, c);
		char err[256];
		struct jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof(err));
		if (!v)
			fail_msg("%s: %s", c->desc, err);
		size_t len;
		char *token = make_token(k, c, &len);
		const uint8_t *cert = c->cert == no_cert ? NULL : c->cert ? c->cert : cert_a;
		json_t *claims;
		const char *why;
		enum jwt_verdict got = jwt_verify(v, token, len, cert, NOW, &claims, &why);
		if (got != c->want || (c->why && (!why || !strstr(why, c->why))))
			fail_msg("case '%s': verdict %d (%s), want %d (%s)", c->desc, got,
				 why ? why : "-", c->want, c->why ? c->why : "-");
		assert_true((got == JWT_VALID) == (claims != NULL));
		if (claims && !c->filler && c->claims == (const char *)GOOD_CLAIMS)
			assert_string_equal(json_string_value(json_object_get(claims, "client_id")),
					    "tpp-a");
		json_decref(claims);
		free(token);
		jwt_verifier_free(v);
	}
}

/* --- the JWK set file ----------------------------------------------------------------------- */

static const struct jwks_case {
	const char *desc;
	const char *text; /* @NAME@: a key, see expand() */
	const char *err;  /* NULL: loads */
} jwks_cases[] = {
	{"one RSA key", "{\"keys\":[@RSA1@]}", NULL},
	{"one key without kid", "{\"keys\":[@RSA1_NOKID@]}", NULL},
	{"RSA and EC", "{\"keys\":[@RSA1@,@EC1@]}", NULL},
	{"an unknown kty beside a good key", "{\"keys\":[{\"kty\":\"OKP\",\"kid\":\"o\"},@EC1@]}", NULL},
	{"not JSON", "{\"keys\":[", "jwt.jwks: line 1"},
	{"keys repeated", "{\"keys\":[],\"keys\":[@RSA1@]}", "duplicate"},
	{"no keys", "{}", "jwt.jwks: keys: missing or not an array"},
	{"keys an object", "{\"keys\":{}}", "keys: missing or not an array"},
	{"keys empty", "{\"keys\":[]}", "keys: no usable key"},
	{"only an oct key", "{\"keys\":[{\"kty\":\"oct\",\"kid\":\"h\",\"k\":\"c2VjcmV0\"}]}",
	 "keys: no usable key"},
	{"only a P-384 key", "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"AA\",\"y\":\"AA\"}]}",
	 "keys: no usable key"},
	{"a key not an object", "{\"keys\":[@RSA1@,3]}", "keys[1]: must be an object"},
	{"no kty", "{\"keys\":[{\"kid\":\"a\"}]}", "keys[0].kty: missing"},
	{"kty a number", "{\"keys\":[{\"kty\":1}]}", "keys[0].kty: must be a string"},
	{"kid a number", "{\"keys\":[{\"kty\":\"RSA\",\"kid\":7}]}", "keys[0].kid: must be a string"},
	{"RSA without n", "{\"keys\":[{\"kty\":\"RSA\",\"e\":\"AQAB\"}]}", "keys[0].n: missing"},
	{"RSA n padded", "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB=\",\"e\":\"AQAB\"}]}",
	 "keys[0].n: not base64url"},
	{"RSA e with '+'", "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AQAB\",\"e\":\"AQ+B\"}]}",
	 "keys[0].e: not base64url"},
	{"RSA of 1024 bits", "{\"keys\":[@RSA1024@]}", "keys[0].n: 1024 bits"},
	{"RSA n even", "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AAAA\",\"e\":\"AQAB\"}]}",
	 "keys[0]: not a valid RSA public key"},
	{"RSA key declared ES256", "{\"keys\":[@RSA1_AS_ES256@]}", "keys[0].alg: ES256 does not take"},
	{"EC x of 31 bytes",
	 "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"qqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqqg\","
	 "\"y\":\"" CERT_A_X5T "\"}]}", "keys[0]: x and y"},
	{"EC point not on the curve",
	 "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"x\":\"" CERT_A_X5T "\",\"y\":\"" CERT_A_X5T
	 "\"}]}", "keys[0]: not a point of P-256"},
	{"kid repeated", "{\"keys\":[@RSA1@,@RSA1@]}", "keys[1].kid: 'rsa-1' repeated"},
	{"two keys, one without kid", "{\"keys\":[@RSA1@,@EC1_NOKID@]}", "keys[1].kid: missing"},
};

static void test_jwks(void **state)
{
	struct keys *k = *state;
	char path[128];
	snprintf(path, sizeof(path), "%s/case.json", k->dir);
	for (size_t i = 0; i < sizeof(jwks_cases) / sizeof(jwks_cases[0]); i++) {
		const struct jwks_case *c = &jwks_cases[i];
		char *text = expand(k, c->text), err[256] = "";
		write_file(path, text);
		free(text);
		struct config_jwt cfg = {.jwks = path, .audience = AUDIENCE,
					 .algorithms = CONFIG_JWT_DEFAULT_ALGS};
		struct jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof(err));
		if (c->err ? v || !strstr(err, c->err) : !v)
			fail_msg("case '%s': got '%s', want '%s'", c->desc, v ? "loaded" : err,
				 c->err ? c->err : "loaded");
		jwt_verifier_free(v);
	}
	struct config_jwt missing = {.jwks = "/nonexistent/jwks.json", .audience = AUDIENCE};
	char err[256];
	assert_null(jwt_verifier_new(&missing, err, sizeof(err)));
	assert_string_equal(err, "jwt.jwks: No such file or directory");
}

/* --- Authorization headers ------------------------------------------------------------------- */

static const struct bearer_case {
	const char *desc;
	const char *headers; /* @TOKEN@: a good ES256 token */
	enum jwt_verdict want;
	const char *challenge;
} bearer_cases[] = {
	{"Bearer", "Authorization: Bearer @TOKEN@\r\n", JWT_VALID, NULL},
	{"scheme in lower case", "authorization: bearer @TOKEN@\r\n", JWT_VALID, NULL},
	{"scheme in upper case, several spaces", "Authorization: BEARER   @TOKEN@\r\n", JWT_VALID,
	 NULL},
	{"no Authorization", "", JWT_MISSING, "WWW-Authenticate: Bearer\r\n"},
	{"Basic", "Authorization: Basic dXNlcjpwYXNz\r\n", JWT_MISSING,
	 "WWW-Authenticate: Bearer\r\n"},
	{"Bearerx", "Authorization: Bearerx @TOKEN@\r\n", JWT_MISSING, "WWW-Authenticate: Bearer\r\n"},
	{"Bearer and a tab", "Authorization: Bearer\t@TOKEN@\r\n", JWT_MISSING,
	 "WWW-Authenticate: Bearer\r\n"},
	{"Bearer without a token", "Authorization: Bearer\r\n", JWT_INVALID,
	 "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"},
	{"two tokens", "Authorization: Bearer @TOKEN@ @TOKEN@\r\n", JWT_INVALID,
	 "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"},
	{"a quoted token", "Authorization: Bearer \"@TOKEN@\"\r\n", JWT_INVALID,
	 "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"},
	{"two Authorization headers", "Authorization: Bearer @TOKEN@\r\nAuthorization: Bearer @TOKEN@\r\n",
	 JWT_INVALID, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"},
	{"Basic, then Bearer", "Authorization: Basic dXNlcjpwYXNz\r\nAuthorization: Bearer @TOKEN@\r\n",
	 JWT_INVALID, "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"},
	{"an expired token", "Authorization: Bearer @EXPIRED@\r\n", JWT_INVALID,
	 "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n"},
};

static char *replace_all(const char *text, const char *name, const char *value)
{
	char *out = strdup(text), *at;
	while ((at = strstr(out, name))) {
		char *next;
		assert_true(asprintf(&next, "%.*s%s%s", (int)(at - out), out, value,
				     at + strlen(name)) > 0);
		free(out);
		out = next;
	}
	return out;
}

static void test_bearer(void **state)
{
	struct keys *k = *state;
	const struct token_case good = {"good", ES256_EC1, .claims = GOOD_CLAIMS};
	const struct token_case expired = {"expired", ES256_EC1,
					   .claims = "{" ISS "," AUD ",\"exp\":1," CNF_A "}"};
	struct config_jwt cfg = case_config(k, &good);
	char err[256];
	struct jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof(err));
	assert_non_null(v);
	size_t len;
	char *good_token = make_token(k, &good, &len), *expired_token = make_token(k, &expired, &len);
	const struct http_limits lim = {.max_header_bytes = 65536, .max_body_bytes = 1 << 20};
	for (size_t i = 0; i < sizeof(bearer_cases) / sizeof(bearer_cases[0]); i++) {
		const struct bearer_case *c = &bearer_cases[i];
		char *headers = replace_all(c->headers, "@TOKEN@", good_token), *h2, *request;
		h2 = replace_all(headers, "@EXPIRED@", expired_token);
		assert_true(asprintf(&request, "GET /a HTTP/1.1\r\nHost: gw\r\n%s\r\n", h2) > 0);
		struct http_msg req;
		http_msg_init(&req, HTTP_REQUEST, &lim);
		assert_int_equal(http_msg_feed(&req, request, strlen(request), NULL, NULL),
				 strlen(request));
		assert_int_equal(req.state, HTTP_MSG_DONE);
		struct jwt_check check = {0};
		enum jwt_verdict got = jwt_check_request(&check, v, &req, cert_a, NOW);
		if (got != c->want)
			fail_msg("case '%s': verdict %d (%s), want %d", c->desc, got,
				 check.why ? check.why : "-", c->want);
		/* A second look is the first one's verdict: the token is verified once. */
		assert_int_equal(jwt_check_request(&check, NULL, &req, cert_a, NOW), got);
		if (c->challenge) {
			struct buf hdr = {0};
			assert_int_equal(jwt_check_challenge(&check, &hdr), 0);
			assert_int_equal(hdr.len, strlen(c->challenge));
			assert_memory_equal(buf_head(&hdr), c->challenge, hdr.len);
			buf_free(&hdr);
		}
		jwt_check_clear(&check);
		http_msg_free(&req);
		free(request);
		free(headers);
		free(h2);
	}
	free(good_token);
	free(expired_token);
	jwt_verifier_free(v);
}

/* --- reload ------------------------------------------------------------------------------------ */

static enum jwt_verdict verify_case(struct jwt_verifier *v, const struct keys *k,
				    const struct token_case *c)
{
	size_t len;
	char *token = make_token(k, c, &len);
	json_t *claims;
	const char *why;
	enum jwt_verdict got = jwt_verify(v, token, len, cert_a, NOW, &claims, &why);
	json_decref(claims);
	free(token);
	return got;
}

static void test_reload(void **state)
{
	struct keys *k = *state;
	char path[128], err[256];
	snprintf(path, sizeof(path), "%s/reload.json", k->dir);
	char *rsa_only = expand(k, "{\"keys\":[@RSA1@]}"), *ec_only = expand(k, "{\"keys\":[@EC1@]}");
	write_file(path, rsa_only);
	const struct token_case rsa = {"rsa", PS256_RSA1, .claims = GOOD_CLAIMS};
	const struct token_case ec = {"ec", ES256_EC1, .claims = GOOD_CLAIMS};
	struct config_jwt cfg = case_config(k, &rsa);
	cfg.jwks = path;
	struct jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof(err));
	assert_non_null(v);
	assert_int_equal(verify_case(v, k, &rsa), JWT_VALID);
	assert_int_equal(verify_case(v, k, &ec), JWT_INVALID);

	write_file(path, ec_only);
	assert_int_equal(jwt_keys_reload(v, err, sizeof(err)), 1);
	assert_int_equal(verify_case(v, k, &rsa), JWT_INVALID);
	assert_int_equal(verify_case(v, k, &ec), JWT_VALID);

	/* A file that does not load keeps the set in use. */
	write_file(path, "{\"keys\":[{\"kty\":\"RSA\",\"n\":\"AAAA\",\"e\":\"AQAB\"}]}");
	assert_int_equal(jwt_keys_reload(v, err, sizeof(err)), -1);
	assert_string_equal(err, "jwt.jwks: keys[0]: not a valid RSA public key");
	assert_int_equal(verify_case(v, k, &ec), JWT_VALID);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(jwt_keys_reload(v, err, sizeof(err)), -1);
	assert_int_equal(verify_case(v, k, &ec), JWT_VALID);

	jwt_verifier_free(v);
	free(rsa_only);
	free(ec_only);
}

struct verifying_thread {
	struct jwt_verifier *v;
	const char *token;
	size_t len;
	atomic_bool *stop;
	unsigned runs, failures;
};

static void *verify_loop(void *arg)
{
	struct verifying_thread *t = arg;
	while (!atomic_load(t->stop) || t->runs < 50) {
		json_t *claims;
		const char *why;
		if (jwt_verify(t->v, t->token, t->len, cert_a, NOW, &claims, &why) != JWT_VALID)
			t->failures++;
		json_decref(claims);
		t->runs++;
	}
	return NULL;
}

/* Reloads while workers verify: each verification sees a whole set (both files hold the
 * token's key), and no set is freed under one (ASan). */
static void test_reload_concurrent(void **state)
{
	struct keys *k = *state;
	char path[128], err[256];
	snprintf(path, sizeof(path), "%s/concurrent.json", k->dir);
	char *small = expand(k, "{\"keys\":[@EC1@]}"), *large = expand(k, "{\"keys\":[@RSA1@,@EC1@]}");
	write_file(path, small);
	const struct token_case ec = {"ec", ES256_EC1, .claims = GOOD_CLAIMS};
	struct config_jwt cfg = case_config(k, &ec);
	cfg.jwks = path;
	struct jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof(err));
	assert_non_null(v);
	size_t len;
	char *token = make_token(k, &ec, &len);
	atomic_bool stop = false;
	struct verifying_thread t[3];
	pthread_t tid[3];
	for (int i = 0; i < 3; i++) {
		t[i] = (struct verifying_thread){.v = v, .token = token, .len = len, .stop = &stop};
		assert_int_equal(pthread_create(&tid[i], NULL, verify_loop, &t[i]), 0);
	}
	for (int r = 0; r < 200; r++) {
		write_file(path, r % 2 ? small : large);
		assert_int_equal(jwt_keys_reload(v, err, sizeof(err)), r % 2 ? 1 : 2);
	}
	atomic_store(&stop, true);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(pthread_join(tid[i], NULL), 0);
		assert_int_equal(t[i].failures, 0);
	}
	jwt_verifier_free(v);
	free(token);
	free(small);
	free(large);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tokens),
		cmocka_unit_test(test_jwks),
		cmocka_unit_test(test_bearer),
		cmocka_unit_test(test_reload),
		cmocka_unit_test(test_reload_concurrent),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
