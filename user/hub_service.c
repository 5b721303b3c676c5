/* Hub mode's service thread (hub_service.h). */
#include "hub_service.h"

#include <errno.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ev.h"
#include "http.h"
#include "jwt.h"
#include "log.h"
#include "metrics.h"
#include "upconn.h"

#define HUB_ANSWER_MAX (64 * 1024) /* a token endpoint's answer */
#define HUB_FDS_MAX 4096           /* a lane's own loop: only bank connections */

/* One bank's work: its jobs run in order on its own thread, so a bank that is slow or down
 * delays only its own consents and refreshes. Its handles are its alone, so the order also
 * makes a handle's refresh single: a second job for it finds the fresh token. */
struct hub_lane {
	struct hub_service *h;
	unsigned upstream;
	struct ev_loop *loop; /* never run: upconn wants one for the sockets it closes */
	pthread_t thread;
	bool started, stopping;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	struct hub_job *head, *tail;
};

struct hub_service {
	const struct config *cfg;
	/* The token store's connection and the pending consents, shared by the lanes: each use
	 * is short (a row, a key unwrapped in the PKCS#11 token), never across a bank call. */
	pthread_mutex_t store_lock;
	struct token_store *store;
	struct hub_pending_table *pending;
	struct jwt_verifier *id_token[CONFIG_MAX_ROUTES]; /* per hub route: the bank's keys */
	struct upconn_pool pools[CONFIG_MAX_UPSTREAMS];   /* each used by its bank's lane only */
	struct hub_lane *lane[CONFIG_MAX_UPSTREAMS];      /* the hub routes' upstreams */
};

struct hub_job *hub_job_new(enum hub_job_kind kind, unsigned route, const char *client_id)
{
	struct hub_job *job = calloc(1, sizeof(*job));
	if (!job)
		return NULL;
	job->kind = kind;
	job->route = route;
	snprintf(job->client_id, sizeof(job->client_id), "%s", client_id);
	return job;
}

static void wipe_string(char *s)
{
	if (s)
		OPENSSL_cleanse(s, strlen(s));
	free(s);
}

/* A buffer that held tokens, codes or a form with them: zeroed before it is freed. */
static void buf_wipe_free(struct buf *b)
{
	if (b->data)
		OPENSSL_cleanse(b->data, b->cap);
	buf_free(b);
}

void hub_job_free(struct hub_job *job)
{
	if (!job)
		return;
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		SSL_CTX_free(job->upstream_ctx[i]);
	wipe_string(job->state);
	wipe_string(job->code);
	wipe_string(job->bearer);
	buf_wipe_free(&job->body);
	OPENSSL_cleanse(job->handle, sizeof(job->handle));
	free(job);
}

__attribute__((format(printf, 4, 5))) static void answer(struct hub_job *job, int status,
							  const char *error, const char *fmt, ...)
{
	job->status = status;
	job->error = error;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(job->description, sizeof(job->description), fmt, ap);
	va_end(ap);
}

/* --- one call to a bank's token endpoint ------------------------------------------------ */

/* Waits until fd has events or the deadline (ev_now_ms) passes: whether it has. */
static bool wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - ev_now_ms();
		if (left <= 0)
			return false;
		struct pollfd p = {.fd = fd, .events = events};
		int n = poll(&p, 1, (int)(left > 1000 ? 1000 : left));
		if (n > 0)
			return true;
		if (n < 0 && errno != EINTR)
			return false;
	}
}

struct bank_answer {
	unsigned status;
	struct buf body;
};

/* POSTs form to path on the route's upstream, over the pool's TLS context (the TPP's QWAC).
 * 0 with the bank's answer, else -1 with the job's 502/504 set. The connection is never kept:
 * token calls are rare, and an idle one would need the loop this thread does not run. */
