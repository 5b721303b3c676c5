#include "ev.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

struct ev_file {
	int mask;
	int pending; /* reported by the current pass's epoll_wait, callback not run yet */
	ev_file_fn *fn;
	void *arg;
};

struct ev_timer {
	int64_t when;
	size_t heap_idx;
	ev_timer_fn *fn;
	void *arg;
	bool deleted; /* deleted while running its own callback */
};

struct ev_loop {
	int epfd;
	int max_fds;
	struct ev_file *files;
	struct epoll_event *fired;
	struct ev_timer **heap;
	size_t n_timers, cap_timers;
	struct ev_timer *running; /* timer whose callback is executing */
	ev_hook_fn *before_sleep;
	void *before_sleep_arg;
	bool stop;
};

int64_t ev_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ev_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

struct ev_loop *ev_loop_new(int max_fds)
{
	struct ev_loop *loop = calloc(1, sizeof(*loop));
	if (!loop)
		return NULL;
	loop->max_fds = max_fds;
	loop->files = calloc((size_t)max_fds, sizeof(*loop->files));
	loop->fired = calloc((size_t)max_fds, sizeof(*loop->fired));
	loop->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!loop->files || !loop->fired || loop->epfd < 0) {
		ev_loop_free(loop);
		return NULL;
	}
	return loop;
}

void ev_loop_free(struct ev_loop *loop)
{
	if (!loop)
		return;
	if (loop->epfd >= 0)
		close(loop->epfd);
	for (size_t i = 0; i < loop->n_timers; i++)
		free(loop->heap[i]);
	free(loop->heap);
	free(loop->files);
	free(loop->fired);
	free(loop);
}

int ev_set(struct ev_loop *loop, int fd, int mask, ev_file_fn *fn, void *arg)
{
	if (fd < 0 || fd >= loop->max_fds) {
		errno = ERANGE;
		return -1;
	}
	struct ev_file *f = &loop->files[fd];
	/* The kernel is told only of changes: callers may restate their interest after every step. */
	if (mask != f->mask) {
		struct epoll_event ee = {0};
		ee.data.fd = fd;
		if (mask & EV_READ)
			ee.events |= EPOLLIN | EPOLLRDHUP;
		if (mask & EV_WRITE)
			ee.events |= EPOLLOUT;
		int op = f->mask == EV_NONE ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
		if (mask == EV_NONE) {
			if (epoll_ctl(loop->epfd, EPOLL_CTL_DEL, fd, &ee) < 0 && errno != EBADF &&
			    errno != ENOENT)
				return -1;
		} else if (epoll_ctl(loop->epfd, op, fd, &ee) < 0) {
			return -1;
		}
	}
	f->mask = mask;
	if (mask == EV_NONE)
		f->pending = EV_NONE;
	f->fn = mask == EV_NONE ? NULL : fn;
	f->arg = mask == EV_NONE ? NULL : arg;
	return 0;
}

int ev_get(struct ev_loop *loop, int fd)
{
	if (fd < 0 || fd >= loop->max_fds)
		return EV_NONE;
	return loop->files[fd].mask;
}

int ev_pending(struct ev_loop *loop, int fd)
{
	if (fd < 0 || fd >= loop->max_fds)
		return EV_NONE;
	return loop->files[fd].pending & loop->files[fd].mask;
}

static void heap_swap(struct ev_loop *loop, size_t a, size_t b)
{
	struct ev_timer *t = loop->heap[a];
	loop->heap[a] = loop->heap[b];
	loop->heap[b] = t;
	loop->heap[a]->heap_idx = a;
	loop->heap[b]->heap_idx = b;
}

static void heap_up(struct ev_loop *loop, size_t i)
{
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (loop->heap[p]->when <= loop->heap[i]->when)
			break;
		heap_swap(loop, i, p);
		i = p;
	}
}

