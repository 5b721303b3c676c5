/* A worker: one thread with its own event loop and its own SO_REUSEPORT listeners, serving
 * the sessions it accepted. Other threads talk to it only through worker_post(). */
#ifndef PSD2EDGE_WORKER_H
#define PSD2EDGE_WORKER_H

#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "buf.h"
#include "cert.h"
#include "config.h"
#include "log.h"
#include "registry.h"
#include "session.h"
#include "upconn.h"

struct daemon;
struct ev_loop;

enum worker_cmd_kind {
	WORKER_CUT_CLIENT, /* close every session proven as client_id */
	WORKER_CUT_CERT,   /* close every session whose certificate is thumb */
	WORKER_DRAIN,      /* stop accepting; finish in-flight requests; exit when idle */
	WORKER_SET_TLS,    /* a reload's contexts: new handshakes and upstream connections use them */
	WORKER_HUB_DONE,   /* the hub service answered a session's job */
};

struct worker_cmd {
	enum worker_cmd_kind kind;
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint8_t thumb[CERT_THUMB_LEN];
	/* WORKER_SET_TLS: one reference to each, which the worker keeps (or releases with the
	 * command when it never runs it); NULL for an http upstream. */
	SSL_CTX *server_ctx;
	SSL_CTX *upstream_ctx[CONFIG_MAX_UPSTREAMS];
	struct hub_job *job; /* WORKER_HUB_DONE: owned by the command until run */
	struct worker_cmd *next;
};

struct worker {
	unsigned id;
	struct daemon *d;
	pthread_t thread;
	struct ev_loop *loop;
	int listen_fds[CONFIG_MAX_LISTEN];
	unsigned n_listen;
	int wake_fd; /* eventfd: commands are queued */
	pthread_mutex_t cmd_lock;
	struct worker_cmd *cmds;
	struct session *sessions; /* doubly linked; env.n_dead of them closed since the last reap */
	_Atomic unsigned n_sessions; /* written by the worker, read by `stats` */
	struct session_env env;      /* what its sessions see of it; holds a reference to server_ctx */
	struct upconn_pool pools[CONFIG_MAX_UPSTREAMS]; /* idle upstream connections; each holds a
							 * reference to its ctx */
	struct log_ratelimit deny_log; /* lines about peers refused by the deny-list */
	struct buf access_log;         /* access-log lines of this loop pass (log_access_commit) */
};

/* Binds the listeners (so the caller knows the daemon can serve) and creates the loop. */
int worker_init(struct worker *w, struct daemon *d, unsigned id, char *err, size_t errlen);
int worker_start(struct worker *w);
void worker_post(struct worker *w, const struct worker_cmd *cmd);
void worker_join(struct worker *w);
void worker_free(struct worker *w);

#endif
