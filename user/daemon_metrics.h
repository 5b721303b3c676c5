/* The daemon's metrics sources (metrics.h): what is read from the daemon's state at each
 * render: the workers and their connections, the data plane's and kTLS's counters, the quota
 * map and the circuit breakers, the registry's size, and the expiry of every certificate in
 * use (the server's, each upstream's client certificate, each active bound client
 * certificate). They run on the main thread, where `stats` and GET /metrics are served. */
#ifndef PSD2EDGE_DAEMON_METRICS_H
#define PSD2EDGE_DAEMON_METRICS_H

struct daemon;

/* Once the workers, the data plane, the policy store and the registry are set up; until they
 * go, metrics_sources_clear() first. -1 when the metrics have no room for the sources (a
 * programming error). */
int daemon_metrics_start(struct daemon *d);

#endif