static int bank_post(struct hub_service *h, struct hub_job *job, const char *path,
		     const struct buf *form, struct bank_answer *out)
{
	const struct config_route *r = &h->cfg->routes[job->route];
	struct upconn_pool *pool = &h->pools[r->upstream];
	const struct config_upstream *uc = pool->cfg;
	struct http_limits limits = {.max_header_bytes = 16 * 1024,
				     .max_body_bytes = HUB_ANSWER_MAX,
				     .max_buffered_body = HUB_ANSWER_MAX};
	struct http_msg resp;
	http_msg_init(&resp, HTTP_RESPONSE, &limits);
	resp.buffer_body = true;
	job->bank_called = true;
	job->bank_result = EXCHANGE_CONNECT_FAILED;
	int rc = -1;
	struct upconn *u = upconn_checkout(pool);
	if (!u) {
		answer(job, 502, "upstream_error", "bank %s: cannot connect: %s", uc->name,
		       strerror(errno));
		goto out;
	}
	if (buf_printf(&u->out,
		       "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: "
		       "application/x-www-form-urlencoded\r\nAccept: application/json\r\n"
		       "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		       path, pool->host_header, form->len) < 0 ||
	    buf_append(&u->out, buf_head(form), form->len) < 0) {
		answer(job, 500, "server_error", "out of memory");
		goto out;
	}
	for (;;) {
		const char *why = NULL;
		bool tls = false;
		enum upconn_state st = upconn_establish(u, &why, &tls);
		if (st == UPCONN_READY)
			break;
		if (st == UPCONN_FAILED) {
			job->bank_result = tls ? EXCHANGE_TLS_FAILED : EXCHANGE_CONNECT_FAILED;
			answer(job, 502, "upstream_error", "bank %s: %s%s", uc->name,
			       tls ? "TLS handshake failed: " : "cannot connect: ", why);
			goto out;
		}
		bool connecting = u->connecting;
		int64_t deadline = connecting ? u->opened_ms + uc->connect_timeout_ms
					      : u->connected_ms + uc->tls_timeout_ms;
		short ev = connecting || u->c.read_wants_write || SSL_want_write(u->c.ssl) ? POLLOUT
											  : POLLIN;
		if (!wait_fd(u->c.fd, ev, deadline)) {
			job->bank_result = EXCHANGE_TIMED_OUT;
			answer(job, 504, "upstream_timeout", "bank %s: %s", uc->name,
			       connecting ? "connect timed out" : "TLS handshake timed out");
			goto out;
		}
	}
	int64_t deadline = ev_now_ms() + uc->response_timeout_ms;
	job->bank_result = EXCHANGE_UPSTREAM_BROKEN;
	while (u->out.len) {
		bool progress = false;
		if (upconn_flush(u, &progress) < 0) {
			answer(job, 502, "upstream_error", "bank %s: connection lost while sending",
			       uc->name);
			goto out;
		}
		if (u->out.len && !wait_fd(u->c.fd, u->c.write_wants_read ? POLLIN : POLLOUT,
					   deadline)) {
			job->bank_result = EXCHANGE_TIMED_OUT;
			answer(job, 504, "upstream_timeout", "bank %s: no response in time", uc->name);
			goto out;
		}
	}
	while (resp.state != HTTP_MSG_DONE && resp.state != HTTP_MSG_ERROR) {
		if (u->in.len) {
			size_t n = http_msg_feed(&resp, buf_head(&u->in), u->in.len, NULL, NULL);
			buf_consume(&u->in, n);
			if (resp.state == HTTP_MSG_DONE && http_msg_interim(&resp)) {
				http_msg_reset(&resp);
				resp.buffer_body = true;
			}
			continue;
		}
		if (u->eof) {
			http_msg_feed_eof(&resp, NULL, NULL);
			break;
		}
		conn_set_readable(&u->c);
		if (upconn_read(u, HUB_ANSWER_MAX + 16 * 1024))
			continue;
		if (!wait_fd(u->c.fd, u->c.read_wants_write ? POLLOUT : POLLIN, deadline)) {
			job->bank_result = EXCHANGE_TIMED_OUT;
			answer(job, 504, "upstream_timeout", "bank %s: no response in time", uc->name);
			goto out;
		}
	}
	if (resp.state != HTTP_MSG_DONE) {
		answer(job, 502, "upstream_error", "bank %s: invalid answer: %s", uc->name,
		       resp.error_reason ? resp.error_reason : "closed before answering");
		goto out;
	}
	job->bank_result = EXCHANGE_RESPONDED;
	if (resp.status_code == 200)
		STATS_INC(hub_token_calls_ok);
	else
		STATS_INC(hub_token_calls_refused);
	out->status = resp.status_code;
	out->body = resp.body;
	memset(&resp.body, 0, sizeof(resp.body));
	rc = 0;
out:
	if (rc < 0)
		STATS_INC(hub_token_calls_failed);
	if (u)
		upconn_close(u);
	buf_wipe_free(&resp.body);
	http_msg_free(&resp);
	return rc;
}

/* The OAuth error code of a refusal (RFC 6749 §5.2), for the backend: the bank's own words
 * but only a token's worth of them. */
static void bank_error_code(const struct bank_answer *a, char out[64])
{
	json_error_t jerr;
	json_t *o = json_loadb(buf_head(&a->body) ? buf_head(&a->body) : "", a->body.len, 0, &jerr);
	const char *e = json_string_value(json_object_get(o, "error"));
	size_t n = 0;
	for (; e && e[n] && n < 63; n++)
		out[n] = (e[n] > ' ' && e[n] < 0x7f && e[n] != '"' && e[n] != '\\') ? e[n] : '?';
	out[n] = '\0';
	if (!n)
		snprintf(out, 64, "HTTP %u", a->status);
	json_decref(o);
}

/* The bank's token answer, parsed; -1 with the job answered (502) otherwise. */
static int bank_tokens(struct hub_job *job, const struct bank_answer *a, const char *what,
		       int64_t now, struct hub_tokens *t)
{
	const char *why;
	if (a->status != 200) {
		char code[64];
		bank_error_code(a, code);
		answer(job, 502, "bank_error", "the bank refused the %s: %s", what, code);
		return -1;
	}
	if (hub_tokens_parse(buf_head(&a->body) ? buf_head(&a->body) : "", a->body.len, now, t,
			     &why) < 0) {
		answer(job, 502, "bank_error", "%s", why);
		return -1;
	}
	return 0;
}

/* --- the jobs --------------------------------------------------------------------------- */

static void run_consent(struct hub_service *h, struct hub_job *job, int64_t now)
{
	const struct config_hub *hub = &h->cfg->routes[job->route].hub;
	struct hub_pending *p;
	const char *why;
	pthread_mutex_lock(&h->store_lock);
	if (hub_pending_add(h->pending, job->client_id, job->user, job->route, now, &p, &why) < 0) {
		bool full = h->pending->n == HUB_PENDING_MAX;
		pthread_mutex_unlock(&h->store_lock);
		answer(job, full ? 503 : 400, full ? "temporarily_unavailable" : "invalid_request",
		       "%s", why);
		return;
	}
	struct buf url = {0};
	if (hub_authorization_url(hub, p, &url) < 0 || buf_append(&url, "", 1) < 0 ||
	    buf_append_str(&job->body, "{\"authorization_url\":") < 0 ||
	    buf_append_json_string(&job->body, buf_head(&url)) < 0 ||
	    buf_printf(&job->body, ",\"state\":\"%s\",\"expires_in\":%d}", p->state,
		       HUB_PENDING_TTL_S) < 0)
		answer(job, 500, "server_error", "out of memory");
	else
		job->status = 201;
	pthread_mutex_unlock(&h->store_lock);
	buf_free(&url);
}

static const char *bank_name(const struct hub_service *h, const struct hub_job *job)
{
	return h->cfg->upstreams[h->cfg->routes[job->route].upstream].name;
}

static enum token_status locked_put(struct hub_service *h, const struct hub_job *job,
				    const char *user, const struct buf *payload,
				    char handle[TOKEN_HANDLE_LEN + 1], char *err, size_t errlen)
{
	pthread_mutex_lock(&h->store_lock);
	enum token_status st = token_store_put(h->store, job->client_id, bank_name(h, job), user,
					       buf_head(payload), payload->len, handle, err,
					       errlen);
	pthread_mutex_unlock(&h->store_lock);
	return st;
}

static enum token_status locked_update(struct hub_service *h, const struct hub_job *job,
				       const struct buf *payload, char *err, size_t errlen)
{
	pthread_mutex_lock(&h->store_lock);
	enum token_status st = token_store_update(h->store, job->handle, buf_head(payload),
						  payload->len, err, errlen);
	pthread_mutex_unlock(&h->store_lock);
	return st;
}

/* Stores the tokens for the backend and answers the new handle. */
static void store_new_session(struct hub_service *h, struct hub_job *job,
			      const struct hub_pending *p, struct hub_tokens *t, int64_t now)
{
	struct buf payload = {0};
	char handle[TOKEN_HANDLE_LEN + 1], err[256];
	t->client_id = strdup(job->client_id);
	if (!t->client_id || hub_tokens_to_payload(t, &payload) < 0) {
		answer(job, 500, "server_error", "out of memory");
	} else if (locked_put(h, job, p->user, &payload, handle, err, sizeof(err)) != TOKEN_OK) {
		log_warn("hub: bank %s: cannot store the tokens of a new session: %s",
			 bank_name(h, job), err);
		answer(job, 500, "server_error", "the token store failed");
	} else if (buf_printf(&job->body, "{\"handle\":\"%s\",\"expires_in\":%lld}", handle,
			      (long long)(t->expires_at - now)) < 0) {
		answer(job, 500, "server_error", "out of memory");
	} else {
		job->status = 201;
		STATS_INC(hub_sessions_opened);
		log_info("hub: session of bank %s opened for %s", bank_name(h, job), job->client_id);
	}
	OPENSSL_cleanse(handle, sizeof(handle));
	buf_wipe_free(&payload);
}

static void run_callback(struct hub_service *h, struct hub_job *job, int64_t now)
{
	const struct config_route *r = &h->cfg->routes[job->route];
	struct hub_pending p;
	pthread_mutex_lock(&h->store_lock);
	bool taken = hub_pending_take(h->pending, job->state, job->client_id, now, &p);
	pthread_mutex_unlock(&h->store_lock);
	if (!taken || p.route != job->route) {
		answer(job, 400, "invalid_request",
		       "unknown state: not started here by this client, expired, or used");
		OPENSSL_cleanse(&p, sizeof(p));
		return;
	}
	struct buf form = {0};
	struct bank_answer a = {0};
	struct hub_tokens t = {0};
	if (hub_token_form_code(&r->hub, job->code, p.verifier, &form) < 0) {
		answer(job, 500, "server_error", "out of memory");
	} else if (bank_post(h, job, r->hub.token_endpoint, &form, &a) == 0 &&
		   bank_tokens(job, &a, "authorization code", now, &t) == 0) {
		const char *why = t.id_token ? hub_id_token_check(h->id_token[job->route],
								   t.id_token, p.nonce, now)
					     : NULL;
		if (why)
			answer(job, 502, "bank_error", "the bank's id_token: %s", why);
		else
			store_new_session(h, job, &p, &t, now);
	}
	hub_tokens_free(&t);
	buf_wipe_free(&a.body);
	buf_wipe_free(&form);
	OPENSSL_cleanse(&p, sizeof(p));
}

/* The handle's tokens when it is this backend's and this bank's; -1 with the job answered. */
static int session_tokens(struct hub_service *h, struct hub_job *job, struct hub_tokens *t)
{
	void *payload = NULL;
	size_t len = 0;
	char bank[TOKEN_BANK_MAX + 1], err[256];
	memset(t, 0, sizeof(*t));
	pthread_mutex_lock(&h->store_lock);
	enum token_status st = token_store_get(h->store, job->handle, &payload, &len, bank, err,
					       sizeof(err));
	pthread_mutex_unlock(&h->store_lock);
	if (st == TOKEN_ERROR) {
		log_warn("hub: bank %s: cannot read a session: %s", bank_name(h, job), err);
		answer(job, 500, "server_error", "the token store failed");
		return -1;
	}
	int rc = st == TOKEN_OK ? hub_tokens_from_payload(payload, len, t) : -1;
	if (payload) {
		OPENSSL_cleanse(payload, len);
		free(payload);
	}
	if (st == TOKEN_OK && rc < 0) {
		answer(job, 500, "server_error", "a stored session cannot be read");
		return -1;
	}
	/* Another backend's handle is answered as an unknown one: it learns nothing. */
	if (rc < 0 || strcmp(t->client_id, job->client_id) != 0 ||
	    strcmp(bank, bank_name(h, job)) != 0) {
		hub_tokens_free(t);
		answer(job, 401, "invalid_token", "unknown or revoked session handle");
		return -1;
	}
	return 0;
}

static void run_token(struct hub_service *h, struct hub_job *job, int64_t now)
{
	const struct config_route *r = &h->cfg->routes[job->route];
	struct hub_tokens t;
	if (session_tokens(h, job, &t) < 0)
		return;
	if (hub_tokens_need_refresh(&t, now, r->hub.refresh_margin_s)) {
		struct buf form = {0}, payload = {0};
		struct bank_answer a = {0};
		struct hub_tokens fresh = {0};
		char err[256];
		int ok = -1;
		if (!t.refresh_token)
			answer(job, 401, "invalid_token", "the bank's token expired and cannot be "
			       "refreshed: start a new consent");
		else if (hub_token_form_refresh(&r->hub, t.refresh_token, &form) < 0)
			answer(job, 500, "server_error", "out of memory");
		else if (bank_post(h, job, r->hub.token_endpoint, &form, &a) < 0)
			;
		else if (a.status == 400 || a.status == 401)
			answer(job, 401, "invalid_token", "the bank refused to refresh the session: "
			       "start a new consent");
		else if (bank_tokens(job, &a, "refresh", now, &fresh) == 0) {
			hub_tokens_replace(&t, &fresh);
			if (hub_tokens_to_payload(&t, &payload) < 0)
				answer(job, 500, "server_error", "out of memory");
			else if (locked_update(h, job, &payload, err, sizeof(err)) != TOKEN_OK) {
				log_warn("hub: bank %s: cannot store a refreshed session: %s",
					 bank_name(h, job), err);
				answer(job, 500, "server_error", "the token store failed");
			} else {
				STATS_INC(hub_refreshes);
				ok = 0;
			}
		}
		hub_tokens_free(&fresh);
		buf_wipe_free(&a.body);
		buf_wipe_free(&form);
		buf_wipe_free(&payload);
		if (ok < 0) {
			hub_tokens_free(&t);
			return;
		}
	}
	if (asprintf(&job->bearer, "Bearer %s", t.access_token) < 0) {
		job->bearer = NULL;
		answer(job, 500, "server_error", "out of memory");
	} else {
		job->status = 0;
	}
	hub_tokens_free(&t);
}

static void run_revoke(struct hub_service *h, struct hub_job *job)
{
	struct hub_tokens t;
	char err[256];
	if (session_tokens(h, job, &t) < 0)
		return;
	hub_tokens_free(&t);
	pthread_mutex_lock(&h->store_lock);
	enum token_status st = token_store_revoke(h->store, job->client_id, job->handle, err,
						  sizeof(err));
	pthread_mutex_unlock(&h->store_lock);
	if (st != TOKEN_OK) {
		log_warn("hub: bank %s: cannot revoke a session: %s", bank_name(h, job), err);
		answer(job, 500, "server_error", "the token store failed");
		return;
	}
	STATS_INC(hub_sessions_revoked);
	log_info("hub: session of bank %s revoked by %s", bank_name(h, job), job->client_id);
	job->status = 204;
}

static void run_set_tls(struct hub_lane *lane, struct hub_job *job)
{
	struct upconn_pool *pool = &lane->h->pools[lane->upstream];
	SSL_CTX_free(pool->ctx);
	pool->ctx = job->upstream_ctx[lane->upstream];
	job->upstream_ctx[lane->upstream] = NULL;
}

static void run_job(struct hub_lane *lane, struct hub_job *job)
{
	struct hub_service *h = lane->h;
	int64_t now = time(NULL);
	switch (job->kind) {
	case HUB_JOB_SET_TLS: run_set_tls(lane, job); break;
	case HUB_JOB_CONSENT: run_consent(h, job, now); break;
	case HUB_JOB_CALLBACK: run_callback(h, job, now); break;
	case HUB_JOB_TOKEN: run_token(h, job, now); break;
	case HUB_JOB_REVOKE: run_revoke(h, job); break;
	}
}

static void *lane_main(void *arg)
{
	struct hub_lane *lane = arg;
	pthread_mutex_lock(&lane->lock);
	for (;;) {
		while (!lane->head && !lane->stopping)
			pthread_cond_wait(&lane->wake, &lane->lock);
		if (lane->stopping)
			break;
		struct hub_job *job = lane->head;
		lane->head = job->next;
		if (!lane->head)
			lane->tail = NULL;
		pthread_mutex_unlock(&lane->lock);
		job->next = NULL;
		run_job(lane, job);
		job->done(job, job->done_arg);
		pthread_mutex_lock(&lane->lock);
	}
	pthread_mutex_unlock(&lane->lock);
	return NULL;
}

static void lane_submit(struct hub_lane *lane, struct hub_job *job)
{
	job->next = NULL;
	pthread_mutex_lock(&lane->lock);
	if (lane->tail)
		lane->tail->next = job;
	else
		lane->head = job;
	lane->tail = job;
	pthread_cond_signal(&lane->wake);
	pthread_mutex_unlock(&lane->lock);
}

/* --- life cycle ------------------------------------------------------------------------- */

void hub_service_submit(struct hub_service *h, struct hub_job *job)
{
	lane_submit(h->lane[h->cfg->routes[job->route].upstream], job);
}

static void hub_job_done_free(struct hub_job *job, void *arg)
{
	(void)arg;
	hub_job_free(job);
}

void hub_service_set_tls(struct hub_service *h, SSL_CTX *const ctx[])
{
	for (unsigned i = 0; i < h->cfg->n_upstreams; i++) {
		if (!h->lane[i])
			continue;
		struct hub_job *job = hub_job_new(HUB_JOB_SET_TLS, 0, "");
		if (!job) {
			log_error("hub: out of memory: bank %s keeps the TLS context of before the "
				  "reload", h->cfg->upstreams[i].name);
			continue;
		}
		if (ctx[i])
			SSL_CTX_up_ref(ctx[i]);
		job->upstream_ctx[i] = ctx[i];
		job->done = hub_job_done_free;
		lane_submit(h->lane[i], job);
	}
}

int hub_service_rotate_kek(struct hub_service *h, const char *label, char *err, size_t errlen)
{
	pthread_mutex_lock(&h->store_lock);
	int rc = token_store_rotate_kek(h->store, label, err, errlen);
	pthread_mutex_unlock(&h->store_lock);
	if (rc < 0)
		log_warn("hub: token store: KEK rotation to %s stopped: %s", label, err);
	else
		log_info("hub: token store: every data key is wrapped by KEK %s", label);
	return rc;
}

static void lane_free(struct hub_lane *lane)
{
	if (lane->started) {
		pthread_mutex_lock(&lane->lock);
		lane->stopping = true;
		pthread_cond_signal(&lane->wake);
		pthread_mutex_unlock(&lane->lock);
		pthread_join(lane->thread, NULL);
	}
	while (lane->head) {
		struct hub_job *next = lane->head->next;
		hub_job_free(lane->head);
		lane->head = next;
	}
	if (lane->loop)
		ev_loop_free(lane->loop);
	pthread_mutex_destroy(&lane->lock);
	pthread_cond_destroy(&lane->wake);
	free(lane);
}

void hub_service_stop(struct hub_service *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		if (h->lane[i])
			lane_free(h->lane[i]);
	for (unsigned i = 0; i < h->cfg->n_upstreams; i++) {
		upconn_pool_free(&h->pools[i]);
		SSL_CTX_free(h->pools[i].ctx);
	}
	for (unsigned i = 0; i < CONFIG_MAX_ROUTES; i++)
		jwt_verifier_free(h->id_token[i]);
	if (h->pending)
		OPENSSL_cleanse(h->pending, sizeof(*h->pending));
	free(h->pending);
	token_store_close(h->store);
	pthread_mutex_destroy(&h->store_lock);
	free(h);
}

/* A bank's lane, its thread started with signals blocked: they are the main thread's (its
 * signalfd). */
static int lane_start(struct hub_service *h, unsigned upstream, char *err, size_t errlen)
{
	struct hub_lane *lane = calloc(1, sizeof(*lane));
	if (!lane || !(lane->loop = ev_loop_new(HUB_FDS_MAX))) {
		free(lane);
		snprintf(err, errlen, "hub: out of memory");
		return -1;
	}
	lane->h = h;
	lane->upstream = upstream;
	pthread_mutex_init(&lane->lock, NULL);
	pthread_cond_init(&lane->wake, NULL);
	h->lane[upstream] = lane;
	h->pools[upstream].loop = lane->loop;
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int rc = pthread_create(&lane->thread, NULL, lane_main, lane);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0) {
		snprintf(err, errlen, "hub: cannot start the thread of bank %s",
			 h->cfg->upstreams[upstream].name);
		return -1;
	}
	lane->started = true;
	return 0;
}

