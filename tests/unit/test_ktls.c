/* ktls: key derivation checked against OpenSSL's own records (in-memory handshakes, decrypt
 * what OpenSSL encrypted with the keys we would hand the kernel), keylog capture, fallback
 * accounting when the kernel has no TLS ULP, and the reasons' names. Runs without kTLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <linux/tls.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <string.h>

#include "ktls.h"

static EVP_PKEY *g_key;
static X509 *g_cert;

static int setup_pki(void **state)
{
	(void)state;
	g_key = EVP_EC_gen("P-256");
	g_cert = X509_new();
	if (!g_key || !g_cert)
		return -1;
	X509_set_version(g_cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(g_cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(g_cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(g_cert), 3600);
	X509_NAME *n = X509_get_subject_name(g_cert);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"ktls", -1, -1, 0);
	X509_set_issuer_name(g_cert, n);
	X509_set_pubkey(g_cert, g_key);
	return X509_sign(g_cert, g_key, EVP_sha256()) > 0 ? 0 : -1;
}

static int teardown_pki(void **state)
{
	(void)state;
	X509_free(g_cert);
	EVP_PKEY_free(g_key);
	return 0;
}

struct pair {
	SSL_CTX *sctx, *cctx;
	SSL *s, *c;
	BIO *s_in, *s_out, *c_in, *c_out; /* memory BIOs: s_out feeds c_in, c_out feeds s_in */
};

static void shuttle(BIO *from, BIO *to)
{
	char buf[16384];
	int n;
	while ((n = BIO_read(from, buf, sizeof(buf))) > 0)
		assert_int_equal(BIO_write(to, buf, n), n);
}

static void pair_open(struct pair *p, int version, const char *cipher)
{
	memset(p, 0, sizeof(*p));
	assert_true(ktls_kernel_available() || true); /* initialises the ex_data index */
	p->sctx = SSL_CTX_new(TLS_server_method());
	p->cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(p->sctx);
	assert_non_null(p->cctx);
	assert_int_equal(SSL_CTX_use_certificate(p->sctx, g_cert), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(p->sctx, g_key), 1);
	/* What ktls_ctx_setup does when the kernel has kTLS; the host has none. */
	SSL_CTX_set_keylog_callback(p->sctx, ktls_keylog_cb);
	SSL_CTX_set_keylog_callback(p->cctx, ktls_keylog_cb);
	SSL_CTX_set_num_tickets(p->sctx, 0);
	for (SSL_CTX *ctx = p->sctx; ctx; ctx = ctx == p->sctx ? p->cctx : NULL) {
		SSL_CTX_set_min_proto_version(ctx, version);
		SSL_CTX_set_max_proto_version(ctx, version);
		if (version == TLS1_3_VERSION)
			assert_int_equal(SSL_CTX_set_ciphersuites(ctx, cipher), 1);
		else
			assert_int_equal(SSL_CTX_set_cipher_list(ctx, cipher), 1);
	}
	p->s = SSL_new(p->sctx);
	p->c = SSL_new(p->cctx);
	p->s_in = BIO_new(BIO_s_mem());
	p->s_out = BIO_new(BIO_s_mem());
	p->c_in = BIO_new(BIO_s_mem());
	p->c_out = BIO_new(BIO_s_mem());
	SSL_set_bio(p->s, p->s_in, p->s_out);
	SSL_set_bio(p->c, p->c_in, p->c_out);
	SSL_set_accept_state(p->s);
	SSL_set_connect_state(p->c);
	int sdone = 0, cdone = 0;
	for (int i = 0; i < 20 && !(sdone && cdone); i++) {
		if (!cdone)
			cdone = SSL_do_handshake(p->c) == 1;
		shuttle(p->c_out, p->s_in);
		if (!sdone)
			sdone = SSL_do_handshake(p->s) == 1;
		shuttle(p->s_out, p->c_in);
	}
	assert_true(sdone && cdone);
	assert_int_equal(SSL_version(p->s), version);
}

static void pair_close(struct pair *p)
{
	SSL_free(p->s);
	SSL_free(p->c);
	SSL_CTX_free(p->sctx);
	SSL_CTX_free(p->cctx);
}

