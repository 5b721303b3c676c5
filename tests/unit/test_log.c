/* Access-log batches: lines reach the file only whole, when flushed or when the batch outgrows
 * one write (64 KiB for a file, PIPE_BUF for a pipe), and a line longer than that goes alone. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "buf.h"
#include "log.h"

/* Appends a line of len bytes ('\n' included) the way a worker does, and commits it. */
static void add_line(struct buf *batch, size_t len, char fill)
{
	size_t start = batch->len;
	char *line = malloc(len);
	assert_non_null(line);
	memset(line, fill, len - 1);
	line[len - 1] = '\n';
	assert_int_equal(buf_append(batch, line, len), 0);
	free(line);
	log_access_commit(batch, start);
}

static off_t file_size(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_size;
}

static void test_file_batches(void **state)
{
	(void)state;
	char path[] = "/tmp/psd2edge-test-log.XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(log_open_access(path), 0);
	struct buf batch = {0};

	static const struct {
		size_t line_len;   /* the line appended */
		off_t file_after;  /* file size after its commit */
		size_t batch_after; /* bytes left in the batch */
	} steps[] = {
		{100, 0, 100},                    /* held */
		{30000, 0, 30100},                /* held: below 64 KiB */
		{40000, 30100, 40000},            /* over: the lines before it go, it stays */
		{200000, 30100 + 40000 + 200000, 0}, /* longer than a batch: goes, with what was held */
		{10, 270100, 10},
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		add_line(&batch, steps[i].line_len, (char)('a' + i));
		assert_int_equal(file_size(path), steps[i].file_after);
		assert_int_equal(batch.len, steps[i].batch_after);
	}
	log_access_flush(&batch);
	assert_int_equal(batch.len, 0);
	assert_int_equal(file_size(path), 270110);
	log_access_flush(&batch); /* empty: writes nothing */
	assert_int_equal(file_size(path), 270110);

	/* Every line arrived whole and in order. */
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	static const size_t lens[] = {100, 30000, 40000, 200000, 10};
	char *line = NULL;
	size_t cap = 0;
	for (size_t i = 0; i < 5; i++) {
		ssize_t n = getline(&line, &cap, f);
		assert_int_equal(n, (ssize_t)lens[i]);
		assert_int_equal(line[0], 'a' + (int)i);
		assert_int_equal(line[n - 2], 'a' + (int)i);
	}
	assert_int_equal(getline(&line, &cap, f), -1);
	free(line);
	fclose(f);
	buf_free(&batch);
	unlink(path);
	assert_int_equal(log_open_access("-"), 0);
}

static void test_pipe_batches_stay_under_pipe_buf(void **state)
{
	(void)state;
	int p[2];
	assert_int_equal(pipe(p), 0);
	char path[64];
	snprintf(path, sizeof(path), "/dev/fd/%d", p[1]);
	assert_int_equal(log_open_access(path), 0);
	struct buf batch = {0};
	for (int i = 0; i < 5; i++)
		add_line(&batch, 1000, 'x'); /* the fifth crosses PIPE_BUF: the first four go */
	char got[8192];
	ssize_t n = read(p[0], got, sizeof(got));
	assert_int_equal(n, 4000);
	assert_true(n <= PIPE_BUF);
	assert_int_equal(got[n - 1], '\n');
	assert_int_equal(batch.len, 1000);
	buf_free(&batch);
	assert_int_equal(log_open_access("-"), 0);
	close(p[0]);
	close(p[1]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_file_batches),
		cmocka_unit_test(test_pipe_batches_stay_under_pipe_buf),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
