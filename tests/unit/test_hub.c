/* Unit tests for hub mode's protocol pieces (user/hub.c): PKCE, pending consents, the
 * authorization URL, the token endpoint's forms and answers, the stored record, the
 * id_token's checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hub.h"

#define NOW 1800000000

static const struct config_hub HUB = {
	.authorization_endpoint = "https://bank.test/authorize",
	.token_endpoint = "/token",
	.client_id = "tpp at bank",
	.redirect_uri = "https://tpp.test/cb?x=1",
	.scopes = "openid accounts",
	.refresh_margin_s = 60,
};

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

static char *buf_text(struct buf *b)
{
	/* Not strndup: a buf holds no NUL, and strndup may read one byte past its length. */
	char *s = malloc(b->len + 1);
	assert_non_null(s);
	memcpy(s, buf_head(b), b->len);
	s[b->len] = '\0';
	return s;
}

/* --- PKCE and random values ---------------------------------------------------------------- */

static void test_pkce(void **state)
{
	(void)state;
	/* Independently: printf %s VERIFIER | openssl dgst -sha256 -binary | basenc --base64url */
	char challenge[HUB_B64_256 + 1];
	hub_pkce_challenge("dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk", challenge);
	assert_string_equal(challenge, "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc");

	char a[HUB_B64_256 + 1], b[HUB_B64_256 + 1];
	assert_int_equal(hub_random_b64url(a), 0);
	assert_int_equal(hub_random_b64url(b), 0);
	assert_int_equal(strlen(a), HUB_B64_256);
	assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"),
			 HUB_B64_256);
	assert_string_not_equal(a, b);
}

/* --- pending consents ------------------------------------------------------------------------ */

