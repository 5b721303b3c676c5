/* HTTP/1.1 parsing glue on Node's http_parser 2.9.4 and the serialisation of forwarded heads.
 *
 * Policy (RFC 9112 §6 and request smuggling): anything whose framing could be read two ways is
 * refused, never normalised. Requests get 400 for: Content-Length with Transfer-Encoding, a
 * repeated or malformed Content-Length (also "5, 5", "+5", "-1", overflow), Transfer-Encoding
 * other than exactly one "chunked" (so "gzip, chunked" too), Transfer-Encoding in HTTP/1.0,
 * obs-fold, whitespace before a colon, CTLs or NUL in the head, bare CR or bare LF as a line
 * end, invalid chunk sizes, a missing (HTTP/1.1) or repeated Host, versions other than 1.0 and
 * 1.1, and request targets not in origin-form. CONNECT and any request carrying Upgrade get 501
 * (the gateway only proxies plain request/response exchanges). 431 for a head over
 * max_header_bytes or more than HTTP_MAX_HEADERS fields, 414 for a request target over
 * max_uri_bytes (or a request line that alone fills the head), 413 for a body over
 * max_body_bytes (Content-Length is checked when the head completes; chunked bodies as they
 * arrive). Responses from the upstream get the same checks, any failure is 502.
 *
 * Policy (what the gateway checks must be what the bank's application reads): a request
 * header name with '_' is refused (400; CGI-style stacks read X_Client_Id as X-Client-Id, and
 * NGINX refuses them by default too), so is a fragment in the target; a method outside
 * limits->methods gets 405; the path is normalised (path.h) and what it refuses gets 400.
 *
 * http_parser quirks handled here:
 * - Pausing in on_headers_complete leaves the final LF of the head unconsumed (the parser
 *   returns the offset of that LF). The LF is then fed alone, at once, so that the consumed
 *   count ends exactly after the head and a body-less message completes in the same call.
 * - The parser accepts obs-fold, bare LF line ends and leading CRLFs, and treats "Upgrade" +
 *   "Connection: upgrade" as the end of HTTP on the connection; a pre-scan of the raw head
 *   bytes and the checks in on_headers_complete refuse those first.
 * - http_should_keep_alive() looks at F_SKIPBODY, which is only set after on_headers_complete
 *   returns, so keep-alive is decided here from the version and Connection tokens.
 * - Chunked trailers come through the header callbacks after the head; they are counted
 *   against max_header_bytes and dropped. */
#include "http.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "hex.h"
#include "path.h"

_Static_assert(HTTP_METHOD_COUNT <= 64, "a method set is a uint64_t");

enum { HS_NONE, HS_URL, HS_STATUS, HS_FIELD, HS_VALUE };

static const struct http_limits default_limits = {
	.max_header_bytes = 16384,
	.max_body_bytes = 10u << 20,
	.max_buffered_body = 65536,
};

/* --- small helpers --------------------------------------------------------------------------- */

static bool name_is(const char *name, size_t len, const char *lit)
{
	return strlen(lit) == len && strncasecmp(name, lit, len) == 0;
}

static const char *hdr_name(const struct http_msg *m, const struct http_header *h)
{
	return buf_head(&m->head) + h->name_off;
}

static const char *hdr_value(const struct http_msg *m, const struct http_header *h)
{
	return buf_head(&m->head) + h->value_off;
}

static size_t header_limit(const struct http_msg *m)
{
	size_t max = m->limits->max_header_bytes;
	return max > (1u << 30) ? (1u << 30) : max; /* offsets into head are 32-bit */
}

static int set_error(struct http_msg *m, int status, const char *reason)
{
	if (m->state != HTTP_MSG_ERROR) {
		m->state = HTTP_MSG_ERROR;
		/* Whatever is wrong with an upstream's response, the client sees a bad gateway. */
		m->error_status = m->type == HTTP_RESPONSE && status != 500 ? 502 : status;
		m->error_reason = reason;
	}
	return -1;
}

/* The head outgrew bound: when the request line alone is that long it is the target that is
 * (the parser refuses long methods and versions) and the answer is 414, else 431. */
static int set_head_too_large(struct http_msg *m, size_t bound)
{
	if (m->type == HTTP_REQUEST && (!m->scan_seen_line || m->line0_len >= bound))
		return set_error(m, 414, "request target too long");
	return set_error(m, 431, "request header fields too large");
}

/* Calls fn for each comma-separated, OWS-trimmed, non-empty element of every header named
 * name; stops when fn returns true (and returns true). */
typedef bool list_fn(const char *tok, size_t len, void *arg);

static bool header_list_any(const struct http_msg *m, const char *name, list_fn *fn, void *arg)
{
	for (unsigned i = 0; i < m->n_hdr; i++) {
		const struct http_header *h = &m->hdr[i];
		if (!name_is(hdr_name(m, h), h->name_len, name))
			continue;
		const char *v = hdr_value(m, h), *end = v + h->value_len;
		while (v < end) {
			const char *comma = memchr(v, ',', (size_t)(end - v));
			const char *e = comma ? comma : end;
			const char *s = v;
			while (s < e && http_is_ows(*s))
				s++;
			const char *t = e;
			while (t > s && http_is_ows(t[-1]))
				t--;
			if (t > s && fn(s, (size_t)(t - s), arg))
				return true;
			v = comma ? comma + 1 : end;
		}
	}
	return false;
}

