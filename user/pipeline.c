#include "pipeline.h"

#include <openssl/crypto.h>
#include <string.h>

#include "clientid.h"
#include "metrics.h"

static enum stage_result reject_identity(struct request_ctx *rc, const char *description,
					 const char *reason)
{
	rc->status = 401;
	rc->error = "invalid_client";
	rc->description = description;
	rc->reason = reason;
	return STAGE_REJECT;
}

/* RFC 6750 §3: 401 with a Bearer challenge. */
static enum stage_result reject_token(struct request_ctx *rc)
{
	jwt_check_challenge(rc->bearer, rc->resp_headers);
	rc->status = 401;
	rc->error = "invalid_token";
	rc->description = rc->bearer->why;
	rc->reason = "token_invalid";
	return STAGE_REJECT;
}

/* The regulation's core rule: the certificate proven in the handshake must be the one bound
 * to the client_id the request claims. A jwt:CLAIM source reads the bearer token, verified
 * here against the handshake certificate; a token that came but is not valid is refused as
 * such, not read as a missing client_id. */
static enum stage_result stage_identity(struct request_ctx *rc)
{
	const char *why = NULL;
	const json_t *claims = NULL;
	bool needs_token = clientid_needs_token(rc->cfg->client_id, rc->cfg->n_client_id);
	if (needs_token) {
		if (jwt_check_request(rc->bearer, rc->jwt, rc->req, rc->thumb, rc->now) == JWT_INVALID)
			return reject_token(rc);
		claims = rc->bearer->claims;
	}
	switch (clientid_extract_claims(rc->cfg->client_id, rc->cfg->n_client_id, rc->req, claims,
					rc->client_id, &why)) {
	case CLIENTID_OK:
		break;
	case CLIENTID_MISSING:
		STATS_INC(denied_missing_client_id);
		if (needs_token && rc->bearer->verdict == JWT_MISSING)
			jwt_check_challenge(rc->bearer, rc->resp_headers);
		return reject_identity(rc, "client_id missing", "client_id_missing");
	case CLIENTID_CONFLICT:
		STATS_INC(denied_conflicting_client_id);
		return reject_identity(rc, "client_id sources disagree", "client_id_conflict");
	case CLIENTID_INVALID:
		STATS_INC(denied_invalid_client_id);
		return reject_identity(rc, "client_id malformed", "client_id_invalid");
	case CLIENTID_AMBIGUOUS:
		/* The application behind the gateway could read another client_id than the one
		 * checked: a malformed request, not an identity failure. */
		STATS_INC(bad_requests);
		rc->status = 400;
		rc->error = "invalid_request";
		rc->description = why;
		rc->reason = "client_id_ambiguous";
		return STAGE_REJECT;
	}
	if (!rc->thumb || registry_lookup(rc->reg, rc->thumb, &rc->binding) != REG_OK) {
		STATS_INC(denied_unbound_cert);
		return reject_identity(rc, "client certificate is not bound to a client",
				       "cert_unbound");
	}
	enum binding_usability usability = registry_binding_usability(&rc->binding, rc->now);
	if (usability == BINDING_REVOKED) {
		STATS_INC(denied_revoked_cert);
		return reject_identity(rc, "client certificate has been revoked", "cert_revoked");
	}
	/* Compare whole fixed-size, zero-padded buffers so timing reveals neither length nor
	 * the position of the first difference. */
	char claimed[REGISTRY_CLIENT_ID_MAX + 1] = {0}, bound[REGISTRY_CLIENT_ID_MAX + 1] = {0};
	memcpy(claimed, rc->client_id, strnlen(rc->client_id, REGISTRY_CLIENT_ID_MAX));
	memcpy(bound, rc->binding.client_id, strnlen(rc->binding.client_id, REGISTRY_CLIENT_ID_MAX));
	if (CRYPTO_memcmp(claimed, bound, sizeof(claimed)) != 0) {
		STATS_INC(denied_client_mismatch);
		return reject_identity(rc, "client certificate is bound to a different client_id",
				       "client_mismatch");
	}
	if (usability == BINDING_OUTSIDE_VALIDITY) {
		STATS_INC(denied_expired_cert);
		return reject_identity(rc, "client certificate is outside its validity period",
				       "cert_expired");
	}
	rc->reason = "bound";
	return STAGE_NEXT;
}

typedef enum stage_result stage_fn(struct request_ctx *rc);

/* In order; the first rejection ends the request. */
static stage_fn *const request_stages[] = {
	stage_identity,
};

enum stage_result pipeline_run(struct request_ctx *rc)
{
	for (size_t i = 0; i < sizeof(request_stages) / sizeof(request_stages[0]); i++)
		if (request_stages[i](rc) == STAGE_REJECT)
			return STAGE_REJECT;
	return STAGE_NEXT;
}