static void test_pending(void **state)
{
	(void)state;
	static struct hub_pending_table t;
	struct hub_pending *p, got;
	const char *why = NULL;
	memset(&t, 0, sizeof(t));

	assert_int_equal(hub_pending_add(&t, "backend", "alice", 3, NOW, &p, &why), 0);
	char st[HUB_B64_256 + 1];
	strcpy(st, p->state);
	assert_string_not_equal(p->state, p->nonce);
	assert_string_not_equal(p->nonce, p->verifier);
	assert_int_equal(p->expires_at, NOW + HUB_PENDING_TTL_S);

	/* Another backend cannot take it, and leaves it for its owner. */
	assert_false(hub_pending_take(&t, st, "other-backend", NOW, &got));
	assert_int_equal(t.n, 1);
	/* A state is good for one callback. */
	assert_true(hub_pending_take(&t, st, "backend", NOW + 1, &got));
	assert_string_equal(got.user, "alice");
	assert_string_equal(got.state, st);
	assert_int_equal(got.route, 3);
	assert_false(hub_pending_take(&t, st, "backend", NOW + 1, &got));
	assert_int_equal(t.n, 0);

	/* An expired consent is gone; a state of the wrong length is never looked up. */
	assert_int_equal(hub_pending_add(&t, "backend", "bob", 0, NOW, &p, &why), 0);
	strcpy(st, p->state);
	assert_false(hub_pending_take(&t, st, "backend", NOW + HUB_PENDING_TTL_S, &got));
	assert_false(hub_pending_take(&t, "short", "backend", NOW, &got));

	char long_user[HUB_USER_MAX + 2];
	memset(long_user, 'u', sizeof(long_user) - 1);
	long_user[sizeof(long_user) - 1] = '\0';
	struct {
		const char *client_id, *user, *why;
	} bad[] = {
		{"backend", "", "user must be 1 to 128 bytes"},
		{"backend", long_user, "user must be 1 to 128 bytes"},
		{"", "alice", "the client_id must be 1 to 128 bytes"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(hub_pending_add(&t, bad[i].client_id, bad[i].user, 0, NOW, &p, &why),
				 -1);
		assert_string_equal(why, bad[i].why);
	}

	/* Full of live consents: refused; once they expire there is room again. */
	memset(&t, 0, sizeof(t));
	for (unsigned i = 0; i < HUB_PENDING_MAX; i++)
		assert_int_equal(hub_pending_add(&t, "backend", "u", 0, NOW, &p, &why), 0);
	assert_int_equal(hub_pending_add(&t, "backend", "u", 0, NOW, &p, &why), -1);
	assert_string_equal(why, "too many consents are waiting for their callback");
	assert_int_equal(hub_pending_add(&t, "backend", "u", 0, NOW + HUB_PENDING_TTL_S, &p, &why),
			 0);
	assert_int_equal(t.n, 1);
}

/* --- URL and forms --------------------------------------------------------------------------- */

static void test_url_and_forms(void **state)
{
	(void)state;
	struct hub_pending p = {
		.state = "STATE-_~", .nonce = "nonce", .verifier =
			"dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk",
	};
	struct buf b = {0};
	assert_int_equal(hub_authorization_url(&HUB, &p, &b), 0);
	char *s = buf_text(&b);
	assert_string_equal(s, "https://bank.test/authorize?response_type=code&client_id=tpp%20at%20"
			       "bank&redirect_uri=https%3A%2F%2Ftpp.test%2Fcb%3Fx%3D1&scope=openid"
			       "%20accounts&state=STATE-_~&nonce=nonce&code_challenge=ngF5GsXcbw"
			       "ljx6u133FFr3Xht9xooA_DuaX_3QwODtc&code_challenge_method=S256");
	free(s);

	/* An authorization endpoint with a query of its own keeps it. */
	struct config_hub h = HUB;
	h.authorization_endpoint = "https://bank.test/authorize?realm=x";
	buf_reset(&b);
	assert_int_equal(hub_authorization_url(&h, &p, &b), 0);
	s = buf_text(&b);
	assert_true(strncmp(s, "https://bank.test/authorize?realm=x&response_type=code&", 55) == 0);
	free(s);

	buf_reset(&b);
	assert_int_equal(hub_token_form_code(&HUB, "c+/=&", "ver", &b), 0);
	s = buf_text(&b);
	assert_string_equal(s, "grant_type=authorization_code&code=c%2B%2F%3D%26&redirect_uri="
			       "https%3A%2F%2Ftpp.test%2Fcb%3Fx%3D1&client_id=tpp%20at%20bank&"
			       "code_verifier=ver");
	free(s);
	buf_reset(&b);
	assert_int_equal(hub_token_form_refresh(&HUB, "rt-1", &b), 0);
	s = buf_text(&b);
	assert_string_equal(s, "grant_type=refresh_token&refresh_token=rt-1&client_id=tpp%20at%20"
			       "bank");
	free(s);
	buf_free(&b);
}

/* The callback's query: one state and one code, percent-decoded, visible ASCII. */
static void test_query_param(void **state)
{
	(void)state;
	struct {
		const char *query, *name;
		int rc;
		const char *value;
	} cases[] = {
		{"state=abc&code=x%2By", "code", 1, "x+y"},
		{"state=abc&code=x%2By", "state", 1, "abc"},
		{"state=abc", "code", 0, NULL},
		{"xcode=1&code=2", "code", 1, "2"}, /* a longer name is another parameter */
		{"code", "code", 0, NULL},
		{"code=1&code=1", "code", -1, NULL}, /* repeated: which one was meant? */
		{"code=", "code", -1, NULL},
		{"code=a+b", "code", -1, NULL},  /* a space */
		{"code=a%0Ab", "code", -1, NULL}, /* a control */
		{"code=a%zz", "code", -1, NULL},
		{"code=a%4", "code", -1, NULL},
		{"code=%C3%A9", "code", -1, NULL}, /* not ASCII */
		{"code=0123456789", "code", -1, NULL}, /* longer than the room */
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[10] = "";
		int rc = hub_query_param(cases[i].query, strlen(cases[i].query), cases[i].name, out,
					 sizeof(out));
		assert_int_equal(rc, cases[i].rc);
		if (rc == 1)
			assert_string_equal(out, cases[i].value);
	}
}

/* --- token answers and the stored record ------------------------------------------------------ */

#define BAD(body, why) {body, why, NULL, NULL, NULL, 0}

static void test_token_answers(void **state)
{
	(void)state;
	struct {
		const char *body;
		const char *why; /* NULL: accepted */
		const char *access, *refresh, *id;
		int64_t expires_at;
	} cases[] = {
		{"{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":300}", NULL,
		 "at", NULL, NULL, NOW + 300},
		{"{\"access_token\":\"at\",\"token_type\":\"bearer\",\"expires_in\":1,"
		 "\"refresh_token\":\"rt\",\"id_token\":\"a.b.c\",\"scope\":\"x\"}", NULL,
		 "at", "rt", "a.b.c", NOW + 1},
		BAD("not json", "the token answer is not a JSON object"),
		BAD("[1]", "the token answer is not a JSON object"),
		BAD("{\"access_token\":\"at\",\"access_token\":\"at2\",\"token_type\":\"Bearer\","
		 "\"expires_in\":300}", "the token answer is not a JSON object"),
		BAD("{\"access_token\":\"at\",\"expires_in\":300}",
		 "the token answer's token_type is not Bearer"),
		BAD("{\"access_token\":\"at\",\"token_type\":\"DPoP\",\"expires_in\":300}",
		 "the token answer's token_type is not Bearer"),
		BAD("{\"access_token\":\"at\",\"token_type\":\"Bearer\"}",
		 "the token answer's expires_in is not 1 second to a year"),
		BAD("{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":0}",
		 "the token answer's expires_in is not 1 second to a year"),
		BAD("{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":\"300\"}",
		 "the token answer's expires_in is not 1 second to a year"),
		BAD("{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":31708801}",
		 "the token answer's expires_in is not 1 second to a year"),
		BAD("{\"token_type\":\"Bearer\",\"expires_in\":300}",
		 "the token answer's access_token, refresh_token or id_token is not a token"),
		BAD("{\"access_token\":\"a t\",\"token_type\":\"Bearer\",\"expires_in\":300}",
		 "the token answer's access_token, refresh_token or id_token is not a token"),
		BAD("{\"access_token\":\"at\\r\\nX: y\",\"token_type\":\"Bearer\",\"expires_in\":300}",
		 "the token answer's access_token, refresh_token or id_token is not a token"),
		BAD("{\"access_token\":\"at\",\"token_type\":\"Bearer\",\"expires_in\":300,"
		 "\"refresh_token\":7}",
		 "the token answer's access_token, refresh_token or id_token is not a token"),
		BAD("{\"access_token\":\"\",\"token_type\":\"Bearer\",\"expires_in\":300}",
		 "the token answer's access_token, refresh_token or id_token is not a token"),
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct hub_tokens t;
		const char *why = "unset";
		int rc = hub_tokens_parse(cases[i].body, strlen(cases[i].body), NOW, &t, &why);
		if (cases[i].why) {
			assert_int_equal(rc, -1);
			assert_string_equal(why, cases[i].why);
			assert_null(t.access_token);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_string_equal(t.access_token, cases[i].access);
		if (cases[i].refresh)
			assert_string_equal(t.refresh_token, cases[i].refresh);
		else
			assert_null(t.refresh_token);
		if (cases[i].id)
			assert_string_equal(t.id_token, cases[i].id);
		else
			assert_null(t.id_token);
		assert_int_equal(t.expires_at, cases[i].expires_at);
		hub_tokens_free(&t);
	}
}

