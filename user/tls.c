#include "tls.h"

#include "ktls.h"

#include <openssl/core_dispatch.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/provider.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "metrics.h"

void tls_error_string(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char reason[256] = "unknown error";
	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	snprintf(err, errlen, "%s: %s", what, reason);
	ERR_clear_error();
}

/* The TPP-facing context's library context. OpenSSL 3.0 decodes the public key of every
 * certificate a client sends (d2i_X509) through a decoder context that it builds anew from every
 * decoder and key manager the library context offers, walking all the algorithms fetched into
 * it: about a quarter of the server's CPU per handshake with the default library context. This
 * one offers the default provider's own algorithms through a filter that keeps, of the decoders,
 * only those of a SubjectPublicKeyInfo, of the key managers only the key types a handshake under
 * the TLS policy can use, and of the ciphers only those of TLS_CIPHERS_12 and TLS_CIPHERS_13
 * (so session tickets, were they turned on, would find no AES-CBC to seal them with). Keys of
 * other types (DSA, Ed25519, SM2) could not sign a CertificateVerify with TLS_SIGALGS anyway:
 * their certificates get no public key here and the handshake fails. Every other operation
 * passes unchanged. */
static const char *const handshake_key_types[] = {"EC", "RSA", "RSA-PSS", "X25519", "X448", "DH",
						  NULL};
static const char *const handshake_ciphers[] = {"AES-128-GCM", "AES-256-GCM", NULL};

static struct {
	OSSL_PROVIDER *dflt; /* the default provider, in a library context of its own */
	OSSL_ALGORITHM decoders[16], keymgmts[16], ciphers[4];
	OSSL_LIB_CTX *libctx; /* offers dflt's algorithms through filtered_query */
} g_handshake_lib;
static pthread_once_t g_handshake_lib_once = PTHREAD_ONCE_INIT;

/* Whether the first of an algorithm's colon-separated names is in the NULL-terminated list. */
static bool first_name_in(const char *names, const char *const *list)
{
	size_t len = strcspn(names, ":");
	for (; *list; list++)
		if (strlen(*list) == len && strncmp(names, *list, len) == 0)
			return true;
	return false;
}

static bool keep_decoder(const OSSL_ALGORITHM *a)
{
	/* "DER" turns a SubjectPublicKeyInfo of a yet unknown type into the typed one. */
	return strstr(a->property_definition, "structure=SubjectPublicKeyInfo") &&
	       (first_name_in(a->algorithm_names, handshake_key_types) ||
		strcmp(a->algorithm_names, "DER") == 0);
}

static bool keep_keymgmt(const OSSL_ALGORITHM *a)
{
	return first_name_in(a->algorithm_names, handshake_key_types);
}

static bool keep_cipher(const OSSL_ALGORITHM *a)
{
	return first_name_in(a->algorithm_names, handshake_ciphers);
}

/* Copies the default provider's algorithms of operation op that keep() accepts into out
 * (NULL-terminated). -1 when none is left or they do not fit. */
static int filter_algorithms(int op, bool (*keep)(const OSSL_ALGORITHM *), OSSL_ALGORITHM *out,
			     size_t cap)
{
	int no_cache;
	const OSSL_ALGORITHM *a = OSSL_PROVIDER_query_operation(g_handshake_lib.dflt, op, &no_cache);
	size_t n = 0;
	for (; a && a->algorithm_names; a++) {
		if (!keep(a))
			continue;
		if (n + 1 >= cap)
			return -1;
		out[n++] = *a;
	}
	memset(&out[n], 0, sizeof(out[n]));
	return n ? 0 : -1;
}

static const OSSL_ALGORITHM *filtered_query(void *provctx, int op, int *no_cache)
{
	(void)provctx;
	*no_cache = 0;
	switch (op) {
	case OSSL_OP_DECODER: return g_handshake_lib.decoders;
	case OSSL_OP_KEYMGMT: return g_handshake_lib.keymgmts;
	case OSSL_OP_CIPHER: return g_handshake_lib.ciphers;
	case OSSL_OP_ENCODER:
	case OSSL_OP_STORE: return NULL;
	default: {
		int dflt_no_cache;
		return OSSL_PROVIDER_query_operation(g_handshake_lib.dflt, op, &dflt_no_cache);
	}
	}
}

