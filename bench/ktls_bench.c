/* kTLS bulk benchmark (run inside the vmtest VM: vmtest/run.sh -- build/vm/ktls_bench).
 *
 * A gateway-shaped relay: client --TLS--> [proxy] --TLS--> upstream. The client sends a
 * request body of SIZE bytes, the upstream answers with a response body of SIZE bytes. The
 * client and the upstream are userspace OpenSSL in a forked child (identical in both modes);
 * the proxy is this process, single-threaded, in one of two modes:
 *   userspace  SSL_read into a 16 KiB buffer, SSL_write out (what a TLS proxy does without
 *              kTLS);
 *   ktls       ktls_enable on both sockets (both directions in the kernel) and splice_fwd
 *              between them: no copies or crypto in userspace.
 * Per run: wall time, throughput, the proxy's CPU (getrusage: user+sys, which includes the
 * kernel's crypto for kTLS) per GiB relayed, and the whole VM's busy CPU (/proc/stat) per GiB.
 * Modes alternate; the median run of each is reported, then the ratio userspace/ktls.
 *
 * Usage: ktls_bench [-s MiB] [-r runs] [-V 1.2|1.3]   (defaults: 32 MiB, 3 runs, TLS 1.3) */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ktls.h"
#include "splice_fwd.h"

static EVP_PKEY *g_key;
static X509 *g_cert;
static int g_version = TLS1_3_VERSION;
static uint64_t g_size = 32ull << 20;

static void die(const char *what)
{
	fprintf(stderr, "ktls_bench: %s: %s\n", what, strerror(errno));
	ERR_print_errors_fp(stderr);
	exit(2);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static double proc_cpu(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* Busy CPU seconds of the whole machine (all but idle and iowait). */
static double machine_cpu(void)
{
	unsigned long long v[10] = {0};
	FILE *f = fopen("/proc/stat", "r");
	if (!f || fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
			 &v[3], &v[4], &v[5], &v[6], &v[7]) != 8)
		die("/proc/stat");
	fclose(f);
	return (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
}

static void pki_init(void)
{
	g_key = EVP_EC_gen("P-256");
	g_cert = X509_new();
	X509_set_version(g_cert, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(g_cert), 1);
	X509_gmtime_adj(X509_getm_notBefore(g_cert), -60);
	X509_gmtime_adj(X509_getm_notAfter(g_cert), 3600);
	X509_NAME *n = X509_get_subject_name(g_cert);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"bench", -1, -1, 0);
	X509_set_issuer_name(g_cert, n);
	X509_set_pubkey(g_cert, g_key);
	if (X509_sign(g_cert, g_key, EVP_sha256()) <= 0)
		die("X509_sign");
}

static SSL_CTX *ctx_new(bool server, bool ktls)
{
	SSL_CTX *ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
	SSL_CTX_set_min_proto_version(ctx, g_version);
	SSL_CTX_set_max_proto_version(ctx, g_version);
	SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
	SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256");
	if (SSL_CTX_use_certificate(ctx, g_cert) != 1 || SSL_CTX_use_PrivateKey(ctx, g_key) != 1)
		die("certificate");
	if (ktls && ktls_ctx_setup(ctx) != 1)
		die("ktls_ctx_setup: no kTLS in this kernel");
	return ctx;
}

static int listener(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t alen = sizeof(a);
	int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(l, 8) < 0 ||
	    getsockname(l, (struct sockaddr *)&a, &alen) < 0)
		die("listener");
	*port = ntohs(a.sin_port);
	return l;
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die("connect");
	return s;
}

/* --- the peers (child process): client and upstream, userspace OpenSSL --------------- */
static unsigned char g_chunk[65536];

struct peer {
	bool server;
	int fd;   /* client: connected socket */
	int lfd;  /* upstream: accept here (in the thread: the proxy connects after its accept) */
};

static void *peer_main(void *arg)
{
	struct peer *p = arg;
	SSL_CTX *ctx = ctx_new(p->server, false);
	SSL *ssl = SSL_new(ctx);
	if (p->server && (p->fd = accept(p->lfd, NULL, NULL)) < 0)
		die("accept");
	SSL_set_fd(ssl, p->fd);
	if ((p->server ? SSL_accept(ssl) : SSL_connect(ssl)) != 1)
		die("peer handshake");
	unsigned char buf[65536];
	for (int phase = 0; phase < 2; phase++) {
		bool writing = (phase == 0) != p->server; /* client writes first */
		for (uint64_t done = 0; done < g_size;) {
			size_t n = g_size - done < sizeof(buf) ? (size_t)(g_size - done) : sizeof(buf);
			int r = writing ? SSL_write(ssl, g_chunk, (int)n) : SSL_read(ssl, buf, (int)n);
			if (r <= 0)
				die(writing ? "peer SSL_write" : "peer SSL_read");
			done += (uint64_t)r;
		}
	}
	SSL_shutdown(ssl);
	SSL_free(ssl);
	SSL_CTX_free(ctx);
	close(p->fd);
	return NULL;
}

