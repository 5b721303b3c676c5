/* Daemon diagnostics (one line each on stderr) and the per-request access log (JSON lines). */
#ifndef PSD2EDGE_LOG_H
#define PSD2EDGE_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "buf.h"

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

struct mask;

void log_set_level(enum log_level level);
/* Every line of both logs goes through mask_apply() with m (mask.h); NULL: the built-in
 * detectors only. Set before any thread logs; m outlives the logging. */
void log_set_mask(const struct mask *m);
/* Access log destination; NULL or "-" means stderr. Returns 0 or -1 with errno. */
int log_open_access(const char *path);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The access log is written in batches. Each worker appends whole lines (a JSON object and
 * '\n') to a batch of its own and calls log_access_commit() after each line, then
 * log_access_flush() once per pass of its event loop (before it sleeps) and before it exits.
 * A batch leaves in one write() of whole lines on an O_APPEND descriptor, so lines from several
 * workers never interleave, and a request costs no system call of its own. */
/* The line starting at line_start (an offset into batch, from its len before the append) is
 * complete: writes the lines before it when the batch has grown too large for one write. */
void log_access_commit(struct buf *batch, size_t line_start);
/* Writes every line of batch and empties it. */
void log_access_flush(struct buf *batch);

/* At most one line a period for a repetitive event (a refused connection), owned by one thread.
 * log_ratelimit_pass() says whether this occurrence may log; when it may, *suppressed is how
 * many occurrences were silenced since the last line it allowed. */
struct log_ratelimit {
	int64_t period_ms;
	int64_t next_ms;      /* first time at which a line may go out again */
	uint64_t suppressed;  /* occurrences silenced since the last line */
};

bool log_ratelimit_pass(struct log_ratelimit *rl, int64_t now_ms, uint64_t *suppressed);

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
