/* TLS contexts: the TPP-facing server context (mTLS, FAPI cipher list) and the bank-facing
 * client context (the gateway's QWAC, bank CA bundle). Built once at start and shared by every
 * worker (SSL_CTX is thread-safe for SSL_new). */
#ifndef PSD2EDGE_TLS_H
#define PSD2EDGE_TLS_H

#include <openssl/ssl.h>
#include <stddef.h>

#include "cert.h"
#include "config.h"
#include "registry.h"

/* TLS 1.2 suites: FAPI 1.0 Advanced's list for RSA keys plus the ECDHE-ECDSA AES-GCM suites
 * that BCP 195 recommends for ECDSA keys. TLS 1.3: AES-GCM only, so kTLS can take every
 * connection. */
#define TLS_CIPHERS_12 \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:" \
	"ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:" \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
#define TLS_CIPHERS_13 "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384"
/* Signature algorithms, for the handshake and for client certificates, in both contexts (FAPI,
 * BCP 195): ECDSA, RSA-PSS and RSA PKCS#1 v1.5 with SHA-2 only. OpenSSL never uses PKCS#1 v1.5
 * for a TLS 1.3 CertificateVerify; it stays for TLS 1.2 and for certificate signatures. */
#define TLS_SIGALGS \
	"ECDSA+SHA256:ECDSA+SHA384:ECDSA+SHA512:" \
	"rsa_pss_rsae_sha256:rsa_pss_rsae_sha384:rsa_pss_rsae_sha512:" \
	"rsa_pss_pss_sha256:rsa_pss_pss_sha384:rsa_pss_pss_sha512:" \
	"RSA+SHA256:RSA+SHA384:RSA+SHA512"

/* Server context requiring a client certificate that chains to trust (CA bundle + CRL). */
SSL_CTX *tls_server_ctx_new(const struct config *cfg, struct cert_store *trust, char *err,
			    size_t errlen);
/* Handshake fast path: a certificate bound in the registry, active and within its validity is
 * accepted by exact thumbprint without building its chain again. Its chain was verified against
 * the same trust store when it was bound; certificates bound earlier are verified once more
 * here, and those that no longer pass (new CRL, changed CA bundle) always take the full path.
 * CertificateVerify still proves possession of the key. Unknown certificates take the full
 * path and then get the HTTP-level 401. */
struct tls_fastpath;
int tls_fastpath_enable(SSL_CTX *ctx, struct registry *reg, struct cert_store *trust,
			struct tls_fastpath **out, char *err, size_t errlen);
void tls_fastpath_free(struct tls_fastpath *fp);

/* Client context for an https upstream; NULL with err on failure, naming key (the upstream's
 * key path, e.g. "upstreams.payments"). */
SSL_CTX *tls_upstream_ctx_new(const struct config_upstream *u, const char *key, char *err,
			      size_t errlen);
/* Appends the first queued OpenSSL error (or "unknown error") to err and clears the queue. */
void tls_error_string(char *err, size_t errlen, const char *what);

#endif