/* Decrypts one TLS record (AES-GCM) with a kernel crypto_info; returns plaintext length. */
static int open_record(const void *info, int version, uint64_t seq, const unsigned char *rec,
		       size_t reclen, unsigned char *out)
{
	const struct tls_crypto_info *ci = info;
	const unsigned char *key, *salt, *iv;
	size_t keylen;
	if (ci->cipher_type == TLS_CIPHER_AES_GCM_128) {
		const struct tls12_crypto_info_aes_gcm_128 *g = info;
		key = g->key, salt = g->salt, iv = g->iv, keylen = 16;
	} else {
		const struct tls12_crypto_info_aes_gcm_256 *g = info;
		key = g->key, salt = g->salt, iv = g->iv, keylen = 32;
	}
	unsigned char nonce[12], aad[13];
	size_t aadlen, off;
	memcpy(nonce, salt, 4);
	if (version == TLS1_3_VERSION) {
		memcpy(nonce + 4, iv, 8);
		for (int i = 0; i < 8; i++)
			nonce[11 - i] ^= (unsigned char)(seq >> (8 * i));
		memcpy(aad, rec, 5);
		aadlen = 5;
		off = 5;
	} else {
		memcpy(nonce + 4, rec + 5, 8); /* explicit nonce */
		size_t plen = reclen - 5 - 8 - 16;
		for (int i = 0; i < 8; i++)
			aad[7 - i] = (unsigned char)(seq >> (8 * i));
		memcpy(aad + 8, rec, 3);
		aad[11] = (unsigned char)(plen >> 8);
		aad[12] = (unsigned char)plen;
		aadlen = 13;
		off = 13;
	}
	size_t ctlen = reclen - off - 16;
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int len = 0, fin = 0, ok;
	ok = EVP_DecryptInit_ex(ctx, keylen == 16 ? EVP_aes_128_gcm() : EVP_aes_256_gcm(), NULL,
				key, nonce) == 1 &&
	     EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aadlen) == 1 &&
	     EVP_DecryptUpdate(ctx, out, &len, rec + off, (int)ctlen) == 1 &&
	     EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)(rec + off + ctlen)) == 1 &&
	     EVP_DecryptFinal_ex(ctx, out + len, &fin) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok ? len + fin : -1;
}

/* One application record written by `from`, decrypted with to's read keys and from's write
 * keys as ktls_crypto_info computes them. */
static void check_direction(SSL *from, BIO *from_out, SSL *to, int version, uint64_t seq)
{
	static const char msg[] = "PSD2 payload over kTLS";
	unsigned char rec[512], pt[512];
	union {
		struct tls12_crypto_info_aes_gcm_128 a;
		struct tls12_crypto_info_aes_gcm_256 b;
	} wr, rd;
	enum ktls_reason why;
	assert_int_equal(SSL_write(from, msg, sizeof(msg)), sizeof(msg));
	int n = BIO_read(from_out, rec, sizeof(rec));
	assert_true(n > 5);
	assert_int_equal(rec[0], 23);
	int size = ktls_crypto_info(from, true, seq, &wr, sizeof(wr), &why);
	assert_true(size > 0);
	assert_int_equal(why, KTLS_OK);
	assert_int_equal(ktls_crypto_info(to, false, seq, &rd, sizeof(rd), &why), size);
	/* Same keys both ends; TLS 1.2's explicit nonce (iv) only matters for writing. */
	if (version == TLS1_3_VERSION)
		assert_memory_equal(&wr, &rd, (size_t)size);
	else
		assert_memory_equal(wr.a.key, rd.a.key, size == sizeof(wr.a) ? 16 : 32);
	int m = open_record(&rd, version, seq, rec, (size_t)n, pt);
	if (version == TLS1_3_VERSION) {
		assert_int_equal(m, sizeof(msg) + 1);
		assert_int_equal(pt[sizeof(msg)], 23); /* inner content type */
	} else {
		assert_int_equal(m, sizeof(msg));
	}
	assert_memory_equal(pt, msg, sizeof(msg));
}

