/* The route policies behind policy.h: spike arrest, circuit breaker, quota. Each is a thin
 * adapter between the exchange and its logic module (include/psd2edge_gcra.h via
 * spike_arrest.h, breaker.c, quota.c), whose state it finds in daemon memory (spike arrest) or
 * in the policy store's pinned maps (breaker, quota). */
#include "policy.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "breaker.h"
#include "clientid.h"
#include "log.h"
#include "policy_store.h"
#include "qcstatement.h"
#include "quota.h"
#include "spike_arrest.h"
#include "spinlock.h"

static enum policy_verdict refuse(struct policy_request *pr, int status, const char *error,
				  const char *description, unsigned retry_after, const char *reason)
{
	pr->status = status;
	pr->error = error;
	pr->description = description;
	pr->retry_after = retry_after;
	pr->reason = reason;
	return POLICY_REFUSE;
}

/* The free of a policy that holds nothing of its own. */
static void policy_free_alone(struct policy *p)
{
	free(p);
}

/* --- require_roles: the PSD2 roles of the client's certificate (qcstatement.h) ------------ */

#define ROLES_WHY_MAX (sizeof("the certificate's PSD2 roles lack ") + PSD2_ROLES_TEXT_MAX)

struct roles_policy {
	struct policy base;
	uint32_t required;
	char why[PSD2_ROLES_ALL + 1][ROLES_WHY_MAX]; /* by the set of roles missing */
};

static enum policy_verdict roles_on_request(struct policy *p, struct policy_request *pr,
					    uint64_t *token)
{
	(void)token;
	struct roles_policy *rp = (struct roles_policy *)p;
	uint32_t missing = rp->required & ~pr->psd2_roles;
	if (!missing)
		return POLICY_NEXT;
	return refuse(pr, 403, "forbidden", rp->why[missing], 0, "psd2_role_missing");
}

static const struct policy_ops roles_ops = {
	.name = "require_roles",
	.on_request = roles_on_request,
	.free = policy_free_alone,
};

struct policy *policy_require_roles_new(uint32_t roles)
{
	struct roles_policy *rp = calloc(1, sizeof(*rp));
	if (!rp)
		return NULL;
	rp->base.ops = &roles_ops;
	rp->required = roles & PSD2_ROLES_ALL;
	for (uint32_t missing = 1; missing <= PSD2_ROLES_ALL; missing++) {
		char names[PSD2_ROLES_TEXT_MAX];
		psd2_roles_format(missing, names);
		snprintf(rp->why[missing], sizeof(rp->why[missing]),
			 "the certificate's PSD2 roles lack %s", names);
	}
	return &rp->base;
}

/* --- verify_jwt: a valid bearer token (jwt.h), bound to the client's certificate ----------- */

struct verify_jwt_policy {
	struct policy base;
	struct jwt_verifier *verifier;
};

static enum policy_verdict verify_jwt_on_request(struct policy *p, struct policy_request *pr,
						 uint64_t *token)
{
	(void)token;
	struct verify_jwt_policy *vp = (struct verify_jwt_policy *)p;
	enum jwt_verdict verdict = jwt_check_request(pr->bearer, vp->verifier, pr->req,
						     pr->cert_sha256, pr->now_s);
	if (verdict == JWT_VALID)
		return POLICY_NEXT;
	jwt_check_challenge(pr->bearer, pr->resp_headers);
	return refuse(pr, 401, "invalid_token", pr->bearer->why, 0,
		      verdict == JWT_MISSING ? "token_missing" : "token_invalid");
}

static const struct policy_ops verify_jwt_ops = {
	.name = "verify_jwt",
	.on_request = verify_jwt_on_request,
	.free = policy_free_alone,
};

struct policy *policy_verify_jwt_new(struct jwt_verifier *v)
{
	struct verify_jwt_policy *vp = calloc(1, sizeof(*vp));
	if (!vp)
		return NULL;
	vp->base.ops = &verify_jwt_ops;
	vp->verifier = v;
	return &vp->base;
}

/* --- spike arrest: GCRA per client and route, in daemon memory ---------------------------- */

struct spike_policy {
	struct policy base;
	struct spike_arrest_rule rule;
	__u64 *tat; /* by client slot (PSD2_MAX_CLIENTS) */
};

static enum policy_verdict spike_on_request(struct policy *p, struct policy_request *pr,
					    uint64_t *token)
{
	(void)token;
	struct spike_policy *sp = (struct spike_policy *)p;
	uint32_t retry_after;
	if (spike_arrest_take(&sp->tat[pr->slot % PSD2_MAX_CLIENTS], pr->now_ns, &sp->rule,
			      &retry_after))
		return POLICY_NEXT;
	return refuse(pr, 429, "too_many_requests", "request rate above the route's spike arrest",
		      retry_after, "spike_arrest");
}

