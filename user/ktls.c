/* kTLS installation after an OpenSSL handshake, and the record-aware read/write helpers for a
 * socket whose record layer the kernel runs. See ktls.h for the contract. */
#include "ktls.h"

#include "hex.h"

#include <linux/tls.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define REC_CHANGE_CIPHER_SPEC 20
#define REC_ALERT 21
#define REC_HANDSHAKE 22
#define REC_APP_DATA 23

#define HS_HELLO_REQUEST 0
#define HS_CLIENT_HELLO 1
#define HS_NEW_SESSION_TICKET 4
#define HS_KEY_UPDATE 24

#define ALERT_WARNING 1
#define ALERT_CLOSE_NOTIFY 0
#define ALERT_USER_CANCELED 90
#define ALERT_NO_RENEGOTIATION 100

#define SECRET_MAX 64 /* EVP_MAX_MD_SIZE; SHA-384 needs 48 */

/* TLS 1.3 traffic secrets captured by the keylog callback, per SSL (ex_data). */
struct ktls_secrets {
	unsigned char client[SECRET_MAX];
	unsigned char server[SECRET_MAX];
	size_t client_len, server_len;
};

static struct {
#define KTLS_CNT(name) _Atomic uint64_t name;
	KTLS_CNT(connections) KTLS_CNT(tx) KTLS_CNT(rx)
	KTLS_CNT(tx_openssl) KTLS_CNT(rx_openssl) KTLS_CNT(tx_manual) KTLS_CNT(rx_manual)
	KTLS_CNT(tx_open) KTLS_CNT(rx_open) KTLS_CNT(fallback)
	KTLS_CNT(keyupdate_closes) KTLS_CNT(alerts_received) KTLS_CNT(tickets_dropped)
	KTLS_CNT(renegotiations_refused)
#undef KTLS_CNT
	_Atomic uint64_t fallback_by[KTLS_REASON_COUNT];
} g_ktls;

#define CNT_ADD(field, n) atomic_fetch_add_explicit(&g_ktls.field, (n), memory_order_relaxed)
#define CNT_INC(field) CNT_ADD(field, 1)
#define CNT_GET(field) atomic_load_explicit(&g_ktls.field, memory_order_relaxed)

static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static bool g_available;
static enum ktls_reason g_unavailable_reason = KTLS_NO_KERNEL;
static int g_exidx = -1;
static EVP_KDF *g_hkdf, *g_prf;

static void secrets_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
			 void *argp)
{
	(void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
	if (ptr) {
		OPENSSL_cleanse(ptr, sizeof(struct ktls_secrets));
		free(ptr);
	}
}

/* The TLS ULP exists when attaching it to an unconnected TCP socket fails with ENOTCONN
 * (the ULP's init refuses non-established sockets); ENOENT means no such ULP. */
static void ktls_init_once(void)
{
	const char *env = getenv("PSD2EDGE_KTLS");
	g_exidx = SSL_get_ex_new_index(0, "psd2edge ktls secrets", NULL, NULL, secrets_free);
	g_hkdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
	g_prf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_TLS1_PRF, NULL);
	if (env && strcmp(env, "0") == 0) {
		g_unavailable_reason = KTLS_DISABLED;
		return;
	}
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		return;
	if (setsockopt(s, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) == 0 || errno == ENOTCONN)
		g_available = true;
	close(s);
}

bool ktls_kernel_available(void)
{
	pthread_once(&g_once, ktls_init_once);
	return g_available;
}

int ktls_ctx_setup(SSL_CTX *ctx)
{
	if (!ktls_kernel_available())
		return 0;
	if (g_exidx < 0 || !g_hkdf || !g_prf)
		return -1;
	SSL_CTX_set_options(ctx, SSL_OP_ENABLE_KTLS | SSL_OP_NO_RENEGOTIATION);
	SSL_CTX_set_keylog_callback(ctx, ktls_keylog_cb);
	/* Tickets sent after the handshake would consume TX sequence numbers before we switch. */
	if (SSL_CTX_set_num_tickets(ctx, 0) != 1)
		return -1;
	return 1;
}

