/* Hub mode (issue 10): the TPP's side of PSD2. The TPP's backend calls banks through the
 * gateway; the gateway runs the OAuth 2.0 authorization-code flow with PKCE (RFC 7636, S256),
 * state and nonce at each bank (a route with a "hub" object, config.h), holds the bank's tokens
 * in the token store (token_store.h) and gives the backend only an opaque session handle.
 *
 * Where the bank calls run: on one hub thread with its own event loop, to which a worker hands
 * a job (consent start, callback, token for a proxied call, revocation) and from which it gets
 * the answer back on its own loop. Not on the worker: a token exchange is a round trip to a
 * bank (hundreds of ms, seconds when it is slow) and would stall every session of that
 * worker's loop. Not on the upstream pool of the worker: the token store allows one caller at
 * a time (token_store.h), and a single refresh under concurrency needs one owner of each
 * handle's tokens; one thread gives both without locks (requests for a handle whose refresh is
 * in flight wait for it instead of starting another).
 *
 * This file holds the protocol pieces that thread uses, free of I/O: the pending consents
 * (state, nonce, PKCE verifier), the authorization URL, the token endpoint's forms and
 * answers, the id_token's checks, and the stored record of a session's tokens. */
#ifndef PSD2EDGE_HUB_H
#define PSD2EDGE_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "jwt.h"

#define HUB_B64_256 43          /* base64url characters of 256 bits, no padding */
#define HUB_USER_MAX 128        /* the backend's user id */
#define HUB_CLIENT_ID_MAX 128   /* the backend's client_id at the gateway */
#define HUB_PENDING_MAX 1024    /* consents started and not yet called back */
#define HUB_PENDING_TTL_S 600   /* a consent not called back within this is forgotten */

/* 256 random bits (RAND_bytes) in base64url; -1 when the generator fails. */
int hub_random_b64url(char out[HUB_B64_256 + 1]);
/* The S256 code_challenge of a verifier: base64url(SHA-256(verifier)). */
void hub_pkce_challenge(const char *verifier, char out[HUB_B64_256 + 1]);

/* One consent started by a backend, waiting for its callback. */
struct hub_pending {
	char state[HUB_B64_256 + 1];
	char nonce[HUB_B64_256 + 1];
	char verifier[HUB_B64_256 + 1]; /* PKCE; 256 bits, within RFC 7636's 43..128 chars */
	char user[HUB_USER_MAX + 1];
	char client_id[HUB_CLIENT_ID_MAX + 1]; /* the backend that started it */
	unsigned route;                        /* index into cfg->routes */
	int64_t expires_at;                    /* unix seconds */
};

struct hub_pending_table {
	struct hub_pending slot[HUB_PENDING_MAX];
	unsigned n;
};

/* A new pending consent with fresh state, nonce and verifier (*out points into t). -1 with
 * *why when user or client_id is empty or too long, the table is full of live consents, or
 * the random generator fails. Expired consents are dropped first. */
int hub_pending_add(struct hub_pending_table *t, const char *client_id, const char *user,
		    unsigned route, int64_t now, struct hub_pending **out, const char **why);
/* Removes and returns the consent of state when the same backend (client_id) started it and
 * it has not expired: a state is good for one callback only. */
bool hub_pending_take(struct hub_pending_table *t, const char *state, const char *client_id,
		      int64_t now, struct hub_pending *out);

/* The bank's authorization URL for p: response_type=code, client_id, redirect_uri, scope,
 * state, nonce, code_challenge (S256 of p->verifier), code_challenge_method=S256. */
int hub_authorization_url(const struct config_hub *h, const struct hub_pending *p,
			  struct buf *out);
/* application/x-www-form-urlencoded bodies for the token endpoint. */
/* The one value of name in a query (application/x-www-form-urlencoded), percent-decoded into
 * out (max bytes with its NUL): 1; 0 when absent; -1 when repeated, empty, malformed, too long
 * or not visible ASCII (a code or a state never holds anything else). */
int hub_query_param(const char *query, size_t len, const char *name, char *out, size_t max);

int hub_token_form_code(const struct config_hub *h, const char *code, const char *verifier,
			struct buf *out);
int hub_token_form_refresh(const struct config_hub *h, const char *refresh_token,
			   struct buf *out);

/* A session's tokens at a bank: what the token store keeps for a handle. */
struct hub_tokens {
	char *access_token;
	char *refresh_token; /* NULL when the bank gave none */
	char *id_token;      /* NULL when none (only ever in a token answer) */
	int64_t expires_at;  /* of the access token, unix seconds */
	char *client_id;     /* the backend whose handle it is */
};

/* A successful token answer (RFC 6749 §5.1) received at now: access_token, token_type Bearer
 * (any case), expires_in (1..1 year), optional refresh_token and id_token. -1 with *why
 * (static) otherwise. */
int hub_tokens_parse(const char *body, size_t len, int64_t now, struct hub_tokens *t,
		     const char **why);
/* A refresh's answer replaces the access token; the refresh token too when one came. */
void hub_tokens_replace(struct hub_tokens *t, struct hub_tokens *fresh);
void hub_tokens_free(struct hub_tokens *t);
/* Whether the access token must be refreshed before use: it expires within margin_s. */
bool hub_tokens_need_refresh(const struct hub_tokens *t, int64_t now, uint32_t margin_s);

/* The token store's payload (JSON, without the id_token) and back. */
int hub_tokens_to_payload(const struct hub_tokens *t, struct buf *out);
int hub_tokens_from_payload(const void *payload, size_t len, struct hub_tokens *t);

/* The id_token of a code exchange: signature against the bank's keys, iss, aud (the
 * verifier's config: hub.id_token), exp, and nonce equal to the consent's. NULL when valid,
 * else why (static text). */
const char *hub_id_token_check(struct jwt_verifier *v, const char *id_token, const char *nonce,
			       int64_t now);

#endif
