#include "metrics_http.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "buf.h"
#include "ev.h"
#include "log.h"
#include "metrics.h"

#define METRICS_HTTP_SWEEP_MS 1000

struct metrics_conn {
	struct metrics_http *srv;
	struct metrics_conn *next, **pprev;
	int fd;
	int64_t accepted_ms;
	char head[METRICS_HTTP_MAX_HEAD];
	size_t head_len;
	struct buf out; /* the response, once the head is in */
};

struct metrics_http {
	struct ev_loop *loop;
	int fd;
	struct ev_timer *sweep;
	struct metrics_conn *conns;
	unsigned n_conns;
};

static void conn_close(struct metrics_conn *c)
{
	ev_set(c->srv->loop, c->fd, EV_NONE, NULL, NULL);
	close(c->fd);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	c->srv->n_conns--;
	buf_free(&c->out);
	free(c);
}

static int respond(struct metrics_conn *c, int status, const char *reason, const char *extra,
		   const char *type, const char *body, size_t len)
{
	if (buf_printf(&c->out,
		       "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
		       "Connection: close\r\n\r\n",
		       status, reason, type, len, extra) < 0 ||
	    buf_append(&c->out, body, len) < 0)
		return -1;
	return 0;
}

static int respond_error(struct metrics_conn *c, int status, const char *reason,
			 const char *extra)
{
	char body[64];
	int n = snprintf(body, sizeof(body), "%s\n", reason);
	return respond(c, status, reason, extra, "text/plain; charset=utf-8", body, (size_t)n);
}

/* The answer to the request line (the head is complete). */
static int answer(struct metrics_conn *c)
{
	char *line = c->head, *end = memchr(line, '\n', c->head_len);
	if (end > line && end[-1] == '\r')
		end--;
	*end = '\0';
	char *method = line, *target = strchr(method, ' ');
	char *version = target ? strchr(target + 1, ' ') : NULL;
	if (!version || strchr(version + 1, ' ') ||
	    (strcmp(version + 1, "HTTP/1.1") != 0 && strcmp(version + 1, "HTTP/1.0") != 0))
		return respond_error(c, 400, "Bad Request", "");
	*target++ = '\0';
	*version = '\0';
	target[strcspn(target, "?")] = '\0';
	if (strcmp(target, "/metrics") != 0)
		return respond_error(c, 404, "Not Found", "");
	if (strcmp(method, "GET") != 0)
		return respond_error(c, 405, "Method Not Allowed", "Allow: GET\r\n");
	struct buf body = {0};
	int rc = metrics_render_text(&body) < 0
			 ? respond_error(c, 500, "Internal Server Error", "")
			 : respond(c, 200, "OK", "", "text/plain; version=0.0.4; charset=utf-8",
				   buf_head(&body), body.len);
	buf_free(&body);
	return rc;
}

static bool head_complete(const struct metrics_conn *c)
{
	for (size_t i = 1; i < c->head_len; i++)
		if (c->head[i] == '\n' &&
		    (c->head[i - 1] == '\n' || (i >= 2 && c->head[i - 1] == '\r' &&
						c->head[i - 2] == '\n')))
			return true;
	return false;
}

static void conn_event(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)mask;
	struct metrics_conn *c = arg;
	if (c->out.len == 0) {
		ssize_t n = read(fd, c->head + c->head_len, sizeof(c->head) - c->head_len);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (n <= 0) {
			conn_close(c);
			return;
		}
		c->head_len += (size_t)n;
		int rc = 0;
		if (head_complete(c))
			rc = answer(c);
		else if (c->head_len == sizeof(c->head))
			rc = respond_error(c, 431, "Request Header Fields Too Large", "");
		else
			return;
		if (rc < 0 || ev_set(loop, fd, EV_WRITE, conn_event, c) < 0) {
			conn_close(c);
			return;
		}
	}
	ssize_t n = send(fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0)
		buf_consume(&c->out, (size_t)n);
	if (n <= 0 || c->out.len == 0)
		conn_close(c);
}

static void server_accept(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)mask;
	struct metrics_http *m = arg;
	for (int i = 0; i < 16; i++) {
		int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (cfd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				log_warn("metrics: accept: %s", strerror(errno));
			return;
		}
		struct metrics_conn *c = NULL;
		if (m->n_conns >= METRICS_HTTP_MAX_CONNS || !(c = calloc(1, sizeof(*c))) ||
		    ev_set(loop, cfd, EV_READ, conn_event, c) < 0) {
			free(c);
			close(cfd);
			continue;
		}
		c->srv = m;
		c->fd = cfd;
		c->accepted_ms = ev_now_ms();
		c->next = m->conns;
		if (c->next)
			c->next->pprev = &c->next;
		c->pprev = &m->conns;
		m->conns = c;
		m->n_conns++;
	}
}

static int64_t server_sweep(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	(void)loop;
	(void)t;
	struct metrics_http *m = arg;
	int64_t now = ev_now_ms();
	for (struct metrics_conn *c = m->conns, *next; c; c = next) {
		next = c->next;
		if (now - c->accepted_ms > METRICS_HTTP_TIMEOUT_MS)
			conn_close(c);
	}
	return METRICS_HTTP_SWEEP_MS;
}

int metrics_http_start(struct ev_loop *loop, const struct config_addr *addr,
		       struct metrics_http **out, char *err, size_t errlen)
{
	const struct sockaddr *sa = (const struct sockaddr *)&addr->addr;
	struct metrics_http *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	m->loop = loop;
	m->fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (m->fd < 0 || setsockopt(m->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(m->fd, sa, addr->addrlen) < 0 || listen(m->fd, 16) < 0 ||
	    ev_set(loop, m->fd, EV_READ, server_accept, m) < 0) {
		snprintf(err, errlen, "%s: %s", addr->text, strerror(errno));
		goto fail;
	}
	m->sweep = ev_timer_add(loop, METRICS_HTTP_SWEEP_MS, server_sweep, m);
	if (!m->sweep) {
		snprintf(err, errlen, "out of memory");
		ev_set(loop, m->fd, EV_NONE, NULL, NULL);
		goto fail;
	}
	*out = m;
	return 0;
fail:
	if (m->fd >= 0)
		close(m->fd);
	free(m);
	return -1;
}

void metrics_http_stop(struct metrics_http *m)
{
	if (!m)
		return;
	while (m->conns)
		conn_close(m->conns);
	ev_timer_del(m->loop, m->sweep);
	ev_set(m->loop, m->fd, EV_NONE, NULL, NULL);
	close(m->fd);
	free(m);
}
