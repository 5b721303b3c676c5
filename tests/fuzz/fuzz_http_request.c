/* Fuzzes the HTTP parser the way the proxy drives it. Input: one flags byte, two bytes of
 * split point, then the raw stream.
 *   flags bit 0: parse responses instead of requests (no_body from bit 2, EOF at the end)
 *   flags bit 1: buffer every request body (not only forms)
 * The stream is offered first up to the split point, then whole, message after message
 * (pipelining). Each message head is serialised as the gateway would forward it, the
 * client_id is extracted from all three kinds of sources, and the whole run is repeated a byte
 * at a time: both runs must see the same messages, states and bytes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clientid.h"
#include "http.h"

#define MAX_MESSAGES 8

static const struct http_limits limits = {
	.max_header_bytes = 1024,
	.max_body_bytes = 4096,
	.max_buffered_body = 512,
};

static const struct client_id_source sources[] = {
	{CID_SOURCE_FORM, "client_id"},
	{CID_SOURCE_QUERY, "client_id"},
	{CID_SOURCE_HEADER, "x-client-id"},
};

struct outcome {
	unsigned n;
	struct {
		enum http_msg_state state;
		int status;
		size_t head_end, end; /* offsets in the stream */
		uint64_t body_bytes;
		uint32_t body_hash;
		enum clientid_result cid;
	} msg[MAX_MESSAGES];
};

struct sink {
	uint64_t bytes;
	uint32_t hash;
	bool in_head_feed;
};

static int on_body(void *arg, const char *data, size_t len)
{
	struct sink *s = arg;
	if (s->in_head_feed)
		abort(); /* body bytes must wait for the next feed after the head */
	for (size_t i = 0; i < len; i++)
		s->hash = (s->hash ^ (uint8_t)data[i]) * 16777619u;
	s->bytes += len;
	return 0;
}

/* The forwarded target stays under the base path with no dot segment left (path.h), and no
 * forwarded field name has a '_' (the request would have been refused). */
static void check_forwarded_target(const char *h, size_t len)
{
	const char *end_of_head = h + len;
	const char *line_end = memmem(h, len, "\r\n", 2);
	const char *t = memchr(h, ' ', (size_t)(line_end - h));
	if (!t || (size_t)(line_end - t) < 7 || memcmp(t + 1, "/base/", 6) != 0)
		abort();
	t++;
	const char *end = memchr(t, ' ', (size_t)(line_end - t));
	const char *q = memchr(t, '?', (size_t)(end - t));
	const char *path_end = q ? q : end;
	for (const char *seg = t; seg < path_end; seg++) {
		if (*seg != '/')
			continue;
		const char *next = memchr(seg + 1, '/', (size_t)(path_end - seg - 1));
		size_t n = (size_t)((next ? next : path_end) - seg - 1);
		if ((n == 1 && seg[1] == '.') || (n == 2 && seg[1] == '.' && seg[2] == '.'))
			abort();
	}
	if (memmem(t, (size_t)(path_end - t), "%2e", 3) || memmem(t, (size_t)(path_end - t), "%2E", 3))
		abort();
	for (const char *l = line_end + 2; l < end_of_head && *l != '\r';) {
		const char *e = memmem(l, (size_t)(end_of_head - l), "\r\n", 2);
		const char *colon = memchr(l, ':', (size_t)(e - l));
		if (!colon || memchr(l, '_', (size_t)(colon - l)))
			abort();
		l = e + 2;
	}
}

static void check_head(struct http_msg *m, bool response)
{
	struct buf out = {0};
	if (!response) {
		struct http_forward fwd = {
			.client_id = "tpp-1",
			.cert_sha256_hex = "00ff",
			.forwarded_for = "192.0.2.1",
			.request_id = "rid",
			.host = "upstream.example",
			.base_path = "/base",
		};
		if (http_write_request_head(m, &fwd, &out) < 0)
			abort();
		/* The forwarded head is well-formed: one CRLF CRLF, at the end, and nothing the
		 * client sent survives as X-Client-Id. */
		const char *h = buf_head(&out);
		const char *end = memmem(h, out.len, "\r\n\r\n", 4);
		if (!end || (size_t)(end - h) + 4 != out.len)
			abort();
		if (memchr(h, '\0', out.len))
			abort();
		const char *p = h;
		unsigned ids = 0;
		while ((p = memmem(p, out.len - (size_t)(p - h), "\nX-Client-Id:", 13))) {
			ids++;
			p++;
		}
		if (ids != 1)
			abort();
		check_forwarded_target(h, out.len);
	} else {
		bool chunked;
		if (http_write_response_head(m, m->keep_alive, "rid", NULL, &out, &chunked) < 0)
			abort();
	}
	buf_free(&out);
}