/* The TLS groups (TLS-GROUP) libssl discovers. */
static int filtered_get_capabilities(void *provctx, const char *capability, OSSL_CALLBACK *cb,
				     void *arg)
{
	(void)provctx;
	return OSSL_PROVIDER_get_capabilities(g_handshake_lib.dflt, capability, cb, arg);
}

static const OSSL_DISPATCH filtered_dispatch[] = {
	{OSSL_FUNC_PROVIDER_QUERY_OPERATION, (void (*)(void))filtered_query},
	{OSSL_FUNC_PROVIDER_GET_CAPABILITIES, (void (*)(void))filtered_get_capabilities},
	{0, NULL},
};

static int filtered_provider_init(const OSSL_CORE_HANDLE *handle, const OSSL_DISPATCH *in,
				  const OSSL_DISPATCH **out, void **provctx)
{
	(void)handle;
	(void)in;
	/* The default provider's functions get its own context, as if called through it. */
	*provctx = OSSL_PROVIDER_get0_provider_ctx(g_handshake_lib.dflt);
	*out = filtered_dispatch;
	return 1;
}

/* Built once and kept for the process's life: a reloaded configuration reuses it. */
static void handshake_lib_init(void)
{
	OSSL_LIB_CTX *dflt_lib = OSSL_LIB_CTX_new(), *lib = OSSL_LIB_CTX_new();
#define FILTER(op, keep, field) \
	filter_algorithms(op, keep, g_handshake_lib.field, \
			  sizeof(g_handshake_lib.field) / sizeof(*g_handshake_lib.field))
	if (!dflt_lib || !lib || !(g_handshake_lib.dflt = OSSL_PROVIDER_load(dflt_lib, "default")) ||
	    FILTER(OSSL_OP_DECODER, keep_decoder, decoders) < 0 ||
	    FILTER(OSSL_OP_KEYMGMT, keep_keymgmt, keymgmts) < 0 ||
	    FILTER(OSSL_OP_CIPHER, keep_cipher, ciphers) < 0 ||
	    OSSL_PROVIDER_add_builtin(lib, "psd2edge-handshake", filtered_provider_init) != 1 ||
	    !OSSL_PROVIDER_load(lib, "psd2edge-handshake")) {
		OSSL_PROVIDER_unload(g_handshake_lib.dflt);
		g_handshake_lib.dflt = NULL;
		OSSL_LIB_CTX_free(lib);
		OSSL_LIB_CTX_free(dflt_lib);
		return;
	}
#undef FILTER
	g_handshake_lib.libctx = lib;
}

static SSL_CTX *ctx_new_common(OSSL_LIB_CTX *libctx, const SSL_METHOD *method, char *err,
			       size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new_ex(libctx, NULL, method);
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

/* Errors name the key and the file: a reload reports them about files the configuration
 * check never saw. */
static int ctx_load_keypair(SSL_CTX *ctx, const char *cert, const char *key, const char *what,
			    char *err, size_t errlen)
{
	char label[PATH_MAX + CONFIG_NAME_MAX + 32];
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		snprintf(label, sizeof(label), "%s.cert (%s)", what, cert);
		tls_error_string(err, errlen, label);
		return -1;
	}
	/* Read in the default library context: the server context's has no PEM decoders. */
	BIO *bio = BIO_new_file(key, "r");
	EVP_PKEY *pkey = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	int ok = pkey && SSL_CTX_use_PrivateKey(ctx, pkey) == 1 && SSL_CTX_check_private_key(ctx) == 1;
	EVP_PKEY_free(pkey);
	if (!ok) {
		snprintf(label, sizeof(label), "%s.key (%s)", what, key);
		tls_error_string(err, errlen, label);
		return -1;
	}
	return 0;
}

