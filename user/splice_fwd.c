/* splice(2) body forwarding through a pipe; see splice_fwd.h. */
#include "splice_fwd.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#define SPLICE_FLAGS (SPLICE_F_MOVE | SPLICE_F_NONBLOCK)

int splice_fwd_init(struct splice_fwd *f, uint64_t len, bool in_ktls)
{
	int p[2];
	memset(f, 0, sizeof(*f));
	f->pipe_rd = f->pipe_wr = -1;
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	f->pipe_rd = p[0];
	f->pipe_wr = p[1];
	/* Bigger pipe, fewer syscalls; keep the default if the limit refuses it. */
	int sz = fcntl(p[1], F_SETPIPE_SZ, (int)SPLICE_FWD_PIPE_SIZE);
	if (sz < 0)
		sz = fcntl(p[1], F_GETPIPE_SZ);
	f->pipe_size = sz > 0 ? (size_t)sz : 65536;
	f->remaining = len;
	f->in_ktls = in_ktls;
	return 0;
}

void splice_fwd_reset(struct splice_fwd *f, uint64_t len, bool in_ktls)
{
	f->remaining = len;
	f->moved = 0;
	f->in_ktls = in_ktls;
}

enum splice_fwd_result splice_fwd_run(struct splice_fwd *f, int in_fd, int out_fd,
				      uint64_t budget)
{
	uint64_t start = f->moved;
	for (;;) {
		/* Deliver what the pipe holds before taking more. */
		while (f->in_pipe > 0) {
			ssize_t n = splice(f->pipe_rd, NULL, out_fd, NULL, f->in_pipe, SPLICE_FLAGS);
			if (n > 0) {
				f->in_pipe -= (size_t)n;
				f->moved += (uint64_t)n;
				continue;
			}
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN)
				return SPLICE_FWD_WANT_WRITE;
			if (n == 0)
				errno = EIO; /* a pipe with data never reads empty */
			return SPLICE_FWD_ERROR;
		}
		if (f->remaining == 0)
			return SPLICE_FWD_DONE;
		if (budget && f->moved - start >= budget)
			return SPLICE_FWD_YIELD;
		size_t want = f->remaining < f->pipe_size ? (size_t)f->remaining : f->pipe_size;
		ssize_t n = splice(in_fd, NULL, f->pipe_wr, NULL, want, SPLICE_FLAGS);
		if (n > 0) {
			f->in_pipe += (size_t)n;
			f->remaining -= (uint64_t)n;
			continue;
		}
		if (n == 0)
			return SPLICE_FWD_EOF;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) /* the pipe is empty here, so it is the socket */
			return SPLICE_FWD_WANT_READ;
		if (errno == EINVAL && f->in_ktls)
			return SPLICE_FWD_CONTROL; /* kTLS requeues the record for recvmsg */
		return SPLICE_FWD_ERROR;
	}
}

void splice_fwd_note_outside(struct splice_fwd *f, uint64_t n)
{
	if (n > f->remaining)
		n = f->remaining;
	f->remaining -= n;
	f->moved += n;
}

void splice_fwd_close(struct splice_fwd *f)
{
	if (f->pipe_rd >= 0)
		close(f->pipe_rd);
	if (f->pipe_wr >= 0)
		close(f->pipe_wr);
	f->pipe_rd = f->pipe_wr = -1;
	f->in_pipe = 0;
}

const char *splice_fwd_result_name(enum splice_fwd_result r)
{
	static const char *const names[] = {
		[SPLICE_FWD_DONE] = "done",       [SPLICE_FWD_WANT_READ] = "want-read",
		[SPLICE_FWD_WANT_WRITE] = "want-write", [SPLICE_FWD_YIELD] = "yield",
		[SPLICE_FWD_EOF] = "eof",         [SPLICE_FWD_CONTROL] = "control",
		[SPLICE_FWD_ERROR] = "error",
	};
	return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "unknown";
}
