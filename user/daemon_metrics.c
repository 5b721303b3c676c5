#include "daemon_metrics.h"

#include <stdio.h>
#include <time.h>

#include "cert.h"
#include "daemon.h"
#include "dataplane.h"
#include "ktls.h"
#include "metrics.h"
#include "policy_store.h"
#include "registry.h"
#include "worker.h"

static void workers_source(void *arg, struct metrics_sink *sink)
{
	const struct daemon *d = arg;
	metrics_emit(sink, METRIC_workers, d->n_workers, NULL);
	for (unsigned i = 0; i < d->n_workers; i++) {
		char id[16];
		snprintf(id, sizeof(id), "%u", i);
		metrics_emit(sink, METRIC_worker_sessions, atomic_load(&d->workers[i].n_sessions),
			     METRIC_LABELS(id));
	}
}

static void ktls_source(void *arg, struct metrics_sink *sink)
{
	(void)arg;
	struct ktls_counters c;
	ktls_counters_read(&c);
	metrics_emit(sink, METRIC_ktls_kernel_available, ktls_kernel_available(), NULL);
	metrics_emit(sink, METRIC_ktls_connections, (int64_t)c.connections, NULL);
	metrics_emit(sink, METRIC_ktls_offloads, (int64_t)c.tx, METRIC_LABELS("tx"));
	metrics_emit(sink, METRIC_ktls_offloads, (int64_t)c.rx, METRIC_LABELS("rx"));
	metrics_emit(sink, METRIC_ktls_installs, (int64_t)c.tx_openssl,
		     METRIC_LABELS("tx", "openssl"));
	metrics_emit(sink, METRIC_ktls_installs, (int64_t)c.tx_manual, METRIC_LABELS("tx", "manual"));
	metrics_emit(sink, METRIC_ktls_installs, (int64_t)c.rx_openssl,
		     METRIC_LABELS("rx", "openssl"));
	metrics_emit(sink, METRIC_ktls_installs, (int64_t)c.rx_manual, METRIC_LABELS("rx", "manual"));
	metrics_emit(sink, METRIC_ktls_open, (int64_t)c.tx_open, METRIC_LABELS("tx"));
	metrics_emit(sink, METRIC_ktls_open, (int64_t)c.rx_open, METRIC_LABELS("rx"));
	metrics_emit(sink, METRIC_ktls_fallbacks, (int64_t)c.fallback, NULL);
	for (int r = KTLS_OK + 1; r < KTLS_REASON_COUNT; r++)
		metrics_emit(sink, METRIC_ktls_fallbacks_by_reason, (int64_t)c.fallback_by[r],
			     METRIC_LABELS(ktls_reason_key((enum ktls_reason)r)));
	metrics_emit(sink, METRIC_ktls_keyupdate_closes, (int64_t)c.keyupdate_closes, NULL);
	metrics_emit(sink, METRIC_ktls_alerts_received, (int64_t)c.alerts_received, NULL);
	metrics_emit(sink, METRIC_ktls_tickets_dropped, (int64_t)c.tickets_dropped, NULL);
	metrics_emit(sink, METRIC_ktls_renegotiations_refused, (int64_t)c.renegotiations_refused,
		     NULL);
}

/* The quota map's fill and the breakers of the upstreams that have one. A breaker's state is
 * the one it was last put in: an open breaker whose cool-down is over turns half-open at the
 * next request. */
static void policy_source(void *arg, struct metrics_sink *sink)
{
	struct daemon *d = arg;
	metrics_emit(sink, METRIC_quota_map_full, (int64_t)policy_store_quota_full(d->policy), NULL);
	metrics_emit(sink, METRIC_quota_map_entries, policy_store_quota_used(d->policy), NULL);
	metrics_emit(sink, METRIC_quota_map_capacity, PSD2_MAX_QUOTA_ENTRIES, NULL);
	for (unsigned i = 0; i < d->cfg.n_upstreams; i++) {
		const struct config_upstream *u = &d->cfg.upstreams[i];
		const struct psd2_breaker *b;
		if (!u->breaker.enabled || !(b = policy_store_breaker(d->policy, i)))
			continue;
		metrics_emit(sink, METRIC_breaker_state, b->state, METRIC_LABELS(u->name));
		metrics_emit(sink, METRIC_breaker_opened, (int64_t)b->opened_total,
			     METRIC_LABELS(u->name));
		metrics_emit(sink, METRIC_breaker_rejected, (int64_t)b->rejected_total,
			     METRIC_LABELS(u->name));
	}
}

/* The certificate a context presents (the server's, an upstream's client certificate). */
static void context_expiry(struct metrics_sink *sink, SSL_CTX *ctx, const char *kind,
			   const char *name, int64_t now)
{
	X509 *x = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
	struct cert_info info;
	if (x && cert_get_info(x, &info) == 0)
		metrics_emit(sink, METRIC_certificate_expiry_seconds, info.not_after - now,
			     METRIC_LABELS(kind, name));
}

struct bound_walk {
	struct metrics_sink *sink;
	int64_t now;
};

static void bound_cert(void *arg, const struct registry_cert *c, const char *pem)
{
	(void)pem;
	struct bound_walk *w = arg;
	char hex[CERT_THUMB_HEX_LEN + 1];
	cert_thumb_to_hex(c->info.thumb, hex);
	metrics_emit(w->sink, METRIC_client_certificate_expiry_seconds, c->info.not_after - w->now,
		     METRIC_LABELS(c->client_id, hex));
}

static void certificates_source(void *arg, struct metrics_sink *sink)
{
	struct daemon *d = arg;
	int64_t now = time(NULL);
	context_expiry(sink, d->server_ctx, "server", "tls", now);
	for (unsigned i = 0; i < d->cfg.n_upstreams; i++)
		context_expiry(sink, d->upstreams[i].ctx, "upstream", d->cfg.upstreams[i].name, now);
	struct bound_walk w = {.sink = sink, .now = now};
	registry_foreach_active_cert(d->reg, bound_cert, &w); /* a failure leaves some out */
}

static void registry_source(void *arg, struct metrics_sink *sink)
{
	struct daemon *d = arg;
	struct registry_counts n;
	if (registry_counts(d->reg, &n) != REG_OK)
		return; /* no figures rather than wrong ones */
	metrics_emit(sink, METRIC_registry_clients, n.clients, NULL);
	metrics_emit(sink, METRIC_registry_certificates, n.certs_active, METRIC_LABELS("active"));
	metrics_emit(sink, METRIC_registry_certificates, n.certs_revoked,
		     METRIC_LABELS("revoked"));
	metrics_emit(sink, METRIC_registry_deny_entries, n.deny_entries, NULL);
}

int daemon_metrics_start(struct daemon *d)
{
	if (metrics_source_add(workers_source, d) < 0 ||
	    metrics_source_add(dataplane_metrics, d->dp) < 0 ||
	    metrics_source_add(ktls_source, NULL) < 0 ||
	    (d->policy && metrics_source_add(policy_source, d) < 0) ||
	    metrics_source_add(certificates_source, d) < 0 ||
	    metrics_source_add(registry_source, d) < 0)
		return -1;
	return 0;
}
