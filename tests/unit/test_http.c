/* HTTP parsing and serialisation: fixture tables of raw messages with the expected outcome,
 * each run once in one piece and once a byte at a time (same result required), plus
 * pipelining, exact consumption, response framing and the forwarded heads. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"

static const struct http_limits limits = {
	.max_header_bytes = 1024,
	.max_body_bytes = 64,
	.max_buffered_body = 32,
};

struct run {
	enum http_msg_state state;
	int status;
	const char *reason;
	size_t consumed;
	size_t head_end; /* offset where the state first left HTTP_MSG_HEAD, 0 if never */
	char body[256];
	size_t body_len;
	bool body_before_head_returned; /* a body byte was delivered in the feed that ended the head */
};

struct body_sink {
	struct run *r;
	bool in_head_feed;
};

static int sink_body(void *arg, const char *data, size_t len)
{
	struct body_sink *s = arg;
	if (s->in_head_feed)
		s->r->body_before_head_returned = true;
	assert_true(s->r->body_len + len < sizeof(s->r->body));
	memcpy(s->r->body + s->r->body_len, data, len);
	s->r->body_len += len;
	return 0;
}

/* Feeds raw (step bytes per call at most, 0 = all) until the message is done or failed. */
static void run_msg(struct http_msg *m, const char *raw, size_t len, size_t step, bool eof,
		    struct run *r)
{
	memset(r, 0, sizeof(*r));
	struct body_sink sink = {.r = r};
	size_t off = 0;
	while (off < len && m->state != HTTP_MSG_DONE && m->state != HTTP_MSG_ERROR) {
		size_t n = step && len - off > step ? step : len - off;
		enum http_msg_state before = m->state;
		sink.in_head_feed = before == HTTP_MSG_HEAD;
		size_t got = http_msg_feed(m, raw + off, n, sink_body, &sink);
		assert_true(got <= n);
		off += got;
		if (before == HTTP_MSG_HEAD && m->state != HTTP_MSG_HEAD && m->state != HTTP_MSG_ERROR)
			r->head_end = off;
		if (got == 0 && m->state != HTTP_MSG_ERROR && m->state != HTTP_MSG_DONE)
			fail_msg("no progress at offset %zu in state %d", off, m->state);
	}
	if (eof)
		http_msg_feed_eof(m, sink_body, &sink);
	r->state = m->state;
	r->status = m->error_status;
	r->reason = m->error_reason;
	r->consumed = off;
}

/* --- request fixtures ------------------------------------------------------------------------ */

struct req_case {
	const char *desc;
	const char *raw;
	size_t len; /* 0: strlen(raw) */
	int status; /* 0: expect HTTP_MSG_DONE (or BODY with .partial) */
	const char *body;
	bool chunked, keep_alive, expect_continue;
	int64_t content_length; /* -1: no Content-Length */
};

#define H11 " HTTP/1.1\r\nHost: bank.example\r\n"

