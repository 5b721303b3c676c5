/* A connection to an upstream, and each worker's pool of idle ones. An exchange checks one out
 * for its request (an idle one of the route's upstream, else a new one), and gives it back when
 * the response is complete: to the pool when its framing left nothing uncertain, else closed.
 * Pooled connections belong to the worker, not to a session, so a keep-alive TPP connection
 * holds none between requests, and requests of different routes never share one. */
#ifndef PSD2EDGE_UPCONN_H
#define PSD2EDGE_UPCONN_H

#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "conn.h"

struct ev_loop;
struct config_upstream;

struct upconn {
	struct upconn *next; /* in its pool's idle list */
	struct upconn_pool *pool;
	struct conn c;
	bool connecting; /* TCP connect in progress */
	bool eof;        /* the upstream closed its side */
	bool reused;     /* checked out of the pool: it served a request before */
	struct buf in, out;
	int64_t opened_ms;    /* connect started (ev_now_ms): the connect deadline */
	int64_t connected_ms; /* connect completed: the TLS handshake deadline */
};

/* One worker's idle connections to one upstream. */
struct upconn_pool {
	struct ev_loop *loop;
	const struct config_upstream *cfg;
	SSL_CTX *ctx;            /* NULL for an http upstream */
	const char *host_header; /* Host sent upstream */
	struct upconn *idle;
	unsigned n_idle;
};

void upconn_pool_init(struct upconn_pool *p, struct ev_loop *loop,
		      const struct config_upstream *cfg, SSL_CTX *ctx, const char *host_header);
void upconn_pool_free(struct upconn_pool *p);

/* An idle connection of the pool that is still sound, else a new one (connect started). NULL
 * with errno when a socket cannot be opened or the connect fails at once. The caller sets its
 * own event callback (ev_set) on u->c.fd. */
struct upconn *upconn_checkout(struct upconn_pool *p);
/* After a complete response: back to the pool when reusable and there is room, else closed. */
void upconn_release(struct upconn *u, bool reusable);
void upconn_close(struct upconn *u);

enum upconn_state { UPCONN_READY, UPCONN_WAIT, UPCONN_FAILED };
/* Drives connect and TLS handshake. UPCONN_FAILED sets *why (static or u->c.error) and *tls. */
enum upconn_state upconn_establish(struct upconn *u, const char **why, bool *tls);
/* Reads into u->in until it would block, EOF, or `high_water` bytes are held. Whether
 * anything happened (bytes or EOF). */
bool upconn_read(struct upconn *u, size_t high_water);
/* Writes u->out. -1 when the connection broke. Whether anything was written in *progress. */
int upconn_flush(struct upconn *u, bool *progress);

#endif
