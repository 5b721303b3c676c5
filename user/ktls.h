/* kTLS: after OpenSSL completes a handshake, the kernel takes over the record layer, so bulk
 * bytes are encrypted and decrypted in the kernel and can be spliced between sockets.
 *
 * Two installers, one result. With SSL_OP_ENABLE_KTLS (set by ktls_ctx_setup) Debian's
 * OpenSSL 3.0 offloads TLS 1.2 AES-GCM in both directions and TLS 1.3 in TX only, during the
 * handshake. ktls_enable() reads what OpenSSL did (BIO_get_ktls_send/recv) and installs the
 * remaining directions itself with setsockopt(SOL_TLS, TLS_TX/TLS_RX): TLS 1.3 keys from the
 * traffic secrets captured by the keylog callback (HKDF-Expand-Label "key"/"iv", record
 * sequence 0), TLS 1.2 keys from the master secret and both randoms (TLS1-PRF key block,
 * 4-byte salt + 8-byte explicit nonce, record sequence 1: the Finished record was 0).
 * Supported: TLS 1.2 and 1.3 with AES-128-GCM and AES-256-GCM. Anything else, or a kernel
 * without the TLS ULP (the development host), leaves the connection in userspace TLS; the
 * reason is recorded per connection and counted globally.
 *
 * USAGE CONTRACT for the connection layer
 *  1. Once per SSL_CTX (server and upstream client contexts): ktls_ctx_setup(ctx). It probes
 *     the kernel once per process; when the kernel has no TLS ULP it changes nothing on ctx.
 *     Do not install another keylog callback on that ctx (ktls_keylog_cb needs it).
 *  2. Use a socket fd (SSL_set_fd) and do not enable read-ahead until ktls_enable has run:
 *     OpenSSL must not have read past the records it hands to the kernel. Afterwards it is
 *     safe on a connection whose reads stay in userspace (!st->rx), and saves a read per record.
 *  3. Right after the handshake returns success, before any SSL_read/SSL_write/SSL_peek:
 *     ktls_enable(ssl, fd, &st). Never fails the connection: it returns 0 with st->tx/st->rx
 *     telling what the kernel does (both false = userspace TLS, st->reason says why).
 *     It wipes the captured secrets.
 *  4. Reading, when st->rx: NEVER call SSL_read/SSL_peek/SSL_pending again on that SSL. Read
 *     with ktls_recv() (it handles alerts, refuses renegotiation, drops TLS 1.3 session
 *     tickets, closes on KeyUpdate) or move body bytes with splice_fwd() (splice_fwd.h).
 *     ktls_recv needs a buffer of at least KTLS_RECV_MIN bytes.
 *     Readiness: EPOLLIN on fd as for plain TCP (the kernel only signals whole records).
 *     When !st->rx: SSL_read as before.
 *  5. Writing, when st->tx: NEVER call SSL_write again. Write with ktls_send() or splice into
 *     fd; readiness is EPOLLOUT as for plain TCP. When !st->tx: SSL_write as before.
 *  6. Closing, when st->tx: call ktls_send_close_notify(fd) instead of SSL_shutdown (also
 *     after ktls_recv reported KTLS_EKEYUPDATE or EOF), then SSL_free and close(fd). When
 *     !st->tx: SSL_shutdown as before. In both cases call ktls_release(&st) once, so the
 *     gauges of open kTLS connections stay right.
 *  Direction mixes are possible (e.g. TLS 1.3 with OpenSSL TX but a failed manual RX: writes
 *  kernel, reads SSL_read); handle each direction by its own flag.
 */
#ifndef PSD2EDGE_KTLS_H
#define PSD2EDGE_KTLS_H

#include <errno.h>
#include <openssl/ssl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* Why a direction is not offloaded (KTLS_OK when it is). Names in ktls_reason_name(). */
#define KTLS_REASONS(X)                                                                   \
	X(KTLS_OK, "ok", "ok")                                                            \
	X(KTLS_NO_KERNEL, "no_kernel", "kernel has no TLS ULP")                           \
	X(KTLS_DISABLED, "disabled", "disabled by PSD2EDGE_KTLS=0")                       \
	X(KTLS_BAD_VERSION, "version", "TLS version not supported by kTLS")               \
	X(KTLS_BAD_CIPHER, "cipher", "cipher not supported by kTLS")                      \
	X(KTLS_NO_SECRETS, "no_secrets", "traffic secrets not captured")                  \
	X(KTLS_PENDING, "pending", "OpenSSL holds buffered records")                      \
	X(KTLS_ULP_FAILED, "ulp_failed", "setsockopt TCP_ULP failed")                     \
	X(KTLS_SETSOCKOPT_FAILED, "setsockopt_failed", "setsockopt SOL_TLS failed")       \
	X(KTLS_DERIVE_FAILED, "derive_failed", "key derivation failed")                   \
	X(KTLS_NOT_SOCKET, "not_socket", "no socket fd")