static void test_refresh_and_record(void **state)
{
	(void)state;
	struct {
		int64_t expires_at, now;
		uint32_t margin;
		bool refresh;
	} when[] = {
		{NOW + 300, NOW, 60, false},
		{NOW + 61, NOW, 60, false},
		{NOW + 60, NOW, 60, true}, /* within the margin */
		{NOW + 10, NOW, 60, true},
		{NOW, NOW, 0, true},       /* expired */
		{NOW + 1, NOW, 0, false},
		{NOW - 5, NOW, 0, true},
	};
	for (size_t i = 0; i < sizeof(when) / sizeof(when[0]); i++) {
		struct hub_tokens t = {.expires_at = when[i].expires_at};
		assert_int_equal(hub_tokens_need_refresh(&t, when[i].now, when[i].margin),
				 when[i].refresh);
	}

	const char *code_answer = "{\"access_token\":\"at1\",\"token_type\":\"Bearer\","
				  "\"expires_in\":300,\"refresh_token\":\"rt1\",\"id_token\":\"x\"}";
	struct hub_tokens t, back, fresh;
	const char *why;
	assert_int_equal(hub_tokens_parse(code_answer, strlen(code_answer), NOW, &t, &why), 0);
	t.client_id = strdup("backend");
	struct buf b = {0};
	assert_int_equal(hub_tokens_to_payload(&t, &b), 0);
	char *s = buf_text(&b);
	assert_null(strstr(s, "id_token")); /* used once, at the callback; never stored */
	free(s);
	assert_int_equal(hub_tokens_from_payload(buf_head(&b), b.len, &back), 0);
	assert_string_equal(back.access_token, "at1");
	assert_string_equal(back.refresh_token, "rt1");
	assert_string_equal(back.client_id, "backend");
	assert_int_equal(back.expires_at, NOW + 300);

	/* A refresh that rotates the refresh token, then one that keeps it. */
	const char *rotated = "{\"access_token\":\"at2\",\"token_type\":\"Bearer\","
			      "\"expires_in\":60,\"refresh_token\":\"rt2\"}";
	assert_int_equal(hub_tokens_parse(rotated, strlen(rotated), NOW + 250, &fresh, &why), 0);
	hub_tokens_replace(&back, &fresh);
	assert_string_equal(back.access_token, "at2");
	assert_string_equal(back.refresh_token, "rt2");
	assert_string_equal(back.client_id, "backend");
	assert_int_equal(back.expires_at, NOW + 310);
	const char *kept = "{\"access_token\":\"at3\",\"token_type\":\"Bearer\",\"expires_in\":60}";
	assert_int_equal(hub_tokens_parse(kept, strlen(kept), NOW + 300, &fresh, &why), 0);
	hub_tokens_replace(&back, &fresh);
	assert_string_equal(back.access_token, "at3");
	assert_string_equal(back.refresh_token, "rt2");
	assert_null(fresh.access_token);
	hub_tokens_free(&back);
	hub_tokens_free(&t);

	/* A session the bank gave no refresh token keeps none (the record was unreadable when
	 * it held "refresh_token": null; fuzz_hub). */
	const char *no_refresh = "{\"access_token\":\"at9\",\"token_type\":\"Bearer\","
				 "\"expires_in\":30}";
	struct hub_tokens bare;
	assert_int_equal(hub_tokens_parse(no_refresh, strlen(no_refresh), NOW, &bare, &why), 0);
	bare.client_id = strdup("backend");
	buf_reset(&b);
	assert_int_equal(hub_tokens_to_payload(&bare, &b), 0);
	hub_tokens_free(&bare);
	assert_int_equal(hub_tokens_from_payload(buf_head(&b), b.len, &bare), 0);
	assert_string_equal(bare.access_token, "at9");
	assert_null(bare.refresh_token);
	hub_tokens_free(&bare);

	static const char *const bad_payloads[] = {
		"", "{}", "{\"access_token\":\"a\",\"expires_at\":1}",
		"{\"access_token\":\"a\",\"client_id\":\"b\"}",
		"{\"access_token\":\"a b\",\"client_id\":\"b\",\"expires_at\":1}",
	};
	for (size_t i = 0; i < sizeof(bad_payloads) / sizeof(bad_payloads[0]); i++) {
		assert_int_equal(hub_tokens_from_payload(bad_payloads[i], strlen(bad_payloads[i]),
							 &back), -1);
		assert_null(back.access_token);
	}
	buf_free(&b);
}

