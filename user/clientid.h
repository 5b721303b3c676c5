/* Reads the client_id a request claims, from the sources the configuration lists (urlencoded
 * form field, query parameter, header, claim of the verified bearer token). When several are
 * present they must agree. The request
 * is also read the way the application behind the gateway might read it (Rack, Go, Servlet,
 * PHP: see clientid.c), and a request whose client_id such an application could read
 * differently is refused rather than forwarded. */
#ifndef PSD2EDGE_CLIENTID_H
#define PSD2EDGE_CLIENTID_H

#include <jansson.h>
#include <stddef.h>

#include "config.h"
#include "http.h"
#include "registry.h"

enum clientid_result {
	CLIENTID_OK,
	CLIENTID_MISSING,   /* no configured source carries one */
	CLIENTID_CONFLICT,  /* two sources (or two occurrences) disagree */
	CLIENTID_INVALID,   /* bad percent-encoding, too long, or forbidden characters */
	CLIENTID_AMBIGUOUS, /* an application could read a client_id the gateway cannot check
			     * (a look-alike name, multipart, an encoded or non-UTF-8 form...): 400 */
};

/* True when the body must be buffered before the identity can be decided: a form or query
 * source is configured and the body is one an application reads parameters from (an
 * application/x-www-form-urlencoded body, or a POST body without Content-Type). */
bool clientid_needs_body(const struct client_id_source *src, unsigned n, const struct http_msg *req);

/* True when a source is a claim of the bearer token (jwt:CLAIM): the token must be verified
 * (jwt.h) before the identity can be decided. */
bool clientid_needs_token(const struct client_id_source *src, unsigned n);

/* req must have a complete head; a body that clientid_needs_body() asked for must be buffered
 * and complete. out receives the decoded id (NUL-terminated). *why gets a static description
 * on failure (for CLIENTID_AMBIGUOUS, one fit for the client's error_description). */
enum clientid_result clientid_extract(const struct client_id_source *src, unsigned n,
				      const struct http_msg *req, char out[REGISTRY_CLIENT_ID_MAX + 1],
				      const char **why);
/* The same, with claims: the payload of the request's verified bearer token, which jwt:CLAIM
 * sources read (NULL: no valid token, and they find nothing). A claim that is there but not
 * a string is CLIENTID_INVALID. */
enum clientid_result clientid_extract_claims(const struct client_id_source *src, unsigned n,
					     const struct http_msg *req, const json_t *claims,
					     char out[REGISTRY_CLIENT_ID_MAX + 1], const char **why);

#endif
