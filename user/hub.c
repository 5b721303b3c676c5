/* Hub mode's protocol pieces (hub.h): pending consents, PKCE, the authorization URL, the
 * token endpoint's forms and answers, the id_token's checks, the stored token record. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"

#define HUB_EXPIRES_IN_MAX (366 * 86400)

/* base64url without padding of 32 bytes: 43 characters. */
static void b64url_256(const unsigned char in[32], char out[HUB_B64_256 + 1])
{
	unsigned char std[45]; /* 44 characters of standard base64 and its NUL */
	EVP_EncodeBlock(std, in, 32);
	for (int i = 0; i < HUB_B64_256; i++)
		out[i] = std[i] == '+' ? '-' : std[i] == '/' ? '_' : (char)std[i];
	out[HUB_B64_256] = '\0';
}

int hub_random_b64url(char out[HUB_B64_256 + 1])
{
	unsigned char r[32];
	if (RAND_bytes(r, sizeof(r)) != 1)
		return -1;
	b64url_256(r, out);
	OPENSSL_cleanse(r, sizeof(r));
	return 0;
}

void hub_pkce_challenge(const char *verifier, char out[HUB_B64_256 + 1])
{
	unsigned char d[SHA256_DIGEST_LENGTH];
	SHA256((const unsigned char *)verifier, strlen(verifier), d);
	b64url_256(d, out);
}

/* --- pending consents --------------------------------------------------------------------- */

static void pending_drop_expired(struct hub_pending_table *t, int64_t now)
{
	for (unsigned i = 0; i < t->n;) {
		if (t->slot[i].expires_at <= now) {
			OPENSSL_cleanse(&t->slot[i], sizeof(t->slot[i]));
			t->slot[i] = t->slot[--t->n];
		} else {
			i++;
		}
	}
}

int hub_pending_add(struct hub_pending_table *t, const char *client_id, const char *user,
		    unsigned route, int64_t now, struct hub_pending **out, const char **why)
{
	size_t ulen = strlen(user), clen = strlen(client_id);
	if (ulen == 0 || ulen > HUB_USER_MAX) {
		*why = "user must be 1 to 128 bytes";
		return -1;
	}
	if (clen == 0 || clen > HUB_CLIENT_ID_MAX) {
		*why = "the client_id must be 1 to 128 bytes";
		return -1;
	}
	pending_drop_expired(t, now);
	if (t->n == HUB_PENDING_MAX) {
		*why = "too many consents are waiting for their callback";
		return -1;
	}
	struct hub_pending *p = &t->slot[t->n];
	if (hub_random_b64url(p->state) < 0 || hub_random_b64url(p->nonce) < 0 ||
	    hub_random_b64url(p->verifier) < 0) {
		OPENSSL_cleanse(p, sizeof(*p));
		*why = "no random bytes";
		return -1;
	}
	memcpy(p->user, user, ulen + 1);
	memcpy(p->client_id, client_id, clen + 1);
	p->route = route;
	p->expires_at = now + HUB_PENDING_TTL_S;
	t->n++;
	*out = p;
	return 0;
}

bool hub_pending_take(struct hub_pending_table *t, const char *state, const char *client_id,
		      int64_t now, struct hub_pending *out)
{
	if (strlen(state) != HUB_B64_256)
		return false;
	pending_drop_expired(t, now);
	for (unsigned i = 0; i < t->n; i++) {
		struct hub_pending *p = &t->slot[i];
		if (CRYPTO_memcmp(p->state, state, HUB_B64_256) != 0)
			continue;
		if (strcmp(p->client_id, client_id) != 0)
			return false; /* another backend's consent: it stays for its owner */
		*out = *p;
		OPENSSL_cleanse(p, sizeof(*p));
		*p = t->slot[--t->n];
		return true;
	}
	return false;
}

/* --- URLs and forms -------------------------------------------------------------------------- */

/* name=value for a query or a urlencoded form: value percent-encoded but for the unreserved
 * characters (RFC 3986 §2.3), which both readings leave as they are. */
static int append_param(struct buf *out, const char *name, const char *value)
{
	static const char hexdig[] = "0123456789ABCDEF";
	if (buf_printf(out, "%s%s=", out->len ? "&" : "", name) < 0)
		return -1;
	for (const unsigned char *c = (const unsigned char *)value; *c; c++) {
		bool plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
			     (*c >= '0' && *c <= '9') || strchr("-._~", *c);
		char enc[3] = {'%', hexdig[*c >> 4], hexdig[*c & 15]};
		if (plain ? buf_append(out, c, 1) < 0 : buf_append(out, enc, 3) < 0)
			return -1;
	}
	return 0;
}

