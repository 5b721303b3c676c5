#include "tls.h"

#include "ktls.h"

#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "stats.h"

void tls_error_string(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char reason[256] = "unknown error";
	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	snprintf(err, errlen, "%s: %s", what, reason);
	ERR_clear_error();
}

static SSL_CTX *ctx_new_common(const SSL_METHOD *method, char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(method);
	if (!ctx) {
		tls_error_string(err, errlen, "SSL_CTX_new");
		return NULL;
	}
	/* Everything the policy depends on is set here, over whatever the host's openssl.cnf
	 * applied in SSL_CTX_new(). */
	SSL_CTX_set_security_level(ctx, CERT_SECURITY_LEVEL);
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
					 SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_TICKET |
					 SSL_OP_IGNORE_UNEXPECTED_EOF);
	/* Output buffers grow with realloc, so a retried SSL_write may see a moved pointer. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TLS_CIPHERS_13) != 1 ||
	    SSL_CTX_set1_sigalgs_list(ctx, TLS_SIGALGS) != 1 ||
	    SSL_CTX_set1_client_sigalgs_list(ctx, TLS_SIGALGS) != 1) {
		tls_error_string(err, errlen, "cipher and signature algorithm configuration");
		SSL_CTX_free(ctx);
		return NULL;
	}
	if (ktls_ctx_setup(ctx) < 0) {
		tls_error_string(err, errlen, "kTLS setup");
		SSL_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

static int ctx_load_keypair(SSL_CTX *ctx, const char *cert, const char *key, const char *what,
			    char *err, size_t errlen)
{
	char label[64];
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(label, sizeof(label), "%s.cert", what);
		tls_error_string(err, errlen, label);
		return -1;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		snprintf(label, sizeof(label), "%s.key", what);
		tls_error_string(err, errlen, label);
		return -1;
	}
	return 0;
}

SSL_CTX *tls_server_ctx_new(const struct config *cfg, struct cert_store *trust, char *err,
			    size_t errlen)
{
	SSL_CTX *ctx = ctx_new_common(TLS_server_method(), err, errlen);
	if (!ctx)
		return NULL;
	if (ctx_load_keypair(ctx, cfg->tls.cert, cfg->tls.key, "tls", err, errlen) < 0)
		goto fail;
	/* DHE suites are on FAPI's list; let OpenSSL pick group sizes matching the key. */
	SSL_CTX_set_dh_auto(ctx, 1);
	if (SSL_CTX_set1_verify_cert_store(ctx, cert_store_x509(trust)) != 1) {
		tls_error_string(err, errlen, "tls.client_ca");
		goto fail;
	}
	STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(cfg->tls.client_ca);
	if (!names) {
		tls_error_string(err, errlen, "tls.client_ca");
		goto fail;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	/* TLS 1.3 tickets cost ~0.5 ms per handshake on OpenSSL 3.0 and would consume record
	 * sequence numbers before kTLS takes over; no resumption until it is measured. */
	SSL_CTX_set_num_tickets(ctx, 0);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

SSL_CTX *tls_upstream_ctx_new(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx = ctx_new_common(TLS_client_method(), err, errlen);
	if (!ctx)
		return NULL;
	if (SSL_CTX_load_verify_locations(ctx, cfg->upstream.ca, NULL) != 1) {
		tls_error_string(err, errlen, "upstream.ca");
		goto fail;
	}
	if (cfg->upstream.cert &&
	    ctx_load_keypair(ctx, cfg->upstream.cert, cfg->upstream.key, "upstream", err, errlen) < 0)
		goto fail;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

struct tls_fastpath {
	struct registry *reg;
	uint8_t (*excluded)[CERT_THUMB_LEN]; /* bound certificates that failed re-verification */
	size_t n_excluded, cap_excluded;
	struct cert_store *trust;
	int failures;
};

static bool fastpath_excluded(const struct tls_fastpath *fp, const uint8_t *thumb)
{
	for (size_t i = 0; i < fp->n_excluded; i++)
		if (memcmp(fp->excluded[i], thumb, CERT_THUMB_LEN) == 0)
			return true;
	return false;
}

static int fastpath_verify(X509_STORE_CTX *xctx, void *arg)
{
	const struct tls_fastpath *fp = arg;
	X509 *leaf = X509_STORE_CTX_get0_cert(xctx);
	uint8_t thumb[CERT_THUMB_LEN];
	struct registry_binding b;
	if (leaf && cert_thumbprint(leaf, thumb) == 0 &&
	    registry_lookup(fp->reg, thumb, &b) == REG_OK &&
	    registry_binding_usability(&b, time(NULL)) == BINDING_USABLE &&
	    !fastpath_excluded(fp, thumb)) {
		STATS_INC(verify_fast_path);
		X509_STORE_CTX_set_error(xctx, X509_V_OK);
		return 1;
	}
	STATS_INC(verify_full_path);
	return X509_verify_cert(xctx);
}

static void fastpath_recheck(void *arg, const struct registry_cert *c, const char *pem)
{
	struct tls_fastpath *fp = arg;
	char why[256];
	X509 *x = NULL;
	if (cert_from_pem(pem, strlen(pem), &x, why, sizeof(why)) == 0 &&
	    cert_store_verify(fp->trust, x, time(NULL), why, sizeof(why)) == CERT_VERIFY_OK) {
		X509_free(x);
		return;
	}
	X509_free(x);
	char hex[CERT_THUMB_HEX_LEN + 1];
	cert_thumb_to_hex(c->info.thumb, hex);
	log_warn("certificate %s of client %s no longer verifies against tls.client_ca/tls.crl "
		 "(%s): its handshakes take the full path",
		 hex, c->client_id, why);
	if (fp->n_excluded == fp->cap_excluded) {
		size_t cap = fp->cap_excluded ? fp->cap_excluded * 2 : 8;
		void *p = realloc(fp->excluded, cap * sizeof(*fp->excluded));
		if (!p) {
			fp->failures++;
			return;
		}
		fp->excluded = p;
		fp->cap_excluded = cap;
	}
	memcpy(fp->excluded[fp->n_excluded++], c->info.thumb, CERT_THUMB_LEN);
}

int tls_fastpath_enable(SSL_CTX *ctx, struct registry *reg, struct cert_store *trust,
			struct tls_fastpath **out, char *err, size_t errlen)
{
	struct tls_fastpath *fp = calloc(1, sizeof(*fp));
	if (!fp) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	fp->reg = reg;
	fp->trust = trust;
	if (registry_foreach_active_cert(reg, fastpath_recheck, fp) < 0 || fp->failures) {
		snprintf(err, errlen, "cannot re-verify the bound certificates");
		tls_fastpath_free(fp);
		return -1;
	}
	fp->trust = NULL; /* only needed for the re-verification */
	SSL_CTX_set_cert_verify_callback(ctx, fastpath_verify, fp);
	*out = fp;
	return 0;
}

void tls_fastpath_free(struct tls_fastpath *fp)
{
	if (!fp)
		return;
	free(fp->excluded);
	free(fp);
}
