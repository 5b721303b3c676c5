#include "session.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "clientid.h"
#include "dataplane.h"
#include "ev.h"
#include "hub_service.h"
#include "log.h"
#include "metrics.h"
#include "pipeline.h"
#include "route.h"

/* Output queued beyond this stops reading from the other side (backpressure). */
#define SESSION_HIGH_WATER (256 * 1024)
#define SESSION_READ_CHUNK (16 * 1024)
/* Client bytes read and dropped, at most, before a close after a final response. */
#define SESSION_DISCARD_MAX (256 * 1024)
/* A connection without a request for this long gives back its buffers (most of its memory). */
#define SESSION_IDLE_RELEASE_MS 250
/* Raw client bytes held before the parser takes them: a head plus pipelined slack. */
#define SESSION_MAX_CLIENT_INPUT(s) ((size_t)(s)->req_limits.max_header_bytes + 64 * 1024)

static void session_step(struct session *s);

#define SESSION_HUB_CODE_MAX 2048 /* an authorization code, as the bank's redirect gave it */

static void session_on_event(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	struct session *s = arg;
	if (mask & EV_READ) {
		if (fd == s->client.fd)
			conn_set_readable(&s->client);
		else if (s->up && fd == s->up->c.fd)
			conn_set_readable(&s->up->c);
	}
	session_step(s);
}

static const struct config *session_cfg(const struct session *s)
{
	return s->env->cfg;
}

static const struct config_upstream *session_upstream_cfg(const struct session *s)
{
	return &s->env->cfg->upstreams[s->x.route->cfg->upstream];
}

static void session_new_request_id(struct session *s)
{
	struct session_env *env = s->env;
	snprintf(s->request_id, sizeof(s->request_id), "%016llx%04x%012llx",
		 (unsigned long long)env->request_id_salt, env->worker_id & 0xffff,
		 (unsigned long long)(++env->request_seq & 0xffffffffffffULL));
}

static void session_count_status(unsigned status)
{
	if (status >= 500)
		STATS_INC(responses_5xx);
	else if (status >= 400)
		STATS_INC(responses_4xx);
	else if (status >= 300)
		STATS_INC(responses_3xx);
	else
		STATS_INC(responses_2xx);
}

/* One JSON line per request: ids, status and latency; never bodies, queries or secrets. Into
 * the worker's batch, which its loop writes once per pass. */
static void session_log_request(struct session *s)
{
	char path[257] = "";
	bool has_head = s->req.state != HTTP_MSG_HEAD;
	if (has_head) {
		const char *url = http_msg_url(&s->req);
		size_t n = 0;
		while (n < s->req.url_len && n < sizeof(path) - 1 && url[n] != '?' && url[n] != '#')
			n++;
		memcpy(path, url, n);
		path[n] = '\0';
	}
	int64_t now_us = ev_now_us(), now = now_us / 1000;
	struct buf *batch = s->env->access_log;
	size_t line_start = batch->len;
	/* request_id, the thumbprint and the method are the gateway's own text: no escape needed. */
	if (buf_printf(batch, "{\"request_id\":\"%s\",\"client_id\":", s->request_id) < 0 ||
	    buf_append_json_string(batch, s->client_id) < 0 ||
	    buf_printf(batch, ",\"cert_sha256_prefix\":\"%.16s\",\"peer\":", s->thumb_hex) < 0 ||
	    buf_append_json_string(batch, s->peer_text) < 0 ||
	    buf_printf(batch, ",\"method\":\"%s\",\"path\":",
		       has_head ? http_method_str(s->req.method) : "") < 0 ||
	    buf_append_json_string(batch, path) < 0 ||
	    (s->x.route && (buf_append_str(batch, ",\"route\":") < 0 ||
			    buf_append_json_string(batch, s->x.route->cfg->prefix) < 0)) ||
	    buf_printf(batch, ",\"status\":%u,\"verdict\":", s->status) < 0 ||
	    buf_append_json_string(batch, s->verdict) < 0 ||
	    buf_printf(batch, ",\"latency_ms\":%lld,\"bytes_in\":%llu,\"bytes_out\":%llu}\n",
		       (long long)(now - (s->head_start_ms ? s->head_start_ms : now)),
		       (unsigned long long)s->req_body_bytes, (unsigned long long)s->resp_bytes) < 0)
		buf_truncate(batch, line_start); /* out of memory: no half line */
	else
		log_access_commit(batch, line_start);
	session_count_status(s->status);
	if (s->x.route && s->head_start_ms)
		metrics_route_duration(s->x.route->index, now_us - s->head_start_us);
}

/* The current exchange's upstream connection is not to be trusted with another request. */
static void session_drop_upstream(struct session *s)
{
	if (!s->up)
		return;
	upconn_close(s->up);
	s->up = NULL;
}

/* The exchange's outcome is known: policies and route counters learn it (once). */
static void session_complete_exchange(struct session *s, enum exchange_result result)
{
	if (!s->x.pending)
		return;
	struct exchange_outcome o = {
		.result = result,
		.status = s->status,
		.upstream_ms = s->forward_start_ms ? ev_now_ms() - s->forward_start_ms : 0,
	};
	exchange_complete(&s->x, &o);
}

/* The bank's token is written into the upstream request head once and kept nowhere else. */
static void session_hub_forget_bearer(struct session *s)
{
	if (!s->hub_bearer)
		return;
	OPENSSL_cleanse(s->hub_bearer, strlen(s->hub_bearer));
	free(s->hub_bearer);
	s->hub_bearer = NULL;
}

void session_close(struct session *s)
{
	if (s->dead)
		return;
	s->dead = true;
	s->env->n_dead++; /* freed by the worker before its loop sleeps */
	if (s->flow_added)
		dataplane_flow_del(s->env->dp, (struct sockaddr *)&s->peer,
				   (struct sockaddr *)&s->local);
	session_complete_exchange(s, EXCHANGE_NOT_FORWARDED);
	session_drop_upstream(s);
	if (s->hub_job) {
		s->hub_job->owner = NULL; /* its answer, when it comes, is dropped */
		s->hub_job = NULL;
	}
	session_hub_forget_bearer(s);
	ev_set(s->env->loop, s->client.fd, EV_NONE, NULL, NULL);
	conn_close(&s->client);
	STATS_DEC(connections_open);
}