/* --- the proxy ---------------------------------------------------------------------- */
static void relay_userspace(SSL *from, SSL *to)
{
	static unsigned char buf[16384];
	for (uint64_t done = 0; done < g_size;) {
		size_t want = g_size - done < sizeof(buf) ? (size_t)(g_size - done) : sizeof(buf);
		int n = SSL_read(from, buf, (int)want);
		if (n <= 0)
			die("proxy SSL_read");
		for (int off = 0; off < n;) {
			int w = SSL_write(to, buf + off, n - off);
			if (w <= 0)
				die("proxy SSL_write");
			off += w;
		}
		done += (uint64_t)n;
	}
}

static void relay_splice(int from, int to, struct splice_fwd *f)
{
	splice_fwd_reset(f, g_size, true);
	for (;;) {
		enum splice_fwd_result r = splice_fwd_run(f, from, to, 0);
		struct pollfd pfd = {.fd = from, .events = POLLIN};
		if (r == SPLICE_FWD_DONE)
			return;
		if (r == SPLICE_FWD_WANT_WRITE)
			pfd = (struct pollfd){.fd = to, .events = POLLOUT};
		else if (r == SPLICE_FWD_CONTROL) {
			unsigned char buf[16384];
			ssize_t n = ktls_recv(from, buf, sizeof(buf), NULL);
			if (n > 0) {
				for (ssize_t off = 0; off < n;) {
					ssize_t w = ktls_send(to, buf + off, (size_t)(n - off), 0);
					if (w < 0 && errno == EAGAIN) {
						struct pollfd o = {.fd = to, .events = POLLOUT};
						poll(&o, 1, 1000);
						continue;
					}
					if (w <= 0)
						die("ktls_send");
					off += w;
				}
				splice_fwd_note_outside(f, (uint64_t)n);
				continue;
			}
			if (n < 0 && errno == EAGAIN)
				continue;
			die("control record");
		} else if (r != SPLICE_FWD_WANT_READ) {
			die(splice_fwd_result_name(r));
		}
		poll(&pfd, 1, 10000);
	}
}

struct result {
	double wall, proc_cpu, machine_cpu;
};