/* Parses "LABEL <client_random> <secret>" secret hex into out; returns its length or 0. */
static size_t parse_secret(const char *line, unsigned char *out, size_t outlen)
{
	const char *p = strchr(line, ' ');
	if (!p || !(p = strchr(p + 1, ' ')))
		return 0;
	p++;
	size_t n = 0;
	while (p[0] && p[1] && n < outlen) {
		int hi = hex_digit_value(p[0]), lo = hex_digit_value(p[1]);
		if (hi < 0 || lo < 0)
			break;
		out[n++] = (unsigned char)(hi << 4 | lo);
		p += 2;
	}
	return (*p == '\0' || *p == '\n') ? n : 0;
}

void ktls_keylog_cb(const SSL *ssl, const char *line)
{
	static const char cl[] = "CLIENT_TRAFFIC_SECRET_0 ", sv[] = "SERVER_TRAFFIC_SECRET_0 ";
	bool client = strncmp(line, cl, sizeof(cl) - 1) == 0;
	if (!client && strncmp(line, sv, sizeof(sv) - 1) != 0)
		return; /* handshake and exporter secrets, TLS 1.2 CLIENT_RANDOM: not needed */
	if (g_exidx < 0)
		return;
	struct ktls_secrets *s = SSL_get_ex_data(ssl, g_exidx);
	if (!s) {
		s = calloc(1, sizeof(*s));
		/* OpenSSL hands the callback a const SSL; its ex_data is ours to attach. */
		if (!s || !SSL_set_ex_data((SSL *)ssl, g_exidx, s)) {
			free(s);
			return;
		}
	}
	if (client)
		s->client_len = parse_secret(line, s->client, sizeof(s->client));
	else
		s->server_len = parse_secret(line, s->server, sizeof(s->server));
}

/* HKDF-Expand-Label(secret, label, "", outlen) of RFC 8446 section 7.1. */
static int hkdf_expand_label(const EVP_MD *md, const unsigned char *secret, size_t secret_len,
			     const char *label, unsigned char *out, size_t outlen)
{
	unsigned char info[2 + 1 + 255 + 1];
	size_t ll = strlen(label), n = 0;
	if (!g_hkdf || 6 + ll > 255)
		return -1;
	info[n++] = (unsigned char)(outlen >> 8);
	info[n++] = (unsigned char)outlen;
	info[n++] = (unsigned char)(6 + ll);
	memcpy(info + n, "tls13 ", 6);
	n += 6;
	memcpy(info + n, label, ll);
	n += ll;
	info[n++] = 0; /* empty context */

	int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY, rc = -1;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						 (char *)EVP_MD_get0_name(md), 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, n),
		OSSL_PARAM_construct_end(),
	};
	EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(g_hkdf);
	if (kctx && EVP_KDF_derive(kctx, out, outlen, params) == 1)
		rc = 0;
	EVP_KDF_CTX_free(kctx);
	return rc;
}

/* TLS 1.2 key block: PRF(master_secret, "key expansion", server_random + client_random). */
static int tls12_key_block(SSL *ssl, const EVP_MD *md, unsigned char *out, size_t outlen)
{
	unsigned char master[SSL_MAX_MASTER_KEY_LENGTH];
	unsigned char seed[13 + 2 * SSL3_RANDOM_SIZE];
	SSL_SESSION *sess = SSL_get_session(ssl);
	size_t mlen = sess ? SSL_SESSION_get_master_key(sess, master, sizeof(master)) : 0;
	int rc = -1;
	if (!g_prf || mlen == 0)
		goto out;
	memcpy(seed, "key expansion", 13);
	if (SSL_get_server_random(ssl, seed + 13, SSL3_RANDOM_SIZE) != SSL3_RANDOM_SIZE ||
	    SSL_get_client_random(ssl, seed + 13 + SSL3_RANDOM_SIZE, SSL3_RANDOM_SIZE) !=
		    SSL3_RANDOM_SIZE)
		goto out;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST,
						 (char *)EVP_MD_get0_name(md), 0),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, master, mlen),
		OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, seed, sizeof(seed)),
		OSSL_PARAM_construct_end(),
	};
	EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(g_prf);
	if (kctx && EVP_KDF_derive(kctx, out, outlen, params) == 1)
		rc = 0;
	EVP_KDF_CTX_free(kctx);