void session_free(struct session *s)
{
	if (s->splice_open)
		splice_fwd_close(&s->splice);
	buf_free(&s->c_in);
	buf_free(&s->c_out);
	exchange_free(&s->x);
	http_msg_free(&s->req);
	http_msg_free(&s->resp);
	free(s);
}

/* Headers every response to the current request carries: what the route's policies added
 * (RateLimit), and Allow on a 405. */
static const struct buf *session_extra_headers(struct session *s, int status)
{
	if (status == 405)
		http_append_allow(&s->x.resp_headers, s->req_limits.methods);
	return s->x.resp_headers.len ? &s->x.resp_headers : NULL;
}

/* A locally generated final response; the connection closes once it is written. */
static void session_respond_error(struct session *s, int status, const char *error,
				  const char *description, unsigned retry_after)
{
	if (!s->request_id[0])
		session_new_request_id(s);
	session_drop_upstream(s);
	http_write_error(&s->c_out, status, error, description, retry_after,
			 session_extra_headers(s, status), false, s->request_id);
	s->status = (unsigned)status;
	if (!s->verdict)
		s->verdict = error;
	session_log_request(s);
	s->state = SESSION_CLOSING;
	s->close_after_flush = true;
}

static void session_reset_request(struct session *s);

/* A request the gateway answers itself, well framed: refused by a route or a policy (404,
 * 429, 503; json NULL: pr's error), or a hub route's own endpoints (json: the body). The
 * connection goes on. A body still coming is read and dropped first; one the client waits to
 * send (Expect: 100-continue) will never come, so that connection closes. */
static void session_answer(struct session *s, const struct policy_request *pr,
			   const struct buf *json)
{
	bool body_pending = s->req.state != HTTP_MSG_DONE;
	bool keep = s->req.keep_alive && !s->env->draining &&
		    !(body_pending && s->req.expect_continue);
	const struct buf *extra = session_extra_headers(s, pr->status);
	if (json)
		http_write_json(&s->c_out, pr->status, json, pr->retry_after, extra, keep,
				s->request_id);
	else
		http_write_error(&s->c_out, pr->status, pr->error, pr->description,
				 pr->retry_after, extra, keep, s->request_id);
	s->status = (unsigned)pr->status;
	s->verdict = pr->reason;
	session_log_request(s);
	if (!keep) {
		s->state = SESSION_CLOSING;
		s->close_after_flush = true;
	} else if (body_pending) {
		s->state = SESSION_DISCARD;
	} else {
		session_reset_request(s);
	}
}

static void session_upstream_fail(struct session *s, int status, const char *why,
				  enum exchange_result result)
{
	log_warn("request %s: upstream %s: %s", s->request_id, session_upstream_cfg(s)->name, why);
	s->status = (unsigned)status;
	session_complete_exchange(s, result);
	if (s->resp_head_sent) {
		/* Part of the response is already with the client: all we can do is cut. */
		session_close(s);
		return;
	}
	session_respond_error(s, status, status == 504 ? "upstream_timeout" : "upstream_error",
			      why, 0);
}

static int session_on_request_body(void *arg, const char *data, size_t len)
{
	struct session *s = arg;
	s->req_body_bytes += len;
	if (s->state != SESSION_FORWARD)
		return 0; /* a form body is buffered by the parser until the identity is known */
	return s->req.chunked ? http_write_chunk(&s->up->out, data, len)
			      : buf_append(&s->up->out, data, len);
}

static int session_on_response_body(void *arg, const char *data, size_t len)
{
	struct session *s = arg;
	s->resp_bytes += len;
	return s->resp_chunked ? http_write_chunk(&s->c_out, data, len)
			       : buf_append(&s->c_out, data, len);
}

static void session_start_forward(struct session *s, bool form_buffered)
{
	const struct config *cfg = session_cfg(s);
	unsigned upstream = s->x.route->cfg->upstream;
	s->forward_start_ms = ev_now_ms();
	s->up = upconn_checkout(&s->env->pools[upstream]);
	if (!s->up) {
		STATS_INC(upstream_connect_errors);
		char why[160];
		snprintf(why, sizeof(why), "cannot connect: %s", strerror(errno));
		session_upstream_fail(s, 502, why, EXCHANGE_CONNECT_FAILED);
		return;
	}
	char roles[PSD2_ROLES_TEXT_MAX];
	psd2_roles_format(s->psd2_roles, roles);
	struct http_forward fwd = {
		.client_id = s->client_id,
		.cert_sha256_hex = s->thumb_hex,
		.psd2_roles = roles,
		.forwarded_for = s->peer_text,
		.request_id = s->request_id,
		.host = s->up->pool->host_header,
		.base_path = cfg->upstreams[upstream].base_path,
		.drop_headers = cfg->http.drop_headers,
		.n_drop_headers = cfg->http.n_drop_headers,
		.authorization = s->hub_bearer,
	};
	struct buf *u_out = &s->up->out;
	if (http_write_request_head(&s->req, &fwd, u_out) < 0) {
		session_respond_error(s, 500, "server_error", "cannot build upstream request", 0);
		return;
	}
	if (form_buffered) {
		const char *body = buf_head(&s->req.body);
		size_t len = s->req.body.len;
		if (s->req.chunked) {
			if (len)
				http_write_chunk(u_out, body, len);
		} else {
			buf_append(u_out, body, len);
		}
	} else if (s->req.expect_continue && s->req.state != HTTP_MSG_DONE) {
		buf_append_str(&s->c_out, "HTTP/1.1 100 Continue\r\n\r\n");
	}
	s->state = SESSION_FORWARD;
	http_msg_reset(&s->resp);
	s->resp.no_body = s->req.method == HTTP_HEAD;
	if (s->req.state == HTTP_MSG_DONE) {
		if (s->req.chunked)
			http_write_chunk(u_out, NULL, 0);
		s->req_done = true;
	}
}

/* --- hub routes (hub_service.h) ------------------------------------------------------------ */

/* The handle of "Authorization: Hub <handle>", the request's only Authorization. */
static bool session_hub_handle(const struct session *s, char out[TOKEN_HANDLE_LEN + 1])
{
	size_t len;
	unsigned count;
	const char *v = http_msg_header(&s->req, "authorization", &len, &count);
	if (!v || count != 1 || len != 4 + TOKEN_HANDLE_LEN || strncasecmp(v, "Hub ", 4) != 0)
		return false;
	for (size_t i = 4; i < len; i++)
		if (!isalnum((unsigned char)v[i]) && v[i] != '-' && v[i] != '_')
			return false;
	memcpy(out, v + 4, TOKEN_HANDLE_LEN);
	out[TOKEN_HANDLE_LEN] = '\0';
	return true;
}

