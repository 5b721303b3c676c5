#include "log.h"

#include "mask.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A batch bound for a file; a pipe or terminal (stderr) takes at most PIPE_BUF at once, which
 * the kernel writes whole, unbroken by other threads' lines. */
#define LOG_ACCESS_BATCH_FILE (64 * 1024)
/* An error-log line's bytes, '\n' included. */
#define LOG_LINE_MAX 1023

static enum log_level min_level = LOG_INFO;
static int access_fd = STDERR_FILENO;
static size_t access_batch_max = PIPE_BUF;
static const struct mask *log_mask;

static void log_access_set_fd(int fd)
{
	struct stat st;
	access_fd = fd;
	access_batch_max = fstat(fd, &st) == 0 && S_ISREG(st.st_mode) ? LOG_ACCESS_BATCH_FILE : PIPE_BUF;
}

void log_set_level(enum log_level level)
{
	min_level = level;
}

void log_set_mask(const struct mask *m)
{
	log_mask = m;
}

int log_open_access(const char *path)
{
	if (!path || strcmp(path, "-") == 0) {
		log_access_set_fd(STDERR_FILENO);
		return 0;
	}
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	log_access_set_fd(fd);
	return 0;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const names[] = {"debug", "info", "warn", "error"};
	if (level < min_level)
		return;
	/* Formatted with room to spare and masked before it is cut to LOG_LINE_MAX, so that the
	 * cut never leaves part of a number or token the masker would not recognise. */
	char line[4 * LOG_LINE_MAX];
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ psd2edged %s: ",
			 tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
			 tm.tm_sec, ts.tv_nsec / 1000000, names[level]);
	va_list ap;
	va_start(ap, fmt);
	int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
	if (len > sizeof(line) - 2)
		len = sizeof(line) - 2;
	len = (size_t)n + mask_apply(log_mask, line + n, len - (size_t)n);
	if (len > LOG_LINE_MAX - 1)
		len = LOG_LINE_MAX - 1;
	line[len++] = '\n';
	/* One write per line so lines from several threads never interleave. */
	ssize_t w = write(STDERR_FILENO, line, len);
	(void)w;
}

/* One write(): a short one (disk full) loses the rest of the batch rather than leave a line's
 * tail for another worker's lines to split. */
static void log_access_write(const char *lines, size_t len)
{
	ssize_t w;
	do
		w = write(access_fd, lines, len);
	while (w < 0 && errno == EINTR);
}

/* The line from line_start to the batch's end, masked in place with its '\n' kept last. */
static void log_access_mask(struct buf *batch, size_t line_start)
{
	char *line = buf_head(batch) + line_start;
	size_t len = batch->len - line_start;
	bool newline = len && line[len - 1] == '\n';
	size_t masked = mask_apply(log_mask, line, len - newline);
	if (newline)
		line[masked++] = '\n';
	buf_truncate(batch, line_start + masked);
}

void log_access_commit(struct buf *batch, size_t line_start)
{
	if (batch->len > line_start)
		log_access_mask(batch, line_start);
	if (batch->len <= access_batch_max)
		return;
	if (line_start > 0) {
		log_access_write(buf_head(batch), line_start);
		buf_consume(batch, line_start);
	}
	if (batch->len > access_batch_max) /* one line longer than a batch goes alone */
		log_access_flush(batch);
}

void log_access_flush(struct buf *batch)
{
	if (batch->len)
		log_access_write(buf_head(batch), batch->len);
	buf_reset(batch);
}

bool log_ratelimit_pass(struct log_ratelimit *rl, int64_t now_ms, uint64_t *suppressed)
{
	if (now_ms < rl->next_ms) {
		rl->suppressed++;
		return false;
	}
	rl->next_ms = now_ms + rl->period_ms;
	*suppressed = rl->suppressed;
	rl->suppressed = 0;
	return true;
}
