/* The policy stages a request passes through once its head (and, for form-borne client_ids,
 * its body) is known. Each stage either lets the request go on or rejects it with a status;
 * later policies (quota, spike arrest, circuit breaker, JWT) are new rows in the table in
 * pipeline.c and touch nothing else. */
#ifndef PSD2EDGE_PIPELINE_H
#define PSD2EDGE_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "cert.h"
#include "config.h"
#include "http.h"
#include "jwt.h"
#include "registry.h"

struct request_ctx {
	/* inputs */
	const struct config *cfg;
	struct registry *reg;
	const struct http_msg *req;
	const uint8_t *thumb; /* SHA-256 of the TPP's certificate; NULL on a plain listener */
	int64_t now;          /* unix seconds */
	struct jwt_verifier *jwt; /* required when a jwt:CLAIM source is configured */
	struct jwt_check *bearer; /* the request's bearer token, verified at most once (shared
				   * with the route's verify_jwt policy) */
	struct buf *resp_headers; /* header lines for the response, whatever it is */

	/* outputs */
	char client_id[REGISTRY_CLIENT_ID_MAX + 1]; /* claimed, then proven */
	struct registry_binding binding;
	int status;               /* set on reject */
	const char *error;        /* OAuth-style error code for the JSON body */
	const char *description;  /* error_description */
	unsigned retry_after;     /* seconds, 0 = none */
	const char *reason;       /* short verdict name for the access log */
};

enum stage_result { STAGE_NEXT, STAGE_REJECT };

/* Runs every stage in order; STAGE_REJECT leaves status/error/description set. */
enum stage_result pipeline_run(struct request_ctx *rc);

#endif