static void spike_free(struct policy *p)
{
	struct spike_policy *sp = (struct spike_policy *)p;
	free(sp->tat);
	free(sp);
}

static const struct policy_ops spike_ops = {
	.name = "spike_arrest",
	.on_request = spike_on_request,
	.free = spike_free,
};

struct policy *policy_spike_arrest_new(const struct config_spike_arrest *c)
{
	struct spike_policy *sp = calloc(1, sizeof(*sp));
	if (!sp || !(sp->tat = calloc(PSD2_MAX_CLIENTS, sizeof(*sp->tat)))) {
		free(sp);
		return NULL;
	}
	sp->base.ops = &spike_ops;
	spike_arrest_rule_init(&sp->rule, c);
	return &sp->base;
}

/* --- circuit breaker: one per upstream, in the pinned `breakers` map --------------------- */

struct breaker_policy {
	struct policy base;
	const struct config_breaker *cfg;
	struct psd2_breaker *state;
};

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static enum policy_verdict breaker_on_request(struct policy *p, struct policy_request *pr,
					      uint64_t *token)
{
	struct breaker_policy *bp = (struct breaker_policy *)p;
	uint32_t retry_after = 0;
	switch (breaker_admit(bp->state, bp->cfg, pr->now_ms, &retry_after)) {
	case BREAKER_PASS:
		*token = 0;
		return POLICY_NEXT;
	case BREAKER_PROBE:
		*token = 1;
		return POLICY_NEXT;
	case BREAKER_REFUSE:
		break;
	}
	return refuse(pr, 503, "temporarily_unavailable",
		      "the upstream is failing: circuit breaker open", retry_after, "breaker_open");
}

static void breaker_on_complete(struct policy *p, const struct exchange_outcome *o,
				uint64_t token)
{
	struct breaker_policy *bp = (struct breaker_policy *)p;
	bool probe = token == 1;
	if (o->result == EXCHANGE_NOT_FORWARDED) {
		if (probe)
			breaker_cancel_probe(bp->state);
		return;
	}
	bool failure = o->result != EXCHANGE_RESPONDED || o->status >= 500;
	breaker_record(bp->state, bp->cfg, probe, failure, wall_ms());
}

static const struct policy_ops breaker_ops = {
	.name = "circuit_breaker",
	.on_request = breaker_on_request,
	.on_complete = breaker_on_complete,
	.free = policy_free_alone,
};

struct policy *policy_breaker_new(const struct config_breaker *c, struct psd2_breaker *state)
{
	struct breaker_policy *bp = calloc(1, sizeof(*bp));
	if (!bp)
		return NULL;
	bp->base.ops = &breaker_ops;
	bp->cfg = c;
	bp->state = state;
	return &bp->base;
}

/* --- quota: per client_id (and key value), in the pinned `quota` map --------------------- */

struct quota_policy {
	struct policy base;
	const struct config_quota *cfg;
	struct quota_rule rule;
	struct policy_store *store;
	pthread_mutex_t full_log_lock; /* the workers share full_log */
	struct log_ratelimit full_log;
};

static void quota_write_headers(const struct quota_policy *qp, struct buf *out,
				const struct quota_state *st)
{
	switch (qp->cfg->headers) {
	case RATELIMIT_HEADERS_DRAFT:
		buf_printf(out,
			   "RateLimit-Policy: %llu;w=%u\r\nRateLimit: limit=%llu, remaining=%llu, "
			   "reset=%u\r\n",
			   (unsigned long long)st->limit, qp->rule.window_seconds,
			   (unsigned long long)st->limit, (unsigned long long)st->remaining, st->reset);
		break;
	case RATELIMIT_HEADERS_X:
		buf_printf(out,
			   "X-RateLimit-Limit: %llu\r\nX-RateLimit-Remaining: %llu\r\n"
			   "X-RateLimit-Reset: %u\r\n",
			   (unsigned long long)st->limit, (unsigned long long)st->remaining, st->reset);
		break;
	case RATELIMIT_HEADERS_NONE:
		break;
	}
}

/* The value the quota counts by ("" for a quota per client_id), read with the same rules as
 * the client_id: an application must not read another account id than the one counted. */
