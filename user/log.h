/* Daemon diagnostics (one line each on stderr) and the per-request access log (JSON lines). */
#ifndef PSD2EDGE_LOG_H
#define PSD2EDGE_LOG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
/* Access log destination; NULL or "-" means stderr. Returns 0 or -1 with errno. */
int log_open_access(const char *path);
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Writes one already-formatted JSON object as one line of the access log. */
void log_access_line(const char *json, size_t len);

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