out:
	OPENSSL_cleanse(master, sizeof(master));
	return rc;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (unsigned char)v;
}

int ktls_crypto_info(SSL *ssl, bool tx, uint64_t seq, void *buf, size_t buflen,
		     enum ktls_reason *reason)
{
	pthread_once(&g_once, ktls_init_once);
	int version = SSL_version(ssl);
	const SSL_CIPHER *cipher = SSL_get_current_cipher(ssl);
	if (version != TLS1_2_VERSION && version != TLS1_3_VERSION) {
		*reason = KTLS_BAD_VERSION;
		return -1;
	}
	const EVP_MD *md = cipher ? SSL_CIPHER_get_handshake_digest(cipher) : NULL;
	int nid = cipher ? SSL_CIPHER_get_cipher_nid(cipher) : NID_undef;
	size_t keylen, size;
	uint16_t type;
	if (nid == NID_aes_128_gcm) {
		keylen = TLS_CIPHER_AES_GCM_128_KEY_SIZE;
		type = TLS_CIPHER_AES_GCM_128;
		size = sizeof(struct tls12_crypto_info_aes_gcm_128);
	} else if (nid == NID_aes_256_gcm) {
		keylen = TLS_CIPHER_AES_GCM_256_KEY_SIZE;
		type = TLS_CIPHER_AES_GCM_256;
		size = sizeof(struct tls12_crypto_info_aes_gcm_256);
	} else {
		*reason = KTLS_BAD_CIPHER;
		return -1;
	}
	if (!md || buflen < size) {
		*reason = KTLS_BAD_CIPHER;
		return -1;
	}
	/* Our write direction uses our role's keys; our read direction the peer's. */
	bool client_keys = (SSL_is_server(ssl) != 0) != tx;
	unsigned char key[32], iv[12]; /* iv: 4-byte salt + 8 bytes (TLS 1.3 only) */
	unsigned char kb[2 * 32 + 2 * 4];

	if (version == TLS1_3_VERSION) {
		struct ktls_secrets *s = g_exidx >= 0 ? SSL_get_ex_data(ssl, g_exidx) : NULL;
		const unsigned char *secret = s ? (client_keys ? s->client : s->server) : NULL;
		size_t slen = s ? (client_keys ? s->client_len : s->server_len) : 0;
		if (!secret || slen == 0 || slen != (size_t)EVP_MD_get_size(md)) {
			*reason = KTLS_NO_SECRETS;
			return -1;
		}
		if (hkdf_expand_label(md, secret, slen, "key", key, keylen) < 0 ||
		    hkdf_expand_label(md, secret, slen, "iv", iv, sizeof(iv)) < 0) {
			*reason = KTLS_DERIVE_FAILED;
			return -1;
		}
	} else {
		/* client_write_key, server_write_key, client_write_IV, server_write_IV */
		size_t kblen = 2 * keylen + 2 * 4;
		if (tls12_key_block(ssl, md, kb, kblen) < 0) {
			*reason = KTLS_DERIVE_FAILED;
			OPENSSL_cleanse(kb, sizeof(kb));
			return -1;
		}
		memcpy(key, kb + (client_keys ? 0 : keylen), keylen);
		memcpy(iv, kb + 2 * keylen + (client_keys ? 0 : 4), 4);
		/* The explicit nonce of a record: its sequence number (RFC 5288 section 3),
		 * incremented by the kernel per record. */
		put_be64(iv + 4, seq);
		OPENSSL_cleanse(kb, sizeof(kb));
	}

