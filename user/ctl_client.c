#include "ctl_client.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "buf.h"

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for events on fd until deadline: 1 ready, 0 timed out, -1 error. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		return r < 0 ? -1 : r;
	}
}

static int connect_to(const char *path, int64_t deadline, char *err, size_t errlen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "%s: socket path too long", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	/* A Unix connect completes at once unless the backlog is full (EAGAIN): retry then. */
	while (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN && now_ms() < deadline) {
			struct timespec ts = {0, 10 * 1000 * 1000};
			nanosleep(&ts, NULL);
			continue;
		}
		snprintf(err, errlen, "cannot connect to %s: %s", path,
			 errno == EAGAIN ? "daemon busy" : strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n, int64_t deadline, char *err, size_t errlen)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int r = wait_fd(fd, POLLOUT, deadline);
			if (r == 0) {
				snprintf(err, errlen, "timed out sending the request");
				return CTL_ERR_TIMEOUT;
			}
			if (r < 0) {
				snprintf(err, errlen, "poll: %s", strerror(errno));
				return CTL_ERR_IO;
			}
			continue;
		}
		if (w < 0) {
			/* The daemon may have answered (and closed) before reading it all. */
			if (errno == EPIPE || errno == ECONNRESET)
				return CTL_OK;
			snprintf(err, errlen, "sending the request: %s", strerror(errno));
			return CTL_ERR_IO;
		}
		p += w;
		n -= (size_t)w;
	}
	return CTL_OK;
}

int ctl_request(const char *path, const char *line, size_t len, int timeout_ms, char **resp,
		char *err, size_t errlen)
{
	int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : CTL_DEFAULT_TIMEOUT_MS);
	struct buf in = {0};
	int st;
	*resp = NULL;
	int fd = connect_to(path, deadline, err, errlen);
	if (fd < 0)
		return CTL_ERR_CONNECT;
	if ((st = send_all(fd, line, len, deadline, err, errlen)) != CTL_OK ||
	    (st = send_all(fd, "\n", 1, deadline, err, errlen)) != CTL_OK)
		goto out;
	for (;;) {
		char *nl = in.len ? memchr(buf_head(&in), '\n', in.len) : NULL;
		if (nl) {
			*nl = '\0';
			break;
		}
		if (in.len >= CTL_MAX_RESPONSE) {
			snprintf(err, errlen, "answer longer than %u bytes", CTL_MAX_RESPONSE);
			st = CTL_ERR_IO;
			goto out;
		}
		if (buf_reserve(&in, 65536) < 0) {
			snprintf(err, errlen, "out of memory");
			st = CTL_ERR_IO;
			goto out;
		}
		ssize_t r = recv(fd, buf_head(&in) + in.len, in.cap - in.off - in.len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int w = wait_fd(fd, POLLIN, deadline);
			if (w == 0) {
				snprintf(err, errlen, "no answer from the daemon within %d ms",
					 timeout_ms > 0 ? timeout_ms : CTL_DEFAULT_TIMEOUT_MS);
				st = CTL_ERR_TIMEOUT;
				goto out;
			}
			if (w < 0) {
				snprintf(err, errlen, "poll: %s", strerror(errno));
				st = CTL_ERR_IO;
				goto out;
			}
			continue;
		}
		if (r <= 0) {
			snprintf(err, errlen, "the daemon closed the connection without answering%s%s",
				 r < 0 ? ": " : "", r < 0 ? strerror(errno) : "");
			st = CTL_ERR_IO;
			goto out;
		}
		in.len += (size_t)r;
	}
	/* Hand over the allocation: the answer starts at the head. */
	if (in.off)
		memmove(in.data, buf_head(&in), strlen(buf_head(&in)) + 1);
	*resp = in.data;
	in.data = NULL;
	st = CTL_OK;
out:
	buf_free(&in);
	close(fd);
	return st;
}
