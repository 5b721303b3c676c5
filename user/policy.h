/* Traffic policies of a route (spike arrest, circuit breaker, quota): each configured route
 * holds its own instances, created from its configuration at start (route_table.h), and the
 * exchange (exchange.h) runs them in order once the client's identity is proven. A policy sees
 * the request (on_request: go on or refuse with a status), may add response headers, and
 * learns the outcome of every exchange it let through (on_complete). Instances are shared by
 * every worker: their state is atomic or lives in the policy store (policy_store.h). */
#ifndef PSD2EDGE_POLICY_H
#define PSD2EDGE_POLICY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "http.h"
#include "jwt.h"
#include "psd2edge_abi.h"

/* How an exchange ended, as far as the upstream is concerned. */
enum exchange_result {
	EXCHANGE_RESPONDED,       /* the upstream answered (status) */
	EXCHANGE_CONNECT_FAILED,  /* 502: no connection */
	EXCHANGE_TLS_FAILED,      /* 502: TLS handshake with the upstream failed */
	EXCHANGE_TIMED_OUT,       /* 504: connect, TLS or response wait */
	EXCHANGE_UPSTREAM_BROKEN, /* 502: invalid response, or closed before answering */
	EXCHANGE_NOT_FORWARDED,   /* refused by a later policy, or the client left first */
};

struct exchange_outcome {
	enum exchange_result result;
	unsigned status;         /* to the client */
	int64_t upstream_ms;     /* from forwarding to the response head (or the failure) */
};

/* A request as the policies see it, and what they answer. */
struct policy_request {
	const struct http_msg *req;
	const char *client_id; /* proven */
	uint32_t slot;         /* the client's registry slot (< PSD2_MAX_CLIENTS) */
	const uint8_t *cert_sha256; /* SHA-256 of the handshake certificate (32 bytes) */
	uint32_t psd2_roles;   /* PSD2_ROLE_* of its binding (qcstatement.h) */
	int64_t now_s;         /* unix seconds (quota windows are UTC) */
	uint64_t now_ns;       /* CLOCK_MONOTONIC (rates) */
	int64_t now_ms;        /* unix ms (breaker times, readable in the map) */
	struct buf *resp_headers; /* "Name: value\r\n" lines added to the response, whatever it is */
	struct jwt_check *bearer; /* the request's bearer token, verified at most once */

	/* set by a refusing policy */
	int status;
	const char *error;
	const char *description;
	unsigned retry_after; /* seconds, 0 = none */
	const char *reason;   /* verdict in the access log */
};

enum policy_verdict { POLICY_NEXT, POLICY_REFUSE };

struct policy;

struct policy_ops {
	const char *name; /* "quota", "spike_arrest", "circuit_breaker" */
	/* token: per-exchange state handed back to on_complete. */
	enum policy_verdict (*on_request)(struct policy *p, struct policy_request *pr,
					  uint64_t *token);
	/* Only for exchanges on_request let through; may be NULL. */
	void (*on_complete)(struct policy *p, const struct exchange_outcome *o, uint64_t token);
	/* The response headers of a request this policy did not see (an earlier one refused
	 * it); may be NULL. */
	void (*add_headers)(struct policy *p, struct policy_request *pr);
	void (*free)(struct policy *p);
};

struct policy {
	const struct policy_ops *ops;
};

struct policy_store;

/* NULL with err (naming the key under `key`) when the instance cannot be created. */
struct policy *policy_require_roles_new(uint32_t roles); /* PSD2_ROLE_* all required */
struct policy *policy_spike_arrest_new(const struct config_spike_arrest *c);
struct policy *policy_breaker_new(const struct config_breaker *c, struct psd2_breaker *state);
struct policy *policy_quota_new(const struct config_quota *c, struct policy_store *store);
struct policy *policy_verify_jwt_new(struct jwt_verifier *v);

#endif
