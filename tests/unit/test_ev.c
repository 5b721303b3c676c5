/* Event loop and buffer: timer ordering, deletion from inside callbacks, file events. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "ev.h"

struct timer_log {
	int order[8];
	int n;
	struct ev_timer *victim;
	struct ev_loop *loop;
};

struct timer_arg {
	struct timer_log *log;
	int id;
	int repeat; /* times left to run again */
};

static int64_t record_timer(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	struct timer_arg *a = arg;
	(void)t;
	a->log->order[a->log->n++] = a->id;
	if (a->log->victim && a->id == 1) {
		ev_timer_del(loop, a->log->victim);
		a->log->victim = NULL;
	}
	if (a->log->n >= 4)
		ev_stop(loop);
	return a->repeat-- > 0 ? 1 : -1;
}

static void test_timers_run_in_deadline_order(void **state)
{
	(void)state;
	struct ev_loop *loop = ev_loop_new(64);
	struct timer_log log = {.loop = loop};
	struct timer_arg a3 = {&log, 3, 0}, a1 = {&log, 1, 0}, a2 = {&log, 2, 1}, a9 = {&log, 9, 0};
	assert_non_null(ev_timer_add(loop, 30, record_timer, &a3));
	assert_non_null(ev_timer_add(loop, 5, record_timer, &a1));
	assert_non_null(ev_timer_add(loop, 15, record_timer, &a2));
	/* Timer 1 deletes timer 9 before it is due. */
	log.victim = ev_timer_add(loop, 20, record_timer, &a9);
	ev_run(loop);
	assert_int_equal(log.n, 4);
	assert_int_equal(log.order[0], 1);
	assert_int_equal(log.order[1], 2);
	assert_int_equal(log.order[2], 2); /* re-armed once after 1 ms */
	assert_int_equal(log.order[3], 3);
	ev_loop_free(loop);
}

static int64_t delete_self(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	int *runs = arg;
	(*runs)++;
	ev_timer_del(loop, t); /* must be safe: freed after the callback returns */
	ev_stop(loop);
	return 1;
}

static void test_timer_deletes_itself(void **state)
{
	(void)state;
	struct ev_loop *loop = ev_loop_new(64);
	int runs = 0;
	ev_timer_add(loop, 1, delete_self, &runs);
	ev_run(loop);
	assert_int_equal(runs, 1);
	ev_loop_free(loop);
}

static void on_readable(struct ev_loop *loop, int fd, int mask, void *arg)
{
	char c;
	int *got = arg;
	assert_true(mask & EV_READ);
	assert_int_equal(read(fd, &c, 1), 1);
	*got = c;
	ev_set(loop, fd, EV_NONE, NULL, NULL);
	ev_stop(loop);
}

static void test_file_event_fires_and_is_removed(void **state)
{
	(void)state;
	struct ev_loop *loop = ev_loop_new(64);
	int p[2];
	assert_int_equal(pipe(p), 0);
	int got = 0;
	assert_int_equal(ev_set(loop, p[0], EV_READ, on_readable, &got), 0);
	assert_int_equal(ev_get(loop, p[0]), EV_READ);
	assert_int_equal(write(p[1], "x", 1), 1);
	ev_run(loop);
	assert_int_equal(got, 'x');
	assert_int_equal(ev_get(loop, p[0]), EV_NONE);
	assert_int_equal(ev_set(loop, 1000, EV_READ, on_readable, &got), -1); /* beyond max_fds */
	close(p[0]);
	close(p[1]);
	ev_loop_free(loop);
}

/* Two pipes readable in the same pass: each callback records what ev_pending said of the other. */
struct pending_probe {
	int fds[2];
	int seen_other[2]; /* ev_pending of the other read end, from each callback */
	int calls;
};

static void on_readable_probe(struct ev_loop *loop, int fd, int mask, void *arg)
{
	struct pending_probe *p = arg;
	(void)mask;
	int me = fd == p->fds[1];
	p->seen_other[me] = ev_pending(loop, p->fds[!me]);
	assert_int_equal(ev_pending(loop, fd), EV_NONE); /* its own event is being delivered */
	char c;
	assert_int_equal(read(fd, &c, 1), 1);
	if (++p->calls == 2)
		ev_stop(loop);
}