static bool token_equals(const char *tok, size_t len, void *arg)
{
	return name_is(tok, len, arg);
}

static unsigned header_count(const struct http_msg *m, const char *name)
{
	unsigned count = 0;
	http_msg_header(m, name, NULL, &count);
	return count;
}

/* --- parser callbacks ------------------------------------------------------------------------ */

static int head_append(struct http_msg *m, const char *at, size_t len)
{
	if (buf_append(&m->head, at, len) < 0)
		return set_error(m, 500, "out of memory");
	return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct http_msg *m = p->data;
	if (m->hdr_state != HS_NONE && m->hdr_state != HS_URL)
		return set_error(m, 400, "malformed request line");
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)at[i];
		if (c <= 0x20 || c >= 0x7f)
			return set_error(m, 400, "invalid character in request target");
	}
	if (m->hdr_state == HS_NONE) {
		m->url_off = (uint32_t)m->head.len;
		m->url_len = 0;
		m->hdr_state = HS_URL;
	}
	m->url_len += (uint32_t)len;
	if (m->limits->max_uri_bytes && m->url_len > m->limits->max_uri_bytes)
		return set_error(m, 414, "request target too long");
	return head_append(m, at, len);
}

static int on_status(http_parser *p, const char *at, size_t len)
{
	struct http_msg *m = p->data;
	if (m->hdr_state != HS_NONE && m->hdr_state != HS_STATUS)
		return set_error(m, 502, "malformed status line");
	if (m->hdr_state == HS_NONE) {
		m->reason_off = (uint32_t)m->head.len;
		m->reason_len = 0;
		m->hdr_state = HS_STATUS;
	}
	m->reason_len += (uint32_t)len;
	return head_append(m, at, len);
}

/* Trailer fields of a chunked body: bounded like a head, then dropped. */
static int on_trailer(struct http_msg *m, size_t len)
{
	m->trailer_bytes += len;
	if (m->trailer_bytes > header_limit(m))
		return set_error(m, 431, "trailer fields too large");
	return 0;
}

/* tchar (RFC 9110 §5.6.2). The packaged parser is built non-strict and lets a space through. */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_msg *m = p->data;
	for (size_t i = 0; i < len; i++)
		if (!is_tchar((unsigned char)at[i]))
			return set_error(m, 400, "invalid character in header name");
	if (m->state != HTTP_MSG_HEAD)
		return on_trailer(m, len);
	if (m->type == HTTP_REQUEST && memchr(at, '_', len))
		return set_error(m, 400, "header name with underscore");
	if (m->hdr_state != HS_FIELD) {
		if (m->n_hdr >= HTTP_MAX_HEADERS)
			return set_error(m, 431, "too many header fields");
		struct http_header *h = &m->hdr[m->n_hdr++];
		h->name_off = h->value_off = (uint32_t)m->head.len;
		h->name_len = h->value_len = 0;
		m->hdr_state = HS_FIELD;
	}
	m->hdr[m->n_hdr - 1].name_len += (uint32_t)len;
	return head_append(m, at, len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_msg *m = p->data;
	if (m->state != HTTP_MSG_HEAD)
		return on_trailer(m, len);
	if (m->n_hdr == 0 || (m->hdr_state != HS_FIELD && m->hdr_state != HS_VALUE))
		return set_error(m, 400, "header value without a name");
	struct http_header *h = &m->hdr[m->n_hdr - 1];
	if (m->hdr_state == HS_FIELD) {
		h->value_off = (uint32_t)m->head.len;
		h->value_len = 0;
		m->hdr_state = HS_VALUE;
	}
	h->value_len += (uint32_t)len;
	return head_append(m, at, len);
}

/* Strict Content-Length: 1*DIGIT, no sign, no list, no overflow. */
static bool parse_content_length(const char *v, size_t len, uint64_t *out)
{
	if (len == 0 || len > 19)
		return false;
	uint64_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (v[i] < '0' || v[i] > '9')
			return false;
		n = n * 10 + (uint64_t)(v[i] - '0');
	}
	*out = n;
	return true;
}

