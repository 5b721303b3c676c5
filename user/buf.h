/* Growable byte buffer used for socket I/O, HTTP heads and JSON lines. */
#ifndef PSD2EDGE_BUF_H
#define PSD2EDGE_BUF_H

#include <stddef.h>

struct buf {
	char *data;
	size_t len; /* bytes held, starting at data + off */
	size_t off; /* bytes already consumed at the front */
	size_t cap;
};

/* Start of the unconsumed bytes. */
static inline char *buf_head(const struct buf *b) { return b->data ? b->data + b->off : NULL; }

int buf_reserve(struct buf *b, size_t extra);           /* 0 or -1 (ENOMEM) */
int buf_append(struct buf *b, const void *p, size_t n); /* 0 or -1 */
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* s (NULL: "") as a JSON string: quotes, backslashes and control characters escaped; bytes
 * above 0x7e (which need not be valid UTF-8) become '?'. 0 or -1. */
int buf_append_json_string(struct buf *b, const char *s);
/* Keeps the first len unconsumed bytes (undoes appends made after len was read from b->len). */
static inline void buf_truncate(struct buf *b, size_t len)
{
	if (len < b->len)
		b->len = len;
}
void buf_consume(struct buf *b, size_t n); /* drop n bytes from the front */
void buf_reset(struct buf *b);             /* empty, keeps the allocation */
void buf_free(struct buf *b);

#endif