enum ktls_reason {
#define KTLS_REASON_ENUM(id, key, text) id,
	KTLS_REASONS(KTLS_REASON_ENUM)
#undef KTLS_REASON_ENUM
	KTLS_REASON_COUNT
};

/* Per connection, filled by ktls_enable. */
struct ktls_state {
	bool tx, rx;                 /* the kernel encrypts writes / decrypts reads on fd */
	bool tx_openssl, rx_openssl; /* ... installed by OpenSSL during the handshake (else by us) */
	enum ktls_reason tx_reason;  /* KTLS_OK when tx, else why not */
	enum ktls_reason rx_reason;
	enum ktls_reason reason;     /* first non-OK of the two, or KTLS_OK */
	int sys_errno;               /* errno of the failed setsockopt, if that was the reason */
	uint16_t version;            /* TLS1_2_VERSION / TLS1_3_VERSION */
	bool released;
};

/* Process-wide counters (relaxed atomics), for `psd2edgectl stats`. */
struct ktls_counters {
	uint64_t connections;     /* handshakes passed to ktls_enable */
	uint64_t tx, rx;          /* ... that got kTLS TX / RX */
	uint64_t tx_openssl, rx_openssl, tx_manual, rx_manual;
	uint64_t tx_open, rx_open; /* open now (until ktls_release) */
	uint64_t fallback;        /* connections with at least one direction in userspace */
	uint64_t fallback_by[KTLS_REASON_COUNT]; /* by the connection's reason */
	uint64_t keyupdate_closes, alerts_received, tickets_dropped, renegotiations_refused;
};

/* Probes the kernel once (TCP_ULP "tls"); when available sets SSL_OP_ENABLE_KTLS,
 * SSL_OP_NO_RENEGOTIATION, the keylog callback and no TLS 1.3 session tickets on ctx.
 * Returns 1 when kTLS is available, 0 when not (ctx left for userspace TLS), -1 on error. */
int ktls_ctx_setup(SSL_CTX *ctx);
/* True when the running kernel has the TLS ULP (probed once, thread-safe) and kTLS is not
 * disabled with the environment variable PSD2EDGE_KTLS=0 (used to measure the baseline). */
bool ktls_kernel_available(void);
/* The keylog callback ktls_ctx_setup installs: keeps TLS 1.3 traffic secrets in the SSL's
 * ex_data until ktls_enable uses and wipes them (freed with the SSL otherwise). */
void ktls_keylog_cb(const SSL *ssl, const char *line);

/* See the contract above. Always returns 0; the outcome is in *st and in the counters. */
int ktls_enable(SSL *ssl, int fd, struct ktls_state *st);
/* Updates the open-connection gauges; call once when the connection closes (idempotent). */
void ktls_release(struct ktls_state *st);

#define KTLS_RECV_MIN 64          /* smallest buffer ktls_recv accepts */
#define KTLS_EKEYUPDATE EKEYEXPIRED /* errno: peer sent KeyUpdate; send close_notify, close */

/* Reads application data from a socket with kTLS RX.
 * >0: bytes of application data (*record_type = 23).
 *  0: end of stream: the peer's close_notify (*record_type = 21) or TCP EOF (0).
 * -1 and errno: EAGAIN (wait for EPOLLIN); KTLS_EKEYUPDATE (the peer rekeyed: kernels before
 *    6.14 cannot follow; close cleanly); ECONNRESET (fatal alert, *record_type = 21);
 *    EPROTO (renegotiation or an unexpected record, *record_type says which); EINVAL
 *    (len < KTLS_RECV_MIN); EBADMSG (record failed authentication); other socket errors.
 * Non-data records that need no action (TLS 1.3 NewSessionTicket, warning alerts) are
 * consumed and reading continues. record_type may be NULL. */
ssize_t ktls_recv(int fd, void *buf, size_t len, int *record_type);
/* Writes application data on a socket with kTLS TX (MSG_NOSIGNAL added to flags; MSG_MORE
 * lets the kernel fill records). Same returns as send(2). */
ssize_t ktls_send(int fd, const void *buf, size_t len, int flags);
/* Sends an alert record through kTLS TX. 0 or -1 with errno. */
int ktls_send_alert(int fd, uint8_t level, uint8_t description);
/* close_notify (warning, 0) through kTLS TX. */
int ktls_send_close_notify(int fd);

/* Short identifier ("no_kernel") and human text ("kernel has no TLS ULP"). */
const char *ktls_reason_key(enum ktls_reason r);
const char *ktls_reason_name(enum ktls_reason r);
void ktls_counters_read(struct ktls_counters *out);

/* Exposed for tests: the kernel crypto_info for one direction, from the captured secrets
 * (TLS 1.3) or the session's master secret (TLS 1.2). tx selects our write direction.
 * buf receives a struct tls12_crypto_info_aes_gcm_128 or _256; returns its size, or -1 with
 * *reason set. Does not wipe the secrets. */
int ktls_crypto_info(SSL *ssl, bool tx, uint64_t seq, void *buf, size_t buflen,
		     enum ktls_reason *reason);

#endif