/* --- the id_token ------------------------------------------------------------------------------ */

static EVP_PKEY *ec_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	return k;
}

static char *jwks_of(EVP_PKEY *k)
{
	BIGNUM *x = NULL, *y = NULL;
	unsigned char bx[32], by[32];
	char *out;
	assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_X, &x), 1);
	assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_EC_PUB_Y, &y), 1);
	assert_int_equal(BN_bn2binpad(x, bx, 32), 32);
	assert_int_equal(BN_bn2binpad(y, by, 32), 32);
	char *sx = b64url(bx, 32), *sy = b64url(by, 32);
	assert_true(asprintf(&out, "{\"keys\":[{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"bank-1\","
				   "\"x\":\"%s\",\"y\":\"%s\"}]}", sx, sy) > 0);
	free(sx);
	free(sy);
	BN_free(x);
	BN_free(y);
	return out;
}

static char *es256_token(EVP_PKEY *k, const char *claims)
{
	char *h = b64url("{\"alg\":\"ES256\",\"kid\":\"bank-1\"}", 30);
	char *c = b64url(claims, strlen(claims)), *input, *out;
	assert_true(asprintf(&input, "%s.%s", h, c) > 0);
	unsigned char sig[128];
	size_t len = sizeof(sig);
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	assert_int_equal(EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, k, NULL), 1);
	assert_int_equal(EVP_DigestSign(md, sig, &len, (unsigned char *)input, strlen(input)), 1);
	EVP_MD_CTX_free(md);
	const unsigned char *p = sig;
	ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)len);
	assert_non_null(es);
	unsigned char raw[64];
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(es), raw, 32), 32);
	assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(es), raw + 32, 32), 32);
	ECDSA_SIG_free(es);
	char *s = b64url(raw, 64);
	assert_true(asprintf(&out, "%s.%s", input, s) > 0);
	free(h);
	free(c);
	free(input);
	free(s);
	return out;
}

