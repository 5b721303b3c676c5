/* TLS contexts: the TPP-facing server context (mTLS, FAPI cipher list) and the bank-facing
 * client context (the gateway's QWAC, bank CA bundle). Built once at start and shared by every
 * worker (SSL_CTX is thread-safe for SSL_new). */
#ifndef PSD2EDGE_TLS_H
#define PSD2EDGE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "cert.h"
#include "config.h"

/* TLS 1.2 suites: FAPI 1.0 Advanced's list for RSA keys plus the ECDHE-ECDSA AES-GCM suites
 * that BCP 195 recommends for ECDSA keys. TLS 1.3: AES-GCM only, so kTLS can take every
 * connection. */
#define TLS_CIPHERS_12 \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
	"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:" \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
#define TLS_CIPHERS_13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"

/* Server context requiring a client certificate that chains to trust (CA bundle + CRL). */
SSL_CTX *tls_server_ctx_new(const struct config *cfg, struct cert_store *trust, char *err,
			    size_t errlen);
/* Client context for an https upstream; NULL with err on failure. */
SSL_CTX *tls_upstream_ctx_new(const struct config *cfg, char *err, size_t errlen);
/* Appends the first queued OpenSSL error (or "unknown error") to err and clears the queue. */
void tls_error_string(char *err, size_t errlen, const char *what);

#endif