/* Framing shared by requests and responses: Content-Length, Transfer-Encoding. */
static int check_framing(struct http_msg *m, http_parser *p)
{
	unsigned n_cl = 0, n_te = 0;
	const char *cl = NULL, *te = NULL;
	size_t cl_len = 0, te_len = 0;
	for (unsigned i = 0; i < m->n_hdr; i++) {
		const struct http_header *h = &m->hdr[i];
		const char *name = hdr_name(m, h);
		if (name_is(name, h->name_len, "content-length")) {
			if (n_cl++ == 0) {
				cl = hdr_value(m, h);
				cl_len = h->value_len;
			}
		} else if (name_is(name, h->name_len, "transfer-encoding")) {
			if (n_te++ == 0) {
				te = hdr_value(m, h);
				te_len = h->value_len;
			}
		}
	}
	if (n_cl && n_te)
		return set_error(m, 400, "Content-Length with Transfer-Encoding");
	if (n_cl > 1)
		return set_error(m, 400, "repeated Content-Length");
	if (n_cl) {
		if (!parse_content_length(cl, cl_len, &m->content_length) ||
		    m->content_length != p->content_length)
			return set_error(m, 400, "invalid Content-Length");
		m->has_content_length = true;
	}
	if (n_te) {
		if (m->type == HTTP_REQUEST && m->http_minor == 0)
			return set_error(m, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (n_te > 1 || !name_is(te, te_len, "chunked"))
			return set_error(m, 400, "Transfer-Encoding other than chunked");
		m->chunked = true;
	}
	/* The parser must frame the body exactly as we read the headers. */
	if (m->chunked != !!(p->flags & F_CHUNKED))
		return set_error(m, 400, "ambiguous Transfer-Encoding");
	return 0;
}

static bool conn_close(const struct http_msg *m)
{
	return header_list_any(m, "connection", token_equals, "close");
}

/* Rewrites the target's path in place (never longer) as path_normalize makes it; the query
 * follows unchanged. */
static int normalize_target(struct http_msg *m)
{
	char *url = buf_head(&m->head) + m->url_off;
	const char *q = memchr(url, '?', m->url_len);
	size_t path_len = q ? (size_t)(q - url) : m->url_len;
	const char *why;
	ssize_t n = path_normalize(url, path_len, url, &why);
	if (n < 0)
		return set_error(m, 400, why);
	memmove(url + n, url + path_len, m->url_len - path_len);
	m->url_len -= (uint32_t)(path_len - (size_t)n);
	return 0;
}

static int check_request(struct http_msg *m, http_parser *p)
{
	if (m->method == HTTP_CONNECT)
		return set_error(m, 501, "CONNECT not supported");
	uint64_t methods = m->limits->methods ? m->limits->methods : HTTP_DEFAULT_METHODS;
	if (!(methods & ~HTTP_METHODS_NEVER & HTTP_METHOD_BIT(m->method)))
		return set_error(m, 405, "method not allowed");
	if (header_count(m, "upgrade"))
		return set_error(m, 501, "protocol upgrade not supported");
	if (m->url_len == 0 || buf_head(&m->head)[m->url_off] != '/')
		return set_error(m, 400, "request target not in origin-form");
	if (memchr(http_msg_url(m), '#', m->url_len))
		return set_error(m, 400, "fragment in request target");
	if (normalize_target(m) < 0)
		return -1;
	unsigned hosts = header_count(m, "host");
	if (hosts > 1)
		return set_error(m, 400, "repeated Host");
	if (hosts == 0 && m->http_minor == 1)
		return set_error(m, 400, "missing Host");
	if (check_framing(m, p) < 0)
		return -1;
	if (m->has_content_length && m->content_length > m->limits->max_body_bytes)
		return set_error(m, 413, "request body too large");
	size_t len;
	const char *expect = http_msg_header(m, "expect", &len, NULL);
	m->expect_continue = m->http_minor == 1 && expect && name_is(expect, len, "100-continue");
	bool close = conn_close(m);
	if (m->http_minor == 1)
		m->keep_alive = !close;
	else
		m->keep_alive = !close &&
				header_list_any(m, "connection", token_equals, "keep-alive");
	return 0;
}

static int check_response(struct http_msg *m, http_parser *p)
{
	if (m->status_code < 100 || m->status_code > 599)
		return set_error(m, 502, "invalid status code");
	if (m->status_code == 101)
		return set_error(m, 502, "unexpected protocol switch");
	if (check_framing(m, p) < 0)
		return -1;
	m->skip_body = m->no_body || m->status_code < 200 || m->status_code == 204 ||
		       m->status_code == 304;
	if (!m->skip_body && m->has_content_length &&
	    m->content_length > m->limits->max_body_bytes)
		return set_error(m, 502, "response body too large");
	m->read_until_close = !m->skip_body && !m->chunked && !m->has_content_length;
	bool close = conn_close(m) || m->read_until_close;
	if (m->http_minor == 1)
		m->keep_alive = !close;
	else
		m->keep_alive = !close &&
				header_list_any(m, "connection", token_equals, "keep-alive");
	return 0;
}

static bool check_start_line(const struct http_msg *m);

static int on_headers_complete(http_parser *p)
{
	struct http_msg *m = p->data;
	if (m->state != HTTP_MSG_HEAD)
		return set_error(m, 400, "malformed message");
	m->http_major = p->http_major;
	m->http_minor = p->http_minor;
	m->method = p->method;
	m->status_code = p->status_code;
	/* Trailing OWS is part of what the parser hands over; field values exclude it. */
	for (unsigned i = 0; i < m->n_hdr; i++) {
		struct http_header *h = &m->hdr[i];
		const char *v = hdr_value(m, h);
		while (h->value_len && http_is_ows(v[h->value_len - 1]))
			h->value_len--;
	}
	/* A terminator after the stored head (not counted in its length) so that a string
	 * function run on a field by mistake stops inside the buffer. */
	if (buf_reserve(&m->head, 1) < 0)
		return set_error(m, 500, "out of memory");
	buf_head(&m->head)[m->head.len] = '\0';
	if (m->http_major != 1 || m->http_minor > 1)
		return set_error(m, 400, "unsupported HTTP version");
	if (!check_start_line(m))
		return set_error(m, 400, "malformed start line");
	int rc = m->type == HTTP_REQUEST ? check_request(m, p) : check_response(m, p);
	if (rc < 0)
		return -1;
	m->ev_head_done = true;
	http_parser_pause(p, 1);
	return m->skip_body ? 1 : 0;
}

static int on_chunk_header(http_parser *p)
{
	struct http_msg *m = p->data;
	/* p->content_length holds the announced chunk size: refuse before reading it. */
	if (p->content_length > m->limits->max_body_bytes ||
	    m->body_bytes > m->limits->max_body_bytes - p->content_length)
		return set_error(m, 413, "request body too large");
	if (m->buffer_body && (p->content_length > m->limits->max_buffered_body ||
			       m->body.len > m->limits->max_buffered_body - p->content_length))
		return set_error(m, 413, "request body too large to buffer");
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct http_msg *m = p->data;
	if (m->state != HTTP_MSG_BODY)
		return set_error(m, 400, "malformed message");
	if (len > m->limits->max_body_bytes || m->body_bytes > m->limits->max_body_bytes - len)
		return set_error(m, 413, "request body too large");
	if (m->buffer_body) {
		if (len > m->limits->max_buffered_body ||
		    m->body.len > m->limits->max_buffered_body - len)
			return set_error(m, 413, "request body too large to buffer");
		if (buf_append(&m->body, at, len) < 0)
			return set_error(m, 500, "out of memory");
	}
	m->body_bytes += len;
	if (m->cb && m->cb(m->cb_arg, at, len) < 0)
		return set_error(m, 500, "body handler failed");
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct http_msg *m = p->data;
	m->ev_msg_done = true;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = on_url,
	.on_status = on_status,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
	.on_chunk_header = on_chunk_header,
};

/* --- feeding ------------------------------------------------------------------------------- */

static void parser_error(struct http_msg *m, enum http_errno e)
{
	const char *why;
	int status = 400;
	switch (e) {
	case HPE_HEADER_OVERFLOW:
		set_head_too_large(m, HTTP_MAX_HEADER_SIZE);
		return;
	case HPE_INVALID_CONTENT_LENGTH:
		why = m->state == HTTP_MSG_BODY ? "invalid chunk size" : "invalid Content-Length";
		break;
	case HPE_UNEXPECTED_CONTENT_LENGTH:
		why = "Content-Length with Transfer-Encoding, or repeated";
		break;
	case HPE_INVALID_TRANSFER_ENCODING:
		why = "Transfer-Encoding other than chunked";
		break;
	case HPE_INVALID_CHUNK_SIZE:
		why = "invalid chunk size";
		break;
	case HPE_INVALID_HEADER_TOKEN:
		why = "invalid header field";
		break;
	case HPE_INVALID_VERSION:
		why = "invalid HTTP version";
		break;
	case HPE_INVALID_METHOD:
		why = "invalid method";
		break;
	case HPE_INVALID_URL:
		why = "invalid request target";
		break;
	case HPE_INVALID_STATUS:
		why = "invalid status line";
		break;
	default:
		why = http_errno_description(e); /* static strings */
		break;
	}
	set_error(m, status, why);
}

/* Checks the raw bytes of the head that the parser is lenient about: bare CR or LF line
 * ends, CTLs and NUL, and lines that start with whitespace after the start line (obs-fold).
 * Keeps the edges of the start line for check_start_line(). *end receives how many bytes of
 * data belong to the head (scan_done is set when it ends there). Returns NULL or the reason. */
static const char *scan_head(struct http_msg *m, const char *data, size_t len, size_t *end)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i], prev = m->scan_prev;
		m->scan_prev = c;
		if (prev == '\r' && c != '\n')
			return "bare CR in head";
		if (c == '\n') {
			if (prev != '\r')
				return "bare LF in head";
			if (m->scan_in_line) {
				m->scan_seen_line = true;
				m->scan_in_line = false;
			} else if (m->scan_seen_line) {
				*end = i + 1;
				m->scan_done = true;
				return NULL;
			}
			continue;
		}
		if (c == '\r')
			continue;
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return "control character in head";
		if (!m->scan_in_line && m->scan_seen_line && http_is_ows((char)c))
			return "obs-fold or whitespace at line start";
		m->scan_in_line = true;
		if (!m->scan_seen_line) {
			if (m->line0_len < sizeof(m->line0_head))
				m->line0_head[m->line0_len] = (char)c;
			memmove(m->line0_tail, m->line0_tail + 1, sizeof(m->line0_tail) - 1);
			m->line0_tail[sizeof(m->line0_tail) - 1] = (char)c;
			m->line0_len++;
		}
	}
	*end = len;
	return NULL;
}