static void heap_down(struct ev_loop *loop, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < loop->n_timers && loop->heap[l]->when < loop->heap[m]->when)
			m = l;
		if (r < loop->n_timers && loop->heap[r]->when < loop->heap[m]->when)
			m = r;
		if (m == i)
			break;
		heap_swap(loop, i, m);
		i = m;
	}
}

static int heap_insert(struct ev_loop *loop, struct ev_timer *t)
{
	if (loop->n_timers == loop->cap_timers) {
		size_t cap = loop->cap_timers ? loop->cap_timers * 2 : 64;
		struct ev_timer **h = realloc(loop->heap, cap * sizeof(*h));
		if (!h)
			return -1;
		loop->heap = h;
		loop->cap_timers = cap;
	}
	t->heap_idx = loop->n_timers;
	loop->heap[loop->n_timers++] = t;
	heap_up(loop, t->heap_idx);
	return 0;
}

static void heap_remove(struct ev_loop *loop, struct ev_timer *t)
{
	size_t i = t->heap_idx;
	loop->n_timers--;
	if (i != loop->n_timers) {
		heap_swap(loop, i, loop->n_timers);
		heap_down(loop, i);
		heap_up(loop, i);
	}
}

struct ev_timer *ev_timer_add(struct ev_loop *loop, int64_t delay_ms, ev_timer_fn *fn, void *arg)
{
	struct ev_timer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->when = ev_now_ms() + delay_ms;
	t->fn = fn;
	t->arg = arg;
	if (heap_insert(loop, t) < 0) {
		free(t);
		return NULL;
	}
	return t;
}

void ev_timer_del(struct ev_loop *loop, struct ev_timer *t)
{
	if (!t)
		return;
	if (t == loop->running) {
		t->deleted = true; /* freed once its callback returns */
		return;
	}
	heap_remove(loop, t);
	free(t);
}

static void run_timers(struct ev_loop *loop)
{
	int64_t now = ev_now_ms();
	while (loop->n_timers && loop->heap[0]->when <= now) {
		struct ev_timer *t = loop->heap[0];
		heap_remove(loop, t);
		loop->running = t;
		int64_t again = t->fn(loop, t, t->arg);
		loop->running = NULL;
		if (again < 0 || t->deleted || heap_insert(loop, t) < 0) {
			free(t);
			continue;
		}
		t->when = now + again;
		heap_up(loop, t->heap_idx);
	}
}

void ev_set_before_sleep(struct ev_loop *loop, ev_hook_fn *fn, void *arg)
{
	loop->before_sleep = fn;
	loop->before_sleep_arg = arg;
}

void ev_stop(struct ev_loop *loop)
{
	loop->stop = true;
}

void ev_run(struct ev_loop *loop)
{
	loop->stop = false;
	while (!loop->stop) {
		if (loop->before_sleep)
			loop->before_sleep(loop, loop->before_sleep_arg);
		if (loop->stop)
			break;
		int timeout = -1;
		if (loop->n_timers) {
			int64_t d = loop->heap[0]->when - ev_now_ms();
			timeout = d < 0 ? 0 : (int)(d > 60000 ? 60000 : d);
		}
		int n = epoll_wait(loop->epfd, loop->fired, loop->max_fds, timeout);
		for (int i = 0; i < n; i++) {
			uint32_t e = loop->fired[i].events;
			int mask = 0;
			if (e & (EPOLLIN | EPOLLRDHUP))
				mask |= EV_READ;
			if (e & EPOLLOUT)
				mask |= EV_WRITE;
			if (e & (EPOLLERR | EPOLLHUP))
				mask |= EV_READ | EV_WRITE;
			loop->files[loop->fired[i].data.fd].pending = mask;
		}
		for (int i = 0; i < n; i++) {
			int fd = loop->fired[i].data.fd;
			struct ev_file *f = &loop->files[fd];
			int mask = f->pending & f->mask; /* an earlier callback may have changed the interest */
			f->pending = EV_NONE;
			if (mask && f->fn)
				f->fn(loop, fd, mask, f->arg);
		}
		run_timers(loop);
	}
}