static void run(const uint8_t *data, size_t len, size_t split, uint8_t flags, struct outcome *o)
{
	bool response = flags & 1;
	struct http_msg m;
	http_msg_init(&m, response ? HTTP_RESPONSE : HTTP_REQUEST, &limits);
	m.no_body = response && (flags & 4);
	memset(o, 0, sizeof(*o));
	size_t off = 0, window = split ? split : 1;
	struct sink sink = {0};
	bool head_seen = false;
	while (o->n < MAX_MESSAGES) {
		if (window > len)
			window = len;
		size_t avail = window - off;
		enum http_msg_state before = m.state;
		sink.in_head_feed = before == HTTP_MSG_HEAD;
		size_t got = avail ? http_msg_feed(&m, (const char *)data + off, avail, on_body, &sink) : 0;
		if (got > avail)
			abort();
		off += got;
		if (!head_seen && m.state != HTTP_MSG_HEAD && m.state != HTTP_MSG_ERROR) {
			head_seen = true;
			o->msg[o->n].head_end = off;
			if (!response && (clientid_needs_body(sources, 3, &m) || (flags & 2)))
				m.buffer_body = true;
			check_head(&m, response);
		}
		if (m.state == HTTP_MSG_DONE || m.state == HTTP_MSG_ERROR ||
		    (got == 0 && window == len)) {
			if (m.state != HTTP_MSG_DONE && m.state != HTTP_MSG_ERROR && response &&
			    (flags & 8)) {
				sink.in_head_feed = false;
				http_msg_feed_eof(&m, on_body, &sink);
			}
			if (m.state == HTTP_MSG_DONE && m.buffer_body && m.body.len != sink.bytes)
				abort();
			o->msg[o->n].state = m.state;
			o->msg[o->n].status = m.error_status;
			o->msg[o->n].end = off;
			o->msg[o->n].body_bytes = sink.bytes;
			o->msg[o->n].body_hash = sink.hash;
			if (m.state == HTTP_MSG_ERROR) {
				struct buf out = {0};
				if (!m.error_reason || m.error_status < 400 ||
				    http_write_error(&out, m.error_status, "invalid_request",
						     m.error_reason, 0, NULL, false, "rid") < 0)
					abort();
				buf_free(&out);
			} else if (!response && head_seen) {
				char id[REGISTRY_CLIENT_ID_MAX + 1];
				const char *why;
				o->msg[o->n].cid = clientid_extract(sources, 3, &m, id, &why);
				if (o->msg[o->n].cid == CLIENTID_OK &&
				    !registry_client_id_valid_n(id, strlen(id)))
					abort();
			}
			o->n++;
			if (m.state != HTTP_MSG_DONE || off == len)
				break;
			bool no_body = m.no_body;
			http_msg_reset(&m);
			m.no_body = no_body;
			head_seen = false;
			sink = (struct sink){0};
			continue;
		}
		if (got == 0)
			window = split && window < len ? len : window + 1; /* more bytes arrive */
		else if (!split)
			window = off + 1;
	}
	http_msg_free(&m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 3)
		return 0;
	uint8_t flags = data[0];
	size_t split = ((size_t)data[1] << 8 | data[2]);
	data += 3;
	size -= 3;
	if (size > 8192)
		return 0;
	split = size ? split % (size + 1) : 0;
	if (split == 0)
		split = size;
	struct outcome a, b;
	run(data, size, split, flags, &a);
	run(data, size, 0, flags, &b); /* a byte at a time */
	if (a.n != b.n)
		abort();
	for (unsigned i = 0; i < a.n; i++) {
		if (a.msg[i].state != b.msg[i].state || a.msg[i].status != b.msg[i].status)
			abort();
		if (a.msg[i].state == HTTP_MSG_ERROR)
			break;
		if (a.msg[i].head_end != b.msg[i].head_end || a.msg[i].end != b.msg[i].end ||
		    a.msg[i].body_bytes != b.msg[i].body_bytes ||
		    a.msg[i].body_hash != b.msg[i].body_hash || a.msg[i].cid != b.msg[i].cid)
			abort();
	}
	return 0;
}