/* The packaged parser (non-strict) takes e.g. "H\r\n\r1.1" for "HTTP/1.1" and runs of spaces
 * for one: the start line must be exactly METHOD SP target SP HTTP/1.x, or HTTP/1.x SP
 * 3DIGIT [SP reason]. */
static bool check_start_line(const struct http_msg *m)
{
	if (m->type == HTTP_REQUEST) {
		const char *method = http_method_str((enum http_method)m->method);
		size_t mlen = strlen(method);
		size_t want = mlen + 1 + m->url_len + sizeof(m->line0_tail);
		if (mlen > sizeof(m->line0_head))
			mlen = sizeof(m->line0_head);
		return m->line0_len == want && memcmp(m->line0_head, method, mlen) == 0 &&
		       (memcmp(m->line0_tail, " HTTP/1.1", 9) == 0 ||
			memcmp(m->line0_tail, " HTTP/1.0", 9) == 0);
	}
	const char *h = m->line0_head;
	if (m->line0_len < 12 || (memcmp(h, "HTTP/1.1 ", 9) != 0 && memcmp(h, "HTTP/1.0 ", 9) != 0))
		return false;
	for (int i = 9; i < 12; i++)
		if (h[i] < '0' || h[i] > '9')
			return false;
	return m->line0_len == 12 || h[12] == ' ';
}

