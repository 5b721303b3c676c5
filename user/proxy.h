/* A session: one TPP connection and the upstream connection it uses. It reads a request,
 * runs the pipeline once the head (or a form body) is known, forwards the request, relays the
 * response, and loops for keep-alive. States advance only inside session_step(). */
#ifndef PSD2EDGE_PROXY_H
#define PSD2EDGE_PROXY_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "buf.h"
#include "cert.h"
#include "conn.h"
#include "http.h"
#include "registry.h"
#include "splice_fwd.h"

struct worker;

/* Which body, if any, is moving socket-to-socket through the session's pipe. */
enum session_splice { SPLICE_NONE, SPLICE_REQUEST_BODY, SPLICE_RESPONSE_BODY };

/* Bodies shorter than this are not worth a pipe. */
#define SESSION_SPLICE_MIN (64 * 1024)

enum session_state {
	SESSION_HANDSHAKE, /* TLS handshake with the TPP */
	SESSION_READ_HEAD, /* waiting for / reading a request head */
	SESSION_READ_FORM, /* buffering an urlencoded body that carries the client_id */
	SESSION_FORWARD,   /* request accepted: streaming it upstream, relaying the response */
	SESSION_CLOSING,   /* flushing a final response, then close */
};

struct session {
	struct session *prev, *next; /* worker's list */
	struct worker *w;
	enum session_state state;
	bool dead; /* closed; freed by the worker outside any callback */

	struct conn client;
	struct sockaddr_storage peer, local;
	char peer_text[64];
	uint8_t thumb[CERT_THUMB_LEN];
	char thumb_hex[CERT_THUMB_HEX_LEN + 1];
	bool client_eof;
	bool close_after_flush;
	bool buffers_released; /* idle: the buffers below and OpenSSL's are given back */

	/* Identity proven by the last accepted request (what revoke and XDP flows key on). */
	bool proven;
	char client_id[REGISTRY_CLIENT_ID_MAX + 1];
	uint32_t slot;
	bool flow_added;

	struct conn up;
	bool up_open, up_connecting, up_eof;

	struct buf c_in, c_out, u_in, u_out;
	struct splice_fwd splice;   /* pipe created on first use */
	bool splice_open;
	enum session_splice splicing;
	enum splice_fwd_result splice_last;
	struct http_limits req_limits, resp_limits;
	struct http_msg req, resp;

	/* current request */
	char request_id[33];
	bool req_done;        /* whole request handed to u_out */
	bool resp_head_sent;
	bool resp_chunked;    /* body pieces to the client must be chunk-encoded */
	bool client_keep_alive;
	unsigned status;
	const char *verdict;
	int64_t accepted_ms, head_start_ms, forward_start_ms, last_activity_ms;
	uint64_t req_body_bytes, resp_bytes;
	/* The request body's current rate window: its start and req_body_bytes then. */
	int64_t body_window_start_ms;
	uint64_t body_window_bytes;
};

/* Takes ownership of fd (accepted, non-blocking). NULL when out of memory (fd closed). */
struct session *session_new(struct worker *w, int fd, const struct sockaddr_storage *peer);
/* Enforces the session's current deadline (handshake, head, idle, upstream response). */
void session_check_deadline(struct session *s, int64_t now_ms);
/* Closes both connections at once (control-plane cut, shutdown). */
void session_close(struct session *s);
/* After a graceful-drain request: idle sessions close now, busy ones after their response. */
void session_drain(struct session *s);
void session_free(struct session *s);

#endif
