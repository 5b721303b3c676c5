/* HTTP/1.1 message parsing (requests from TPPs, responses from the upstream) on Node's
 * http_parser, plus the serialisation of what the gateway forwards. Framing that is ambiguous
 * under RFC 9112 §6 is refused (400), never normalised and passed on. */
#ifndef PSD2EDGE_HTTP_H
#define PSD2EDGE_HTTP_H

#include <http_parser.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#ifndef HTTP_MAX_HEADERS
#define HTTP_MAX_HEADERS 100
#endif

enum http_msg_state {
	HTTP_MSG_HEAD,  /* reading the start line and headers */
	HTTP_MSG_BODY,  /* head complete; body bytes (if any) follow */
	HTTP_MSG_DONE,  /* message complete; feed stops here (pipelined bytes are left unconsumed) */
	HTTP_MSG_ERROR, /* see error_status / error_reason */
};

/* HTTP_METHOD_BIT(HTTP_GET) | ...: a set of methods (enum http_method stays below 64). */
#define HTTP_METHOD_BIT(m) (UINT64_C(1) << (m))
#define HTTP_METHOD_COUNT_ONE(num, name, string) +1
#define HTTP_METHOD_COUNT (0 HTTP_METHOD_MAP(HTTP_METHOD_COUNT_ONE)) /* 0 .. COUNT-1 */
#define HTTP_DEFAULT_METHODS                                                                       \
	(HTTP_METHOD_BIT(HTTP_GET) | HTTP_METHOD_BIT(HTTP_HEAD) | HTTP_METHOD_BIT(HTTP_POST) |        \
	 HTTP_METHOD_BIT(HTTP_PUT) | HTTP_METHOD_BIT(HTTP_PATCH) | HTTP_METHOD_BIT(HTTP_DELETE) |     \
	 HTTP_METHOD_BIT(HTTP_OPTIONS))
/* Never forwarded whatever the configuration says: TRACE reflects the request, credentials
 * included, back to whoever can read the response (405); CONNECT opens a tunnel (501). */
#define HTTP_METHODS_NEVER (HTTP_METHOD_BIT(HTTP_TRACE) | HTTP_METHOD_BIT(HTTP_CONNECT))

struct http_limits {
	size_t max_header_bytes; /* start line + headers; beyond: 431 */
	size_t max_uri_bytes;    /* request target; beyond: 414 (0: only max_header_bytes) */
	uint64_t max_body_bytes; /* beyond: 413 */
	size_t max_buffered_body; /* when buffer_body is set; beyond: 413 */
	uint64_t methods; /* requests: the methods let through, others 405; 0: HTTP_DEFAULT_METHODS */
};

/* Called with each piece of the (de-chunked) body, in order. Return 0, or -1 to abort. */
typedef int http_body_fn(void *arg, const char *data, size_t len);

struct http_header {
	uint32_t name_off, name_len; /* into head */
	uint32_t value_off, value_len;
};

struct http_msg {
	http_parser parser;
	enum http_parser_type type; /* HTTP_REQUEST or HTTP_RESPONSE */
	const struct http_limits *limits;
	enum http_msg_state state;
	int error_status;         /* 400, 405, 413, 414, 431, 501 (requests); 502 (responses) */
	const char *error_reason; /* static text for the log / error_description */

	/* Head, valid from HTTP_MSG_BODY on. Header names keep their case in head. */
	struct buf head;
	struct http_header hdr[HTTP_MAX_HEADERS];
	unsigned n_hdr;
	uint32_t url_off, url_len; /* requests */
	unsigned method;           /* enum http_method, requests */
	unsigned status_code;      /* responses */
	uint32_t reason_off, reason_len; /* responses: the reason phrase, into head */
	unsigned short http_major, http_minor;
	bool keep_alive;   /* after this message, per http_should_keep_alive() */
	bool chunked;      /* Transfer-Encoding: chunked */
	bool has_content_length;
	uint64_t content_length;
	bool expect_continue; /* request carries Expect: 100-continue */
	bool no_body;         /* response to HEAD, 1xx, 204, 304: set before feeding (skip_body) */
	bool read_until_close; /* response delimited by the connection closing */

	/* When buffer_body is set before the head completes, body bytes are also collected here
	 * (bounded by limits->max_buffered_body). */
	bool buffer_body;
	struct buf body;
	uint64_t body_bytes; /* body bytes seen so far */

	/* internal parser state */
	unsigned hdr_state;
	size_t head_bytes;     /* raw bytes of the head consumed so far */
	size_t trailer_bytes;  /* raw field bytes of a chunked trailer section */
	bool skip_body;        /* response without body (no_body, 1xx, 204, 304) */
	bool ev_head_done, ev_msg_done; /* set by the parser callbacks, which then pause it */
	unsigned char scan_prev; /* head pre-scan: previous byte */
	bool scan_in_line, scan_seen_line, scan_done;
	uint32_t line0_len;  /* the start line: its length, first and last bytes */
	char line0_head[13], line0_tail[9];
	unsigned chunk_state; /* strict pre-scan of chunked framing (the parser is lenient) */
	uint64_t chunk_left;
	http_body_fn *cb; /* the on_body of the feed in progress */
	void *cb_arg;
};

