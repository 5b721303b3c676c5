/* A session: one TPP connection. It reads a request, proves the TPP's identity once the head
 * (or a form body) is known, lets the route's policies judge it (exchange.h), forwards it on a
 * connection checked out of the worker's pool for the route's upstream (upconn.h), relays the
 * response, and loops for keep-alive. States advance only inside session_step().
 *
 * A session reaches the process around it only through its session_env: the worker gives its
 * own, and unit tests build one to run sessions over socketpairs without a daemon. */
#ifndef PSD2EDGE_SESSION_H
#define PSD2EDGE_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "cert.h"
#include "config.h"
#include "conn.h"
#include "exchange.h"
#include "http.h"
#include "registry.h"
#include "splice_fwd.h"
#include "upconn.h"

struct dataplane;
struct ev_loop;
struct hub_job;
struct hub_service;

/* Everything a session uses that is not its own. */
struct session_env {
	const struct config *cfg;
	struct ev_loop *loop;
	SSL_CTX *server_ctx;  /* NULL: plain TCP clients (tests) */
	struct registry *reg; /* bindings the identity check reads */
	struct dataplane *dp; /* NULL: no data plane (flows are not reported) */
	struct route_table *routes;
	struct upconn_pool *pools; /* one per cfg->upstreams, this worker's */
	struct buf *access_log;    /* lines of this loop pass (log_access_commit) */
	unsigned worker_id;
	uint64_t request_id_salt;
	uint64_t request_seq;
	/* Hub routes' jobs (hub_service.h), NULL without a hub route; hub_done brings a job's
	 * answer back to this thread, which then calls session_hub_done. */
	struct hub_service *hub;
	void (*hub_done)(struct hub_job *job, void *arg);
	void *hub_done_arg;
	unsigned n_dead; /* sessions closed since the owner last freed them */
	bool draining;   /* finish in-flight requests, then close */
};

/* Which body, if any, is moving socket-to-socket through the session's pipe. */
enum session_splice { SPLICE_NONE, SPLICE_REQUEST_BODY, SPLICE_RESPONSE_BODY };

/* Bodies shorter than this are not worth a pipe. */
#define SESSION_SPLICE_MIN (64 * 1024)

enum session_state {
	SESSION_HANDSHAKE, /* TLS handshake with the TPP */
	SESSION_READ_HEAD, /* waiting for / reading a request head */
	SESSION_READ_FORM, /* buffering an urlencoded body that carries the client_id */
	SESSION_FORWARD,   /* request accepted: streaming it upstream, relaying the response */
	SESSION_HUB,       /* a hub route's request waits for the hub service's answer */
	SESSION_DISCARD,   /* refused while its body was still coming: reading it to drop it */
	SESSION_CLOSING,   /* flushing a final response, then close */
};

struct session {
	struct session *prev, *next; /* worker's list */
	struct session_env *env;
	enum session_state state;
	bool dead; /* closed; freed by the worker outside any callback */

	struct conn client;
	struct sockaddr_storage peer, local;
	char peer_text[64];
	uint8_t thumb[CERT_THUMB_LEN];
	char thumb_hex[CERT_THUMB_HEX_LEN + 1];
	bool client_eof;
	bool close_after_flush;
	bool buffers_released; /* idle: the buffers below and OpenSSL's are given back */

	/* Identity proven by the last accepted request (what revoke and XDP flows key on). */
	bool proven;
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint32_t slot;
	uint32_t psd2_roles; /* of the certificate's binding (X-Client-Psd2-Roles) */
	bool flow_added;

	struct upconn *up; /* checked out for the current exchange, else NULL */

	/* hub routes */
	struct hub_job *hub_job; /* submitted, not answered yet */
	bool hub_form_buffered;  /* how to go on once the bank's token is known */
	char *hub_bearer;        /* the Authorization the request goes to the bank with */
	int64_t hub_start_ms;

	struct buf c_in, c_out;
	struct splice_fwd splice;   /* pipe created on first use */
	bool splice_open;
	enum session_splice splicing;
	enum splice_fwd_result splice_last;
	struct http_limits req_limits, resp_limits;
	struct http_msg req, resp;

	/* current request */
	struct exchange x;
	char request_id[33];
	bool req_done;        /* whole request handed to u_out */
	bool resp_head_sent;
	bool resp_chunked;    /* body pieces to the client must be chunk-encoded */
	bool client_keep_alive;
	unsigned status;
	const char *verdict;
	int64_t accepted_ms, head_start_ms, forward_start_ms, last_activity_ms;
	int64_t head_start_us; /* head_start_ms in µs, for the request duration histogram */
	uint64_t req_body_bytes, resp_bytes;
	/* The request body's current rate window: its start and req_body_bytes then. */
	int64_t body_window_start_ms;
	uint64_t body_window_bytes;
};

/* Takes ownership of fd (accepted, non-blocking). NULL when out of memory (fd closed). */
struct session *session_new(struct session_env *env, int fd, const struct sockaddr_storage *peer);
/* Enforces the session's current deadline (handshake, head, idle, upstream response). */
void session_check_deadline(struct session *s, int64_t now_ms);
/* The hub service answered job (on the session's worker thread); frees it. */
void session_hub_done(struct hub_job *job);
/* Closes both connections at once (control-plane cut, shutdown). */
void session_close(struct session *s);
/* After a graceful-drain request: idle sessions close now, busy ones after their response. */
void session_drain(struct session *s);
void session_free(struct session *s);

#endif
