/* One interface for plain TCP and TLS sockets: handshake, read, write, peer certificate.
 * OpenSSL's want-read/want-write stays in here; callers see bytes, EAGAIN, EOF or an error,
 * plus the events the connection waits for (read_wants_write, write_wants_read).
 *
 * Reading follows the event loop, which is level-triggered: the caller reports each readiness
 * event with conn_set_readable() and reads while conn_may_read() says so. A read that comes
 * back short (or EAGAIN) means the socket is drained until the next event, so the read that
 * would only return EAGAIN is never made; bytes OpenSSL already holds are read without one. */
#ifndef PSD2EDGE_CONN_H
#define PSD2EDGE_CONN_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <sys/types.h>

#include "ktls.h"
#include "metrics.h"

enum conn_result {
	CONN_DONE = 1,    /* handshake complete */
	CONN_AGAIN = 0,   /* would block: wait for conn_wants() */
	CONN_ERROR = -1,  /* fatal; see conn->error */
};

struct conn {
	int fd;
	SSL *ssl;              /* NULL for plain TCP */
	bool handshake_done;
	bool read_wants_write;  /* SSL_read needs the socket writable to progress */
	bool write_wants_read;  /* SSL_write needs the socket readable to progress */
	bool readable;          /* see conn_may_read() */
	struct ktls_state ktls; /* which directions the kernel handles after the handshake */
	char error[160];        /* last failure, for the log */
	enum metric_cell failure; /* why the handshake failed: a handshake_failures series */
};

/* Wraps an accepted or connecting socket. ctx NULL for plain. server selects the role.
 * sni: server name for a client connection (may be NULL); verify_host: name or IP literal the
 * peer's certificate must match (client role, may be NULL). */
int conn_init(struct conn *c, int fd, SSL_CTX *ctx, bool server, const char *sni,
	      const char *verify_host);
/* Drives the TLS handshake (immediately CONN_DONE for plain). On completion the record layer
 * moves to the kernel (kTLS) where it can; reads and writes then bypass OpenSSL. */
enum conn_result conn_handshake(struct conn *c);
/* >0 bytes, 0 on orderly EOF, -1 with errno EAGAIN (wait) or another errno (fatal). */
ssize_t conn_read(struct conn *c, void *buf, size_t len);
/* The event loop reported the socket readable (or in error, or hung up). */
static inline void conn_set_readable(struct conn *c) { c->readable = true; }
/* Whether conn_read can return something before the next readiness event: the socket was not
 * drained since the last one, or OpenSSL holds bytes it read ahead. */
static inline bool conn_may_read(const struct conn *c) { return c->readable; }
ssize_t conn_write(struct conn *c, const void *buf, size_t len);
/* The peer's leaf certificate after the handshake (not owned by the caller), or NULL. */
X509 *conn_peer_cert(const struct conn *c);
const char *conn_tls_version(const struct conn *c); /* "TLSv1.3", or "plain" */
/* True when the kernel sees the plaintext stream: plain TCP, or kTLS in that direction. Only then
 * can bytes be spliced from / to the socket. */
static inline bool conn_kernel_reads(const struct conn *c) { return !c->ssl || c->ktls.rx; }
static inline bool conn_kernel_writes(const struct conn *c) { return !c->ssl || c->ktls.tx; }
/* Gives back OpenSSL's record buffers (about 34 KiB), when they hold nothing, of a connection
 * that is idle; the next read or write allocates them again. */
void conn_release_buffers(struct conn *c);
/* Sends close_notify when TLS (best effort), closes the socket and frees state. */
void conn_close(struct conn *c);

#endif