int hub_service_start(const struct config *cfg, SSL_CTX *const ctx[],
		      const char *const host_header[], struct hub_service **out, char *err,
		      size_t errlen)
{
	*out = NULL;
	bool any = false;
	for (unsigned i = 0; i < cfg->n_routes; i++)
		any = any || cfg->routes[i].hub.authorization_endpoint;
	if (!any)
		return 0;
	struct hub_service *h = calloc(1, sizeof(*h));
	if (!h) {
		snprintf(err, errlen, "hub: out of memory");
		return -1;
	}
	h->cfg = cfg;
	pthread_mutex_init(&h->store_lock, NULL);
	h->pending = calloc(1, sizeof(*h->pending));
	if (!h->pending) {
		snprintf(err, errlen, "hub: out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		if (ctx[i])
			SSL_CTX_up_ref(ctx[i]);
		upconn_pool_init(&h->pools[i], NULL, &cfg->upstreams[i], ctx[i], host_header[i]);
	}
	for (unsigned i = 0; i < cfg->n_routes; i++) {
		if (!cfg->routes[i].hub.authorization_endpoint)
			continue;
		char why[256];
		h->id_token[i] = jwt_verifier_new(&cfg->routes[i].hub.id_token, why, sizeof(why));
		if (!h->id_token[i]) {
			snprintf(err, errlen, "routes[%u].hub.jwks: %s", i, why);
			goto fail;
		}
	}
	const struct config_token_store *ts = &cfg->token_store;
	struct token_kek_config kek = {.pkcs11_module = ts->pkcs11_module,
				       .token_label = ts->token_label,
				       .pin = ts->pin,
				       .key_label = ts->key_label,
				       .kek_file = ts->kek_file};
	char why[256];
	if (token_store_open(ts->path, &kek, &h->store, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "token_store: %s", why);
		goto fail;
	}
	for (unsigned i = 0; i < cfg->n_routes; i++) {
		unsigned up = cfg->routes[i].upstream;
		if (cfg->routes[i].hub.authorization_endpoint && !h->lane[up] &&
		    lane_start(h, up, err, errlen) < 0)
			goto fail;
	}
	*out = h;
	return 0;
fail:
	hub_service_stop(h);
	return -1;
}