/* The user a consent is for: the request's one X-Hub-User, visible ASCII. */
static bool session_hub_user(const struct session *s, char out[HUB_USER_MAX + 1])
{
	size_t len;
	unsigned count;
	const char *v = http_msg_header(&s->req, "x-hub-user", &len, &count);
	if (!v || count != 1 || len == 0 || len > HUB_USER_MAX)
		return false;
	for (size_t i = 0; i < len; i++)
		if (v[i] <= ' ' || v[i] >= 0x7f)
			return false;
	memcpy(out, v, len);
	out[len] = '\0';
	return true;
}

/* The callback's state and code, each once in the query. */
static bool session_hub_callback_args(const struct session *s, struct hub_job *job)
{
	const char *url = http_msg_url(&s->req);
	const char *q = memchr(url, '?', s->req.url_len);
	if (!q)
		return false;
	size_t qlen = s->req.url_len - (size_t)(q + 1 - url);
	char state[HUB_B64_256 + 2], code[SESSION_HUB_CODE_MAX + 1];
	bool ok = hub_query_param(q + 1, qlen, "state", state, sizeof(state)) == 1 &&
		  hub_query_param(q + 1, qlen, "code", code, sizeof(code)) == 1;
	if (ok) {
		job->state = strdup(state);
		job->code = strdup(code);
		ok = job->state && job->code;
	}
	OPENSSL_cleanse(code, sizeof(code));
	return ok;
}

/* A hub route's request the session answers before any job: the exchange ends here. */
static void session_hub_refuse(struct session *s, int status, const char *error,
			       const char *description, const char *reason)
{
	struct policy_request pr = {.status = status, .error = error, .description = description,
				    .reason = reason};
	if (status == 401)
		buf_append_str(&s->x.resp_headers, "WWW-Authenticate: Hub\r\n");
	s->status = (unsigned)status;
	session_complete_exchange(s, EXCHANGE_NOT_FORWARDED);
	session_answer(s, &pr, NULL);
}

/* Under a hub route's prefix: its own endpoints (/_hub/...) are answered by the hub service;
 * any other request goes to the bank once the service has given the session's access token. */
static void session_hub_start(struct session *s, bool form_buffered)
{
	const struct config_route *r = s->x.route->cfg;
	const char *url = http_msg_url(&s->req);
	const char *q = memchr(url, '?', s->req.url_len);
	size_t path_len = q ? (size_t)(q - url) : s->req.url_len;
	size_t prefix_len = strcmp(r->prefix, "/") == 0 ? 0 : strlen(r->prefix);
	const char *rel = url + prefix_len;
	size_t rel_len = path_len - prefix_len;
	enum hub_job_kind kind = HUB_JOB_TOKEN;
	if (rel_len >= 5 && memcmp(rel, "/_hub", 5) == 0 && (rel_len == 5 || rel[5] == '/')) {
		static const struct {
			const char *path;
			unsigned method;
			enum hub_job_kind kind;
		} endpoints[] = {
			{"/_hub/consents", HTTP_POST, HUB_JOB_CONSENT},
			{"/_hub/callback", HTTP_GET, HUB_JOB_CALLBACK},
			{"/_hub/session", HTTP_DELETE, HUB_JOB_REVOKE},
		};
		size_t i = 0;
		for (; i < sizeof(endpoints) / sizeof(endpoints[0]); i++)
			if (strlen(endpoints[i].path) == rel_len &&
			    memcmp(endpoints[i].path, rel, rel_len) == 0 &&
			    endpoints[i].method == s->req.method)
				break;
		if (i == sizeof(endpoints) / sizeof(endpoints[0])) {
			session_hub_refuse(s, 404, "not_found", "no such hub endpoint: POST "
					   "_hub/consents, GET _hub/callback, DELETE _hub/session",
					   "hub_no_endpoint");
			return;
		}
		kind = endpoints[i].kind;
	}
	if (!s->env->hub) {
		session_hub_refuse(s, 503, "temporarily_unavailable", "hub mode is not running",
				   "hub_unavailable");
		return;
	}
	struct hub_job *job = hub_job_new(kind, (unsigned)(r - session_cfg(s)->routes),
					  s->client_id);
	if (!job) {
		session_hub_refuse(s, 500, "server_error", "out of memory", "hub_error");
		return;
	}
	bool ok = true;
	const char *why = NULL;
	switch (kind) {
	case HUB_JOB_CONSENT:
		ok = session_hub_user(s, job->user);
		why = "X-Hub-User must name the user: 1 to 128 visible ASCII characters, once";
		break;
	case HUB_JOB_CALLBACK:
		ok = session_hub_callback_args(s, job);
		why = "state and code are required, once each, as the bank's redirect gave them";
		break;
	default: /* TOKEN, REVOKE */
		ok = session_hub_handle(s, job->handle);
		break;
	}
	if (!ok) {
		hub_job_free(job);
		if (why)
			session_hub_refuse(s, 400, "invalid_request", why, "hub_bad_request");
		else
			session_hub_refuse(s, 401, "invalid_token",
					   "Authorization: Hub <session handle> is required",
					   "hub_no_handle");
		return;
	}
	job->done = s->env->hub_done;
	job->done_arg = s->env->hub_done_arg;
	job->owner = s;
	s->hub_job = job;
	s->hub_form_buffered = form_buffered;
	s->hub_start_ms = ev_now_ms();
	s->state = SESSION_HUB;
	hub_service_submit(s->env->hub, job);
}