static void run_pair(int version, const char *cipher)
{
	struct pair p;
	pair_open(&p, version, cipher);
	uint64_t seq = version == TLS1_3_VERSION ? 0 : 1;
	check_direction(p.s, p.s_out, p.c, version, seq);
	check_direction(p.c, p.c_out, p.s, version, seq);
	pair_close(&p);
}

static void test_tls13_aes128(void **state)
{
	(void)state;
	run_pair(TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256");
}

static void test_tls13_aes256(void **state)
{
	(void)state;
	run_pair(TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384");
}

static void test_tls12_aes128(void **state)
{
	(void)state;
	run_pair(TLS1_2_VERSION, "ECDHE-ECDSA-AES128-GCM-SHA256");
}

static void test_tls12_aes256(void **state)
{
	(void)state;
	run_pair(TLS1_2_VERSION, "ECDHE-ECDSA-AES256-GCM-SHA384");
}

static void test_unsupported_cipher(void **state)
{
	(void)state;
	struct pair p;
	unsigned char buf[128];
	enum ktls_reason why;
	pair_open(&p, TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256");
	assert_int_equal(ktls_crypto_info(p.s, true, 0, buf, sizeof(buf), &why), -1);
	assert_int_equal(why, KTLS_BAD_CIPHER);
	pair_close(&p);
}

/* ktls_enable never fails the connection: without kernel support (the host) both
 * directions fall back with the kernel reason, counted once per connection, and the
 * captured secrets are wiped. */
static void test_enable_fallback_counts(void **state)
{
	(void)state;
	struct pair p;
	struct ktls_counters before, after;
	struct ktls_state st;
	enum ktls_reason why;
	unsigned char buf[128];
	pair_open(&p, TLS1_3_VERSION, "TLS_AES_128_GCM_SHA256");
	ktls_counters_read(&before);
	assert_int_equal(ktls_enable(p.s, -1, &st), 0);
	ktls_counters_read(&after);
	assert_false(st.tx);
	assert_false(st.rx);
	enum ktls_reason expect = ktls_kernel_available() ? KTLS_NOT_SOCKET : KTLS_NO_KERNEL;
	if (getenv("PSD2EDGE_KTLS") && strcmp(getenv("PSD2EDGE_KTLS"), "0") == 0)
		expect = KTLS_DISABLED;
	assert_int_equal(st.tx_reason, expect);
	assert_int_equal(st.rx_reason, expect);
	assert_int_equal(st.reason, expect);
	assert_int_equal(after.connections, before.connections + 1);
	assert_int_equal(after.fallback, before.fallback + 1);
	assert_int_equal(after.fallback_by[expect], before.fallback_by[expect] + 1);
	assert_int_equal(after.tx, before.tx);
	/* Secrets are gone after ktls_enable. */
	assert_int_equal(ktls_crypto_info(p.s, true, 0, buf, sizeof(buf), &why), -1);
	assert_int_equal(why, KTLS_NO_SECRETS);
	ktls_release(&st);
	ktls_release(&st);
	pair_close(&p);
}

static void test_reason_names(void **state)
{
	(void)state;
	assert_string_equal(ktls_reason_name(KTLS_NO_KERNEL), "kernel has no TLS ULP");
	assert_string_equal(ktls_reason_key(KTLS_BAD_CIPHER), "cipher");
	assert_string_equal(ktls_reason_name((enum ktls_reason)999), "unknown");
}

static void test_recv_small_buffer(void **state)
{
	(void)state;
	char buf[8];
	errno = 0;
	assert_int_equal(ktls_recv(0, buf, sizeof(buf), NULL), -1);
	assert_int_equal(errno, EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tls13_aes128),
		cmocka_unit_test(test_tls13_aes256),
		cmocka_unit_test(test_tls12_aes128),
		cmocka_unit_test(test_tls12_aes256),
		cmocka_unit_test(test_unsupported_cipher),
		cmocka_unit_test(test_enable_fallback_counts),
		cmocka_unit_test(test_reason_names),
		cmocka_unit_test(test_recv_small_buffer),
	};
	return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