int hub_authorization_url(const struct config_hub *h, const struct hub_pending *p,
			  struct buf *out)
{
	char challenge[HUB_B64_256 + 1];
	struct buf q = {0};
	hub_pkce_challenge(p->verifier, challenge);
	int rc = append_param(&q, "response_type", "code") < 0 ||
		 append_param(&q, "client_id", h->client_id) < 0 ||
		 append_param(&q, "redirect_uri", h->redirect_uri) < 0 ||
		 append_param(&q, "scope", h->scopes) < 0 ||
		 append_param(&q, "state", p->state) < 0 ||
		 append_param(&q, "nonce", p->nonce) < 0 ||
		 append_param(&q, "code_challenge", challenge) < 0 ||
		 append_param(&q, "code_challenge_method", "S256") < 0 ||
		 buf_printf(out, "%s%c%.*s", h->authorization_endpoint,
			    strchr(h->authorization_endpoint, '?') ? '&' : '?', (int)q.len,
			    buf_head(&q)) < 0 ? -1 : 0;
	buf_free(&q);
	return rc;
}

int hub_token_form_code(const struct config_hub *h, const char *code, const char *verifier,
			struct buf *out)
{
	return append_param(out, "grant_type", "authorization_code") < 0 ||
	       append_param(out, "code", code) < 0 ||
	       append_param(out, "redirect_uri", h->redirect_uri) < 0 ||
	       append_param(out, "client_id", h->client_id) < 0 ||
	       append_param(out, "code_verifier", verifier) < 0 ? -1 : 0;
}

int hub_token_form_refresh(const struct config_hub *h, const char *refresh_token,
			   struct buf *out)
{
	return append_param(out, "grant_type", "refresh_token") < 0 ||
	       append_param(out, "refresh_token", refresh_token) < 0 ||
	       append_param(out, "client_id", h->client_id) < 0 ? -1 : 0;
}

static int hex_value(char c)
{
	return c >= '0' && c <= '9' ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

int hub_query_param(const char *query, size_t len, const char *name, char *out, size_t max)
{
	size_t name_len = strlen(name);
	int found = 0;
	for (size_t i = 0; i < len;) {
		const char *pair = query + i;
		const char *amp = memchr(pair, '&', len - i);
		size_t pair_len = amp ? (size_t)(amp - pair) : len - i;
		i += pair_len + 1;
		if (pair_len <= name_len || memcmp(pair, name, name_len) != 0 ||
		    pair[name_len] != '=')
			continue;
		if (found++)
			return -1; /* which of two would the backend have meant? */
		size_t n = 0;
		for (size_t j = name_len + 1; j < pair_len; j++) {
			int c = (unsigned char)pair[j];
			if (c == '%') {
				int hi = j + 2 < pair_len ? hex_value(pair[j + 1]) : -1;
				int lo = hi >= 0 ? hex_value(pair[j + 2]) : -1;
				if (lo < 0)
					return -1;
				c = hi << 4 | lo;
				j += 2;
			} else if (c == '+') {
				c = ' ';
			}
			if (c <= ' ' || c >= 0x7f || n + 1 >= max)
				return -1;
			out[n++] = (char)c;
		}
		if (n == 0)
			return -1;
		out[n] = '\0';
	}
	return found;
}

/* --- tokens ------------------------------------------------------------------------------------ */

/* A copy of obj[key] when it is a non-empty string of visible ASCII (what goes into an
 * Authorization header or a form as is); NULL otherwise or when absent. *bad when present
 * and not such a string. */
static char *token_string(json_t *obj, const char *key, bool *bad)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return NULL;
	const char *s = json_string_value(v);
	size_t len = s ? strlen(s) : 0;
	bool ok = len > 0 && len == json_string_length(v) && len <= JWT_TOKEN_MAX;
	for (size_t i = 0; ok && i < len; i++)
		ok = s[i] > ' ' && s[i] < 0x7f;
	if (!ok) {
		*bad = true;
		return NULL;
	}
	return strdup(s);
}