static void test_pending_shows_undelivered_events_of_the_pass(void **state)
{
	(void)state;
	struct ev_loop *loop = ev_loop_new(64);
	int a[2], b[2];
	assert_int_equal(pipe(a), 0);
	assert_int_equal(pipe(b), 0);
	struct pending_probe p = {.fds = {a[0], b[0]}};
	assert_int_equal(ev_set(loop, a[0], EV_READ, on_readable_probe, &p), 0);
	assert_int_equal(ev_set(loop, b[0], EV_READ, on_readable_probe, &p), 0);
	assert_int_equal(ev_pending(loop, a[0]), EV_NONE); /* outside a pass */
	assert_int_equal(write(a[1], "x", 1), 1);
	assert_int_equal(write(b[1], "y", 1), 1);
	ev_run(loop);
	assert_int_equal(p.calls, 2);
	/* Whichever ran first saw the other's event pending; the second saw it delivered. */
	assert_int_equal(p.seen_other[0] | p.seen_other[1], EV_READ);
	assert_int_equal(p.seen_other[0] & p.seen_other[1], EV_NONE);
	for (int i = 0; i < 2; i++) {
		close(a[i]);
		close(b[i]);
	}
	ev_loop_free(loop);
}

static void test_buf_append_consume_reuse(void **state)
{
	(void)state;
	struct buf b = {0};
	assert_int_equal(buf_append_str(&b, "hello "), 0);
	assert_int_equal(buf_printf(&b, "%s %d", "world", 42), 0);
	assert_int_equal(b.len, strlen("hello world 42"));
	assert_memory_equal(buf_head(&b), "hello world 42", b.len);
	buf_consume(&b, 6);
	assert_memory_equal(buf_head(&b), "world 42", b.len);
	/* Growing after a consume compacts first, keeping the unconsumed bytes. */
	char big[1000];
	memset(big, 'z', sizeof(big));
	assert_int_equal(buf_append(&b, big, sizeof(big)), 0);
	assert_int_equal(b.len, 8 + sizeof(big));
	assert_memory_equal(buf_head(&b), "world 42", 8);
	buf_consume(&b, b.len + 5);
	assert_int_equal(b.len, 0);
	/* A format longer than the free space grows the buffer and is written whole. */
	while (b.cap - b.off - b.len > 3)
		assert_int_equal(buf_append(&b, "z", 1), 0);
	size_t before = b.len, cap = b.cap;
	assert_int_equal(buf_printf(&b, "[%s|%d]", "0123456789", 12345), 0);
	assert_int_equal(b.len, before + strlen("[0123456789|12345]"));
	assert_memory_equal(buf_head(&b) + before, "[0123456789|12345]", b.len - before);
	assert_true(b.cap > cap);
	buf_free(&b);
	assert_null(b.data);
}

static void test_buf_json_string(void **state)
{
	(void)state;
	static const struct {
		const char *in, *out;
	} cases[] = {
		{"tpp1", "\"tpp1\""},
		{"", "\"\""},
		{NULL, "\"\""},
		{"a\"b\\c", "\"a\\\"b\\\\c\""},
		{"/v1/x\"}", "\"/v1/x\\\"}\""},
		{"line\nfeed\x01\x7f", "\"line\\u000afeed\\u0001\\u007f\""},
		{"caf\xc3\xa9", "\"caf??\""}, /* non-ASCII need not be UTF-8: never passed on */
		{"\\", "\"\\\\\""},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct buf b = {0};
		assert_int_equal(buf_append_str(&b, "x="), 0);
		assert_int_equal(buf_append_json_string(&b, cases[i].in), 0);
		assert_int_equal(b.len, 2 + strlen(cases[i].out));
		assert_memory_equal(buf_head(&b) + 2, cases[i].out, b.len - 2);
		buf_free(&b);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_timers_run_in_deadline_order),
		cmocka_unit_test(test_timer_deletes_itself),
		cmocka_unit_test(test_file_event_fires_and_is_removed),
		cmocka_unit_test(test_pending_shows_undelivered_events_of_the_pass),
		cmocka_unit_test(test_buf_append_consume_reuse),
		cmocka_unit_test(test_buf_json_string),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