	memset(buf, 0, size);
	/* The two kernel structs differ only in the size of their key. */
#define FILL_GCM_INFO(ci)                                                                       \
	do {                                                                                    \
		(ci)->info.version = version == TLS1_3_VERSION ? TLS_1_3_VERSION : TLS_1_2_VERSION; \
		(ci)->info.cipher_type = type;                                                  \
		memcpy((ci)->key, key, keylen);                                                 \
		memcpy((ci)->salt, iv, 4);                                                      \
		memcpy((ci)->iv, iv + 4, 8);                                                    \
		put_be64((ci)->rec_seq, seq);                                                   \
	} while (0)
	if (type == TLS_CIPHER_AES_GCM_128)
		FILL_GCM_INFO((struct tls12_crypto_info_aes_gcm_128 *)buf);
	else
		FILL_GCM_INFO((struct tls12_crypto_info_aes_gcm_256 *)buf);
#undef FILL_GCM_INFO
	OPENSSL_cleanse(key, sizeof(key));
	OPENSSL_cleanse(iv, sizeof(iv));
	*reason = KTLS_OK;
	return (int)size;
}

/* Installs one direction by hand; returns KTLS_OK or why not. *ulp tracks TCP_ULP. */
static enum ktls_reason install_dir(SSL *ssl, int fd, bool tx, bool *ulp, int *err)
{
	union {
		struct tls12_crypto_info_aes_gcm_128 g128;
		struct tls12_crypto_info_aes_gcm_256 g256;
	} ci;
	enum ktls_reason reason;
	if (!tx && SSL_has_pending(ssl))
		return KTLS_PENDING;
	/* Right after the handshake: TLS 1.3 application traffic starts at record 0; in TLS
	 * 1.2 the Finished record was number 0 under the new keys in each direction. */
	uint64_t seq = SSL_version(ssl) == TLS1_3_VERSION ? 0 : 1;
	int size = ktls_crypto_info(ssl, tx, seq, &ci, sizeof(ci), &reason);
	if (size < 0)
		return reason;
	if (!*ulp) {
		if (setsockopt(fd, SOL_TCP, TCP_ULP, "tls", sizeof("tls")) < 0 && errno != EEXIST) {
			*err = errno;
			reason = errno == ENOENT ? KTLS_NO_KERNEL : KTLS_ULP_FAILED;
			goto out;
		}
		*ulp = true;
	}
	if (setsockopt(fd, SOL_TLS, tx ? TLS_TX : TLS_RX, &ci, (socklen_t)size) < 0) {
		*err = errno;
		reason = KTLS_SETSOCKOPT_FAILED;
		goto out;
	}
#ifdef TLS_RX_EXPECT_NO_PAD
	if (!tx && SSL_version(ssl) == TLS1_3_VERSION) {
		/* OpenSSL does not pad records: lets the kernel decrypt in place (6.0+). */
		unsigned int one = 1;
		(void)setsockopt(fd, SOL_TLS, TLS_RX_EXPECT_NO_PAD, &one, sizeof(one));
	}
#endif
	reason = KTLS_OK;
out:
	OPENSSL_cleanse(&ci, sizeof(ci));
	return reason;
}

int ktls_enable(SSL *ssl, int fd, struct ktls_state *st)
{
	memset(st, 0, sizeof(*st));
	st->version = (uint16_t)SSL_version(ssl);
	CNT_INC(connections);
	/* Why neither direction can be installed by hand, if that is known up front. */
	enum ktls_reason skip = KTLS_OK;
	if (!ktls_kernel_available())
		skip = g_unavailable_reason;
	else if (fd < 0)
		skip = KTLS_NOT_SOCKET;

	BIO *wbio = SSL_get_wbio(ssl), *rbio = SSL_get_rbio(ssl);
	st->tx_openssl = wbio && BIO_get_ktls_send(wbio);
	st->rx_openssl = rbio && BIO_get_ktls_recv(rbio);
	bool ulp = st->tx_openssl || st->rx_openssl;
	st->tx = st->tx_openssl;
	st->rx = st->rx_openssl;

	for (int dir = 0; dir < 2; dir++) {
		bool tx = dir == 0;
		enum ktls_reason r;
		if (tx ? st->tx : st->rx)
			continue;
		r = skip != KTLS_OK ? skip : install_dir(ssl, fd, tx, &ulp, &st->sys_errno);
		if (tx) {
			st->tx_reason = r;
			st->tx = r == KTLS_OK;
		} else {
			st->rx_reason = r;
			st->rx = r == KTLS_OK;
		}
		/* A failed TCP_ULP fails the other direction the same way. */
		if (r == KTLS_NO_KERNEL || r == KTLS_ULP_FAILED)
			skip = r;
	}
	/* Done with the secrets, whatever happened. */
	if (g_exidx >= 0) {
		void *s = SSL_get_ex_data(ssl, g_exidx);
		if (s) {
			SSL_set_ex_data(ssl, g_exidx, NULL);
			secrets_free(NULL, s, NULL, 0, 0, NULL);
		}
	}

	st->reason = st->tx_reason != KTLS_OK ? st->tx_reason : st->rx_reason;
	if (st->tx) {
		CNT_INC(tx);
		CNT_INC(tx_open);
		if (st->tx_openssl)
			CNT_INC(tx_openssl);
		else
			CNT_INC(tx_manual);
	}
	if (st->rx) {
		CNT_INC(rx);
		CNT_INC(rx_open);
		if (st->rx_openssl)
			CNT_INC(rx_openssl);
		else
			CNT_INC(rx_manual);
	}
	if (st->reason != KTLS_OK) {
		CNT_INC(fallback);
		CNT_INC(fallback_by[st->reason]);
	}
	return 0;
}

