#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cidr.h"
#include "daemon.h"
#include "denyset.h"
#include "ev.h"
#include "hub_service.h"
#include "log.h"
#include "metrics.h"
#include "session.h"

#define WORKER_SWEEP_MS 100
#define WORKER_LISTEN_BACKLOG 1024
#define WORKER_DENY_LOG_MS 1000 /* at most one line a second per worker about refused peers */

static int worker_listen(const struct config_addr *a, char *err, size_t errlen)
{
	const struct sockaddr *sa = (const struct sockaddr *)&a->addr;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	int one = 1;
	/* Every worker binds its own socket; the kernel spreads connections across them. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
		goto fail;
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, sa, a->addrlen) < 0 || listen(fd, WORKER_LISTEN_BACKLOG) < 0)
		goto fail;
	return fd;
fail:
	snprintf(err, errlen, "listen %s: %s", a->text, strerror(errno));
	if (fd >= 0)
		close(fd);
	return -1;
}

static void worker_link(struct worker *w, struct session *s)
{
	s->next = w->sessions;
	if (w->sessions)
		w->sessions->prev = s;
	w->sessions = s;
	w->n_sessions++;
}

/* Sessions are freed here, outside every callback that might still hold them. The list is
 * walked only in passes that closed one: with thousands of idle connections, a pass serving one
 * request must not cost a walk over all of them. */
static void worker_reap(struct worker *w)
{
	if (!w->env.n_dead)
		return;
	w->env.n_dead = 0;
	struct session *s = w->sessions;
	while (s) {
		struct session *next = s->next;
		if (s->dead) {
			if (s->prev)
				s->prev->next = s->next;
			else
				w->sessions = s->next;
			if (s->next)
				s->next->prev = s->prev;
			w->n_sessions--;
			session_free(s);
		}
		s = next;
	}
}

/* Once per loop pass: the access-log lines of the pass go out together, closed sessions are
 * freed. */
static void worker_before_sleep(struct ev_loop *loop, void *arg)
{
	struct worker *w = arg;
	log_access_flush(&w->access_log);
	worker_reap(w);
	if (w->env.draining && w->n_sessions == 0)
		ev_stop(loop);
}

/* The deny-list at accept, whatever bpf.mode: XDP drops a denied source's packets before TCP
 * sees them, but only on the interface it is attached to, only while it is attached (a link
 * flap detaches it until the link is back), and not at all with bpf.mode off. A denied peer is
 * closed before any TLS work, with a reset: no response, and no FIN exchange or TIME_WAIT left
 * on the gateway for each of a flood of them. */
static bool worker_refuse_denied(struct worker *w, int fd, const struct sockaddr *peer)
{
	struct cidr host, hit;
	uint64_t suppressed;

	if (!denyset_match(w->d->deny, peer, &hit))
		return false;
	STATS_INC(connections_refused_deny);
	struct linger reset = {.l_onoff = 1, .l_linger = 0};
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
	close(fd);
	if (log_ratelimit_pass(&w->deny_log, ev_now_ms(), &suppressed)) {
		char addr[INET6_ADDRSTRLEN] = "?", prefix[CIDR_TEXT_MAX + 1] = "?", more[64] = "";
		if (cidr_of_peer(peer, &host) == 0)
			inet_ntop(host.family, host.addr, addr, sizeof(addr));
		cidr_format(&hit, prefix, sizeof(prefix));
		if (suppressed)
			snprintf(more, sizeof(more), " (and %llu more since the last such line)",
				 (unsigned long long)suppressed);
		log_warn("worker %u: refused a connection from %s: in the deny-list as %s%s", w->id,
			 addr, prefix, more);
	}
	return true;
}

static void worker_on_accept(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	(void)mask;
	struct worker *w = arg;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);
		int cfd = accept4(fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				log_warn("worker %u: accept: %s", w->id, strerror(errno));
			return;
		}
		STATS_INC(connections_accepted);
		if (worker_refuse_denied(w, cfd, (struct sockaddr *)&peer))
			continue;
		if (w->n_sessions >= w->d->cfg.limits.max_connections) {
			STATS_INC(connections_refused_limit);
			close(cfd);
			continue;
		}
		struct session *s = session_new(&w->env, cfd, &peer);
		if (s)
			worker_link(w, s);
	}
}

