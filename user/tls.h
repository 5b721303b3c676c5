/* TLS contexts: the TPP-facing server context (mTLS, FAPI cipher list) and the bank-facing
 * client context (the gateway's QWAC, bank CA bundle). Built at start and again at each reload,
 * and shared by every worker (SSL_CTX is thread-safe for SSL_new; each SSL holds a reference to
 * its context, so a replaced one lives on with the connections made from it). */
#ifndef PSD2EDGE_TLS_H
#define PSD2EDGE_TLS_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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
 * accepted by exact thumbprint without building its chain again, but never one the full path
 * would refuse. Its chain was verified against the trust store when it was bound; certificates
 * bound earlier are verified once more here (on_reject is called, with the reason, for each one
 * that no longer passes: a new CRL, a changed CA bundle, a key below the security level), and
 * those always take the full path. Once a CRL or a CA certificate of the store is past its time
 * (cert_store_good_until), every handshake takes the full path. CertificateVerify still proves
 * possession of the key. Unknown certificates take the full path and then get the HTTP-level
 * 401. From a successful return on, ctx owns the fast path: it goes with ctx's last reference.
 * trust must be the store ctx verifies with. */
typedef void tls_fastpath_reject_fn(void *arg, const struct registry_cert *c, const char *why);
int tls_fastpath_enable(SSL_CTX *ctx, struct registry *reg, struct cert_store *trust,
			tls_fastpath_reject_fn *on_reject, void *arg, char *err, size_t errlen);
/* Whether ctx's fast path accepts leaf at unix time now; false: the full path decides. */
bool tls_fastpath_accepts(SSL_CTX *ctx, X509 *leaf, int64_t now);

/* Client context for an https upstream; NULL with err on failure, naming key (the upstream's
 * key path, e.g. "upstreams.payments"). */
SSL_CTX *tls_upstream_ctx_new(const struct config_upstream *u, const char *key, char *err,
			      size_t errlen);
/* Appends the first queued OpenSSL error (or "unknown error") to err and clears the queue. */
void tls_error_string(char *err, size_t errlen, const char *what);

#endif
