/* Reads the client_id a request claims, from the sources the configuration lists (urlencoded
 * form field, query parameter, header). When several are present they must agree. */
#ifndef PSD2EDGE_CLIENTID_H
#define PSD2EDGE_CLIENTID_H

#include <stddef.h>

#include "config.h"
#include "http.h"
#include "registry.h"

enum clientid_result {
	CLIENTID_OK,
	CLIENTID_MISSING,   /* no configured source carries one */
	CLIENTID_CONFLICT,  /* two sources (or two occurrences) disagree */
	CLIENTID_INVALID,   /* bad percent-encoding, too long, or forbidden characters */
};

/* True when a form source is configured and the request is application/x-www-form-urlencoded,
 * i.e. the body must be buffered before the identity can be decided. */
bool clientid_needs_body(const struct client_id_source *src, unsigned n, const struct http_msg *req);

/* req must have a complete head; for form sources its buffered body is used when complete.
 * out receives the decoded id (NUL-terminated). *why gets a static description on failure. */
enum clientid_result clientid_extract(const struct client_id_source *src, unsigned n,
				      const struct http_msg *req, char out[REGISTRY_CLIENT_ID_MAX + 1],
				      const char **why);

#endif
