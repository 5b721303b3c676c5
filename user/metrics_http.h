/* The Prometheus endpoint (metrics.listen): a small HTTP/1.x responder on the main thread's
 * event loop, apart from the TPP listeners. GET /metrics answers 200 with the metrics in the
 * text format 0.0.4 (metrics_render_text); another path 404, another method 405, a malformed
 * request 400, a head over METRICS_HTTP_MAX_HEAD bytes 431. One request per connection, which
 * closes once the answer is written; at most METRICS_HTTP_MAX_CONNS at once (others are closed
 * at accept), each cut after METRICS_HTTP_TIMEOUT_MS. No authentication: keep it on loopback or
 * a management network. */
#ifndef PSD2EDGE_METRICS_HTTP_H
#define PSD2EDGE_METRICS_HTTP_H

#include <stddef.h>

#include "config.h"

#define METRICS_HTTP_MAX_HEAD 4096
#define METRICS_HTTP_MAX_CONNS 16
#define METRICS_HTTP_TIMEOUT_MS 10000

struct ev_loop;
struct metrics_http;

/* Binds and listens on addr. -1 with err ("127.0.0.1:9464: Address already in use"). */
int metrics_http_start(struct ev_loop *loop, const struct config_addr *addr,
		       struct metrics_http **out, char *err, size_t errlen);
/* Closes the listener and every connection (NULL: nothing). */
void metrics_http_stop(struct metrics_http *m);

#endif