static size_t feed_head(struct http_msg *m, const char *data, size_t len)
{
	size_t max = header_limit(m);
	if (m->head_bytes >= max) {
		set_head_too_large(m, max);
		return 0;
	}
	size_t n = len < max - m->head_bytes ? len : max - m->head_bytes, end;
	const char *why = scan_head(m, data, n, &end);
	if (why) {
		set_error(m, 400, why);
		return 0;
	}
	size_t got = http_parser_execute(&m->parser, &parser_settings, data, end);
	if (m->state == HTTP_MSG_ERROR)
		return got;
	enum http_errno e = HTTP_PARSER_ERRNO(&m->parser);
	if (e == HPE_PAUSED && m->ev_head_done) {
		/* Paused in on_headers_complete: the parser stopped on the head's final LF. */
		if (got >= end || data[got] != '\n') {
			set_error(m, 400, "malformed head");
			return got;
		}
		http_parser_pause(&m->parser, 0);
		m->state = HTTP_MSG_BODY; /* on_message_complete may run for the LF */
		size_t one = http_parser_execute(&m->parser, &parser_settings, data + got, 1);
		if (m->state == HTTP_MSG_ERROR)
			return got + one;
		e = HTTP_PARSER_ERRNO(&m->parser);
		if (one != 1 || (e != HPE_OK && !(e == HPE_PAUSED && m->ev_msg_done))) {
			parser_error(m, e == HPE_OK ? HPE_UNKNOWN : e);
			return got + one;
		}
		got++;
		m->head_bytes += got;
		if (m->ev_msg_done)
			m->state = HTTP_MSG_DONE;
		return got;
	}
	if (e != HPE_OK) {
		parser_error(m, e);
		return got;
	}
	m->head_bytes += got;
	if (got != end || m->scan_done) { /* the scan saw the head end, the parser did not */
		set_error(m, 400, "malformed head");
		return got;
	}
	if (m->head_bytes >= max)
		set_head_too_large(m, max);
	return got;
}

enum {
	CS_SIZE_START, CS_SIZE, CS_EXT, CS_SIZE_LF, CS_DATA, CS_DATA_CR, CS_DATA_LF,
	CS_TRAILER_START, CS_TRAILER, CS_TRAILER_LF, CS_END_LF, CS_END,
};

/* The packaged http_parser is built without HTTP_PARSER_STRICT: it takes any byte for the CR
 * and LF around chunk data and chunk sizes. This checks the chunked framing strictly:
 * chunk-size [ext] CRLF data CRLF ... 0 [ext] CRLF *(trailer CRLF) CRLF. *end receives how
 * many bytes of data belong to the message. Returns NULL or the reason. */
static const char *scan_chunked(struct http_msg *m, const char *data, size_t len, size_t *end)
{
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)data[i];
		bool ctl = (c < 0x20 && c != '\t') || c == 0x7f;
		int h;
		switch (m->chunk_state) {
		case CS_SIZE_START:
			if ((h = hex_digit_value(c)) < 0)
				return "invalid chunk size";
			m->chunk_left = (uint64_t)h;
			m->chunk_state = CS_SIZE;
			break;
		case CS_SIZE:
			if ((h = hex_digit_value(c)) >= 0) {
				if (m->chunk_left > (UINT64_MAX >> 4))
					return "invalid chunk size";
				m->chunk_left = m->chunk_left << 4 | (uint64_t)h;
			} else if (c == ';' || c == ' ' || c == '\t') {
				m->chunk_state = CS_EXT;
			} else if (c == '\r') {
				m->chunk_state = CS_SIZE_LF;
			} else {
				return "invalid chunk size";
			}
			break;
		case CS_EXT:
			if (c == '\r')
				m->chunk_state = CS_SIZE_LF;
			else if (ctl)
				return "invalid chunk extension";
			break;
		case CS_SIZE_LF:
			if (c != '\n')
				return "invalid chunk size line";
			m->chunk_state = m->chunk_left ? CS_DATA : CS_TRAILER_START;
			break;
		case CS_DATA: {
			uint64_t n = len - i < m->chunk_left ? len - i : m->chunk_left;
			m->chunk_left -= n;
			i += (size_t)n - 1;
			if (m->chunk_left == 0)
				m->chunk_state = CS_DATA_CR;
			break;
		}
		case CS_DATA_CR:
			if (c != '\r')
				return "chunk data longer than its size";
			m->chunk_state = CS_DATA_LF;
			break;
		case CS_DATA_LF:
			if (c != '\n')
				return "invalid chunk data end";
			m->chunk_state = CS_SIZE_START;
			break;
		case CS_TRAILER_START:
			if (c == '\r') {
				m->chunk_state = CS_END_LF;
				break;
			}
			if (ctl || c == ' ' || c == '\t')
				return "invalid trailer";
			m->chunk_state = CS_TRAILER;
			break;
		case CS_TRAILER:
			if (c == '\r')
				m->chunk_state = CS_TRAILER_LF;
			else if (ctl)
				return "invalid trailer";
			break;
		case CS_TRAILER_LF:
			if (c != '\n')
				return "invalid trailer";
			m->chunk_state = CS_TRAILER_START;
			break;
		case CS_END_LF:
			if (c != '\n')
				return "invalid end of chunked body";
			m->chunk_state = CS_END;
			*end = i + 1;
			return NULL;
		default:
			return "data after the chunked body";
		}
	}
	*end = len;
	return NULL;
}