void session_hub_done(struct hub_job *job)
{
	struct session *s = job->owner;
	if (!s) { /* the session closed while the job ran */
		hub_job_free(job);
		return;
	}
	s->hub_job = NULL;
	if (job->status == 0) {
		s->hub_bearer = job->bearer;
		job->bearer = NULL;
		hub_job_free(job);
		session_start_forward(s, s->hub_form_buffered);
		session_step(s);
		return;
	}
	static const char *const reasons[] = {
		[HUB_JOB_CONSENT] = "hub_consent", [HUB_JOB_CALLBACK] = "hub_callback",
		[HUB_JOB_TOKEN] = "hub_token", [HUB_JOB_REVOKE] = "hub_revoke",
	};
	struct policy_request pr = {.status = job->status, .error = job->error,
				    .description = job->description,
				    .reason = job->status < 300 ? reasons[job->kind] : job->error};
	if (job->status == 401)
		buf_append_str(&s->x.resp_headers, "WWW-Authenticate: Hub error=\"invalid_token\"\r\n");
	s->status = (unsigned)job->status;
	if (job->bank_called)
		s->forward_start_ms = s->hub_start_ms;
	session_complete_exchange(s, job->bank_called ? job->bank_result : EXCHANGE_NOT_FORWARDED);
	session_answer(s, &pr, job->status < 300 ? &job->body : NULL);
	hub_job_free(job);
	session_step(s);
}

static void session_decide(struct session *s, bool form_buffered)
{
	struct timespec wall, mono;
	clock_gettime(CLOCK_REALTIME, &wall);
	clock_gettime(CLOCK_MONOTONIC, &mono);
	struct request_ctx rc = {
		.cfg = session_cfg(s),
		.reg = s->env->reg,
		.req = &s->req,
		.thumb = s->client.ssl ? s->thumb : NULL,
		.now = wall.tv_sec,
		.jwt = s->env->routes->jwt,
		.bearer = &s->x.bearer,
		.resp_headers = &s->x.resp_headers,
	};
	enum stage_result r = pipeline_run(&rc);
	memcpy(s->client_id, rc.client_id, sizeof(s->client_id));
	s->verdict = rc.reason;
	if (r == STAGE_REJECT) {
		session_respond_error(s, rc.status, rc.error, rc.description, rc.retry_after);
		return;
	}
	s->proven = true;
	s->slot = rc.binding.slot;
	s->psd2_roles = rc.binding.psd2_roles;
	/* From now on XDP polices this connection and drops it the moment the client is revoked. */
	if (!s->flow_added && s->env->dp)
		s->flow_added = dataplane_flow_add(s->env->dp, (struct sockaddr *)&s->peer,
						   (struct sockaddr *)&s->local, s->slot) == 0;
	struct policy_request pr = {
		.req = &s->req,
		.client_id = s->client_id,
		.slot = s->slot,
		.cert_sha256 = s->thumb,
		.psd2_roles = s->psd2_roles,
		.now_s = wall.tv_sec,
		.now_ns = (uint64_t)mono.tv_sec * 1000000000ULL + (uint64_t)mono.tv_nsec,
		.now_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000,
	};
	if (exchange_admit(&s->x, s->env->routes, &pr) == POLICY_REFUSE) {
		session_answer(s, &pr, NULL);
		return;
	}
	if (s->x.route->cfg->hub.authorization_endpoint) {
		session_hub_start(s, form_buffered);
		return;
	}
	session_start_forward(s, form_buffered);
}

/* A quota counted per form field needs the body before the route's policies can judge the
 * request, as a form-borne client_id does. */
static bool session_quota_key_in_body(const struct session *s)
{
	const struct config *cfg = session_cfg(s);
	const char *url = http_msg_url(&s->req);
	const char *q = memchr(url, '?', s->req.url_len);
	int i = route_match(cfg, url, q ? (size_t)(q - url) : s->req.url_len);
	if (i < 0)
		return false;
	const struct config_quota *quota = &cfg->routes[i].quota;
	return quota->limit && quota->per_key && clientid_needs_body(&quota->key, 1, &s->req);
}

static void session_on_request_head(struct session *s)
{
	STATS_INC(requests);
	session_new_request_id(s);
	s->body_window_start_ms = ev_now_ms();
	s->body_window_bytes = s->req_body_bytes;
	const struct config *cfg = session_cfg(s);
	if (clientid_needs_body(cfg->client_id, cfg->n_client_id, &s->req) ||
	    session_quota_key_in_body(s)) {
		s->req.buffer_body = true;
		s->state = SESSION_READ_FORM;
		if (s->req.expect_continue && s->req.state != HTTP_MSG_DONE)
			buf_append_str(&s->c_out, "HTTP/1.1 100 Continue\r\n\r\n");
		if (s->req.state == HTTP_MSG_DONE)
			session_decide(s, true);
		return;
	}
	session_decide(s, false);
}

/* Hands buffered client bytes to the request parser up to its next stop (the end of the head,
 * of the message). Returns whether anything advanced. */
static bool session_feed_request(struct session *s)
{
	bool reading = s->state == SESSION_READ_HEAD || s->state == SESSION_READ_FORM ||
		       s->state == SESSION_DISCARD || (s->state == SESSION_FORWARD && !s->req_done);
	if (!reading || s->c_in.len == 0)
		return false;
	if (s->state == SESSION_FORWARD && s->up->out.len > SESSION_HIGH_WATER)
		return false;
	if (s->state == SESSION_READ_HEAD && !s->head_start_ms) {
		s->head_start_us = ev_now_us();
		s->head_start_ms = s->head_start_us / 1000;
	}
	enum session_state before = s->state;
	enum http_msg_state msg_before = s->req.state;
	size_t n = http_msg_feed(&s->req, buf_head(&s->c_in), s->c_in.len, session_on_request_body, s);
	buf_consume(&s->c_in, n);
	switch (s->req.state) {
	case HTTP_MSG_ERROR:
		STATS_INC(bad_requests);
		if (!s->request_id[0] || before == SESSION_READ_HEAD)
			session_new_request_id(s);
		s->verdict = s->req.error_reason;
		session_respond_error(s, s->req.error_status ? s->req.error_status : 400,
				      "invalid_request", s->req.error_reason, 0);
		return true;
	case HTTP_MSG_HEAD:
		break;
	case HTTP_MSG_BODY:
	case HTTP_MSG_DONE:
		if (before == SESSION_READ_HEAD)
			session_on_request_head(s);
		else if (s->req.state == HTTP_MSG_DONE && msg_before != HTTP_MSG_DONE) {
			if (before == SESSION_READ_FORM)
				session_decide(s, true);
			else if (before == SESSION_DISCARD)
				session_reset_request(s);
			else if (s->state == SESSION_FORWARD) {
				if (s->req.chunked)
					http_write_chunk(&s->up->out, NULL, 0);
				s->req_done = true;
				s->forward_start_ms = ev_now_ms(); /* the response wait starts now */
			}
		}
		break;
	}
	return n > 0 || s->state != before;
}

