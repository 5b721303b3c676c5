/* splice_fwd over plain loopback TCP (the host has no kTLS; the VM selftest covers kTLS):
 * byte-exact forwarding of a large body with both sides non-blocking, the want-read /
 * want-write / yield results, EOF before the announced length, and pipe reuse. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "splice_fwd.h"

/* A connected loopback TCP pair, both ends non-blocking. */
static void tcp_pair(int fds[2])
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(l >= 0);
	assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(l, 1), 0);
	assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
	fds[0] = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(fds[0], (struct sockaddr *)&a, sizeof(a)), 0);
	fds[1] = accept(l, NULL, NULL);
	assert_true(fds[1] >= 0);
	close(l);
	for (int i = 0; i < 2; i++)
		fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
}

static unsigned char pattern(uint64_t i)
{
	return (unsigned char)(i * 2654435761u >> 13);
}

/* Pushes `total` bytes into src[0], splices src[1] -> dst[0], reads and checks dst[1]. */
static void forward(uint64_t total, uint64_t announce, bool close_early, uint64_t budget,
		    enum splice_fwd_result expect_end, struct splice_fwd *f, int src[2],
		    int dst[2])
{
	unsigned char buf[65536];
	uint64_t sent = 0, got = 0;
	int results[SPLICE_FWD_ERROR + 1] = {0};
	enum splice_fwd_result r = SPLICE_FWD_WANT_READ;
	bool src_closed = false;
	for (int iter = 0; iter < 1000000; iter++) {
		if (sent < total) {
			size_t n = total - sent < sizeof(buf) ? (size_t)(total - sent) : sizeof(buf);
			for (size_t i = 0; i < n; i++)
				buf[i] = pattern(sent + i);
			ssize_t w = write(src[0], buf, n);
			if (w > 0)
				sent += (uint64_t)w;
		} else if (close_early && !src_closed) {
			shutdown(src[0], SHUT_WR);
			src_closed = true;
		}
		if (r != SPLICE_FWD_DONE && r != SPLICE_FWD_EOF) {
			r = splice_fwd_run(f, src[1], dst[0], budget);
			assert_int_not_equal(r, SPLICE_FWD_ERROR);
			results[r]++;
		}
		ssize_t n = read(dst[1], buf, sizeof(buf));
		if (n > 0) {
			for (ssize_t i = 0; i < n; i++)
				if (buf[i] != pattern(got + (uint64_t)i))
					fail_msg("byte %llu differs", (unsigned long long)(got + i));
			got += (uint64_t)n;
		}
		if ((r == SPLICE_FWD_DONE || r == SPLICE_FWD_EOF) && got == f->moved)
			break;
	}
	assert_int_equal(r, expect_end);
	assert_int_equal(got, f->moved);
	assert_int_equal(got, expect_end == SPLICE_FWD_DONE ? announce : total);
	assert_int_equal(f->in_pipe, 0);
	if (budget)
		assert_true(results[SPLICE_FWD_YIELD] > 0);
	if (total > (8u << 20)) /* cannot arrive in one call */
		assert_true(results[SPLICE_FWD_WANT_READ] + results[SPLICE_FWD_WANT_WRITE] +
				    results[SPLICE_FWD_YIELD] > 0);
}

static void test_large_body(void **state)
{
	(void)state;
	int src[2], dst[2];
	struct splice_fwd f;
	tcp_pair(src);
	tcp_pair(dst);
	uint64_t len = 24u << 20;
	assert_int_equal(splice_fwd_init(&f, len, false), 0);
	assert_true(f.pipe_size >= 65536);
	forward(len, len, false, 16384, SPLICE_FWD_DONE, &f, src, dst);
	/* The same pipe for the next body; bytes beyond the body stay in the source. */
	splice_fwd_reset(&f, 1000, false);
	forward(1000, 1000, false, 0, SPLICE_FWD_DONE, &f, src, dst);
	splice_fwd_close(&f);
	splice_fwd_close(&f);
	for (int i = 0; i < 2; i++)
		close(src[i]), close(dst[i]);
}

static void test_eof_before_length(void **state)
{
	(void)state;
	int src[2], dst[2];
	struct splice_fwd f;
	tcp_pair(src);
	tcp_pair(dst);
	assert_int_equal(splice_fwd_init(&f, 1u << 20, false), 0);
	forward(300000, 1u << 20, true, 0, SPLICE_FWD_EOF, &f, src, dst);
	assert_int_equal(f.remaining, (1u << 20) - 300000);
	splice_fwd_close(&f);
	for (int i = 0; i < 2; i++)
		close(src[i]), close(dst[i]);
}

static void test_want_write_when_destination_full(void **state)
{
	(void)state;
	int src[2], dst[2];
	struct splice_fwd f;
	static unsigned char junk[1 << 16];
	tcp_pair(src);
	tcp_pair(dst);
	int small = 4096;
	setsockopt(dst[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	setsockopt(dst[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	assert_int_equal(splice_fwd_init(&f, 8u << 20, false), 0);
	enum splice_fwd_result r = SPLICE_FWD_WANT_READ;
	for (int i = 0; i < 1000 && r != SPLICE_FWD_WANT_WRITE; i++) {
		(void)!write(src[0], junk, sizeof(junk));
		r = splice_fwd_run(&f, src[1], dst[0], 0);
	}
	assert_int_equal(r, SPLICE_FWD_WANT_WRITE);
	assert_true(f.in_pipe > 0);
	assert_string_equal(splice_fwd_result_name(r), "want-write");
	splice_fwd_close(&f);
	for (int i = 0; i < 2; i++)
		close(src[i]), close(dst[i]);
}

static void test_error_on_bad_fd(void **state)
{
	(void)state;
	struct splice_fwd f;
	assert_int_equal(splice_fwd_init(&f, 10, false), 0);
	assert_int_equal(splice_fwd_run(&f, -1, -1, 0), SPLICE_FWD_ERROR);
	assert_int_equal(errno, EBADF);
	splice_fwd_close(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_large_body),
		cmocka_unit_test(test_eof_before_length),
		cmocka_unit_test(test_want_write_when_destination_full),
		cmocka_unit_test(test_error_on_bad_fd),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