void hub_tokens_free(struct hub_tokens *t)
{
	char **s[] = {&t->access_token, &t->refresh_token, &t->id_token, &t->client_id};
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++) {
		if (*s[i])
			OPENSSL_cleanse(*s[i], strlen(*s[i]));
		free(*s[i]);
	}
	memset(t, 0, sizeof(*t));
}

int hub_tokens_parse(const char *body, size_t len, int64_t now, struct hub_tokens *t,
		     const char **why)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *type = json_object_get(root, "token_type"),
	       *expires_in = json_object_get(root, "expires_in");
	bool bad = false;
	memset(t, 0, sizeof(*t));
	*why = NULL;
	if (!json_is_object(root))
		*why = "the token answer is not a JSON object";
	else if (!json_is_string(type) || strcasecmp(json_string_value(type), "Bearer") != 0)
		*why = "the token answer's token_type is not Bearer";
	else if (!json_is_integer(expires_in) || json_integer_value(expires_in) < 1 ||
		 json_integer_value(expires_in) > HUB_EXPIRES_IN_MAX)
		*why = "the token answer's expires_in is not 1 second to a year";
	if (!*why) {
		t->access_token = token_string(root, "access_token", &bad);
		t->refresh_token = token_string(root, "refresh_token", &bad);
		t->id_token = token_string(root, "id_token", &bad);
		t->expires_at = now + json_integer_value(expires_in);
		if (!t->access_token || bad)
			*why = "the token answer's access_token, refresh_token or id_token is not a "
			       "token";
	}
	json_decref(root);
	if (*why) {
		hub_tokens_free(t);
		return -1;
	}
	return 0;
}

void hub_tokens_replace(struct hub_tokens *t, struct hub_tokens *fresh)
{
	char *client_id = t->client_id, *refresh = t->refresh_token;
	t->client_id = NULL;
	if (!fresh->refresh_token)
		t->refresh_token = NULL, fresh->refresh_token = refresh; /* the bank kept it */
	hub_tokens_free(t);
	*t = *fresh;
	t->client_id = client_id;
	memset(fresh, 0, sizeof(*fresh));
}

bool hub_tokens_need_refresh(const struct hub_tokens *t, int64_t now, uint32_t margin_s)
{
	return t->expires_at - (int64_t)margin_s <= now;
}

int hub_tokens_to_payload(const struct hub_tokens *t, struct buf *out)
{
	json_t *o = json_pack("{s:s, s:s*, s:I, s:s}", "access_token", t->access_token,
			      "refresh_token", t->refresh_token, "expires_at",
			      (json_int_t)t->expires_at, "client_id", t->client_id);
	char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	int rc = text ? buf_append_str(out, text) : -1;
	if (text)
		OPENSSL_cleanse(text, strlen(text));
	free(text);
	return rc;
}

int hub_tokens_from_payload(const void *payload, size_t len, struct hub_tokens *t)
{
	json_error_t jerr;
	json_t *o = json_loadb(payload, len, JSON_REJECT_DUPLICATES, &jerr);
	bool bad = false;
	memset(t, 0, sizeof(*t));
	t->access_token = token_string(o, "access_token", &bad);
	t->refresh_token = token_string(o, "refresh_token", &bad);
	t->client_id = token_string(o, "client_id", &bad);
	json_t *exp = json_object_get(o, "expires_at");
	bad = bad || !json_is_integer(exp);
	t->expires_at = json_is_integer(exp) ? json_integer_value(exp) : 0;
	json_decref(o);
	if (!t->access_token || !t->client_id || bad) {
		hub_tokens_free(t);
		return -1;
	}
	return 0;
}

const char *hub_id_token_check(struct jwt_verifier *v, const char *id_token, const char *nonce,
			       int64_t now)
{
	json_t *claims = NULL;
	const char *why = NULL;
	/* No TLS client certificate binds an id_token: it was issued to the gateway itself. */
	if (jwt_verify(v, id_token, strlen(id_token), NULL, now, &claims, &why) != JWT_VALID)
		return why ? why : "the id_token is not valid";
	const char *got = json_string_value(json_object_get(claims, "nonce"));
	bool same = got && strlen(got) == strlen(nonce) &&
		    CRYPTO_memcmp(got, nonce, strlen(nonce)) == 0;
	json_decref(claims);
	return same ? NULL : "the id_token's nonce is not the consent's";
}
