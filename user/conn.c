#include "conn.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int conn_init(struct conn *c, int fd, SSL_CTX *ctx, bool server, const char *sni,
	      const char *verify_host)
{
	memset(c, 0, sizeof(*c));
	c->fd = fd;
	c->readable = true; /* bytes may have come before the first event */
	if (!ctx) {
		c->handshake_done = true;
		return 0;
	}
	c->ssl = SSL_new(ctx);
	if (!c->ssl || SSL_set_fd(c->ssl, fd) != 1)
		goto fail;
	if (server) {
		SSL_set_accept_state(c->ssl);
		return 0;
	}
	SSL_set_connect_state(c->ssl);
	if (sni && SSL_set_tlsext_host_name(c->ssl, sni) != 1)
		goto fail;
	if (verify_host) {
		X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
		/* An IP literal must match an IP SAN, a name a DNS SAN. */
		if (X509_VERIFY_PARAM_set1_ip_asc(param, verify_host) != 1 &&
		    SSL_set1_host(c->ssl, verify_host) != 1)
			goto fail;
	}
	return 0;
fail:
	ERR_clear_error();
	SSL_free(c->ssl);
	c->ssl = NULL;
	return -1;
}

/* Maps an OpenSSL failure to conn semantics; returns -1 with errno set. */
static int ssl_failure(struct conn *c, int ret, bool reading)
{
	int err = SSL_get_error(c->ssl, ret);
	switch (err) {
	case SSL_ERROR_WANT_READ:
		if (!reading)
			c->write_wants_read = true;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_WANT_WRITE:
		if (reading)
			c->read_wants_write = true;
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_ZERO_RETURN:
		return 0;
	case SSL_ERROR_SYSCALL:
		snprintf(c->error, sizeof(c->error), "%s",
			 errno ? strerror(errno) : "unexpected EOF");
		if (!errno)
			errno = ECONNRESET;
		ERR_clear_error();
		return -1;
	default: {
		unsigned long e = ERR_get_error();
		if (e)
			ERR_error_string_n(e, c->error, sizeof(c->error));
		else
			snprintf(c->error, sizeof(c->error), "TLS error %d", err);
		ERR_clear_error();
		errno = EPROTO;
		return -1;
	}
	}
}

/* The handshake_failures series of a failed handshake, from the certificate's verification,
 * SSL_get_error's err and the reason of the first error OpenSSL queued. */
static enum metric_cell handshake_failure(long verify_result, int err, int reason)
{
	switch (verify_result) {
	case X509_V_OK:
		break;
	case X509_V_ERR_CERT_REVOKED:
		return METRIC_CELL_handshake_failed_cert_revoked;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return METRIC_CELL_handshake_failed_cert_expired;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
	case X509_V_ERR_CERT_UNTRUSTED:
		return METRIC_CELL_handshake_failed_cert_untrusted;
	default:
		return METRIC_CELL_handshake_failed_cert_invalid;
	}
	if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN)
		return METRIC_CELL_handshake_failed_closed;
	switch (reason) {
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		return METRIC_CELL_handshake_failed_no_certificate;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_NO_PROTOCOLS_AVAILABLE:
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
	case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
	case SSL_R_HTTP_REQUEST:
		return METRIC_CELL_handshake_failed_protocol;
	default:
		return METRIC_CELL_handshake_failed_tls_error;
	}
}