void http_msg_init(struct http_msg *m, enum http_parser_type type, const struct http_limits *lim);
/* Ready for the next message on the same connection; keeps allocations. */
void http_msg_reset(struct http_msg *m);
void http_msg_free(struct http_msg *m);

/* Feeds bytes and returns how many were consumed. Consumption stops right after the head
 * completes (state becomes HTTP_MSG_BODY, or HTTP_MSG_DONE when there is no body) so the caller
 * can decide before any body byte is handled; call again to go on. It also stops at the end of
 * the message. On error the state is HTTP_MSG_ERROR. */
size_t http_msg_feed(struct http_msg *m, const char *data, size_t len, http_body_fn *on_body,
		     void *arg);
/* The peer closed: completes a read-until-close response, else an error if mid-message. */
void http_msg_feed_eof(struct http_msg *m, http_body_fn *on_body, void *arg);

/* Case-insensitive lookup; returns the first value (not NUL-terminated) or NULL. *count (when
 * non-NULL) receives how many headers have that name. */
const char *http_msg_header(const struct http_msg *m, const char *name, size_t *len,
			    unsigned *count);
/* Optional whitespace (RFC 9110 §5.6.3) around field values and list elements. */
static inline bool http_is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* The request target, url_len bytes (not NUL-terminated); "" before any was read. From
 * HTTP_MSG_BODY on, its path is normalised (path.h); the query is as received. */
static inline const char *http_msg_url(const struct http_msg *m)
{
	return m->head.data ? buf_head(&m->head) + m->url_off : "";
}
/* A 1xx response (100 Continue, 103 Early Hints): it is DONE right after its head; the caller
 * drops it, calls http_msg_reset() (keeping no_body) and reads the final response. */
static inline bool http_msg_interim(const struct http_msg *m)
{
	return m->type == HTTP_RESPONSE && m->status_code >= 100 && m->status_code < 200;
}

/* What the gateway adds to a forwarded request. */
struct http_forward {
	const char *client_id;
	const char *cert_sha256_hex;
	const char *psd2_roles;    /* the certificate's PSD2 roles, "PSP_PI,PSP_AI"; "": none */
	const char *forwarded_for; /* the TPP's address */
	const char *request_id;
	const char *host;          /* upstream Host header value */
	const char *base_path;     /* upstream URL path prefix, "" for none */
	const char *const *drop_headers; /* more client headers never forwarded (http.drop_headers) */
	size_t n_drop_headers;
	/* NULL: the client's Authorization goes on as sent; else it is dropped and this value
	 * sent instead (hub mode: the bank's bearer token in place of the session handle). */
	const char *authorization;
};

/* Writes the request head for the upstream: start line (base_path + url), end-to-end headers,
 * the gateway's own headers (X-Client-Psd2-Roles only when there are roles), and framing:
 * Content-Length as received, or Transfer-Encoding: chunked when the request was chunked.
 * Dropped: hop-by-hop headers, Expect, the client's copies of X-Client-Id,
 * X-Client-Cert-Sha256, X-Client-Psd2-Roles, X-Forwarded-For, Forwarded and X-Request-Id,
 * and drop_headers; names compare with case and '_' against '-' ignored, as CGI-style stacks
 * (Rack, gunicorn, PHP) read X_Client_Id as X-Client-Id. */
int http_write_request_head(const struct http_msg *req, const struct http_forward *fwd,
			    struct buf *out);
/* Writes the response head for the client: status line, end-to-end headers, the gateway's
 * extra header lines (may be NULL), framing (Content-Length when known, else chunked to a
 * keep-alive HTTP/1.1 client, else close) and Connection. *chunked_out tells the caller
 * whether body pieces must be written as chunks. */
int http_write_response_head(const struct http_msg *resp, bool keep_alive, const char *request_id,
			     const struct buf *extra, struct buf *out, bool *chunked_out);
/* One chunk; len 0 writes the last chunk. */
int http_write_chunk(struct buf *out, const char *data, size_t len);
/* A complete error response with a JSON body {"error":...,"error_description":...};
 * retry_after 0 omits Retry-After; extra: header lines ("Name: value\r\n") to add, or NULL. */
int http_write_error(struct buf *out, int status, const char *error, const char *description,
		     unsigned retry_after, const struct buf *extra, bool keep_alive,
		     const char *request_id);
/* A complete response of the gateway's own with body (JSON) as it is; a 204 has none. */
int http_write_json(struct buf *out, int status, const struct buf *body, unsigned retry_after,
		    const struct buf *extra, bool keep_alive, const char *request_id);
/* Appends the Allow header line of a 405: the methods let through (a set of HTTP_METHOD_BIT,
 * 0 for HTTP_DEFAULT_METHODS) but those never forwarded. */
int http_append_allow(struct buf *headers, uint64_t methods);
const char *http_status_text(int status);

#endif
