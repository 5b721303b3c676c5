#include "exchange.h"

#include <stdio.h>
#include <string.h>

#include "metrics.h"
#include "policy_store.h"
#include "route.h"

_Static_assert(ROUTE_MAX_POLICIES <= METRICS_ROUTE_POLICIES, "a metrics slot for each policy");

/* The routes as the metrics name them: prefix, upstream, and the policy in each slot. */
static void route_table_name_metrics(const struct route_table *t)
{
	struct metrics_route names[CONFIG_MAX_ROUTES];
	memset(names, 0, sizeof(names));
	for (unsigned i = 0; i < t->n; i++) {
		names[i].prefix = t->route[i].cfg->prefix;
		names[i].upstream = t->route[i].upstream_name;
		for (unsigned k = 0; k < t->route[i].n_policies; k++)
			names[i].policy[k] = t->route[i].policy[k]->ops->name;
	}
	metrics_routes_set(names, t->n);
}

int route_table_init(struct route_table *t, const struct config *cfg, struct policy_store *store,
		     char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->cfg = cfg;
	if (cfg->jwt.jwks && !(t->jwt = jwt_verifier_new(&cfg->jwt, err, errlen)))
		return -1;
	for (unsigned i = 0; i < cfg->n_routes; i++) {
		const struct config_route *rc = &cfg->routes[i];
		const struct config_upstream *up = &cfg->upstreams[rc->upstream];
		struct route_rt *r = &t->route[i];
		r->cfg = rc;
		r->upstream_name = up->name;
		r->index = i;
		t->n = i + 1;
		const char *what = NULL;
		if (rc->require_roles &&
		    !(r->policy[r->n_policies++] = policy_require_roles_new(rc->require_roles)))
			what = "require_roles";
		if (!what && rc->verify_jwt &&
		    !(r->policy[r->n_policies++] = policy_verify_jwt_new(t->jwt)))
			what = "verify_jwt";
		if (!what && rc->spike_arrest.rate &&
		    !(r->policy[r->n_policies++] = policy_spike_arrest_new(&rc->spike_arrest)))
			what = "spike_arrest";
		if (!what && up->breaker.enabled) {
			struct psd2_breaker *b = store ? policy_store_breaker(store, rc->upstream) : NULL;
			if (!b || !(r->policy[r->n_policies++] = policy_breaker_new(&up->breaker, b)))
				what = "circuit breaker";
		}
		if (!what && rc->quota.limit &&
		    (!store || !(r->policy[r->n_policies++] = policy_quota_new(&rc->quota, store))))
			what = "quota";
		if (what) {
			if (r->n_policies && !r->policy[r->n_policies - 1])
				r->n_policies--;
			snprintf(err, errlen, "routes[%u]: cannot set up its %s%s", i, what,
				 store ? "" : " (no policy store: bpf.pin_dir)");
			route_table_free(t);
			return -1;
		}
	}
	route_table_name_metrics(t);
	return 0;
}

void route_table_free(struct route_table *t)
{
	for (unsigned i = 0; i < t->n; i++)
		for (unsigned k = 0; k < t->route[i].n_policies; k++)
			t->route[i].policy[k]->ops->free(t->route[i].policy[k]);
	t->n = 0;
	jwt_verifier_free(t->jwt);
	t->jwt = NULL;
	metrics_routes_set(NULL, 0);
}

static enum policy_verdict refuse(struct policy_request *pr, int status, const char *error,
				  const char *description, const char *reason)
{
	pr->status = status;
	pr->error = error;
	pr->description = description;
	pr->retry_after = 0;
	pr->reason = reason;
	return POLICY_REFUSE;
}

enum policy_verdict exchange_admit(struct exchange *x, struct route_table *t,
				   struct policy_request *pr)
{
	const char *url = http_msg_url(pr->req);
	const char *q = memchr(url, '?', pr->req->url_len);
	int i = route_match(t->cfg, url, q ? (size_t)(q - url) : pr->req->url_len);
	if (i < 0)
		return refuse(pr, 404, "not_found", "no route for this path", "no_route");
	struct route_rt *r = &t->route[i];
	x->route = r;
	metrics_route_request(r->index);
	pr->resp_headers = &x->resp_headers;
	pr->bearer = &x->bearer;
	for (unsigned k = 0; k < r->n_policies; k++) {
		struct policy *p = r->policy[k];
		bool passed = p->ops->on_request(p, pr, &x->token[k]) == POLICY_NEXT;
		metrics_route_policy(r->index, k, passed);
		if (passed) {
			x->n_admitted = k + 1;
			continue;
		}
		/* The response still carries what the later policies would have said. */
		for (unsigned later = k + 1; later < r->n_policies; later++)
			if (r->policy[later]->ops->add_headers)
				r->policy[later]->ops->add_headers(r->policy[later], pr);
		x->pending = true;
		struct exchange_outcome o = {.result = EXCHANGE_NOT_FORWARDED,
					     .status = (unsigned)pr->status};
		exchange_complete(x, &o);
		return POLICY_REFUSE;
	}
	x->pending = true;
	return POLICY_NEXT;
}

void exchange_complete(struct exchange *x, const struct exchange_outcome *o)
{
	if (!x->pending)
		return;
	x->pending = false;
	struct route_rt *r = x->route;
	metrics_route_response(r->index, o->status);
	for (unsigned k = x->n_admitted; k-- > 0;)
		if (r->policy[k]->ops->on_complete)
			r->policy[k]->ops->on_complete(r->policy[k], o, x->token[k]);
}

void exchange_reset(struct exchange *x)
{
	x->route = NULL;
	x->n_admitted = 0;
	x->pending = false;
	buf_reset(&x->resp_headers);
	jwt_check_clear(&x->bearer);
}

void exchange_free(struct exchange *x)
{
	buf_free(&x->resp_headers);
	jwt_check_clear(&x->bearer);
}