static void worker_stop_listening(struct worker *w)
{
	for (unsigned i = 0; i < w->n_listen; i++) {
		if (w->listen_fds[i] < 0)
			continue;
		ev_set(w->loop, w->listen_fds[i], EV_NONE, NULL, NULL);
		close(w->listen_fds[i]);
		w->listen_fds[i] = -1;
	}
}

/* Sessions and pooled connections made with the old contexts keep them through their SSL's
 * own references; this worker's references go. */
static void worker_set_tls(struct worker *w, const struct worker_cmd *cmd)
{
	SSL_CTX_free(w->env.server_ctx);
	w->env.server_ctx = cmd->server_ctx;
	for (unsigned i = 0; i < w->d->cfg.n_upstreams; i++) {
		SSL_CTX_free(w->pools[i].ctx);
		w->pools[i].ctx = cmd->upstream_ctx[i];
	}
}

/* The references carried by a command that will never run. */
static void worker_cmd_release(const struct worker_cmd *cmd)
{
	if (cmd->kind == WORKER_HUB_DONE)
		hub_job_free(cmd->job);
	if (cmd->kind != WORKER_SET_TLS)
		return;
	SSL_CTX_free(cmd->server_ctx);
	for (unsigned i = 0; i < CONFIG_MAX_UPSTREAMS; i++)
		SSL_CTX_free(cmd->upstream_ctx[i]);
}

static void worker_run_cmd(struct worker *w, const struct worker_cmd *cmd)
{
	if (cmd->kind == WORKER_SET_TLS) {
		worker_set_tls(w, cmd);
		return;
	}
	if (cmd->kind == WORKER_HUB_DONE) {
		session_hub_done(cmd->job);
		return;
	}
	if (cmd->kind == WORKER_DRAIN) {
		w->env.draining = true;
		worker_stop_listening(w);
		for (struct session *s = w->sessions; s; s = s->next)
			session_drain(s);
		return;
	}
	for (struct session *s = w->sessions; s; s = s->next) {
		if (s->dead)
			continue;
		bool hit = cmd->kind == WORKER_CUT_CLIENT
				   ? s->proven && strcmp(s->client_id, cmd->client_id) == 0
				   : memcmp(s->thumb, cmd->thumb, CERT_THUMB_LEN) == 0;
		if (hit) {
			STATS_INC(connections_cut_by_control);
			session_close(s);
		}
	}
}

static void worker_on_wake(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	(void)mask;
	struct worker *w = arg;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_warn("worker %u: eventfd: %s", w->id, strerror(errno));
	pthread_mutex_lock(&w->cmd_lock);
	struct worker_cmd *cmds = w->cmds;
	w->cmds = NULL;
	pthread_mutex_unlock(&w->cmd_lock);
	/* Queued newest first; run them in the order they were posted. */
	struct worker_cmd *ordered = NULL;
	while (cmds) {
		struct worker_cmd *next = cmds->next;
		cmds->next = ordered;
		ordered = cmds;
		cmds = next;
	}
	while (ordered) {
		struct worker_cmd *next = ordered->next;
		worker_run_cmd(w, ordered);
		free(ordered);
		ordered = next;
	}
}

static int64_t worker_sweep(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	(void)loop;
	(void)t;
	struct worker *w = arg;
	int64_t now = ev_now_ms();
	for (struct session *s = w->sessions; s; s = s->next)
		if (!s->dead)
			session_check_deadline(s, now);
	return WORKER_SWEEP_MS;
}

/* On the hub service's thread: hands the answered job to the worker of its session. */
static void worker_hub_done(struct hub_job *job, void *arg)
{
	struct worker_cmd cmd = {.kind = WORKER_HUB_DONE, .job = job};
	worker_post(arg, &cmd);
}

