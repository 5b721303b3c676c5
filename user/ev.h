/* Event loop: file events on epoll, one-shot/periodic timers on a min-heap, and a
 * before-sleep hook. Nothing else in the daemon calls epoll directly. One loop per
 * thread; a loop is not thread-safe (wake it from another thread with an eventfd). */
#ifndef PSD2EDGE_EV_H
#define PSD2EDGE_EV_H

#include <stdint.h>

#define EV_NONE 0
#define EV_READ 1
#define EV_WRITE 2

struct ev_loop;
struct ev_timer;

/* mask: the events that fired (EV_READ/EV_WRITE; errors and hang-ups report as both). */
typedef void ev_file_fn(struct ev_loop *loop, int fd, int mask, void *arg);
/* Returns the delay in ms until it runs again, or -1 to end the timer (which is then freed). */
typedef int64_t ev_timer_fn(struct ev_loop *loop, struct ev_timer *t, void *arg);
typedef void ev_hook_fn(struct ev_loop *loop, void *arg);

struct ev_loop *ev_loop_new(int max_fds);
void ev_loop_free(struct ev_loop *loop);

/* Sets the interest of fd to mask (EV_NONE removes it); costs a system call only when the mask
 * changes. Remove an fd (EV_NONE) before closing it. Returns 0 or -1 with errno. */
int ev_set(struct ev_loop *loop, int fd, int mask, ev_file_fn *fn, void *arg);
int ev_get(struct ev_loop *loop, int fd); /* current interest mask */
/* Events the last epoll_wait reported for fd whose callback has not run yet in this pass
 * (EV_NONE outside a pass): lets one fd's callback see what is already known of another. */
int ev_pending(struct ev_loop *loop, int fd);

struct ev_timer *ev_timer_add(struct ev_loop *loop, int64_t delay_ms, ev_timer_fn *fn, void *arg);
void ev_timer_del(struct ev_loop *loop, struct ev_timer *t); /* safe from within its own callback */

void ev_set_before_sleep(struct ev_loop *loop, ev_hook_fn *fn, void *arg);
void ev_run(struct ev_loop *loop);  /* until ev_stop() */
void ev_stop(struct ev_loop *loop);
int64_t ev_now_ms(void);            /* CLOCK_MONOTONIC in ms */
int64_t ev_now_us(void);            /* the same clock in µs (ev_now_ms() == ev_now_us() / 1000) */

#endif