static void test_id_token(void **state)
{
	(void)state;
	EVP_PKEY *bank = ec_key(), *other = ec_key();
	char path[] = "/tmp/test_hub_jwks_XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	char *jwks = jwks_of(bank);
	assert_int_equal(write(fd, jwks, strlen(jwks)), (ssize_t)strlen(jwks));
	close(fd);
	free(jwks);
	struct config_jwt cfg = {.jwks = path, .issuer = "https://bank.test",
				 .audience = "tpp-at-bank", .algorithms = CONFIG_JWT_DEFAULT_ALGS,
				 .leeway_s = 30};
	char err[256];
	struct jwt_verifier *v = jwt_verifier_new(&cfg, err, sizeof(err));
	assert_non_null(v);

#define CLAIMS(iss, aud, nonce, exp)                                                       \
	"{\"iss\":\"" iss "\",\"aud\":\"" aud "\",\"sub\":\"alice\",\"nonce\":\"" nonce "\"," \
	"\"exp\":" exp "}"
	struct {
		EVP_PKEY *key;
		const char *claims;
		const char *why; /* NULL: valid */
	} cases[] = {
		{bank, CLAIMS("https://bank.test", "tpp-at-bank", "n-1", "1800000300"), NULL},
		{bank, CLAIMS("https://bank.test", "tpp-at-bank", "n-2", "1800000300"),
		 "the id_token's nonce is not the consent's"},
		{bank, "{\"iss\":\"https://bank.test\",\"aud\":\"tpp-at-bank\",\"exp\":1800000300}",
		 "the id_token's nonce is not the consent's"},
		{bank, CLAIMS("https://evil.test", "tpp-at-bank", "n-1", "1800000300"), ""},
		{bank, CLAIMS("https://bank.test", "another-tpp", "n-1", "1800000300"), ""},
		{bank, CLAIMS("https://bank.test", "tpp-at-bank", "n-1", "1799999900"), ""},
		{other, CLAIMS("https://bank.test", "tpp-at-bank", "n-1", "1800000300"), ""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *tok = es256_token(cases[i].key, cases[i].claims);
		const char *why = hub_id_token_check(v, tok, "n-1", NOW);
		if (!cases[i].why)
			assert_null(why);
		else if (*cases[i].why)
			assert_string_equal(why, cases[i].why);
		else
			assert_non_null(why); /* jwt.c's own wording */
		free(tok);
	}
	assert_non_null(hub_id_token_check(v, "not.a.token", "n-1", NOW));
	jwt_verifier_free(v);
	unlink(path);
	EVP_PKEY_free(bank);
	EVP_PKEY_free(other);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pkce),
		cmocka_unit_test(test_pending),
		cmocka_unit_test(test_url_and_forms),
		cmocka_unit_test(test_query_param),
		cmocka_unit_test(test_token_answers),
		cmocka_unit_test(test_refresh_and_record),
		cmocka_unit_test(test_id_token),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