SSL_CTX *tls_server_ctx_new(const struct config *cfg, struct cert_store *trust, char *err,
			    size_t errlen)
{
	pthread_once(&g_handshake_lib_once, handshake_lib_init);
	if (!g_handshake_lib.libctx) {
		tls_error_string(err, errlen, "library context for client certificates");
		return NULL;
	}
	SSL_CTX *ctx = ctx_new_common(g_handshake_lib.libctx, TLS_server_method(), err, errlen);
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

SSL_CTX *tls_upstream_ctx_new(const struct config_upstream *u, const char *key, char *err,
			      size_t errlen)
{
	SSL_CTX *ctx = ctx_new_common(NULL, TLS_client_method(), err, errlen);
	if (!ctx)
		return NULL;
	if (SSL_CTX_load_verify_locations(ctx, u->ca, NULL) != 1) {
		char ca_key[PATH_MAX + CONFIG_NAME_MAX + 32];
		snprintf(ca_key, sizeof(ca_key), "%s.ca (%s)", key, u->ca);
		tls_error_string(err, errlen, ca_key);
		goto fail;
	}
	if (u->cert && ctx_load_keypair(ctx, u->cert, u->key, key, err, errlen) < 0)
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
	int64_t good_until; /* cert_store_good_until() of the store they were verified against */
	/* During re-verification only: */
	struct cert_store *trust;
	tls_fastpath_reject_fn *on_reject;
	void *arg;
	int failures;
};

static bool fastpath_excluded(const struct tls_fastpath *fp, const uint8_t *thumb)
{
	for (size_t i = 0; i < fp->n_excluded; i++)
		if (memcmp(fp->excluded[i], thumb, CERT_THUMB_LEN) == 0)
			return true;
	return false;
}

/* The clock is checked against good_until as well as the binding's validity: once a CRL or a
 * CA of the store expires, the full path refuses the chains that go through it, so none of
 * them may pass here either. */
static bool fastpath_accepts(const struct tls_fastpath *fp, X509 *leaf, int64_t now)
{
	uint8_t thumb[CERT_THUMB_LEN];
	struct registry_binding b;
	return leaf && now < fp->good_until && cert_thumbprint(leaf, thumb) == 0 &&
	       registry_lookup(fp->reg, thumb, &b) == REG_OK &&
	       registry_binding_usability(&b, now) == BINDING_USABLE && !fastpath_excluded(fp, thumb);
}

static int fastpath_verify(X509_STORE_CTX *xctx, void *arg)
{
	if (fastpath_accepts(arg, X509_STORE_CTX_get0_cert(xctx), (int64_t)time(NULL))) {
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
	fp->on_reject(fp->arg, c, why);
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

static void fastpath_free(struct tls_fastpath *fp)
{
	if (!fp)
		return;
	free(fp->excluded);
	free(fp);
}

/* The fast path lives as long as its context: a handshake that started on a context a reload
 * replaced still calls back into it. */
static int g_fastpath_index = -1;
static pthread_once_t g_fastpath_index_once = PTHREAD_ONCE_INIT;

static void fastpath_ex_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			     void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	fastpath_free(ptr);
}

static void fastpath_index_init(void)
{
	g_fastpath_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, fastpath_ex_free);
}

int tls_fastpath_enable(SSL_CTX *ctx, struct registry *reg, struct cert_store *trust,
			tls_fastpath_reject_fn *on_reject, void *arg, char *err, size_t errlen)
{
	pthread_once(&g_fastpath_index_once, fastpath_index_init);
	struct tls_fastpath *fp = calloc(1, sizeof(*fp));
	if (!fp || g_fastpath_index < 0) {
		snprintf(err, errlen, "out of memory");
		free(fp);
		return -1;
	}
	fp->reg = reg;
	fp->trust = trust;
	fp->on_reject = on_reject;
	fp->arg = arg;
	fp->good_until = cert_store_good_until(trust);
	if (registry_foreach_active_cert(reg, fastpath_recheck, fp) < 0 || fp->failures) {
		snprintf(err, errlen, "cannot re-verify the bound certificates");
		fastpath_free(fp);
		return -1;
	}
	fp->trust = NULL;
	fp->on_reject = NULL;
	fp->arg = NULL;
	if (SSL_CTX_set_ex_data(ctx, g_fastpath_index, fp) != 1) {
		snprintf(err, errlen, "out of memory");
		fastpath_free(fp);
		return -1;
	}
	SSL_CTX_set_cert_verify_callback(ctx, fastpath_verify, fp);
	return 0;
}

bool tls_fastpath_accepts(SSL_CTX *ctx, X509 *leaf, int64_t now)
{
	const struct tls_fastpath *fp =
		g_fastpath_index < 0 ? NULL : SSL_CTX_get_ex_data(ctx, g_fastpath_index);
	return fp && fastpath_accepts(fp, leaf, now);
}