static struct result run_once(bool ktls)
{
	uint16_t pport, uport;
	int pl = listener(&pport), ul = listener(&uport);
	pid_t child = fork();
	if (child < 0)
		die("fork");
	if (child == 0) {
		struct peer cl = {.server = false, .fd = connect_to(pport)};
		struct peer up = {.server = true, .lfd = ul};
		pthread_t a, b;
		pthread_create(&a, NULL, peer_main, &cl);
		pthread_create(&b, NULL, peer_main, &up);
		pthread_join(a, NULL);
		pthread_join(b, NULL);
		_exit(0);
	}
	SSL_CTX *sctx = ctx_new(true, ktls), *cctx = ctx_new(false, ktls);
	int cfd = accept(pl, NULL, NULL);
	SSL *cs = SSL_new(sctx);
	SSL_set_fd(cs, cfd);
	if (SSL_accept(cs) != 1)
		die("proxy accept");
	int ufd = connect_to(uport);
	SSL *us = SSL_new(cctx);
	SSL_set_fd(us, ufd);
	if (SSL_connect(us) != 1)
		die("proxy connect");
	struct ktls_state cst, ust;
	struct splice_fwd f;
	if (ktls) {
		ktls_enable(cs, cfd, &cst);
		ktls_enable(us, ufd, &ust);
		if (!(cst.tx && cst.rx && ust.tx && ust.rx)) {
			fprintf(stderr, "ktls_bench: kTLS not on all directions: %s / %s\n",
				ktls_reason_name(cst.reason), ktls_reason_name(ust.reason));
			exit(2);
		}
		fcntl(cfd, F_SETFL, O_NONBLOCK);
		fcntl(ufd, F_SETFL, O_NONBLOCK);
		if (splice_fwd_init(&f, g_size, true) < 0)
			die("pipe");
	}
	struct result r;
	double w0 = now(), p0 = proc_cpu(), m0 = machine_cpu();
	if (ktls) {
		relay_splice(cfd, ufd, &f);
		relay_splice(ufd, cfd, &f);
	} else {
		relay_userspace(cs, us);
		relay_userspace(us, cs);
	}
	r.wall = now() - w0;
	r.proc_cpu = proc_cpu() - p0;
	r.machine_cpu = machine_cpu() - m0;
	int status;
	waitpid(child, &status, 0);
	if (ktls) {
		splice_fwd_close(&f);
		ktls_release(&cst);
		ktls_release(&ust);
	}
	SSL_free(cs);
	SSL_free(us);
	close(cfd);
	close(ufd);
	close(pl);
	close(ul);
	SSL_CTX_free(sctx);
	SSL_CTX_free(cctx);
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "ktls_bench: peers failed\n");
		exit(2);
	}
	return r;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	int runs = 3, opt;
	while ((opt = getopt(argc, argv, "s:r:V:")) != -1) {
		switch (opt) {
		case 's': g_size = strtoull(optarg, NULL, 10) << 20; break;
		case 'r': runs = atoi(optarg); break;
		case 'V': g_version = strcmp(optarg, "1.2") == 0 ? TLS1_2_VERSION : TLS1_3_VERSION; break;
		default:
			fprintf(stderr, "usage: ktls_bench [-s MiB] [-r runs] [-V 1.2|1.3]\n");
			return 2;
		}
	}
	if (runs < 1 || runs > 50 || g_size == 0)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	memset(g_chunk, 0x5a, sizeof(g_chunk));
	pki_init();
	if (!ktls_kernel_available()) {
		fprintf(stderr, "ktls_bench: this kernel has no kTLS (run it in vmtest/run.sh)\n");
		return 2;
	}
	double gib = 2.0 * (double)g_size / (1u << 30); /* request + response */
	double cpu[2][50], mcpu[2][50], tput[2][50];
	printf("ktls_bench: %s AES-128-GCM, %llu MiB request + %llu MiB response per run, %d "
	       "runs per mode\n",
	       g_version == TLS1_3_VERSION ? "TLSv1.3" : "TLSv1.2",
	       (unsigned long long)(g_size >> 20), (unsigned long long)(g_size >> 20), runs);
	printf("%-10s %3s %9s %10s %14s %14s\n", "mode", "run", "wall_s", "MiB/s", "proxy_cpu_s/GiB",
	       "vm_cpu_s/GiB");
	for (int i = 0; i < runs; i++) {
		for (int m = 0; m < 2; m++) { /* m 0: userspace, 1: ktls */
			struct result r = run_once(m == 1);
			cpu[m][i] = r.proc_cpu / gib;
			mcpu[m][i] = r.machine_cpu / gib;
			tput[m][i] = gib * 1024 / r.wall;
			printf("%-10s %3d %9.2f %10.1f %14.2f %14.2f\n", m ? "ktls" : "userspace", i + 1,
			       r.wall, tput[m][i], cpu[m][i], mcpu[m][i]);
			fflush(stdout);
		}
	}
	double med[2][3];
	for (int m = 0; m < 2; m++) {
		qsort(cpu[m], (size_t)runs, sizeof(double), cmp_double);
		qsort(mcpu[m], (size_t)runs, sizeof(double), cmp_double);
		qsort(tput[m], (size_t)runs, sizeof(double), cmp_double);
		med[m][0] = cpu[m][runs / 2];
		med[m][1] = mcpu[m][runs / 2];
		med[m][2] = tput[m][runs / 2];
	}
	printf("median userspace: %.1f MiB/s, proxy %.2f CPU-s/GiB, VM %.2f CPU-s/GiB\n", med[0][2],
	       med[0][0], med[0][1]);
	printf("median ktls:      %.1f MiB/s, proxy %.2f CPU-s/GiB, VM %.2f CPU-s/GiB\n", med[1][2],
	       med[1][0], med[1][1]);
	printf("ratio userspace/ktls: proxy CPU per GiB %.2fx, VM CPU per GiB %.2fx, throughput "
	       "ktls/userspace %.2fx\n",
	       med[0][0] / med[1][0], med[0][1] / med[1][1], med[1][2] / med[0][2]);
	return 0;
}