static const struct req_case req_cases[] = {
	{"simple GET", "GET /accounts" H11 "\r\n", 0, 0, "", false, true, false, -1},
	{"leading CRLF before the request line", "\r\nGET /" H11 "\r\n", 0, 0, "", false, true,
	 false, -1},
	{"POST with Content-Length", "POST /token" H11 "Content-Length: 5\r\n\r\nhello", 0, 0,
	 "hello", false, true, false, 5},
	{"Content-Length 0", "POST /" H11 "Content-Length: 0\r\n\r\n", 0, 0, "", false, true,
	 false, 0},
	{"Content-Length with OWS", "POST /" H11 "Content-Length:  3  \r\n\r\nabc", 0, 0, "abc",
	 false, true, false, 3},
	{"chunked POST", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
	 0, 0, "hello world", true, true, false, -1},
	{"chunked with extension and trailer",
	 "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n", 0, 0,
	 "hello", true, true, false, -1},
	{"TE with tab before value", "POST /" H11 "Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n", 0, 0,
	 "", true, true, false, -1},
	{"TE value in upper case", "POST /" H11 "Transfer-Encoding: Chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
	 0, 0, "a", true, true, false, -1},
	{"HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", 0, 0, "", false, false, false, -1},
	{"HTTP/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 0, "", false,
	 true, false, -1},
	{"Connection: close", "GET /" H11 "Connection: foo, close\r\n\r\n", 0, 0, "", false, false,
	 false, -1},
	{"Expect: 100-continue", "POST /" H11 "Expect: 100-continue\r\nContent-Length: 1\r\n\r\nx", 0,
	 0, "x", false, true, true, 1},
	{"empty header value", "GET /" H11 "X-Empty:\r\n\r\n", 0, 0, "", false, true, false, -1},
	{"body at the limit", "POST /" H11 "Content-Length: 64\r\n\r\n"
	 "0123456789012345678901234567890123456789012345678901234567890123", 0, 0,
	 "0123456789012345678901234567890123456789012345678901234567890123", false, true, false, 64},

	/* CL.TE, TE.CL and TE.TE */
	{"CL then TE chunked", "POST /" H11 "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	 0, .status = 400},
	{"TE chunked then CL", "POST /" H11 "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
	 0, .status = 400},
	{"CL with TE gzip", "POST /" H11 "Content-Length: 4\r\nTransfer-Encoding: gzip\r\n\r\nabcd", 0, .status = 400},
	{"repeated Content-Length, equal", "POST /" H11 "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
	 0, .status = 400},
	{"repeated Content-Length, different", "POST /" H11 "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
	 0, .status = 400},
	{"Content-Length list 5, 5", "POST /" H11 "Content-Length: 5, 5\r\n\r\nhello", 0, .status = 400},
	{"Content-Length +5", "POST /" H11 "Content-Length: +5\r\n\r\nhello", 0, .status = 400},
	{"Content-Length -1", "POST /" H11 "Content-Length: -1\r\n\r\n", 0, .status = 400},
	{"Content-Length overflow", "POST /" H11 "Content-Length: 18446744073709551616\r\n\r\n", 0, .status = 400},
	{"Content-Length 20 digits", "POST /" H11 "Content-Length: 00000000000000000005\r\n\r\nhello", 0, .status = 400},
	{"Content-Length hex", "POST /" H11 "Content-Length: 0x5\r\n\r\nhello", 0, .status = 400},
	{"Content-Length 1 2", "POST /" H11 "Content-Length: 1 2\r\n\r\nabc", 0, .status = 400},
	{"Content-Length empty", "POST /" H11 "Content-Length:\r\n\r\n", 0, .status = 400},
	{"TE xchunked", "POST /" H11 "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE chunkedx", "POST /" H11 "Transfer-Encoding: chunkedx\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE space before colon", "POST /" H11 "Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE gzip, chunked", "POST /" H11 "Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE chunked, gzip", "POST /" H11 "Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE chunked twice", "POST /" H11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	 0, .status = 400},
	{"TE identity", "POST /" H11 "Transfer-Encoding: identity\r\n\r\n", 0, .status = 400},
	{"TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE obs-folded", "POST /" H11 "Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE with vertical tab", "POST /" H11 "Transfer-Encoding:\x0b" "chunked\r\n\r\n0\r\n\r\n", 0, .status = 400},
	{"TE name with NUL", "POST /" H11 "Transfer-Encoding\0: chunked\r\n\r\n0\r\n\r\n",
	 sizeof("POST /" H11 "Transfer-Encoding\0: chunked\r\n\r\n0\r\n\r\n") - 1, .status = 400},

	/* head syntax */
	{"obs-fold", "GET /" H11 "X-A: one\r\n two\r\n\r\n", 0, .status = 400},
	{"obs-fold with tab", "GET /" H11 "X-A: one\r\n\ttwo\r\n\r\n", 0, .status = 400},
	{"whitespace before the first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 0, .status = 400},
	{"space in header name", "GET /" H11 "X A: b\r\n\r\n", 0, .status = 400},
	{"NUL in header value", "GET /" H11 "X-A: a\0b\r\n\r\n",
	 sizeof("GET /" H11 "X-A: a\0b\r\n\r\n") - 1, .status = 400},
	{"CTL in header value", "GET /" H11 "X-A: a\x01" "b\r\n\r\n", 0, .status = 400},
	{"DEL in header name", "GET /" H11 "X-\x7f: b\r\n\r\n", 0, .status = 400},
	{"bare LF line ends", "GET / HTTP/1.1\nHost: a\n\n", 0, .status = 400},
	{"bare CR in a value", "GET /" H11 "X-A: a\rb\r\n\r\n", 0, .status = 400},
	{"missing colon", "GET /" H11 "X-A\r\n\r\n", 0, .status = 400},
	{"empty header name", "GET /" H11 ": x\r\n\r\n", 0, .status = 400},
	{"space in URL", "GET /a b" H11 "\r\n", 0, .status = 400},
	{"high byte in URL", "GET /\xff" H11 "\r\n", 0, .status = 400},
	{"absolute-form target", "GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"asterisk-form target", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"missing Host", "GET / HTTP/1.1\r\n\r\n", 0, .status = 400},
	{"two Hosts", "GET /" H11 "Host: evil.example\r\n\r\n", 0, .status = 400},
	{"HTTP/2.0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"HTTP/0.9", "GET /\r\n\r\n", 0, .status = 400},
	{"lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"garbage for HTTP", "GET /p H\r\n\r1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"two spaces before the target", "GET  /p HTTP/1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"two spaces before the version", "GET /p  HTTP/1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"HTXP", "GET /p HTXP/1.1\r\nHost: a\r\n\r\n", 0, .status = 400},
	{"bad method", "G@T /" H11 "\r\n", 0, .status = 400},
	{"CONNECT", "CONNECT bank.example:443 HTTP/1.1\r\nHost: bank.example:443\r\n\r\n", 0, .status = 501},
	{"Upgrade websocket", "GET /" H11 "Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0, .status = 501},
	{"Upgrade without Connection", "GET /" H11 "Upgrade: h2c\r\n\r\n", 0, .status = 501},

	/* chunk syntax */
	{"invalid chunk size", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 0, .status = 400},
	{"chunk size with sign", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n",
	 0, .status = 400},
	{"chunk size overflow",
	 "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n10000000000000000\r\nx\r\n0\r\n\r\n", 0, .status = 400},
	{"chunk size bare LF", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n", 0, .status = 400},
	{"chunk data too long", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 0, .status = 400},

	{"chunk data end not CRLF", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n", 0,
	 .status = 400},
	{"chunk size line CR without LF", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n2\rXab\r\n0\r\n\r\n",
	 0, .status = 400},
	{"last chunk end CR without LF", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\n\rX", 0,
	 .status = 400},
	{"trailer with obs-fold", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n c\r\n\r\n", 0,
	 .status = 400},
	{"chunk size empty", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n\r\n", 0, .status = 400},

	/* hostile input: what the gateway checks must be what the bank's application reads */
	{"underscore in a header name", "GET /" H11 "X_Client_Id: victim\r\n\r\n", 0, .status = 400},
	{"underscore, other case", "GET /" H11 "x_CLIENT-id: victim\r\n\r\n", 0, .status = 400},
	{"underscore in an unrelated name", "GET /" H11 "Accept_Language: en\r\n\r\n", 0, .status = 400},
	{"underscore in the first field", "GET / HTTP/1.1\r\nX_Real_IP: 1.2.3.4\r\nHost: a\r\n\r\n", 0,
	 .status = 400},
	{"fragment in the target", "GET /accounts#x" H11 "\r\n", 0, .status = 400},
	{"fragment after the query", "GET /a?client_id=x#y" H11 "\r\n", 0, .status = 400},
	{"empty fragment", "GET /#" H11 "\r\n", 0, .status = 400},
	{"TRACE", "TRACE /" H11 "\r\n", 0, .status = 405},
	{"PROPFIND, outside the default methods", "PROPFIND /" H11 "\r\n", 0, .status = 405},
	{"dot-dot above the root", "GET /../etc/passwd" H11 "\r\n", 0, .status = 400},
	{"encoded dot-dot", "GET /%2e%2E/admin" H11 "\r\n", 0, .status = 400},
	{"mixed dot-dot after a segment", "GET /a/../.%2e/admin" H11 "\r\n", 0, .status = 400},
	{"encoded slash", "GET /a%2f..%2fadmin" H11 "\r\n", 0, .status = 400},
	{"encoded backslash", "GET /a%5C..%5Cadmin" H11 "\r\n", 0, .status = 400},
	{"backslash", "GET /a\\..\\admin" H11 "\r\n", 0, .status = 400},
	{"encoded NUL", "GET /a%00.json" H11 "\r\n", 0, .status = 400},
	{"path parameter climbing", "GET /a/..;/admin" H11 "\r\n", 0, .status = 400},
	{"double-encoded dot-dot", "GET /%252e%252e/admin" H11 "\r\n", 0, .status = 400},
	{"dot segments within the root", "GET /a/./b/../c?x=/../y" H11 "\r\n", 0, 0, "", false, true,
	 false, -1},
	{"OPTIONS, in the default methods", "OPTIONS /a" H11 "\r\n", 0, 0, "", false, true, false, -1},

	/* limits */
	{"Content-Length over the body limit", "POST /" H11 "Content-Length: 65\r\n\r\n", 0, .status = 413},
	{"chunk over the body limit", "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n41\r\n", 0, .status = 413},
};

static void check_req_case(const struct req_case *c, size_t step)
{
	struct http_msg m;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	size_t len = c->len ? c->len : strlen(c->raw);
	struct run r;
	run_msg(&m, c->raw, len, step, false, &r);
	if (c->status) {
		if (r.state != HTTP_MSG_ERROR || r.status != c->status)
			fail_msg("%s (step %zu): state %d status %d (%s), want error %d", c->desc, step,
				 r.state, r.status, r.reason ? r.reason : "", c->status);
		assert_non_null(r.reason);
		if (step == 0 && getenv("HTTP_TEST_VERBOSE"))
			printf("%-40s -> %d %s\n", c->desc, r.status, r.reason);
	} else {
		if (r.state != HTTP_MSG_DONE)
			fail_msg("%s (step %zu): state %d status %d (%s), want done", c->desc, step,
				 r.state, r.status, r.reason ? r.reason : "");
		assert_int_equal(r.consumed, len);
		assert_int_equal(r.body_len, strlen(c->body));
		assert_memory_equal(r.body, c->body, r.body_len);
		assert_false(r.body_before_head_returned);
		assert_int_equal(m.chunked, c->chunked);
		assert_int_equal(m.keep_alive, c->keep_alive);
		assert_int_equal(m.expect_continue, c->expect_continue);
		assert_int_equal(m.has_content_length, c->content_length >= 0);
		if (c->content_length >= 0)
			assert_int_equal(m.content_length, (uint64_t)c->content_length);
		/* The head ends right after the empty line. */
		const char *end = NULL;
		for (size_t i = 0; i + 3 < len && !end; i++)
			if (memcmp(c->raw + i, "\r\n\r\n", 4) == 0 && i > 0)
				end = c->raw + i + 4;
		assert_non_null(end);
		assert_int_equal(r.head_end, (size_t)(end - c->raw));
	}
	http_msg_free(&m);
}

static void test_request_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		check_req_case(&req_cases[i], 0);
		check_req_case(&req_cases[i], 1);
		check_req_case(&req_cases[i], 7);
	}
}

/* Every fixture fed a byte at a time ends the same way as fed at once. */
static void test_byte_at_a_time_matches(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(req_cases) / sizeof(req_cases[0]); i++) {
		const struct req_case *c = &req_cases[i];
		size_t len = c->len ? c->len : strlen(c->raw);
		struct http_msg a, b;
		struct run ra, rb;
		http_msg_init(&a, HTTP_REQUEST, &limits);
		http_msg_init(&b, HTTP_REQUEST, &limits);
		run_msg(&a, c->raw, len, 0, false, &ra);
		run_msg(&b, c->raw, len, 1, false, &rb);
		if (ra.state != rb.state || ra.status != rb.status)
			fail_msg("%s: whole %d/%d, bytewise %d/%d", c->desc, ra.state, ra.status,
				 rb.state, rb.status);
		if (ra.state != HTTP_MSG_ERROR) {
			assert_int_equal(ra.consumed, rb.consumed);
			assert_int_equal(ra.head_end, rb.head_end);
			assert_int_equal(ra.body_len, rb.body_len);
			assert_memory_equal(ra.body, rb.body, ra.body_len);
			assert_int_equal(a.n_hdr, b.n_hdr);
			assert_int_equal(a.head.len, b.head.len);
			assert_memory_equal(buf_head(&a.head), buf_head(&b.head), a.head.len);
		}
		http_msg_free(&a);
		http_msg_free(&b);
	}
}

static void test_chunk_sum_over_limit(void **state)
{
	(void)state;
	const char *raw = "POST /" H11 "Transfer-Encoding: chunked\r\n\r\n"
			  "20\r\n01234567890123456789012345678901\r\n"
			  "20\r\n01234567890123456789012345678901\r\n"
			  "1\r\nx\r\n0\r\n\r\n";
	for (size_t step = 0; step < 2; step++) {
		struct http_msg m;
		struct run r;
		http_msg_init(&m, HTTP_REQUEST, &limits);
		run_msg(&m, raw, strlen(raw), step, false, &r);
		assert_int_equal(r.state, HTTP_MSG_ERROR);
		assert_int_equal(r.status, 413);
		assert_true(r.body_len <= limits.max_body_bytes);
		http_msg_free(&m);
	}
}

static void test_header_limits(void **state)
{
	(void)state;
	char raw[4096];
	/* exactly at the limit: accepted */
	int n = snprintf(raw, sizeof(raw), "GET /" H11 "X-Pad: ");
	size_t fill = limits.max_header_bytes - (size_t)n - 4;
	memset(raw + n, 'a', fill);
	memcpy(raw + n + fill, "\r\n\r\n", 5);
	assert_int_equal(strlen(raw), limits.max_header_bytes);
	for (size_t step = 0; step < 2; step++) {
		struct http_msg m;
		struct run r;
		http_msg_init(&m, HTTP_REQUEST, &limits);
		run_msg(&m, raw, strlen(raw), step, false, &r);
		assert_int_equal(r.state, HTTP_MSG_DONE);
		http_msg_free(&m);
	}
	/* one byte more: 431 */
	n = snprintf(raw, sizeof(raw), "GET /" H11 "X-Pad: ");
	memset(raw + n, 'a', fill + 1);
	memcpy(raw + n + fill + 1, "\r\n\r\n", 5);
	for (size_t step = 0; step < 2; step++) {
		struct http_msg m;
		struct run r;
		http_msg_init(&m, HTTP_REQUEST, &limits);
		run_msg(&m, raw, strlen(raw), step, false, &r);
		assert_int_equal(r.state, HTTP_MSG_ERROR);
		assert_int_equal(r.status, 431);
		http_msg_free(&m);
	}
	/* a head that never ends: 431 once the limit is reached, not more consumed */
	struct http_msg m;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	memset(raw, 0, sizeof(raw));
	n = snprintf(raw, sizeof(raw), "GET /" H11 "X-Pad: ");
	memset(raw + n, 'b', sizeof(raw) - (size_t)n);
	size_t got = http_msg_feed(&m, raw, sizeof(raw), NULL, NULL);
	assert_int_equal(got, limits.max_header_bytes);
	assert_int_equal(m.state, HTTP_MSG_ERROR);
	assert_int_equal(m.error_status, 431);
	http_msg_free(&m);

	/* too many fields */
	struct http_limits big = limits;
	big.max_header_bytes = 65536;
	static char many[8192];
	size_t off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\n");
	for (int i = 0; i < HTTP_MAX_HEADERS; i++)
		off += (size_t)snprintf(many + off, sizeof(many) - off, "Host%d: x\r\n", i);
	memcpy(many + off, "Host: a\r\n\r\n", 12);
	http_msg_init(&m, HTTP_REQUEST, &big);
	struct run r;
	run_msg(&m, many, strlen(many), 0, false, &r);
	assert_int_equal(r.state, HTTP_MSG_ERROR);
	assert_int_equal(r.status, 431);
	http_msg_free(&m);
	/* exactly HTTP_MAX_HEADERS is fine */
	off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\nHost: a\r\n");
	for (int i = 1; i < HTTP_MAX_HEADERS; i++)
		off += (size_t)snprintf(many + off, sizeof(many) - off, "X-%d: x\r\n", i);
	memcpy(many + off, "\r\n", 3);
	http_msg_init(&m, HTTP_REQUEST, &big);
	run_msg(&m, many, strlen(many), 0, false, &r);
	assert_int_equal(r.state, HTTP_MSG_DONE);
	assert_int_equal(m.n_hdr, HTTP_MAX_HEADERS);
	http_msg_free(&m);
}

/* One huge request line gets 414 before the head's 431; many small fields get 431. */
struct size_case {
	const char *desc;
	size_t max_header_bytes, max_uri_bytes;
	size_t target_len; /* "/" then 'a's */
	unsigned fields;   /* "A: b" fields after Host */
	int status;        /* 0: done */
};

static const struct size_case size_cases[] = {
	{"target at max_uri_bytes", 1024, 256, 256, 0, 0},
	{"target one over max_uri_bytes", 1024, 256, 257, 0, 414},
	{"target beyond the whole head", 1024, 256, 4000, 0, 414},
	{"target filling the head, max_uri_bytes unset", 1024, 0, 4000, 0, 414},
	{"target filling the head, max_uri_bytes = max_header_bytes", 1024, 1024, 4000, 0, 414},
	{"long target within the limits, fields over the head", 1024, 1024, 600, 100, 431},
	{"HTTP_MAX_HEADERS fields with Host", 65536, 8192, 1, HTTP_MAX_HEADERS - 1, 0},
	{"one field more than HTTP_MAX_HEADERS", 65536, 8192, 1, HTTP_MAX_HEADERS, 431},
	{"200 small fields", 65536, 8192, 1, 200, 431},
	{"200 small fields over a small head", 1024, 256, 1, 200, 431},
};

static void test_head_sizes(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(size_cases) / sizeof(size_cases[0]); i++) {
		const struct size_case *c = &size_cases[i];
		struct buf raw = {0};
		assert_int_equal(buf_append_str(&raw, "GET /"), 0);
		for (size_t k = 1; k < c->target_len; k++)
			assert_int_equal(buf_append(&raw, "a", 1), 0);
		assert_int_equal(buf_append_str(&raw, H11), 0);
		for (unsigned k = 0; k < c->fields; k++)
			assert_int_equal(buf_append_str(&raw, "A: b\r\n"), 0);
		assert_int_equal(buf_append_str(&raw, "\r\n"), 0);
		const struct http_limits lim = {
			.max_header_bytes = c->max_header_bytes,
			.max_uri_bytes = c->max_uri_bytes,
			.max_body_bytes = 64,
		};
		for (size_t step = 0; step < 8; step += 7) {
			struct http_msg m;
			struct run r;
			http_msg_init(&m, HTTP_REQUEST, &lim);
			run_msg(&m, buf_head(&raw), raw.len, step, false, &r);
			if (c->status ? r.state != HTTP_MSG_ERROR || r.status != c->status
				      : r.state != HTTP_MSG_DONE)
				fail_msg("%s (step %zu): state %d status %d (%s), want %d", c->desc, step,
					 r.state, r.status, r.reason ? r.reason : "", c->status);
			http_msg_free(&m);
		}
		buf_free(&raw);
	}
}

/* Methods: limits->methods (0: the default set) and never TRACE or CONNECT. */
struct method_case {
	const char *line;
	uint64_t methods;
	int status; /* 0: done */
};

#define BIT HTTP_METHOD_BIT

static const struct method_case method_cases[] = {
	{"GET /", 0, 0},
	{"HEAD /", 0, 0},
	{"POST /", 0, 0},
	{"PUT /", 0, 0},
	{"PATCH /", 0, 0},
	{"DELETE /", 0, 0},
	{"OPTIONS /", 0, 0},
	{"TRACE /", 0, 405},
	{"PROPFIND /", 0, 405},
	{"MKCOL /", 0, 405},
	{"PURGE /", 0, 405},
	{"GET /", BIT(HTTP_POST), 405},
	{"POST /", BIT(HTTP_POST), 0},
	{"PROPFIND /", BIT(HTTP_GET) | BIT(HTTP_PROPFIND), 0},
	{"TRACE /", BIT(HTTP_GET) | BIT(HTTP_TRACE), 405},
	{"TRACE /", ~UINT64_C(0), 405},
	{"CONNECT a:443", ~UINT64_C(0), 501},
};

static void test_methods(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(method_cases) / sizeof(method_cases[0]); i++) {
		const struct method_case *c = &method_cases[i];
		struct http_limits lim = limits;
		lim.methods = c->methods;
		char raw[128];
		snprintf(raw, sizeof(raw), "%s" H11 "\r\n", c->line);
		struct http_msg m;
		struct run r;
		http_msg_init(&m, HTTP_REQUEST, &lim);
		run_msg(&m, raw, strlen(raw), 0, false, &r);
		if (c->status ? r.state != HTTP_MSG_ERROR || r.status != c->status
			      : r.state != HTTP_MSG_DONE)
			fail_msg("%s (methods %#llx): state %d status %d, want %d", c->line,
				 (unsigned long long)c->methods, r.state, r.status, c->status);
		http_msg_free(&m);
	}
}

/* --- exact consumption and pipelining ---------------------------------------------------- */

static int count_body(void *arg, const char *data, size_t len)
{
	(void)data;
	*(size_t *)arg += len;
	return 0;
}

static void test_pipelined_exact(void **state)
{
	(void)state;
	const char *msgs[] = {
		"GET /a" H11 "\r\n",
		"POST /b" H11 "Content-Length: 5\r\n\r\nhello",
		"POST /c" H11 "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"HEAD /d" H11 "\r\n",
		"POST /e" H11 "Content-Length: 0\r\n\r\n",
		"POST /f" H11 "Transfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\nT: v\r\n\r\n",
	};
	size_t n = sizeof(msgs) / sizeof(msgs[0]);
	char all[2048] = "";
	for (size_t i = 0; i < n; i++)
		strcat(all, msgs[i]);
	size_t total = strlen(all), off = 0;
	struct http_msg m;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	for (size_t i = 0; i < n; i++) {
		size_t body = 0;
		size_t head_len = (size_t)(strstr(msgs[i], "\r\n\r\n") + 4 - msgs[i]);
		size_t got = http_msg_feed(&m, all + off, total - off, count_body, &body);
		assert_int_equal(got, head_len);
		assert_int_equal(body, 0);
		off += got;
		bool has_body = head_len != strlen(msgs[i]);
		if (strstr(msgs[i], "chunked") || strstr(msgs[i], "Length: 5"))
			assert_true(has_body);
		if (has_body) {
			assert_int_equal(m.state, HTTP_MSG_BODY);
			got = http_msg_feed(&m, all + off, total - off, count_body, &body);
			off += got;
			assert_int_equal(got, strlen(msgs[i]) - head_len);
			assert_true(body > 0);
		}
		assert_int_equal(m.state, HTTP_MSG_DONE);
		/* nothing more is consumed until reset */
		assert_int_equal(http_msg_feed(&m, all + off, total - off, count_body, &body), 0);
		http_msg_reset(&m);
	}
	assert_int_equal(off, total);
	http_msg_free(&m);
}

/* The head split at every position still stops at its end and never delivers body bytes. */
static void test_every_split(void **state)
{
	(void)state;
	const char *raw = "POST /x?client_id=a" H11 "Content-Length: 4\r\nX-A: b\r\n\r\nbodyGET /n" H11 "\r\n";
	size_t len = strlen(raw);
	size_t head_len = (size_t)(strstr(raw, "\r\n\r\n") + 4 - raw);
	size_t first_len = head_len + 4;
	for (size_t split = 1; split < len; split++) {
		struct http_msg m;
		http_msg_init(&m, HTTP_REQUEST, &limits);
		size_t body = 0, off = 0;
		off += http_msg_feed(&m, raw, split, count_body, &body);
		if (split < head_len) {
			assert_int_equal(off, split);
			assert_int_equal(m.state, HTTP_MSG_HEAD);
			off += http_msg_feed(&m, raw + off, len - off, count_body, &body);
		}
		assert_int_equal(off, head_len);
		assert_int_equal(body, 0);
		assert_int_equal(m.state, HTTP_MSG_BODY);
		while (m.state == HTTP_MSG_BODY) {
			size_t lim = off < split ? split : len;
			size_t got = http_msg_feed(&m, raw + off, lim - off, count_body, &body);
			assert_true(got > 0);
			off += got;
		}
		assert_int_equal(m.state, HTTP_MSG_DONE);
		assert_int_equal(off, first_len);
		assert_int_equal(body, 4);
		size_t vlen;
		const char *v = http_msg_header(&m, "x-a", &vlen, NULL);
		assert_non_null(v);
		assert_int_equal(vlen, 1);
		assert_memory_equal(v, "b", 1);
		assert_int_equal(m.url_len, strlen("/x?client_id=a"));
		assert_memory_equal(http_msg_url(&m), "/x?client_id=a", m.url_len);
		http_msg_free(&m);
	}
}

static void test_header_values(void **state)
{
	(void)state;
	const char *raw = "GET /p" H11 "X-Trail:  padded \t \r\nx-trail: second\r\nX-Empty:\r\n\r\n";
	struct http_msg m;
	struct run r;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	run_msg(&m, raw, strlen(raw), 1, false, &r);
	assert_int_equal(r.state, HTTP_MSG_DONE);
	size_t len;
	unsigned count;
	const char *v = http_msg_header(&m, "X-TRAIL", &len, &count);
	assert_int_equal(count, 2);
	assert_int_equal(len, 6);
	assert_memory_equal(v, "padded", 6);
	v = http_msg_header(&m, "x-empty", &len, &count);
	assert_non_null(v);
	assert_int_equal(len, 0);
	assert_null(http_msg_header(&m, "x-none", &len, &count));
	assert_int_equal(count, 0);
	assert_int_equal(m.method, HTTP_GET);
	assert_int_equal(buf_head(&m.head)[m.head.len], '\0'); /* terminated, not counted */
	assert_int_equal(m.http_major, 1);
	assert_int_equal(m.http_minor, 1);
	http_msg_free(&m);
}

static int abort_body(void *arg, const char *data, size_t len)
{
	(void)arg;
	(void)data;
	(void)len;
	return -1;
}

static void test_body_buffering(void **state)
{
	(void)state;
	const char *raw = "POST /t" H11 "Content-Type: application/x-www-form-urlencoded\r\n"
			  "Content-Length: 11\r\n\r\nclient_id=a";
	struct http_msg m;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	size_t len = strlen(raw);
	size_t off = http_msg_feed(&m, raw, len, NULL, NULL);
	assert_int_equal(m.state, HTTP_MSG_BODY);
	m.buffer_body = true;
	off += http_msg_feed(&m, raw + off, len - off, NULL, NULL);
	assert_int_equal(off, len);
	assert_int_equal(m.state, HTTP_MSG_DONE);
	assert_int_equal(m.body.len, 11);
	assert_memory_equal(buf_head(&m.body), "client_id=a", 11);
	assert_int_equal(m.body_bytes, 11);

	/* reset keeps working: Content-Length over the buffering limit is refused up front */
	http_msg_reset(&m);
	assert_int_equal(m.body.len, 0);
	const char *big = "POST /t" H11 "Content-Length: 40\r\n\r\n";
	off = http_msg_feed(&m, big, strlen(big), NULL, NULL);
	assert_int_equal(m.state, HTTP_MSG_BODY);
	m.buffer_body = true;
	assert_int_equal(http_msg_feed(&m, "x", 1, NULL, NULL), 0);
	assert_int_equal(m.state, HTTP_MSG_ERROR);
	assert_int_equal(m.error_status, 413);

	/* chunked over the buffering limit */
	http_msg_reset(&m);
	const char *ch = "POST /t" H11 "Transfer-Encoding: chunked\r\n\r\n";
	off = http_msg_feed(&m, ch, strlen(ch), NULL, NULL);
	m.buffer_body = true;
	const char *chunks = "10\r\n0123456789abcdef\r\n10\r\n0123456789abcdef\r\n1\r\nx\r\n0\r\n\r\n";
	http_msg_feed(&m, chunks, strlen(chunks), NULL, NULL);
	assert_int_equal(m.state, HTTP_MSG_ERROR);
	assert_int_equal(m.error_status, 413);
	assert_true(m.body.len <= limits.max_buffered_body);

	/* the body callback can abort */
	http_msg_reset(&m);
	const char *post = "POST /t" H11 "Content-Length: 2\r\n\r\nab";
	off = http_msg_feed(&m, post, strlen(post), abort_body, NULL);
	http_msg_feed(&m, post + off, strlen(post) - off, abort_body, NULL);
	assert_int_equal(m.state, HTTP_MSG_ERROR);
	assert_int_equal(m.error_status, 500);
	http_msg_free(&m);
}

static void test_request_eof(void **state)
{
	(void)state;
	struct http_msg m;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	http_msg_feed_eof(&m, NULL, NULL);
	assert_int_equal(m.state, HTTP_MSG_HEAD); /* clean close between requests */
	http_msg_feed(&m, "GET /", 5, NULL, NULL);
	http_msg_feed_eof(&m, NULL, NULL);
	assert_int_equal(m.state, HTTP_MSG_ERROR);
	assert_int_equal(m.error_status, 400);
	http_msg_reset(&m);
	const char *raw = "POST /" H11 "Content-Length: 5\r\n\r\nhe";
	size_t off = http_msg_feed(&m, raw, strlen(raw), NULL, NULL);
	http_msg_feed(&m, raw + off, strlen(raw) - off, NULL, NULL);
	http_msg_feed_eof(&m, NULL, NULL);
	assert_int_equal(m.state, HTTP_MSG_ERROR);
	http_msg_free(&m);
}

/* --- responses ---------------------------------------------------------------------------- */

struct resp_case {
	const char *desc;
	const char *raw;
	bool no_body; /* set before feeding (HEAD request) */
	bool eof;     /* the connection closes after raw */
	int status;   /* 0: expect DONE */
	unsigned code;
	const char *body;
	bool read_until_close, keep_alive;
};

static const struct resp_case resp_cases[] = {
	{"200 with Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false, false, 0,
	 200, "ok", false, true},
	{"200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n", false,
	 false, 0, 200, "ok", false, true},
	{"200 until close", "HTTP/1.1 200 OK\r\n\r\nall of it", false, true, 0, 200, "all of it", true,
	 false},
	{"HTTP/1.0 200 until close", "HTTP/1.0 200 OK\r\n\r\nx", false, true, 0, 200, "x", true, false},
	{"204", "HTTP/1.1 204 No Content\r\n\r\n", false, false, 0, 204, "", false, true},
	{"304 with Content-Length", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", false,
	 false, 0, 304, "", false, true},
	{"HEAD response with Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", true,
	 false, 0, 200, "", false, true},
	{"HEAD response chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, false,
	 0, 200, "", false, true},
	{"HEAD response without length", "HTTP/1.1 200 OK\r\n\r\n", true, false, 0, 200, "", false,
	 true},
	{"100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", false, false, 0, 100, "", false, true},
	{"103 Early Hints", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", false, false, 0, 103, "",
	 false, true},
	{"Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", false,
	 false, 0, 200, "", false, false},
	{"empty reason phrase", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", false, false, 0, 200, "",
	 false, true},
	{"101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	 false, false, .status = 502},
	{"CL and TE", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	 false, false, .status = 502},
	{"TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx", false, true, .status = 502},
	{"TE gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", false,
	 false, .status = 502},
	{"repeated CL", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", false,
	 false, .status = 502},
	{"HTTP/2.0", "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n", false, false, .status = 502},
	{"garbage for HTTP", "HXXP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, false, .status = 502},
	{"status with two spaces", "HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n", false, false, .status = 502},
	{"status without reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", false, false, 0, 200, "", false, true},
	{"status 099", "HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n", false, false, .status = 502},
	{"obs-fold", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", false, false, .status = 502},
	{"truncated body", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", false, true, .status = 502},
	{"truncated head", "HTTP/1.1 200 OK\r\nContent-Le", false, true, .status = 502},
	{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n", false, false, .status = 502},
};

static void check_resp_case(const struct resp_case *c, size_t step)
{
	struct http_msg m;
	http_msg_init(&m, HTTP_RESPONSE, &limits);
	m.no_body = c->no_body;
	struct run r;
	size_t len = strlen(c->raw);
	run_msg(&m, c->raw, len, step, c->eof, &r);
	if (c->status) {
		if (r.state != HTTP_MSG_ERROR || r.status != c->status)
			fail_msg("%s (step %zu): state %d status %d, want error %d", c->desc, step,
				 r.state, r.status, c->status);
	} else {
		if (r.state != HTTP_MSG_DONE)
			fail_msg("%s (step %zu): state %d status %d (%s), want done", c->desc, step,
				 r.state, r.status, r.reason ? r.reason : "");
		assert_int_equal(r.consumed, len);
		assert_int_equal(m.status_code, c->code);
		assert_int_equal(r.body_len, strlen(c->body));
		assert_memory_equal(r.body, c->body, r.body_len);
		assert_int_equal(m.read_until_close, c->read_until_close);
		assert_int_equal(m.keep_alive, c->keep_alive);
		assert_int_equal(http_msg_interim(&m), c->code < 200);
		assert_int_equal(m.no_body, c->no_body); /* never changed by the parser */
	}
	http_msg_free(&m);
}

static void test_response_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(resp_cases) / sizeof(resp_cases[0]); i++) {
		check_resp_case(&resp_cases[i], 0);
		check_resp_case(&resp_cases[i], 1);
	}
}

/* 100 Continue and the final response in one buffer: the interim one stops at its end. */
static void test_interim_then_final(void **state)
{
	(void)state;
	const char *interim = "HTTP/1.1 100 Continue\r\n\r\n";
	const char *final = "HTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nnew";
	char all[256];
	snprintf(all, sizeof(all), "%s%s", interim, final);
	size_t len = strlen(all), body = 0;
	struct http_msg m;
	http_msg_init(&m, HTTP_RESPONSE, &limits);
	size_t off = http_msg_feed(&m, all, len, count_body, &body);
	assert_int_equal(off, strlen(interim));
	assert_int_equal(m.state, HTTP_MSG_DONE);
	assert_true(http_msg_interim(&m));
	http_msg_reset(&m);
	off += http_msg_feed(&m, all + off, len - off, count_body, &body);
	assert_int_equal(m.state, HTTP_MSG_BODY);
	assert_int_equal(body, 0);
	off += http_msg_feed(&m, all + off, len - off, count_body, &body);
	assert_int_equal(m.state, HTTP_MSG_DONE);
	assert_int_equal(off, len);
	assert_int_equal(body, 3);
	assert_int_equal(m.status_code, 201);
	assert_memory_equal(buf_head(&m.head) + m.reason_off, "Created", m.reason_len);
	http_msg_free(&m);
}

/* --- serialisation ------------------------------------------------------------------------ */

static void parse_whole(struct http_msg *m, enum http_parser_type type, const char *raw,
			bool no_body)
{
	http_msg_init(m, type, &limits);
	m->no_body = no_body;
	size_t len = strlen(raw), off = 0;
	while (off < len && m->state != HTTP_MSG_DONE && m->state != HTTP_MSG_ERROR) {
		size_t got = http_msg_feed(m, raw + off, len - off, NULL, NULL);
		if (!got)
			break;
		off += got;
	}
	assert_true(m->state == HTTP_MSG_BODY || m->state == HTTP_MSG_DONE);
}

static void test_write_request_head(void **state)
{
	(void)state;
	const char *raw = "POST /accounts?x=1 HTTP/1.1\r\n"
			  "Host: gw.example\r\n"
			  "X-Client-Id: forged\r\n"
			  "x-client-cert-sha256: forged\r\n"
			  "X-Client-Psd2-Roles: PSP_AS,PSP_PI,PSP_AI,PSP_IC\r\n"
			  "X-Forwarded-For: 6.6.6.6\r\n"
			  "X-Request-Id: forged\r\n"
			  "Connection: keep-alive, X-Secret\r\n"
			  "X-Secret: hop\r\n"
			  "Keep-Alive: timeout=5\r\n"
			  "Proxy-Connection: keep-alive\r\n"
			  "Proxy-Authorization: Basic Zm9v\r\n"
			  "TE: trailers\r\n"
			  "Trailer: X-T\r\n"
			  "Expect: 100-continue\r\n"
			  "Authorization: Bearer abc\r\n"
			  "Content-Type: application/json\r\n"
			  "Content-Length: 2\r\n"
			  "\r\n{}";
	struct http_msg m;
	parse_whole(&m, HTTP_REQUEST, raw, false);
	struct http_forward fwd = {
		.client_id = "tpp-1",
		.cert_sha256_hex = "ab01",
		.psd2_roles = "PSP_AI",
		.forwarded_for = "192.0.2.7",
		.request_id = "req-9",
		.host = "bank.internal:9443",
		.base_path = "/psd2/",
	};
	struct buf out = {0};
	assert_int_equal(http_write_request_head(&m, &fwd, &out), 0);
	const char *want = "POST /psd2/accounts?x=1 HTTP/1.1\r\n"
			   "Host: bank.internal:9443\r\n"
			   "Authorization: Bearer abc\r\n"
			   "Content-Type: application/json\r\n"
			   "X-Client-Id: tpp-1\r\n"
			   "X-Client-Cert-Sha256: ab01\r\n"
			   "X-Client-Psd2-Roles: PSP_AI\r\n"
			   "X-Forwarded-For: 192.0.2.7\r\n"
			   "X-Request-Id: req-9\r\n"
			   "Content-Length: 2\r\n"
			   "\r\n";
	assert_int_equal(out.len, strlen(want));
	assert_memory_equal(buf_head(&out), want, out.len);
	http_msg_free(&m);

	/* chunked request, empty base path, a certificate without PSD2 roles: no roles header */
	buf_reset(&out);
	parse_whole(&m, HTTP_REQUEST,
		    "PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false);
	fwd.base_path = "";
	fwd.psd2_roles = "";
	assert_int_equal(http_write_request_head(&m, &fwd, &out), 0);
	const char *want2 = "PUT /x HTTP/1.1\r\nHost: bank.internal:9443\r\nX-Client-Id: tpp-1\r\n"
			    "X-Client-Cert-Sha256: ab01\r\nX-Forwarded-For: 192.0.2.7\r\n"
			    "X-Request-Id: req-9\r\nTransfer-Encoding: chunked\r\n\r\n";
	assert_int_equal(out.len, strlen(want2));
	assert_memory_equal(buf_head(&out), want2, out.len);

	/* a gateway value that would inject a header is refused, nothing written */
	buf_reset(&out);
	fwd.request_id = "x\r\nX-Client-Id: evil";
	assert_int_equal(http_write_request_head(&m, &fwd, &out), -1);
	assert_int_equal(out.len, 0);
	buf_free(&out);
	http_msg_free(&m);
}

/* The path forwarded: normalised and under the base path; the query as received. */
static const struct {
	const char *target, *base, *want;
} target_cases[] = {
	{"/accounts", "/api/v1", "/api/v1/accounts"},
	{"/", "/api/v1", "/api/v1/"},
	{"/a/b/../c?q=/../%2f&r=%2e%2e", "/api/v1", "/api/v1/a/c?q=/../%2f&r=%2e%2e"},
	{"/a/..", "/api/v1/", "/api/v1/"},
	{"/%2e/x/%2E%2e/y", "/api", "/api/y"},
	{"/a%2Eb/./c/", "", "/a.b/c/"},
	{"/./?client_id=x", "", "/?client_id=x"},
};

static void test_forwarded_target(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(target_cases) / sizeof(target_cases[0]); i++) {
		char raw[256], want[256];
		snprintf(raw, sizeof(raw), "GET %s" H11 "\r\n", target_cases[i].target);
		struct http_msg m;
		parse_whole(&m, HTTP_REQUEST, raw, false);
		struct http_forward fwd = {.host = "bank", .base_path = target_cases[i].base};
		struct buf out = {0};
		assert_int_equal(http_write_request_head(&m, &fwd, &out), 0);
		int n = snprintf(want, sizeof(want), "GET %s HTTP/1.1\r\n", target_cases[i].want);
		if (out.len < (size_t)n || memcmp(buf_head(&out), want, (size_t)n) != 0)
			fail_msg("%s under '%s': got %.*s, want %s", target_cases[i].target,
				 target_cases[i].base, (int)out.len, buf_head(&out), want);
		buf_free(&out);
		http_msg_free(&m);
	}
}

/* What reaches the bank of a client's header: the gateway's own names always go, the
 * configured ones (here written in odd case and with '_') go too, compared with case and
 * '_' against '-' ignored. */
static const char *const extra_drop[] = {
	"X-Forwarded-Client-Cert", "x-ssl-client-cert", "SSL_Client_Cert", "x_client_cert",
	"X-REAL-IP", "true-client-ip", "x-forwarded-host", "X_Forwarded_Proto",
	"x-forwarded-prefix", "x-original-url", "x-rewrite-url",
};

static const struct {
	const char *field;
	bool with_extra, forwarded;
} drop_cases[] = {
	{"X-Client-Id: victim", false, false},
	{"x-CLIENT-id: victim", false, false},
	{"X-Client-Cert-Sha256: forged-hash", false, false},
	{"X-Client-Psd2-Roles: PSP_PI", false, false},
	{"x-CLIENT-psd2-ROLES: PSP_IC", false, false},
	{"X-Forwarded-For: 6.6.6.6", false, false},
	{"forwarded: for=6.6.6.6", false, false},
	{"X-Request-Id: forged", false, false},
	{"X-Real-IP: 6.6.6.6", false, true}, /* only when configured */
	{"X-Real-IP: 6.6.6.6", true, false},
	{"X-Forwarded-Client-Cert: Hash=forged", true, false},
	{"X-SSL-Client-Cert: forged-pem-1", true, false},
	{"ssl-client-cert: forged-pem-2", true, false},
	{"X-Client-Cert: forged-pem-3", true, false},
	{"True-Client-IP: 6.6.6.6", true, false},
	{"X-Forwarded-Host: evil.example", true, false},
	{"x-forwarded-proto: forged-proto", true, false},
	{"X-Forwarded-Prefix: /admin", true, false},
	{"X-Original-URL: /admin", true, false},
	{"X-Rewrite-URL: /admin", true, false},
	{"X-Client-Ids: kept-ids", true, true},
	{"X-Client: kept-client", true, true},
	{"X-Forwarded-Fort: kept-fort", true, true},
	{"Authorization: Bearer abc", true, true},
};

static void test_drop_headers(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(drop_cases) / sizeof(drop_cases[0]); i++) {
		char raw[256];
		snprintf(raw, sizeof(raw), "GET /" H11 "%s\r\n\r\n", drop_cases[i].field);
		struct http_msg m;
		parse_whole(&m, HTTP_REQUEST, raw, false);
		struct http_forward fwd = {
			.client_id = "tpp-1",
			.host = "bank",
			.drop_headers = drop_cases[i].with_extra ? extra_drop : NULL,
			.n_drop_headers = drop_cases[i].with_extra
						  ? sizeof(extra_drop) / sizeof(extra_drop[0])
						  : 0,
		};
		struct buf out = {0};
		assert_int_equal(http_write_request_head(&m, &fwd, &out), 0);
		assert_int_equal(buf_append(&out, "", 1), 0);
		const char *value = strchr(drop_cases[i].field, ':') + 2;
		bool found = strstr(buf_head(&out), value) != NULL;
		if (found != drop_cases[i].forwarded)
			fail_msg("'%s' (extra list %d): forwarded %d, want %d:\n%s", drop_cases[i].field,
				 drop_cases[i].with_extra, found, drop_cases[i].forwarded, buf_head(&out));
		assert_non_null(strstr(buf_head(&out), "\r\nX-Client-Id: tpp-1\r\n"));
		buf_free(&out);
		http_msg_free(&m);
	}
}

static void check_resp_head(const char *raw, bool no_body, bool keep, const char *want,
			    bool want_chunked)
{
	struct http_msg m;
	parse_whole(&m, HTTP_RESPONSE, raw, no_body);
	struct buf out = {0};
	bool chunked = !want_chunked;
	assert_int_equal(http_write_response_head(&m, keep, "rid", NULL, &out, &chunked), 0);
	if (out.len != strlen(want) || memcmp(buf_head(&out), want, out.len) != 0)
		fail_msg("got:\n%.*s\nwant:\n%s", (int)out.len, buf_head(&out), want);
	assert_int_equal(chunked, want_chunked);
	buf_free(&out);
	http_msg_free(&m);
}

static void test_write_response_head(void **state)
{
	(void)state;
	check_resp_head("HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nConnection: close, X-H\r\n"
			"X-H: 1\r\nKeep-Alive: 5\r\nX-Request-Id: up\r\nContent-Length: 2\r\n\r\nok",
			false, true,
			"HTTP/1.1 200 Fine Thanks\r\nContent-Type: text/plain\r\nX-Request-Id: rid\r\n"
			"Content-Length: 2\r\nConnection: keep-alive\r\n\r\n",
			false);
	check_resp_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n", false, true,
			"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nTransfer-Encoding: chunked\r\n"
			"Connection: keep-alive\r\n\r\n",
			true);
	check_resp_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", false, false,
			"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nConnection: close\r\n\r\n", false);
	check_resp_head("HTTP/1.0 200 OK\r\n\r\n", false, true,
			"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nTransfer-Encoding: chunked\r\n"
			"Connection: keep-alive\r\n\r\n",
			true);
	check_resp_head("HTTP/1.1 204 No Content\r\n\r\n", false, true,
			"HTTP/1.1 204 No Content\r\nX-Request-Id: rid\r\nConnection: keep-alive\r\n\r\n",
			false);
	check_resp_head("HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n", true, true,
			"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nContent-Length: 42\r\n"
			"Connection: keep-alive\r\n\r\n",
			false);
	check_resp_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", true, true,
			"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nConnection: keep-alive\r\n\r\n", false);
	/* names compare as CGI stacks read them: X_Request_Id is X-Request-Id */
	check_resp_head("HTTP/1.1 200 OK\r\nX_Request_Id: up\r\nx-REQUEST-id: up\r\nContent-Length: 0\r\n\r\n",
			false, true,
			"HTTP/1.1 200 OK\r\nX-Request-Id: rid\r\nContent-Length: 0\r\n"
			"Connection: keep-alive\r\n\r\n",
			false);
	check_resp_head("HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n", false, false,
			"HTTP/1.1 404 Not Found\r\nX-Request-Id: rid\r\nContent-Length: 0\r\n"
			"Connection: close\r\n\r\n",
			false);
}

static void test_write_error(void **state)
{
	(void)state;
	struct buf out = {0};
	assert_int_equal(http_write_error(&out, 429, "quota_exceeded", "say \"hi\"\\\n\x01\xc3", 60,
					  NULL, false, "r1"),
			 0);
	const char *body = "{\"error\":\"quota_exceeded\",\"error_description\":"
			   "\"say \\\"hi\\\"\\\\\\u000a\\u0001?\"}";
	char want[512];
	snprintf(want, sizeof(want),
		 "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
		 "Cache-Control: no-store\r\nContent-Length: %zu\r\nRetry-After: 60\r\n"
		 "X-Request-Id: r1\r\nConnection: close\r\n\r\n%s",
		 strlen(body), body);
	if (out.len != strlen(want) || memcmp(buf_head(&out), want, out.len) != 0)
		fail_msg("got:\n%.*s\nwant:\n%s", (int)out.len, buf_head(&out), want);
	buf_reset(&out);
	assert_int_equal(http_write_error(&out, 431, "invalid_request", NULL, 0, NULL, true, NULL), 0);
	const char *want2 = "HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Type: application/json\r\n"
			    "Cache-Control: no-store\r\nContent-Length: 50\r\n\r\n"
			    "{\"error\":\"invalid_request\",\"error_description\":\"\"}";
	if (out.len != strlen(want2) || memcmp(buf_head(&out), want2, out.len) != 0)
		fail_msg("got:\n%.*s\nwant:\n%s", (int)out.len, buf_head(&out), want2);
	buf_reset(&out);
	assert_int_equal(http_write_chunk(&out, "abc", 3), 0);
	assert_int_equal(http_write_chunk(&out, NULL, 0), 0);
	assert_memory_equal(buf_head(&out), "3\r\nabc\r\n0\r\n\r\n", out.len);
	buf_reset(&out);
	struct buf allow = {0};
	assert_int_equal(http_append_allow(&allow, 0), 0);
	assert_int_equal(http_write_error(&out, 405, "invalid_request", "method not allowed", 0,
					  &allow, false, "r2"),
			 0);
	const char *body405 = "{\"error\":\"invalid_request\",\"error_description\":\"method not allowed\"}";
	snprintf(want, sizeof(want),
		 "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n"
		 "Cache-Control: no-store\r\nContent-Length: %zu\r\n"
		 "Allow: DELETE, GET, HEAD, POST, PUT, OPTIONS, PATCH\r\n"
		 "X-Request-Id: r2\r\nConnection: close\r\n\r\n%s",
		 strlen(body405), body405);
	if (out.len != strlen(want) || memcmp(buf_head(&out), want, out.len) != 0)
		fail_msg("got:\n%.*s\nwant:\n%s", (int)out.len, buf_head(&out), want);
	buf_reset(&out);
	buf_reset(&allow);
	assert_int_equal(http_append_allow(&allow, HTTP_METHOD_BIT(HTTP_GET) |
							   HTTP_METHOD_BIT(HTTP_TRACE) |
							   HTTP_METHOD_BIT(HTTP_PROPFIND)),
			 0);
	assert_int_equal(buf_append(&allow, "", 1), 0);
	assert_string_equal(buf_head(&allow), "Allow: GET, PROPFIND\r\n");
	buf_free(&allow);
	assert_string_equal(http_status_text(414), "URI Too Long");
	assert_string_equal(http_status_text(413), "Payload Too Large");
	assert_string_equal(http_status_text(599), "Server Error");
	buf_free(&out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_request_table),
		cmocka_unit_test(test_byte_at_a_time_matches),
		cmocka_unit_test(test_chunk_sum_over_limit),
		cmocka_unit_test(test_header_limits),
		cmocka_unit_test(test_head_sizes),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_pipelined_exact),
		cmocka_unit_test(test_every_split),
		cmocka_unit_test(test_header_values),
		cmocka_unit_test(test_body_buffering),
		cmocka_unit_test(test_request_eof),
		cmocka_unit_test(test_response_table),
		cmocka_unit_test(test_interim_then_final),
		cmocka_unit_test(test_write_request_head),
		cmocka_unit_test(test_forwarded_target),
		cmocka_unit_test(test_drop_headers),
		cmocka_unit_test(test_write_response_head),
		cmocka_unit_test(test_write_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