/* Feeds until the parser stops advancing, so that a head and the body bytes that came with it
 * reach u_out together and leave in one write. */
static bool session_process_client_input(struct session *s)
{
	bool progress = false;
	while (!s->dead && session_feed_request(s))
		progress = true;
	return progress;
}

static bool session_read_client(struct session *s)
{
	bool progress = false;
	char tmp[SESSION_READ_CHUNK];
	while (!s->client_eof && !s->close_after_flush &&
	       s->c_in.len < SESSION_MAX_CLIENT_INPUT(s) && conn_may_read(&s->client)) {
		ssize_t n = conn_read(&s->client, tmp, sizeof(tmp));
		if (n > 0) {
			if (buf_append(&s->c_in, tmp, (size_t)n) < 0) {
				session_close(s);
				return true;
			}
			s->last_activity_ms = ev_now_ms();
			s->buffers_released = false;
			progress = true;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			break;
		s->client_eof = true; /* EOF or reset */
		progress = true;
	}
	return progress;
}

/* Before closing after a final response: a socket closed with unread bytes answers with a
 * reset, which can destroy the response before the client reads it (a body refused with 413
 * while the client is still sending it). What the client has sent so far is read and dropped,
 * up to a bound, so that the close is a FIN whenever the client has finished sending. */
static void session_discard_client_input(struct session *s)
{
	char tmp[SESSION_READ_CHUNK];
	conn_set_readable(&s->client); /* a short read may have left some: look once more */
	for (size_t dropped = 0; dropped < SESSION_DISCARD_MAX;) {
		ssize_t n = conn_read(&s->client, tmp, sizeof(tmp));
		if (n <= 0)
			break;
		dropped += (size_t)n;
	}
}

static bool session_flush_client(struct session *s)
{
	bool progress = false;
	while (s->c_out.len) {
		ssize_t n = conn_write(&s->client, buf_head(&s->c_out), s->c_out.len);
		if (n > 0) {
			buf_consume(&s->c_out, (size_t)n);
			s->last_activity_ms = ev_now_ms();
			progress = true;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			break;
		session_close(s);
		return true;
	}
	return progress;
}

static void session_reset_request(struct session *s)
{
	session_hub_forget_bearer(s);
	http_msg_reset(&s->req);
	exchange_reset(&s->x);
	s->state = SESSION_READ_HEAD;
	s->req_done = s->resp_head_sent = s->resp_chunked = false;
	s->status = 0;
	s->verdict = NULL;
	s->head_start_ms = s->forward_start_ms = 0;
	s->req_body_bytes = s->resp_bytes = 0;
	s->request_id[0] = '\0';
}

/* The exchange's upstream connection goes back to the worker's pool when nothing about its
 * framing is uncertain. */
static void session_release_upstream(struct session *s)
{
	struct upconn *u = s->up;
	s->up = NULL;
	/* A response framed without a body (to HEAD, 204, 304) that announces one may still be
	 * followed by it: such a connection is not trusted with another request either. */
	bool body_may_follow = s->resp.skip_body && (s->resp.chunked || (s->resp.has_content_length &&
								     s->resp.content_length > 0));
	if (u->in.len) {
		/* Bytes after a complete response were asked for by nobody: read as the next
		 * response, they would hand a later request another request's answer. */
		STATS_INC(upstream_leftovers);
		log_warn("upstream sent %zu bytes beyond a complete response to request %s; "
			 "connection dropped", u->in.len, s->request_id);
	}
	upconn_release(u, s->resp.keep_alive && !body_may_follow && s->req_done && !u->in.len);
}

static void session_on_response_done(struct session *s)
{
	if (s->resp_chunked)
		http_write_chunk(&s->c_out, NULL, 0);
	session_complete_exchange(s, EXCHANGE_RESPONDED);
	session_log_request(s);
	session_release_upstream(s);
	if (!s->client_keep_alive || !s->req_done || s->env->draining) {
		/* A request still streaming in cannot be left behind on a live connection. */
		s->state = SESSION_CLOSING;
		s->close_after_flush = true;
		return;
	}
	session_reset_request(s);
}

/* Hands the upstream's bytes to the response parser up to its next stop: the head is relayed
 * once complete, then body bytes. Returns whether anything advanced. */
static bool session_feed_response_step(struct session *s)
{
	enum http_msg_state before = s->resp.state;
	struct buf *u_in = &s->up->in;
	size_t n = http_msg_feed(&s->resp, buf_head(u_in), u_in->len, session_on_response_body, s);
	buf_consume(u_in, n);
	if (s->resp.state == HTTP_MSG_ERROR) {
		STATS_INC(upstream_errors);
		session_upstream_fail(s, 502, "invalid response from upstream",
				      EXCHANGE_UPSTREAM_BROKEN);
		return true;
	}
	if (before == HTTP_MSG_HEAD && s->resp.state != HTTP_MSG_HEAD) {
		if (s->resp.status_code / 100 == 1) {
			/* Interim responses (100 Continue) were answered by the gateway itself. */
			bool no_body = s->resp.no_body;
			http_msg_reset(&s->resp);
			s->resp.no_body = no_body;
			return true;
		}
		/* An HTTP/1.0 client cannot read chunks: without a length, its response ends at close. */
		bool http11 = s->req.http_major == 1 && s->req.http_minor >= 1;
		bool keep = s->req.keep_alive && !s->env->draining &&
			    (http11 || s->resp.has_content_length || s->resp.no_body);
		if (http_write_response_head(&s->resp, keep, s->request_id,
					     session_extra_headers(s, 0), &s->c_out,
					     &s->resp_chunked) < 0) {
			session_upstream_fail(s, 502, "cannot relay upstream response head",
					      EXCHANGE_UPSTREAM_BROKEN);
			return true;
		}
		s->client_keep_alive = keep && (s->resp_chunked || s->resp.has_content_length ||
						 s->resp.no_body || s->resp.state == HTTP_MSG_DONE);
		s->resp_head_sent = true;
		s->status = s->resp.status_code;
	}
	if (s->resp.state == HTTP_MSG_DONE)
		session_on_response_done(s);
	return n > 0 || s->resp.state != before;
}

/* Feeds until the parser stops advancing: a head and the body bytes that came with it go to
 * the client together, in one TLS record and one write(). */
static bool session_feed_response(struct session *s)
{
	bool progress = false;
	while (!s->dead && s->state == SESSION_FORWARD && s->up && s->up->in.len &&
	       s->c_out.len <= SESSION_HIGH_WATER && session_feed_response_step(s))
		progress = true;
	return progress;
}

/* A pooled connection the upstream closed while it sat idle (its keep-alive timeout) fails the
 * next request sent on it before any answer. Such a request went nowhere: when it is
 * idempotent and has no body (RFC 9110 §9.2.2), it is sent again on another connection rather
 * than answered with a 502. A new connection that fails is the upstream's failure. */
static bool session_retry_on_fresh(struct session *s)
{
	bool idempotent = s->req.method == HTTP_GET || s->req.method == HTTP_HEAD ||
			  s->req.method == HTTP_OPTIONS || s->req.method == HTTP_PUT ||
			  s->req.method == HTTP_DELETE;
	bool bodiless = !s->req.chunked && s->req.content_length == 0;
	if (!s->up->reused || !idempotent || !bodiless || !s->req_done ||
	    s->resp.state != HTTP_MSG_HEAD || s->resp.head_bytes || s->up->in.len)
		return false;
	log_info("request %s: upstream %s closed a pooled connection; sent again on another",
		 s->request_id, session_upstream_cfg(s)->name);
	session_drop_upstream(s);
	session_start_forward(s, false);
	return true;
}

static bool session_upstream_io(struct session *s)
{
	struct upconn *u = s->up;
	if (!u || s->state != SESSION_FORWARD)
		return false;
	bool progress = false;
	if (u->connecting || !u->c.handshake_done) {
		bool was_connecting = u->connecting, tls;
		const char *why;
		enum upconn_state st = upconn_establish(u, &why, &tls);
		if (st == UPCONN_FAILED) {
			char text[200];
			snprintf(text, sizeof(text), "%s: %s",
				 tls ? "TLS handshake failed" : "cannot connect", why);
			if (tls)
				STATS_INC(upstream_errors);
			else
				STATS_INC(upstream_connect_errors);
			session_upstream_fail(s, 502, text,
					      tls ? EXCHANGE_TLS_FAILED : EXCHANGE_CONNECT_FAILED);
			return true;
		}
		progress = was_connecting != u->connecting;
		if (st == UPCONN_WAIT)
			return progress;
		progress = true;
	}
	if (upconn_flush(u, &progress) < 0) {
		if (session_retry_on_fresh(s))
			return true;
		STATS_INC(upstream_errors);
		session_upstream_fail(s, 502, "upstream closed the connection while sending",
				      EXCHANGE_UPSTREAM_BROKEN);
		return true;
	}
	if (s->splicing != SPLICE_RESPONSE_BODY)
		progress |= upconn_read(u, SESSION_HIGH_WATER);
	progress |= session_feed_response(s);
	if (s->dead || s->state != SESSION_FORWARD || !s->up || !s->up->eof || s->up->in.len)
		return progress;
	if (session_retry_on_fresh(s))
		return true;
	http_msg_feed_eof(&s->resp, session_on_response_body, s);
	if (s->resp.state == HTTP_MSG_DONE) {
		s->up->in.len = 0;
		session_on_response_done(s); /* the closed connection is not pooled (eof) */
	} else {
		STATS_INC(upstream_errors);
		session_upstream_fail(s, 502, "upstream closed the connection before responding",
				      EXCHANGE_UPSTREAM_BROKEN);
	}
	return true;
}

/* A body of known length whose source and destination are both kernel-handled (plain TCP or
 * kTLS) bypasses userspace once the parser has handed on what it had already read. */
static enum session_splice session_splice_candidate(const struct session *s, uint64_t *remaining)
{
	if (s->state != SESSION_FORWARD || !s->up || !s->up->c.handshake_done)
		return SPLICE_NONE;
	if (!s->req_done) {
		if (s->req.state != HTTP_MSG_BODY || s->req.chunked || !s->req.has_content_length ||
		    s->c_in.len || s->up->out.len || !conn_kernel_reads(&s->client) ||
		    !conn_kernel_writes(&s->up->c))
			return SPLICE_NONE;
		*remaining = s->req.content_length - s->req_body_bytes;
		return *remaining >= SESSION_SPLICE_MIN ? SPLICE_REQUEST_BODY : SPLICE_NONE;
	}
	if (!s->resp_head_sent || s->resp.state != HTTP_MSG_BODY || s->resp_chunked ||
	    !s->resp.has_content_length || s->up->in.len || s->c_out.len ||
	    !conn_kernel_reads(&s->up->c) || !conn_kernel_writes(&s->client))
		return SPLICE_NONE;
	*remaining = s->resp.content_length - s->resp_bytes;
	return *remaining >= SESSION_SPLICE_MIN ? SPLICE_RESPONSE_BODY : SPLICE_NONE;
}

static bool session_splice(struct session *s)
{
	if (s->splicing == SPLICE_NONE) {
		uint64_t remaining = 0;
		enum session_splice which = session_splice_candidate(s, &remaining);
		if (which == SPLICE_NONE)
			return false;
		const struct conn *in = which == SPLICE_REQUEST_BODY ? &s->client : &s->up->c;
		bool in_ktls = in->ssl != NULL;
		if (!s->splice_open) {
			if (splice_fwd_init(&s->splice, remaining, in_ktls) < 0)
				return false; /* no pipe: the body goes through userspace */
			s->splice_open = true;
		} else {
			splice_fwd_reset(&s->splice, remaining, in_ktls);
		}
		s->splicing = which;
	}
	bool request = s->splicing == SPLICE_REQUEST_BODY;
	int in_fd = request ? s->client.fd : s->up->c.fd;
	int out_fd = request ? s->up->c.fd : s->client.fd;
	uint64_t before = s->splice.moved;
	s->splice_last = splice_fwd_run(&s->splice, in_fd, out_fd, SPLICE_FWD_BUDGET);
	uint64_t moved = s->splice.moved - before;
	if (request)
		s->req_body_bytes += moved;
	else
		s->resp_bytes += moved;
	if (moved) {
		s->last_activity_ms = ev_now_ms();
		STATS_ADD(splice_bytes, moved);
	}
	switch (s->splice_last) {
	case SPLICE_FWD_DONE:
		s->splicing = SPLICE_NONE;
		if (request) {
			s->req_done = true;
			s->forward_start_ms = ev_now_ms(); /* the response wait starts now */
		} else {
			session_on_response_done(s);
		}
		return true;
	case SPLICE_FWD_WANT_READ:
	case SPLICE_FWD_WANT_WRITE:
		return moved > 0;
	case SPLICE_FWD_YIELD:
		return true;
	case SPLICE_FWD_EOF:
	case SPLICE_FWD_CONTROL: /* an alert or KeyUpdate in the middle of a body */
	case SPLICE_FWD_ERROR:
		log_info("request %s: %s body cut short: %s", s->request_id,
			 request ? "request" : "response", splice_fwd_result_name(s->splice_last));
		if (!request)
			STATS_INC(upstream_errors);
		session_close(s);
		return true;
	}
	return false;
}

static void session_on_handshake(struct session *s)
{
	X509 *peer = conn_peer_cert(&s->client);
	if (!peer || cert_thumbprint(peer, s->thumb) < 0) {
		session_close(s);
		return;
	}
	cert_thumb_to_hex(s->thumb, s->thumb_hex);
	STATS_INC(handshakes_ok);
	s->state = SESSION_READ_HEAD;
	s->last_activity_ms = ev_now_ms();
}

static bool session_wants_client_read(const struct session *s)
{
	return !s->client_eof && !s->close_after_flush && s->splicing != SPLICE_REQUEST_BODY &&
	       s->c_in.len < SESSION_MAX_CLIENT_INPUT(s);
}

static void session_update_interest(struct session *s)
{
	int cmask = EV_NONE, umask = EV_NONE;
	const struct conn *c = &s->client;
	if (!c->handshake_done) {
		cmask = c->read_wants_write ? EV_WRITE : EV_READ;
	} else {
		if (session_wants_client_read(s) || c->write_wants_read)
			cmask |= EV_READ;
		if ((s->c_out.len && !c->write_wants_read) || c->read_wants_write)
			cmask |= EV_WRITE;
	}
	if (s->up) {
		const struct conn *u = &s->up->c;
		if (s->up->connecting)
			umask = EV_WRITE;
		else if (!u->handshake_done)
			umask = u->read_wants_write ? EV_WRITE : EV_READ;
		else {
			if ((!s->up->eof && s->up->in.len < SESSION_HIGH_WATER) || u->write_wants_read)
				umask |= EV_READ;
			if ((s->up->out.len && !u->write_wants_read) || u->read_wants_write)
				umask |= EV_WRITE;
		}
	}
	if (s->splicing != SPLICE_NONE) {
		/* The pipe holds data: wait for the destination; else for the source. */
		bool to_up = s->splicing == SPLICE_REQUEST_BODY;
		bool want_write = s->splice_last == SPLICE_FWD_WANT_WRITE;
		bool yielded = s->splice_last == SPLICE_FWD_YIELD; /* come back at once */
		int *src = to_up ? &cmask : &umask, *dst = to_up ? &umask : &cmask;
		*src = (*src & ~EV_READ) | (want_write ? 0 : EV_READ);
		if (want_write || yielded)
			*dst |= EV_WRITE;
	}
	if (s->up)
		ev_set(s->env->loop, s->up->c.fd, umask, session_on_event, s);
	ev_set(s->env->loop, c->fd, cmask, session_on_event, s);
}

static void session_step(struct session *s)
{
	if (s->dead)
		return;
	if (s->state == SESSION_HANDSHAKE) {
		enum conn_result r = conn_handshake(&s->client);
		if (r == CONN_ERROR) {
			STATS_INC(handshakes_failed);
			metrics_add(s->client.failure, 1);
			log_info("handshake with %s failed: %s", s->peer_text, s->client.error);
			session_close(s);
			return;
		}
		if (r == CONN_AGAIN) {
			session_update_interest(s);
			return;
		}
		session_on_handshake(s);
		if (s->dead)
			return;
	}
	/* Run until nothing moves: OpenSSL may hold decrypted bytes no epoll event reports. */
	for (unsigned round = 0; round < 64 && !s->dead; round++) {
		bool progress = false;
		if (session_wants_client_read(s))
			progress |= session_read_client(s);
		if (!s->dead)
			progress |= session_process_client_input(s);
		if (!s->dead)
			progress |= session_upstream_io(s);
		if (!s->dead)
			progress |= session_flush_client(s);
		if (!s->dead)
			progress |= session_splice(s);
		if (!progress || (s->splicing != SPLICE_NONE && s->splice_last == SPLICE_FWD_YIELD))
			break; /* a yielding splice lets the worker serve other sessions first */
	}
	if (s->dead)
		return;
	if (s->close_after_flush && s->c_out.len == 0) {
		session_discard_client_input(s);
		session_close(s);
		return;
	}
	if (s->client_eof && !(s->state == SESSION_FORWARD && s->req_done) &&
	    !(s->state == SESSION_HUB && s->req.state == HTTP_MSG_DONE)) {
		/* The TPP went away: nothing is owed to it any more. */
		session_close(s);
		return;
	}
	session_update_interest(s);
}

struct session *session_new(struct session_env *env, int fd, const struct sockaddr_storage *peer)
{
	struct session *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return NULL;
	}
	s->env = env;
	s->peer = *peer;
	socklen_t len = sizeof(s->local);
	getsockname(fd, (struct sockaddr *)&s->local, &len);
	const void *addr = peer->ss_family == AF_INET6
				   ? (const void *)&((const struct sockaddr_in6 *)peer)->sin6_addr
				   : (const void *)&((const struct sockaddr_in *)peer)->sin_addr;
	inet_ntop(peer->ss_family, addr, s->peer_text, sizeof(s->peer_text));
	const struct config *cfg = session_cfg(s);
	s->req_limits = (struct http_limits){
		.max_header_bytes = cfg->limits.max_header_bytes,
		.max_uri_bytes = cfg->limits.max_uri_bytes,
		.max_body_bytes = cfg->limits.max_body_bytes,
		.max_buffered_body = cfg->limits.max_form_bytes,
		.methods = cfg->http.methods,
	};
	/* The upstream is trusted to size its own responses; only its head is bounded. */
	s->resp_limits = (struct http_limits){
		.max_header_bytes = 64 * 1024,
		.max_body_bytes = UINT64_MAX,
		.max_buffered_body = 0,
	};
	http_msg_init(&s->req, HTTP_REQUEST, &s->req_limits);
	http_msg_init(&s->resp, HTTP_RESPONSE, &s->resp_limits);
	if (conn_init(&s->client, fd, env->server_ctx, true, NULL, NULL) < 0) {
		close(fd);
		session_free(s);
		return NULL;
	}
	s->accepted_ms = s->last_activity_ms = ev_now_ms();
	STATS_INC(connections_open);
	session_step(s);
	return s;
}

/* Between requests nothing is buffered: the memory of an idle connection is mostly buffers
 * kept for the next request (OpenSSL's two record buffers, then the session's). */
static void session_release_idle_buffers(struct session *s)
{
	conn_release_buffers(&s->client);
	buf_free(&s->c_in);
	buf_free(&s->c_out);
	http_msg_free(&s->req);
	http_msg_reset(&s->req);
	http_msg_free(&s->resp);
	http_msg_reset(&s->resp);
	s->buffers_released = true;
}

/* Whether the request body came slower than limits.min_body_rate over the window now ending (a
 * bound TPP trickling its body holds an upstream connection); starts the next window. A window
 * that ends while the gateway itself holds the body back (the upstream is slow to take it)
 * proves nothing about the client and is not judged. */
static bool session_body_too_slow(struct session *s, int64_t now)
{
	const struct config *cfg = session_cfg(s);
	int64_t elapsed = now - s->body_window_start_ms;
	if (cfg->limits.min_body_rate == 0 || elapsed < cfg->limits.body_rate_window_ms)
		return false;
	uint64_t got = s->req_body_bytes - s->body_window_bytes;
	bool held_back = (s->up && s->up->out.len > SESSION_HIGH_WATER) ||
			 (s->splicing == SPLICE_REQUEST_BODY && s->splice_last == SPLICE_FWD_WANT_WRITE);
	s->body_window_start_ms = now;
	s->body_window_bytes = s->req_body_bytes;
	return !held_back && got * 1000 < (uint64_t)cfg->limits.min_body_rate * (uint64_t)elapsed;
}

static void session_cut_slow_body(struct session *s)
{
	if (s->resp_head_sent) {
		/* The upstream already answered: a 408 can no longer be sent, only the cut. */
		log_info("request %s: request body too slow; connection cut", s->request_id);
		session_close(s);
		return;
	}
	s->verdict = "body_too_slow";
	session_respond_error(s, 408, "invalid_request", "request body sent too slowly", 0);
	session_step(s);
}

void session_check_deadline(struct session *s, int64_t now)
{
	const struct config *cfg = session_cfg(s);
	switch (s->state) {
	case SESSION_HANDSHAKE:
		if (now - s->accepted_ms > cfg->limits.header_timeout_ms) {
			STATS_INC(header_timeouts);
			STATS_INC(handshakes_failed);
			STATS_INC(handshake_failed_timeout);
			session_close(s);
		}
		return;
	case SESSION_READ_HEAD:
		if (s->head_start_ms || s->c_in.len) {
			int64_t start = s->head_start_ms ? s->head_start_ms : s->last_activity_ms;
			if (now - start > cfg->limits.header_timeout_ms) {
				STATS_INC(header_timeouts);
				session_new_request_id(s);
				s->verdict = "header_timeout";
				session_respond_error(s, 408, "invalid_request",
						      "request head not received in time", 0);
				session_step(s);
			}
		} else if (now - s->last_activity_ms > cfg->limits.idle_timeout_ms) {
			session_close(s);
		} else if (!s->buffers_released && s->c_out.len == 0 &&
			   now - s->last_activity_ms >= SESSION_IDLE_RELEASE_MS) {
			session_release_idle_buffers(s);
		}
		return;
	case SESSION_DISCARD:
		/* Its response is out already: a body that stops coming only ends the connection. */
		if (now - s->last_activity_ms > cfg->limits.header_timeout_ms)
			session_close(s);
		return;
	case SESSION_READ_FORM:
		if (now - s->last_activity_ms > cfg->limits.header_timeout_ms) {
			s->verdict = "body_timeout";
			session_respond_error(s, 408, "invalid_request", "request body not received in time", 0);
			session_step(s);
		} else if (session_body_too_slow(s, now)) {
			session_cut_slow_body(s);
		}
		return;
	case SESSION_FORWARD: {
		const struct config_upstream *up = session_upstream_cfg(s);
		const char *late = NULL;
		if (s->up->connecting && now - s->up->opened_ms > up->connect_timeout_ms)
			late = "connect timed out";
		else if (!s->up->connecting && !s->up->c.handshake_done &&
			 now - s->up->connected_ms > up->tls_timeout_ms)
			late = "TLS handshake timed out";
		else if (!s->resp_head_sent && s->req_done &&
			 now - s->forward_start_ms > up->response_timeout_ms)
			late = "no response in time";
		if (late) {
			STATS_INC(upstream_timeouts);
			session_upstream_fail(s, 504, late, EXCHANGE_TIMED_OUT);
			session_step(s);
		} else if ((s->resp_head_sent || !s->req_done) &&
			   now - s->last_activity_ms > cfg->limits.idle_timeout_ms) {
			session_close(s);
		} else if (!s->req_done && session_body_too_slow(s, now)) {
			session_cut_slow_body(s);
		}
		return;
	}
	case SESSION_HUB: {
		/* The hub bounds each bank call; this bounds the wait behind other sessions' jobs. */
		const struct config_upstream *up = session_upstream_cfg(s);
		int64_t bound = (int64_t)up->connect_timeout_ms + up->tls_timeout_ms +
				2 * (int64_t)up->response_timeout_ms;
		if (now - s->hub_start_ms > bound) {
			STATS_INC(upstream_timeouts);
			s->hub_job->owner = NULL;
			s->hub_job = NULL;
			session_hub_refuse(s, 504, "upstream_timeout",
					   "the hub service did not answer in time", "hub_timeout");
			session_step(s);
		}
		return;
	}
	case SESSION_CLOSING:
		if (now - s->last_activity_ms > cfg->limits.idle_timeout_ms)
			session_close(s);
		return;
	}
}

void session_drain(struct session *s)
{
	bool idle = s->state == SESSION_HANDSHAKE ||
		    (s->state == SESSION_READ_HEAD && !s->head_start_ms && s->c_in.len == 0);
	if (idle)
		session_close(s);
	/* Busy sessions see env->draining when their response completes and close then. */
}
