/* X.509 helpers on OpenSSL: thumbprints, PEM input from the control socket, and the
 * trust store (client CA bundle + optional CRL) used both by the TLS context and by bind. */
#ifndef PSD2EDGE_CERT_H
#define PSD2EDGE_CERT_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "qcstatement.h"

#define CERT_THUMB_LEN 32 /* SHA-256 */
#define CERT_THUMB_HEX_LEN 64
#define CERT_MAX_PEM_BYTES (64 * 1024)

struct cert_info {
	uint8_t thumb[CERT_THUMB_LEN];
	char subject[256]; /* RFC 2253, truncated */
	char issuer[256];
	char serial[80];   /* uppercase hex */
	int64_t not_before, not_after; /* unix seconds */
	struct psd2_identity psd2; /* read by qcstatement_read(); cert_get_info() leaves it empty */
};

/* SHA-256 of the DER encoding. 0 or -1. */
int cert_thumbprint(X509 *x, uint8_t out[CERT_THUMB_LEN]);
void cert_thumb_to_hex(const uint8_t thumb[CERT_THUMB_LEN], char out[CERT_THUMB_HEX_LEN + 1]);
/* Parses 64 hex digits (either case). 0 or -1. */
int cert_thumb_from_hex(const char *hex, size_t len, uint8_t out[CERT_THUMB_LEN]);

/* Parses exactly one PEM certificate (bounded by CERT_MAX_PEM_BYTES); trailing non-PEM text is
 * refused. On failure -1 with a message in err ("not a PEM certificate", ...). */
int cert_from_pem(const char *pem, size_t len, X509 **out, char *err, size_t errlen);
int cert_get_info(X509 *x, struct cert_info *out);
/* Unix time t as ISO 8601 UTC ("2027-11-22T03:45:01Z"), the one spelling of times the daemon
 * shows. */
#define CERT_TIME_TEXT_LEN 32
void cert_time_text(int64_t t, char out[CERT_TIME_TEXT_LEN]);

struct cert_store;
/* Loads the CA bundle (all certificates in the file) and, when crl_path is non-NULL, the CRLs,
 * checked for every certificate of a chain. Each CRL must be signed by a certificate of the
 * bundle and current (lastUpdate <= now < nextUpdate), and each certificate of the bundle must
 * have a CRL. -1 with err naming the file and the reason on failure. */
int cert_store_load(const char *ca_path, const char *crl_path, struct cert_store **out, char *err,
		    size_t errlen);
void cert_store_free(struct cert_store *s);
/* The underlying store (for SSL_CTX_set1_verify_cert_store); owned by s. */
X509_STORE *cert_store_x509(struct cert_store *s);
/* Unix time from which a verdict of the store may change with nothing but the clock: the
 * earliest nextUpdate of its CRLs and notAfter of its certificates valid at load (INT64_MAX
 * when none). A chain that verified before it, through certificates valid then, verifies until
 * then, unless its own leaf expires first. */
int64_t cert_store_good_until(const struct cert_store *s);
/* The OpenSSL security level of every TLS context and of cert_store_verify: level 2 refuses
 * keys of less than 112 bits of security (RSA and DH below 2048 bits, EC below 224) and SHA-1
 * signatures, in the handshake and in certificate chains. Always set explicitly, so that the
 * host's openssl.cnf (CipherString = ...@SECLEVEL=N) cannot lower it. */
#define CERT_SECURITY_LEVEL 2

enum cert_verdict {
	CERT_VERIFY_OK = 0,
	CERT_VERIFY_UNTRUSTED = -1, /* no chain to the store, expired, wrong purpose... */
	CERT_VERIFY_REVOKED = -2,   /* listed in the store's CRL */
	CERT_VERIFY_WEAK = -3,      /* a key or signature in the chain is below CERT_SECURITY_LEVEL */
};
/* Full chain verification of x at time now (purpose: TLS client) with the checks the handshake
 * makes at CERT_SECURITY_LEVEL. On failure the OpenSSL reason is in err ("certificate has
 * expired", "unable to get local issuer certificate", "EE certificate key too weak", ...). */
enum cert_verdict cert_store_verify(struct cert_store *s, X509 *x, time_t now, char *err,
				    size_t errlen);

#endif