int worker_init(struct worker *w, struct daemon *d, unsigned id, char *err, size_t errlen)
{
	memset(w, 0, sizeof(*w));
	w->id = id;
	w->d = d;
	w->wake_fd = -1;
	w->deny_log.period_ms = WORKER_DENY_LOG_MS;
	for (unsigned i = 0; i < CONFIG_MAX_LISTEN; i++)
		w->listen_fds[i] = -1;
	pthread_mutex_init(&w->cmd_lock, NULL);
	if (getrandom(&w->env.request_id_salt, sizeof(w->env.request_id_salt), 0) !=
	    sizeof(w->env.request_id_salt)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -1;
	}
	struct rlimit rl;
	int max_fds = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1u << 20
			      ? (int)rl.rlim_cur
			      : 1 << 20;
	w->loop = ev_loop_new(max_fds);
	w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (!w->loop || w->wake_fd < 0) {
		snprintf(err, errlen, "worker %u: %s", id, strerror(errno));
		return -1;
	}
	for (unsigned i = 0; i < d->cfg.n_listen; i++) {
		int fd = worker_listen(&d->cfg.listen[i], err, errlen);
		if (fd < 0)
			return -1;
		w->listen_fds[w->n_listen++] = fd;
		if (ev_set(w->loop, fd, EV_READ, worker_on_accept, w) < 0) {
			snprintf(err, errlen, "worker %u: epoll: %s", id, strerror(errno));
			return -1;
		}
	}
	if (ev_set(w->loop, w->wake_fd, EV_READ, worker_on_wake, w) < 0 ||
	    !ev_timer_add(w->loop, WORKER_SWEEP_MS, worker_sweep, w)) {
		snprintf(err, errlen, "worker %u: %s", id, strerror(errno));
		return -1;
	}
	ev_set_before_sleep(w->loop, worker_before_sleep, w);
	for (unsigned i = 0; i < d->cfg.n_upstreams; i++) {
		SSL_CTX *ctx = d->upstreams[i].ctx;
		if (ctx)
			SSL_CTX_up_ref(ctx);
		upconn_pool_init(&w->pools[i], w->loop, &d->cfg.upstreams[i], ctx,
				 d->upstreams[i].host_header);
	}
	w->env.cfg = &d->cfg;
	w->env.loop = w->loop;
	if (d->server_ctx)
		SSL_CTX_up_ref(d->server_ctx);
	w->env.server_ctx = d->server_ctx;
	w->env.reg = d->reg;
	w->env.dp = d->dp;
	w->env.routes = &d->routes;
	w->env.pools = w->pools;
	w->env.access_log = &w->access_log;
	w->env.worker_id = id;
	w->env.hub = d->hub;
	w->env.hub_done = worker_hub_done;
	w->env.hub_done_arg = w;
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	ev_run(w->loop);
	log_access_flush(&w->access_log);
	return NULL;
}

int worker_start(struct worker *w)
{
	return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void worker_post(struct worker *w, const struct worker_cmd *cmd)
{
	struct worker_cmd *copy = malloc(sizeof(*copy));
	if (!copy) {
		log_error("worker %u: cannot queue command: out of memory", w->id);
		worker_cmd_release(cmd);
		return;
	}
	*copy = *cmd;
	pthread_mutex_lock(&w->cmd_lock);
	copy->next = w->cmds;
	w->cmds = copy;
	pthread_mutex_unlock(&w->cmd_lock);
	uint64_t one = 1;
	if (write(w->wake_fd, &one, sizeof(one)) < 0)
		log_warn("worker %u: wake: %s", w->id, strerror(errno));
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}

void worker_free(struct worker *w)
{
	for (struct session *s = w->sessions; s;) {
		struct session *next = s->next;
		session_close(s);
		session_free(s);
		s = next;
	}
	w->sessions = NULL;
	for (unsigned i = 0; i < w->d->cfg.n_upstreams; i++) {
		upconn_pool_free(&w->pools[i]);
		SSL_CTX_free(w->pools[i].ctx);
	}
	SSL_CTX_free(w->env.server_ctx);
	worker_stop_listening(w);
	while (w->cmds) {
		struct worker_cmd *next = w->cmds->next;
		worker_cmd_release(w->cmds);
		free(w->cmds);
		w->cmds = next;
	}
	if (w->wake_fd >= 0)
		close(w->wake_fd);
	buf_free(&w->access_log);
	ev_loop_free(w->loop);
	pthread_mutex_destroy(&w->cmd_lock);
}