static enum policy_verdict quota_key(const struct quota_policy *qp, struct policy_request *pr,
				     char key[REGISTRY_CLIENT_ID_MAX + 1])
{
	key[0] = '\0';
	if (!qp->cfg->per_key)
		return POLICY_NEXT;
	const char *why = NULL;
	switch (clientid_extract(&qp->cfg->key, 1, pr->req, key, &why)) {
	case CLIENTID_OK:
		return POLICY_NEXT;
	case CLIENTID_MISSING:
		return refuse(pr, 400, "invalid_request", "the route's quota key is missing", 0,
			      "quota_key_missing");
	case CLIENTID_AMBIGUOUS:
		return refuse(pr, 400, "invalid_request", why, 0, "quota_key_ambiguous");
	case CLIENTID_CONFLICT:
	case CLIENTID_INVALID:
		break;
	}
	return refuse(pr, 400, "invalid_request", "the route's quota key is malformed", 0,
		      "quota_key_invalid");
}

/* The counter of (quota, client, key), locked. A counter found without the lock may be reused
 * for another identity before the lock is taken (a full map recycles idle ones): the identity
 * is checked again under it. */
static struct psd2_quota *quota_counter_locked(struct quota_policy *qp, const char *client_id,
					       const char *key, bool create)
{
	for (int attempt = 0; attempt < 4; attempt++) {
		struct psd2_quota *q = policy_store_quota(qp->store, qp->cfg->name, client_id, key,
							  create);
		if (!q)
			return NULL;
		spin_lock(&q->lock);
		if (strncmp(q->name, qp->cfg->name, sizeof(q->name)) == 0 &&
		    strncmp(q->client_id, client_id, sizeof(q->client_id)) == 0 &&
		    strncmp(q->key, key, sizeof(q->key)) == 0)
			return q;
		spin_unlock(&q->lock);
	}
	return NULL;
}

static enum policy_verdict quota_on_request(struct policy *p, struct policy_request *pr,
					    uint64_t *token)
{
	(void)token;
	struct quota_policy *qp = (struct quota_policy *)p;
	char key[REGISTRY_CLIENT_ID_MAX + 1];
	if (quota_key(qp, pr, key) == POLICY_REFUSE)
		return POLICY_REFUSE;
	struct psd2_quota *q = quota_counter_locked(qp, pr->client_id, key, true);
	if (!q) {
		/* Counting is what keeps the TPP's certificate from being blocked by the bank:
		 * without a counter the request does not go. */
		uint64_t suppressed;
		pthread_mutex_lock(&qp->full_log_lock);
		bool log_now = log_ratelimit_pass(&qp->full_log, pr->now_ns / 1000000, &suppressed);
		pthread_mutex_unlock(&qp->full_log_lock);
		if (log_now)
			log_error("quota %s: the quota map is full; requests of new counters are "
				  "refused (%llu more since the last such line)",
				  qp->cfg->name, (unsigned long long)suppressed);
		return refuse(pr, 503, "temporarily_unavailable", "quota state is full", 60,
			      "quota_store_full");
	}
	struct quota_state st;
	bool counted = quota_take(q, &qp->rule, pr->now_s, &st);
	spin_unlock(&q->lock);
	quota_write_headers(qp, pr->resp_headers, &st);
	if (counted)
		return POLICY_NEXT;
	return refuse(pr, 429, "too_many_requests", "quota exceeded", st.reset, "quota_exceeded");
}

static void quota_add_headers(struct policy *p, struct policy_request *pr)
{
	struct quota_policy *qp = (struct quota_policy *)p;
	char key[REGISTRY_CLIENT_ID_MAX + 1];
	struct policy_request probe = *pr;
	if (quota_key(qp, &probe, key) == POLICY_REFUSE)
		return;
	struct quota_state st = {.limit = qp->rule.limit, .remaining = qp->rule.limit, .reset = 1};
	struct psd2_quota *q = quota_counter_locked(qp, pr->client_id, key, false);
	if (q) {
		quota_peek(q, &qp->rule, pr->now_s, &st);
		spin_unlock(&q->lock);
	}
	quota_write_headers(qp, pr->resp_headers, &st);
}

static void quota_free(struct policy *p)
{
	struct quota_policy *qp = (struct quota_policy *)p;
	pthread_mutex_destroy(&qp->full_log_lock);
	free(qp);
}

static const struct policy_ops quota_ops = {
	.name = "quota",
	.on_request = quota_on_request,
	.add_headers = quota_add_headers,
	.free = quota_free,
};

struct policy *policy_quota_new(const struct config_quota *c, struct policy_store *store)
{
	struct quota_policy *qp = calloc(1, sizeof(*qp));
	if (!qp)
		return NULL;
	qp->base.ops = &quota_ops;
	qp->cfg = c;
	qp->store = store;
	qp->rule = (struct quota_rule){
		.limit = c->limit, .window = c->window, .window_seconds = c->window_seconds};
	pthread_mutex_init(&qp->full_log_lock, NULL);
	qp->full_log.period_ms = 10000;
	return &qp->base;
}
