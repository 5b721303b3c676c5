/* One request/response between a TPP and an upstream, once the TPP's identity is proven: the
 * route it takes, the route's policies that let it through, the headers they add to its
 * response, and the one place its outcome is known (exchange_complete), which reports it to
 * those policies and to the route's metrics (metrics.h).
 *
 * The route table holds, per configured route, its policy instances; it is built at start and
 * shared by every worker. Its routes are the ones the route metrics count on. */
#ifndef PSD2EDGE_EXCHANGE_H
#define PSD2EDGE_EXCHANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "config.h"
#include "jwt.h"
#include "policy.h"

#define ROUTE_MAX_POLICIES 5

struct route_rt {
	const struct config_route *cfg;
	const char *upstream_name;
	struct policy *policy[ROUTE_MAX_POLICIES]; /* in the order they run */
	unsigned n_policies;
	unsigned index; /* in the table: the route's series in the metrics */
};

struct route_table {
	struct route_rt route[CONFIG_MAX_ROUTES]; /* as cfg->routes */
	unsigned n;
	const struct config *cfg;
	/* The keys of cfg->jwt (NULL without it), for verify_jwt policies and jwt:CLAIM
	 * sources; jwt_keys_reload swaps them on a reload. */
	struct jwt_verifier *jwt;
};

struct policy_store;

/* store may be NULL only when no route has a quota or breaker (the configuration's rule). The
 * routes' metrics start at zero (metrics_routes_set: before the workers start). */
int route_table_init(struct route_table *t, const struct config *cfg, struct policy_store *store,
		     char *err, size_t errlen);
void route_table_free(struct route_table *t);

struct exchange {
	struct route_rt *route;  /* NULL until routed */
	uint64_t token[ROUTE_MAX_POLICIES];
	unsigned n_admitted;     /* policies whose on_request let it through */
	bool pending;            /* admitted; exchange_complete not called yet */
	struct buf resp_headers; /* added by policies to whatever response is sent */
	struct jwt_check bearer; /* the request's bearer token, verified at most once */
};

/* Picks the route of the (normalised) path and runs its policies. POLICY_REFUSE leaves pr's
 * status, error, description, retry_after and reason set (404 when no route matches). */
enum policy_verdict exchange_admit(struct exchange *x, struct route_table *t,
				   struct policy_request *pr);
/* Reports the outcome to the route's metrics and to the policies that let it through; the
 * second and later calls do nothing. A request refused in exchange_admit needs none. */
void exchange_complete(struct exchange *x, const struct exchange_outcome *o);
/* Ready for the next request; keeps the header buffer's allocation. */
void exchange_reset(struct exchange *x);
void exchange_free(struct exchange *x);

#endif
