#include "upconn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "ev.h"
#include "log.h"
#include "metrics.h"

#define UPCONN_READ_CHUNK (16 * 1024)

void upconn_pool_init(struct upconn_pool *p, struct ev_loop *loop,
		      const struct config_upstream *cfg, SSL_CTX *ctx, const char *host_header)
{
	memset(p, 0, sizeof(*p));
	p->loop = loop;
	p->cfg = cfg;
	p->ctx = ctx;
	p->host_header = host_header;
}

void upconn_close(struct upconn *u)
{
	ev_set(u->pool->loop, u->c.fd, EV_NONE, NULL, NULL);
	conn_close(&u->c);
	buf_free(&u->in);
	buf_free(&u->out);
	free(u);
}

void upconn_pool_free(struct upconn_pool *p)
{
	while (p->idle) {
		struct upconn *u = p->idle;
		p->idle = u->next;
		upconn_close(u);
	}
	p->n_idle = 0;
}

bool upconn_read(struct upconn *u, size_t high_water)
{
	bool progress = false;
	char tmp[UPCONN_READ_CHUNK];
	while (!u->eof && u->in.len < high_water && conn_may_read(&u->c)) {
		ssize_t n = conn_read(&u->c, tmp, sizeof(tmp));
		if (n > 0) {
			if (buf_append(&u->in, tmp, (size_t)n) < 0) {
				u->eof = true; /* out of memory: treated as a broken connection */
				return true;
			}
			progress = true;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			break;
		u->eof = true;
		progress = true;
	}
	return progress;
}

/* Nothing is expected from an upstream between exchanges: bytes would be read as the answer
 * to a later request (they were asked for by nobody), EOF means it is gone. Either way the
 * connection is closed. Whether it was. */
static bool upconn_idle_broken(struct upconn *u)
{
	upconn_read(u, UPCONN_READ_CHUNK);
	if (u->in.len) {
		STATS_INC(upstream_leftovers);
		log_warn("upstream %s sent %zu bytes while idle; connection dropped", u->pool->cfg->name,
			 u->in.len);
		return true;
	}
	return u->eof;
}

static void upconn_pool_unlink(struct upconn_pool *p, struct upconn *u)
{
	for (struct upconn **pp = &p->idle; *pp; pp = &(*pp)->next)
		if (*pp == u) {
			*pp = u->next;
			p->n_idle--;
			return;
		}
}

static void upconn_on_idle_event(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	(void)fd;
	struct upconn *u = arg;
	if (!(mask & EV_READ))
		return;
	conn_set_readable(&u->c);
	if (upconn_idle_broken(u)) {
		upconn_pool_unlink(u->pool, u);
		upconn_close(u);
	}
}

static struct upconn *upconn_open(struct upconn_pool *p)
{
	const struct config_upstream *cfg = p->cfg;
	const struct sockaddr *sa = (const struct sockaddr *)&cfg->addr.addr;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return NULL;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, sa, cfg->addr.addrlen) < 0 && errno != EINPROGRESS) {
		int e = errno;
		close(fd);
		errno = e;
		return NULL;
	}
	struct upconn *u = calloc(1, sizeof(*u));
	struct in6_addr ip;
	bool is_ip = inet_pton(AF_INET, cfg->host, &ip) == 1 || inet_pton(AF_INET6, cfg->host, &ip) == 1;
	if (!u || conn_init(&u->c, fd, p->ctx, false, is_ip ? NULL : cfg->host, cfg->host) < 0) {
		free(u);
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	u->pool = p;
	u->connecting = true;
	u->opened_ms = ev_now_ms();
	return u;
}

struct upconn *upconn_checkout(struct upconn_pool *p)
{
	while (p->idle) {
		struct upconn *u = p->idle;
		p->idle = u->next;
		p->n_idle--;
		u->next = NULL;
		/* What the upstream sent while idle is unread when it woke the loop together with
		 * the request being served: look before reusing the connection. */
		if (ev_pending(p->loop, u->c.fd) & EV_READ)
			conn_set_readable(&u->c);
		if (!upconn_idle_broken(u)) {
			u->reused = true;
			return u;
		}
		upconn_close(u);
	}
	return upconn_open(p);
}

void upconn_release(struct upconn *u, bool reusable)
{
	struct upconn_pool *p = u->pool;
	if (!reusable || u->eof || u->in.len || u->out.len || !u->c.handshake_done ||
	    p->n_idle >= p->cfg->pool_size) {
		upconn_close(u);
		return;
	}
	u->next = p->idle;
	p->idle = u;
	p->n_idle++;
	ev_set(p->loop, u->c.fd, EV_READ, upconn_on_idle_event, u);
}

enum upconn_state upconn_establish(struct upconn *u, const char **why, bool *tls)
{
	*tls = false;
	if (u->connecting) {
		struct pollfd pfd = {.fd = u->c.fd, .events = POLLOUT};
		if (poll(&pfd, 1, 0) == 0)
			return UPCONN_WAIT;
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(u->c.fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err) {
			*why = strerror(err);
			return UPCONN_FAILED;
		}
		u->connecting = false;
		u->connected_ms = ev_now_ms();
	}
	if (u->c.handshake_done)
		return UPCONN_READY;
	enum conn_result r = conn_handshake(&u->c);
	if (r == CONN_ERROR) {
		*tls = true;
		*why = u->c.error;
		return UPCONN_FAILED;
	}
	return r == CONN_DONE ? UPCONN_READY : UPCONN_WAIT;
}

int upconn_flush(struct upconn *u, bool *progress)
{
	while (u->out.len) {
		ssize_t n = conn_write(&u->c, buf_head(&u->out), u->out.len);
		if (n > 0) {
			buf_consume(&u->out, (size_t)n);
			*progress = true;
			continue;
		}
		if (n < 0 && errno == EAGAIN)
			return 0;
		return -1;
	}
	return 0;
}