static size_t feed_body(struct http_msg *m, const char *data, size_t len)
{
	if (m->buffer_body && m->has_content_length &&
	    m->content_length > m->limits->max_buffered_body) {
		set_error(m, 413, "request body too large to buffer");
		return 0;
	}
	size_t end = len;
	if (m->chunked) {
		const char *why = scan_chunked(m, data, len, &end);
		if (why) {
			set_error(m, 400, why);
			return 0;
		}
	}
	size_t got = http_parser_execute(&m->parser, &parser_settings, data, end);
	if (m->state == HTTP_MSG_ERROR)
		return got;
	enum http_errno e = HTTP_PARSER_ERRNO(&m->parser);
	if (e == HPE_PAUSED && m->ev_msg_done)
		m->state = HTTP_MSG_DONE;
	else if (e != HPE_OK)
		parser_error(m, e);
	else if (got != end || (m->chunked && m->chunk_state == CS_END))
		set_error(m, 400, "malformed body"); /* the parser and the scan disagree */
	if (m->state == HTTP_MSG_DONE && m->chunked && (got != end || m->chunk_state != CS_END))
		set_error(m, 400, "malformed body");
	return got;
}

size_t http_msg_feed(struct http_msg *m, const char *data, size_t len, http_body_fn *on_body_fn,
		     void *arg)
{
	if (m->state == HTTP_MSG_ERROR || m->state == HTTP_MSG_DONE || len == 0)
		return 0;
	m->cb = on_body_fn;
	m->cb_arg = arg;
	size_t got = m->state == HTTP_MSG_HEAD ? feed_head(m, data, len) : feed_body(m, data, len);
	m->cb = NULL;
	m->cb_arg = NULL;
	return got;
}

void http_msg_feed_eof(struct http_msg *m, http_body_fn *on_body_fn, void *arg)
{
	switch (m->state) {
	case HTTP_MSG_DONE:
	case HTTP_MSG_ERROR:
		return;
	case HTTP_MSG_HEAD:
		if (m->head_bytes == 0)
			return; /* a clean close between messages */
		set_error(m, 400, "connection closed in the head");
		return;
	case HTTP_MSG_BODY:
		break;
	}
	if (!m->read_until_close) {
		set_error(m, 400, "connection closed in the body");
		return;
	}
	m->cb = on_body_fn;
	m->cb_arg = arg;
	http_parser_execute(&m->parser, &parser_settings, NULL, 0);
	m->cb = NULL;
	m->cb_arg = NULL;
	if (m->state == HTTP_MSG_ERROR)
		return;
	if (m->ev_msg_done)
		m->state = HTTP_MSG_DONE;
	else
		set_error(m, 502, "truncated response");
}

void http_msg_init(struct http_msg *m, enum http_parser_type type, const struct http_limits *lim)
{
	memset(m, 0, sizeof(*m));
	m->type = type;
	m->limits = lim ? lim : &default_limits;
	http_parser_init(&m->parser, type);
	m->parser.data = m;
}

void http_msg_reset(struct http_msg *m)
{
	struct buf head = m->head, body = m->body;
	enum http_parser_type type = m->type;
	const struct http_limits *lim = m->limits;
	buf_reset(&head);
	buf_reset(&body);
	http_msg_init(m, type, lim);
	m->head = head;
	m->body = body;
}

void http_msg_free(struct http_msg *m)
{
	buf_free(&m->head);
	buf_free(&m->body);
}

const char *http_msg_header(const struct http_msg *m, const char *name, size_t *len,
			    unsigned *count)
{
	const char *first = NULL;
	unsigned n = 0;
	size_t name_len = strlen(name);
	for (unsigned i = 0; i < m->n_hdr; i++) {
		const struct http_header *h = &m->hdr[i];
		if (h->name_len != name_len || strncasecmp(hdr_name(m, h), name, name_len) != 0)
			continue;
		if (n++ == 0) {
			first = hdr_value(m, h);
			if (len)
				*len = h->value_len;
		}
	}
	if (count)
		*count = n;
	return first;
}

/* --- serialisation -------------------------------------------------------------------------- */

static const char *const hop_by_hop[] = {
	"connection", "keep-alive", "proxy-connection", "proxy-authenticate", "proxy-authorization",
	"te", "trailer", "transfer-encoding", "upgrade",
};