enum conn_result conn_handshake(struct conn *c)
{
	if (c->handshake_done)
		return CONN_DONE;
	c->read_wants_write = c->write_wants_read = false;
	ERR_clear_error();
	int ret = SSL_do_handshake(c->ssl);
	if (ret == 1) {
		c->handshake_done = true;
		ktls_enable(c->ssl, c->fd, &c->ktls); /* never fails: falls back to userspace TLS */
		/* Without kTLS RX, OpenSSL may read ahead from now on: a request then takes one read()
		 * instead of one for each record's header and one for its body. Not before, as the
		 * kernel could not decrypt what OpenSSL had read past the handshake (ktls.h). */
		if (!c->ktls.rx)
			SSL_set_read_ahead(c->ssl, 1);
		c->readable = true; /* the peer's first request may have come with its Finished */
		return CONN_DONE;
	}
	int err = SSL_get_error(c->ssl, ret);
	if (err == SSL_ERROR_WANT_READ)
		return CONN_AGAIN;
	if (err == SSL_ERROR_WANT_WRITE) {
		c->read_wants_write = true;
		return CONN_AGAIN;
	}
	long vr = err == SSL_ERROR_SSL ? SSL_get_verify_result(c->ssl) : X509_V_OK;
	c->failure = handshake_failure(vr, err, ERR_GET_REASON(ERR_peek_error()));
	if (vr != X509_V_OK) {
		snprintf(c->error, sizeof(c->error), "certificate verify failed: %s",
			 X509_verify_cert_error_string(vr));
		ERR_clear_error();
		return CONN_ERROR;
	}
	ssl_failure(c, ret, true);
	if (!c->error[0])
		snprintf(c->error, sizeof(c->error), "handshake failed");
	return CONN_ERROR;
}

/* The kernel handed over fewer bytes than asked for, or none: the socket is drained, and the
 * level-triggered loop reports it again when more comes. */
static ssize_t conn_note_kernel_read(struct conn *c, ssize_t n, size_t len)
{
	if (n < (ssize_t)len)
		c->readable = false;
	return n;
}

ssize_t conn_read(struct conn *c, void *buf, size_t len)
{
	if (!c->ssl)
		return conn_note_kernel_read(c, read(c->fd, buf, len), len);
	if (c->ktls.rx) {
		ssize_t n = conn_note_kernel_read(c, ktls_recv(c->fd, buf, len, NULL), len);
		if (n < 0 && errno == KTLS_EKEYUPDATE)
			return 0; /* the kernel cannot follow a rekey: end the connection cleanly */
		return n;
	}
	c->read_wants_write = false;
	ERR_clear_error();
	size_t got = 0;
	int ret = SSL_read_ex(c->ssl, buf, len, &got);
	if (ret == 1) {
		/* A record at a time: while OpenSSL holds more (read ahead), go on without a read();
		 * else its last read() drained the socket or stopped at a full buffer, and the loop
		 * reports the socket again. */
		c->readable = SSL_has_pending(c->ssl);
		return (ssize_t)got;
	}
	ssize_t r = ssl_failure(c, 0, true);
	if (!c->read_wants_write)
		c->readable = false; /* WANT_READ, EOF or an error: nothing more before an event */
	return r;
}

ssize_t conn_write(struct conn *c, const void *buf, size_t len)
{
	if (!c->ssl)
		return write(c->fd, buf, len);
	if (c->ktls.tx)
		return ktls_send(c->fd, buf, len, 0);
	c->write_wants_read = false;
	ERR_clear_error();
	size_t put = 0;
	int ret = SSL_write_ex(c->ssl, buf, len, &put);
	if (ret == 1)
		return (ssize_t)put;
	int r = ssl_failure(c, 0, false);
	return r == 0 ? -1 : r; /* close_notify while writing: the peer is gone */
}

X509 *conn_peer_cert(const struct conn *c)
{
	return c->ssl ? SSL_get0_peer_certificate(c->ssl) : NULL;
}

const char *conn_tls_version(const struct conn *c)
{
	return c->ssl ? SSL_get_version(c->ssl) : "plain";
}

void conn_release_buffers(struct conn *c)
{
	if (c->ssl && SSL_free_buffers(c->ssl) != 1)
		ERR_clear_error(); /* in use: they stay */
}

void conn_close(struct conn *c)
{
	if (c->ssl) {
		if (c->ktls.tx)
			ktls_send_close_notify(c->fd);
		else if (c->handshake_done)
			SSL_shutdown(c->ssl); /* best effort; the socket is non-blocking */
		ktls_release(&c->ktls);
		ERR_clear_error();
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}