void ktls_release(struct ktls_state *st)
{
	if (st->released)
		return;
	st->released = true;
	if (st->tx)
		atomic_fetch_sub_explicit(&g_ktls.tx_open, 1, memory_order_relaxed);
	if (st->rx)
		atomic_fetch_sub_explicit(&g_ktls.rx_open, 1, memory_order_relaxed);
}

/* One recvmsg; *type is the TLS record type of what was returned (0 at TCP EOF). */
static ssize_t recv_record(int fd, void *buf, size_t len, int *type)
{
	union {
		char buf[CMSG_SPACE(sizeof(unsigned char))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = {.iov_base = buf, .iov_len = len};
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	ssize_t n = recvmsg(fd, &msg, 0);
	if (n <= 0) {
		*type = 0;
		return n;
	}
	*type = REC_APP_DATA;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
		if (c->cmsg_level == SOL_TLS && c->cmsg_type == TLS_GET_RECORD_TYPE)
			*type = *(unsigned char *)CMSG_DATA(c);
	return n;
}

/* Reads exactly len more bytes of the handshake record being consumed. The kernel holds the
 * rest of a partly read record, so anything but that is a protocol error here (including a
 * handshake message fragmented over records, which we do not support after the handshake). */
static int recv_more_handshake(int fd, unsigned char *dst, size_t len)
{
	unsigned char scratch[512];
	while (len > 0) {
		size_t want = len < sizeof(scratch) ? len : sizeof(scratch);
		int type;
		ssize_t n = recv_record(fd, dst ? dst : scratch, want, &type);
		if (n <= 0 || type != REC_HANDSHAKE)
			return -1;
		len -= (size_t)n;
		if (dst)
			dst += n;
	}
	return 0;
}

/* Post-handshake handshake messages in b[0..n). 0: all harmless and consumed; -1: errno. */
static int handle_handshake(int fd, const unsigned char *b, size_t n)
{
	size_t off = 0;
	while (off < n) {
		unsigned char hdr[4];
		size_t have = n - off < 4 ? n - off : 4;
		memcpy(hdr, b + off, have);
		if (have < 4 && recv_more_handshake(fd, hdr + have, 4 - have) < 0)
			goto proto;
		off += have;
		size_t mlen = (size_t)hdr[1] << 16 | (size_t)hdr[2] << 8 | hdr[3];
		size_t in_buf = n - off < mlen ? n - off : mlen;
		switch (hdr[0]) {
		case HS_NEW_SESSION_TICKET: /* upstream servers send them; we do not resume */
			CNT_INC(tickets_dropped);
			break;
		case HS_KEY_UPDATE:
			CNT_INC(keyupdate_closes);
			errno = KTLS_EKEYUPDATE;
			return -1;
		case HS_HELLO_REQUEST:
		case HS_CLIENT_HELLO:
			CNT_INC(renegotiations_refused);
			(void)ktls_send_alert(fd, ALERT_WARNING, ALERT_NO_RENEGOTIATION);
			goto proto;
		default:
			goto proto;
		}
		off += in_buf;
		if (in_buf < mlen && recv_more_handshake(fd, NULL, mlen - in_buf) < 0)
			goto proto;
	}
	return 0;
proto:
	errno = EPROTO;
	return -1;
}

ssize_t ktls_recv(int fd, void *buf, size_t len, int *record_type)
{
	int dummy;
	int *rt = record_type ? record_type : &dummy;
	if (len < KTLS_RECV_MIN) {
		errno = EINVAL;
		return -1;
	}
	for (;;) {
		ssize_t n = recv_record(fd, buf, len, rt);
		if (n <= 0 || *rt == REC_APP_DATA)
			return n;
		const unsigned char *b = buf;
		switch (*rt) {
		case REC_ALERT:
			CNT_INC(alerts_received);
			if (n < 2) {
				errno = EPROTO;
				return -1;
			}
			if (b[1] == ALERT_CLOSE_NOTIFY)
				return 0;
			if (b[0] == ALERT_WARNING &&
			    (b[1] == ALERT_USER_CANCELED || b[1] == ALERT_NO_RENEGOTIATION))
				continue;
			errno = ECONNRESET;
			return -1;
		case REC_HANDSHAKE:
			if (handle_handshake(fd, b, (size_t)n) < 0)
				return -1;
			continue;
		default: /* change_cipher_spec after the handshake, or unknown */
			errno = EPROTO;
			return -1;
		}
	}
}

ssize_t ktls_send(int fd, const void *buf, size_t len, int flags)
{
	return send(fd, buf, len, flags | MSG_NOSIGNAL);
}

int ktls_send_alert(int fd, uint8_t level, uint8_t description)
{
	unsigned char alert[2] = {level, description};
	union {
		char buf[CMSG_SPACE(sizeof(unsigned char))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = {.iov_base = alert, .iov_len = sizeof(alert)};
	struct msghdr msg = {
		.msg_iov = &iov,
		.msg_iovlen = 1,
		.msg_control = cbuf.buf,
		.msg_controllen = sizeof(cbuf.buf),
	};
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_TLS;
	c->cmsg_type = TLS_SET_RECORD_TYPE;
	c->cmsg_len = CMSG_LEN(sizeof(unsigned char));
	*(unsigned char *)CMSG_DATA(c) = REC_ALERT;
	ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n == (ssize_t)sizeof(alert))
		return 0;
	if (n >= 0)
		errno = EAGAIN;
	return -1;
}

int ktls_send_close_notify(int fd)
{
	return ktls_send_alert(fd, ALERT_WARNING, ALERT_CLOSE_NOTIFY);
}

static const char *const reason_keys[] = {
#define KTLS_REASON_KEY(id, key, text) key,
	KTLS_REASONS(KTLS_REASON_KEY)
#undef KTLS_REASON_KEY
};
static const char *const reason_texts[] = {
#define KTLS_REASON_TEXT(id, key, text) text,
	KTLS_REASONS(KTLS_REASON_TEXT)
#undef KTLS_REASON_TEXT
};

const char *ktls_reason_key(enum ktls_reason r)
{
	return (unsigned)r < KTLS_REASON_COUNT ? reason_keys[r] : "unknown";
}

const char *ktls_reason_name(enum ktls_reason r)
{
	return (unsigned)r < KTLS_REASON_COUNT ? reason_texts[r] : "unknown";
}

void ktls_counters_read(struct ktls_counters *out)
{
	memset(out, 0, sizeof(*out));
#define KTLS_READ(name) out->name = CNT_GET(name);
	KTLS_READ(connections) KTLS_READ(tx) KTLS_READ(rx)
	KTLS_READ(tx_openssl) KTLS_READ(rx_openssl) KTLS_READ(tx_manual) KTLS_READ(rx_manual)
	KTLS_READ(tx_open) KTLS_READ(rx_open) KTLS_READ(fallback)
	KTLS_READ(keyupdate_closes) KTLS_READ(alerts_received) KTLS_READ(tickets_dropped)
	KTLS_READ(renegotiations_refused)
#undef KTLS_READ
	for (int i = 0; i < KTLS_REASON_COUNT; i++)
		out->fallback_by[i] = CNT_GET(fallback_by[i]);
}