/* A header name as CGI-style stacks read it: case and '_' against '-' do not matter. */
static bool name_is_folded(const char *name, size_t len, const char *lit)
{
	if (strlen(lit) != len)
		return false;
	for (size_t i = 0; i < len; i++) {
		int a = tolower((unsigned char)name[i]), b = tolower((unsigned char)lit[i]);
		if ((a == '_' ? '-' : a) != (b == '_' ? '-' : b))
			return false;
	}
	return true;
}

static bool in_list(const char *name, size_t len, const char *const *list, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (name_is_folded(name, len, list[i]))
			return true;
	return false;
}

struct name_ref {
	const char *name;
	size_t len;
};

static bool token_is_name(const char *tok, size_t len, void *arg)
{
	const struct name_ref *r = arg;
	return len == r->len && strncasecmp(tok, r->name, len) == 0;
}

/* Hop-by-hop: the fixed list and every header the Connection header names. */
static bool is_hop_by_hop(const struct http_msg *m, const char *name, size_t len)
{
	if (in_list(name, len, hop_by_hop, sizeof(hop_by_hop) / sizeof(hop_by_hop[0])))
		return true;
	struct name_ref r = {name, len};
	return header_list_any(m, "connection", token_is_name, &r);
}

/* A value the gateway writes into a header must not break out of it. */
static bool safe_value(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return false;
	return true;
}

/* End-to-end headers except those in drop and more_drop. */
static int write_headers(const struct http_msg *m, struct buf *out, const char *const *drop,
			 size_t n_drop, const char *const *more_drop, size_t n_more_drop,
			 bool drop_authorization)
{
	static const char *const authorization[] = {"authorization"};
	for (unsigned i = 0; i < m->n_hdr; i++) {
		const struct http_header *h = &m->hdr[i];
		const char *name = hdr_name(m, h);
		if (in_list(name, h->name_len, drop, n_drop) ||
		    in_list(name, h->name_len, more_drop, n_more_drop) ||
		    (drop_authorization && in_list(name, h->name_len, authorization, 1)) ||
		    is_hop_by_hop(m, name, h->name_len))
			continue;
		if (buf_append(out, name, h->name_len) < 0 || buf_append(out, ": ", 2) < 0 ||
		    buf_append(out, hdr_value(m, h), h->value_len) < 0 ||
		    buf_append(out, "\r\n", 2) < 0)
			return -1;
	}
	return 0;
}

static int write_field(struct buf *out, const char *name, const char *value)
{
	if (!value)
		return 0;
	if (!safe_value(value))
		return -1;
	return buf_printf(out, "%s: %s\r\n", name, value);
}

/* The gateway writes these itself; a TPP's own copies (including RFC 7239 Forwarded, which
 * would contradict X-Forwarded-For) must never reach the bank. */
static const char *const request_drop[] = {
	"host", "expect", "content-length", "x-client-id", "x-client-cert-sha256",
	"x-client-psd2-roles", "x-forwarded-for", "forwarded", "x-request-id",
};

int http_write_request_head(const struct http_msg *req, const struct http_forward *fwd,
			    struct buf *out)
{
	if (req->state != HTTP_MSG_BODY && req->state != HTTP_MSG_DONE)
		return -1;
	size_t start = out->len;
	const char *base = fwd->base_path ? fwd->base_path : "";
	size_t base_len = strlen(base);
	while (base_len && base[base_len - 1] == '/')
		base_len--; /* the target starts with '/' */
	if (!safe_value(base) || !fwd->host || !safe_value(fwd->host))
		return -1;
	if (buf_printf(out, "%s %.*s%.*s HTTP/1.1\r\nHost: %s\r\n",
		       http_method_str((enum http_method)req->method), (int)base_len, base,
		       (int)req->url_len, http_msg_url(req), fwd->host) < 0 ||
	    write_headers(req, out, request_drop, sizeof(request_drop) / sizeof(request_drop[0]),
			  fwd->drop_headers, fwd->n_drop_headers, fwd->authorization != NULL) < 0 ||
	    write_field(out, "Authorization", fwd->authorization) < 0 ||
	    write_field(out, "X-Client-Id", fwd->client_id) < 0 ||
	    write_field(out, "X-Client-Cert-Sha256", fwd->cert_sha256_hex) < 0 ||
	    (fwd->psd2_roles && fwd->psd2_roles[0] &&
	     write_field(out, "X-Client-Psd2-Roles", fwd->psd2_roles) < 0) ||
	    write_field(out, "X-Forwarded-For", fwd->forwarded_for) < 0 ||
	    write_field(out, "X-Request-Id", fwd->request_id) < 0)
		goto fail;
	int rc = 0;
	if (req->chunked)
		rc = buf_append_str(out, "Transfer-Encoding: chunked\r\n");
	else if (req->has_content_length)
		rc = buf_printf(out, "Content-Length: %llu\r\n",
				(unsigned long long)req->content_length);
	if (rc < 0 || buf_append(out, "\r\n", 2) < 0)
		goto fail;
	return 0;
fail:
	out->len = start; /* nothing half-written */
	return -1;
}

static const char *const response_drop[] = {"content-length", "x-request-id"};

