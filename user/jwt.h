/* Bearer tokens (RFC 6750) that are JWTs (RFC 7519) in the JWS compact serialisation
 * (RFC 7515), verified with OpenSSL against the public keys of a JWK set file (RFC 7517): for
 * the route policy verify_jwt and the client_id source jwt:CLAIM.
 *
 * Usage: one verifier per "jwt" object, made at start (jwt_verifier_new). Workers verify
 * concurrently, each request at most once: jwt_check_request keeps its verdict and claims in
 * the request's struct jwt_check, which the identity stage and the route policy share.
 * jwt_keys_reload (any thread, e.g. on SIGHUP) reads the file again and swaps the new key set
 * in once all of it has loaded; a verification in flight ends with the set it started with,
 * and the last one to finish frees it. A file that does not load leaves the current set.
 *
 * A token is valid when:
 *  - it is at most JWT_TOKEN_MAX bytes: three base64url parts without padding, each spelt in
 *    its one canonical way; header and payload are JSON objects without repeated members;
 *  - the header's alg is among the configured algorithms (PS256 and ES256 by default, RS256
 *    only when listed); "none" and the HMAC algorithms never are, so no public key is ever
 *    used as an HMAC secret; a header with "crit" is refused (no extension is understood);
 *  - its key is the set's key of the header's kid (without kid: the set's only key), of the
 *    alg's type (RSA of 2048 bits or more, EC P-256), and the key's own alg, if any, is the
 *    header's; the signature verifies (PS256: PSS, MGF1-SHA-256, salt of 32 bytes; ES256: R||S,
 *    64 bytes);
 *  - exp is present and now < exp + leeway; nbf, when present, <= now + leeway;
 *  - iss equals the configured issuer (when one is); aud is the configured audience or an
 *    array holding it;
 *  - cnf.x5t#S256 (RFC 8705 §3) is the base64url SHA-256 of the TLS client certificate:
 *    required with require_cnf, and checked whenever present. */
#ifndef PSD2EDGE_JWT_H
#define PSD2EDGE_JWT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "http.h"

#ifndef JWT_TOKEN_MAX
#define JWT_TOKEN_MAX 16384 /* bytes of a token; larger ones are refused unread */
#endif
#define JWT_MAX_KEYS 64

struct jwt_verifier;

/* Loads cfg->jwks; cfg must outlive the verifier. NULL with err ("jwt.jwks: keys[1].n: not
 * base64url") when the file is not a usable JWK set. */
struct jwt_verifier *jwt_verifier_new(const struct config_jwt *cfg, char *err, size_t errlen);
void jwt_verifier_free(struct jwt_verifier *v);

/* Reads the JWK set file again. Returns the number of keys now in use, or -1 with err (the
 * current set stays). Safe against concurrent verifications. */
int jwt_keys_reload(struct jwt_verifier *v, char *err, size_t errlen);

enum jwt_verdict {
	JWT_UNCHECKED, /* not looked at yet */
	JWT_VALID,
	JWT_MISSING,   /* no bearer token in the request */
	JWT_INVALID,
};

/* token: len bytes; cert_sha256: SHA-256 of the client's certificate (32 bytes), NULL when
 * there is none; now: unix seconds. JWT_VALID with *claims (the payload, the caller's
 * reference) or JWT_INVALID with *why (static text fit for an error_description). */
enum jwt_verdict jwt_verify(struct jwt_verifier *v, const char *token, size_t len,
			    const uint8_t *cert_sha256, int64_t now, json_t **claims,
			    const char **why);

/* A request's bearer token, once verified. Zeroed = unchecked; jwt_check_clear frees it. */
struct jwt_check {
	enum jwt_verdict verdict;
	const char *why;  /* JWT_MISSING, JWT_INVALID: for the error_description */
	json_t *claims;   /* JWT_VALID: the payload */
};

/* The token of the request's one Authorization header ("Bearer TOKEN", scheme in any case),
 * verified on the first call; later calls return the verdict kept in c. */
enum jwt_verdict jwt_check_request(struct jwt_check *c, struct jwt_verifier *v,
				   const struct http_msg *req, const uint8_t *cert_sha256,
				   int64_t now);
/* The WWW-Authenticate line of a 401 for a check that failed: `Bearer` when no token came
 * (RFC 6750 §3.1), `Bearer error="invalid_token"` when one did. */
int jwt_check_challenge(const struct jwt_check *c, struct buf *headers);
void jwt_check_clear(struct jwt_check *c);

#endif