int http_write_response_head(const struct http_msg *resp, bool keep_alive, const char *request_id,
			     const struct buf *extra, struct buf *out, bool *chunked_out)
{
	if (resp->state != HTTP_MSG_BODY && resp->state != HTTP_MSG_DONE)
		return -1;
	size_t start = out->len;
	bool chunked = false, close = !keep_alive;
	unsigned code = resp->status_code;
	const char *reason = resp->head.data ? buf_head(&resp->head) + resp->reason_off : "";
	int reason_len = (int)resp->reason_len;
	if (reason_len == 0) {
		reason = http_status_text((int)code);
		reason_len = (int)strlen(reason);
	}
	if (buf_printf(out, "HTTP/1.1 %u %.*s\r\n", code, reason_len, reason) < 0 ||
	    write_headers(resp, out, response_drop, sizeof(response_drop) / sizeof(response_drop[0]),
			  NULL, 0, false) < 0)
		goto fail;
	if (request_id && *request_id && write_field(out, "X-Request-Id", request_id) < 0)
		goto fail;
	if (extra && buf_append(out, buf_head(extra), extra->len) < 0)
		goto fail;
	int rc = 0;
	if (code < 200 || code == 204) {
		/* no body and no Content-Length */
	} else if (resp->has_content_length) {
		/* For HEAD and 304 it describes the representation, not this message. */
		rc = buf_printf(out, "Content-Length: %llu\r\n",
				(unsigned long long)resp->content_length);
	} else if (resp->skip_body || resp->no_body) {
		/* nothing to delimit */
	} else if (keep_alive) {
		rc = buf_append_str(out, "Transfer-Encoding: chunked\r\n");
		chunked = true;
	} else {
		close = true; /* the body ends when the connection does */
	}
	if (rc < 0 || buf_append_str(out, close ? "Connection: close\r\n\r\n"
						 : "Connection: keep-alive\r\n\r\n") < 0)
		goto fail;
	*chunked_out = chunked;
	return 0;
fail:
	out->len = start;
	return -1;
}

int http_write_chunk(struct buf *out, const char *data, size_t len)
{
	if (len == 0)
		return buf_append(out, "0\r\n\r\n", 5);
	if (buf_printf(out, "%zx\r\n", len) < 0 || buf_append(out, data, len) < 0 ||
	    buf_append(out, "\r\n", 2) < 0)
		return -1;
	return 0;
}

int http_write_error(struct buf *out, int status, const char *error, const char *description,
		     unsigned retry_after, const struct buf *extra, bool keep_alive,
		     const char *request_id)
{
	struct buf body = {0};
	int rc = -1;
	if (buf_append_str(&body, "{\"error\":") == 0 && buf_append_json_string(&body, error) == 0 &&
	    buf_append_str(&body, ",\"error_description\":") == 0 &&
	    buf_append_json_string(&body, description) == 0 && buf_append(&body, "}", 1) == 0)
		rc = http_write_json(out, status, &body, retry_after, extra, keep_alive, request_id);
	buf_free(&body);
	return rc;
}

int http_write_json(struct buf *out, int status, const struct buf *body, unsigned retry_after,
		    const struct buf *extra, bool keep_alive, const char *request_id)
{
	size_t start = out->len;
	int rc = -1;
	if (buf_printf(out, "HTTP/1.1 %d %s\r\n", status, http_status_text(status)) < 0)
		goto out;
	if (status != 204 && buf_append_str(out, "Content-Type: application/json\r\n") < 0)
		goto out;
	if (buf_append_str(out, "Cache-Control: no-store\r\n") < 0)
		goto out;
	if (status != 204 && buf_printf(out, "Content-Length: %zu\r\n", body->len) < 0)
		goto out;
	if (retry_after && buf_printf(out, "Retry-After: %u\r\n", retry_after) < 0)
		goto out;
	if (extra && buf_append(out, buf_head(extra), extra->len) < 0)
		goto out;
	if (request_id && *request_id && safe_value(request_id) &&
	    buf_printf(out, "X-Request-Id: %s\r\n", request_id) < 0)
		goto out;
	if (!keep_alive && buf_append_str(out, "Connection: close\r\n") < 0)
		goto out;
	if (buf_append(out, "\r\n", 2) < 0 ||
	    (status != 204 && body->len && buf_append(out, buf_head(body), body->len) < 0))
		goto out;
	rc = 0;
out:
	if (rc < 0)
		out->len = start;
	return rc;
}

int http_append_allow(struct buf *headers, uint64_t methods)
{
	size_t start = headers->len;
	methods = (methods ? methods : HTTP_DEFAULT_METHODS) & ~HTTP_METHODS_NEVER;
	const char *sep = "Allow: ";
	for (unsigned m = 0; m < HTTP_METHOD_COUNT; m++) {
		if (!(methods & HTTP_METHOD_BIT(m)))
			continue;
		if (buf_printf(headers, "%s%s", sep, http_method_str((enum http_method)m)) < 0)
			goto fail;
		sep = ", ";
	}
	if (buf_append(headers, "\r\n", 2) == 0)
		return 0;
fail:
	headers->len = start;
	return -1;
}

const char *http_status_text(int status)
{
	if (status == 431)
		return "Request Header Fields Too Large";
	const char *s = http_status_str((enum http_status)status);
	if (s && strcmp(s, "<unknown>") != 0)
		return s;
	switch (status / 100) {
	case 1:
		return "Informational";
	case 2:
		return "Success";
	case 3:
		return "Redirection";
	case 4:
		return "Client Error";
	default:
		return "Server Error";
	}
}
