/* loadgen: an HTTPS load generator that presents a client certificate (mTLS), for comparing
 * psd2edge with HAProxy and NGINX (bench/proxy_bench.sh). wrk and curl cannot present a client
 * certificate on every new connection cheaply; this one keeps one SSL_CTX and runs every
 * connection non-blocking on an epoll loop per thread.
 *
 * Modes:
 *   keep-alive (default)  each connection does one handshake, then requests back to back;
 *   --new-conn            each request on a new connection: TCP connect, full mTLS handshake,
 *                         one request with "Connection: close", close (no session resumption);
 *   --rate RPS            fixed offered load over the keep-alive connections (open loop: a
 *                         request's latency counts from the moment it was due, so queueing
 *                         when every connection is busy is part of it);
 *   --idle N              opens N keep-alive connections, one request each, then holds them
 *                         --hold seconds and reports the server's memory growth per connection.
 * With --server-pid PID[,PID...] it reads the server's own CPU time (utime + stime of
 * /proc/PID/stat, every thread of the process) at the start and the end of the measured window
 * and reports it per request and per handshake: on a shared machine that figure moves much
 * less than throughput does.
 *
 * Output: one JSON object on stdout (see print_report), a one-line summary on stderr.
 * usage: loadgen --help */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- options ------------------------------------------------------------------------- */

enum id_place { ID_HEADER, ID_FORM, ID_QUERY, ID_NONE };

static struct options {
	const char *host, *sni, *path, *cert, *key, *ca, *groups, *client_id;
	int port, conns, threads, tls_version;
	double duration, warmup, rate, hold;
	long long count;
	size_t body;
	long idle;
	bool new_conn;
	enum id_place id_in;
	pid_t server_pids[8];
	int n_server_pids;
	const char *headers[8]; /* --header lines, sent as given */
	int n_headers;
} opt = {
	.host = "127.0.0.1", .path = "/bench", .groups = "X25519:P-256", .client_id = "tpp1",
	.port = 8443, .conns = 16, .threads = 1, .tls_version = TLS1_3_VERSION, .duration = 5,
	.hold = 2, .id_in = ID_HEADER,
};

static void usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: loadgen --cert PEM --key PEM [options]\n"
		"  -H, --host ADDR        server address (default 127.0.0.1)\n"
		"  -p, --port PORT        server port (default 8443)\n"
		"      --sni NAME         TLS server name and Host header (default: --host)\n"
		"      --ca PEM           verify the server's certificate against this bundle\n"
		"      --cert PEM --key PEM   the client certificate and key presented\n"
		"  -c, --conns N          concurrent connections (default 16)\n"
		"  -t, --threads N        threads, each with its own epoll loop (default 1)\n"
		"  -d, --duration SEC     measured time (default 5)\n"
		"  -n, --count N          stop after N requests instead of a duration\n"
		"  -w, --warmup SEC       run this long before measuring (default 0)\n"
		"      --new-conn         new connection and full handshake per request\n"
		"      --rate RPS         fixed offered load (keep-alive), latency from due time\n"
		"      --idle N           hold N idle keep-alive connections, report server memory\n"
		"      --hold SEC         how long --idle holds them once open (default 2)\n"
		"      --tls 1.2|1.3      protocol version (default 1.3)\n"
		"      --groups LIST      key exchange groups offered (default X25519:P-256)\n"
		"      --path PATH        request path (default /bench)\n"
		"      --client-id ID     client_id sent (default tpp1)\n"
		"      --id-in header|form|query|none   where (default header: X-Client-Id)\n"
		"      --header 'NAME: VALUE'   an extra request header (up to 8)\n"
		"      --body BYTES       request body size (POST when > 0 or form)\n"
		"      --server-pid P[,P] server processes whose CPU time and memory are read\n");
	exit(status);
}

/* ---- time and the server's own counters ---------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* utime + stime of the whole process (all its threads, living and exited), seconds. */
static double server_cpu_s(void)
{
	double total = 0;
	for (int i = 0; i < opt.n_server_pids; i++) {
		char path[64], buf[1024];
		snprintf(path, sizeof(path), "/proc/%d/stat", (int)opt.server_pids[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			return -1;
		size_t n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = 0;
		char *p = strrchr(buf, ')'); /* the command name may hold spaces */
		unsigned long long utime, stime;
		if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
				 &utime, &stime) != 2)
			return -1;
		total += (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
	}
	return total;
}

/* VmRSS of the server processes, KiB. */
static long server_rss_kib(void)
{
	long total = 0;
	for (int i = 0; i < opt.n_server_pids; i++) {
		char path[64], line[256];
		long kib = -1;
		snprintf(path, sizeof(path), "/proc/%d/status", (int)opt.server_pids[i]);
		FILE *f = fopen(path, "r");
		if (!f)
			return -1;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "VmRSS: %ld", &kib) == 1)
				break;
		fclose(f);
		if (kib < 0)
			return -1;
		total += kib;
	}
	return total;
}

static double self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       ru.ru_stime.tv_usec / 1e6;
}

/* ---- latency histogram: exact below 256 us, then 128 sub-buckets per power of two ------ */

#define HIST_LINEAR 256
#define HIST_SUB 128
#define HIST_BUCKETS (HIST_LINEAR + 30 * HIST_SUB)

static unsigned hist_index(uint64_t us)
{
	if (us < HIST_LINEAR)
		return (unsigned)us;
	unsigned e = 63u - (unsigned)__builtin_clzll(us); /* >= 8 */
	unsigned idx = HIST_LINEAR + (e - 8) * HIST_SUB + (unsigned)((us >> (e - 7)) & (HIST_SUB - 1));
	return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

static uint64_t hist_value(unsigned idx)
{
	if (idx < HIST_LINEAR)
		return idx;
	unsigned e = (idx - HIST_LINEAR) / HIST_SUB + 8, sub = (idx - HIST_LINEAR) % HIST_SUB;
	return (uint64_t)(HIST_SUB + sub) << (e - 7);
}

/* ---- per-thread state ------------------------------------------------------------------ */

#define ERROR_KINDS(X)                                                                           \
	X(connect) X(handshake) X(tls_write) X(tls_read) X(eof) X(http_parse) X(status_4xx)    \
	X(status_5xx) X(status_other) X(overload)
enum error_kind {
#define X(name) ERR_##name,
	ERROR_KINDS(X)
#undef X
	N_ERROR_KINDS
};
static const char *const error_names[] = {
#define X(name) #name,
	ERROR_KINDS(X)
#undef X
};

struct stats {
	uint64_t requests, handshakes, errors[N_ERROR_KINDS];
	uint64_t hist[HIST_BUCKETS];
};

enum conn_state { C_CONNECTING, C_HANDSHAKE, C_WRITING, C_READING, C_IDLE, C_HELD };

/* Response parsing: the head is collected in head[], the body only counted. */
enum body_mode { BODY_LENGTH, BODY_CHUNKED, BODY_TO_EOF };
enum chunk_state { CH_SIZE, CH_SIZE_EXT, CH_DATA, CH_DATA_CR, CH_TRAILER_LINE, CH_DONE };

struct conn {
	struct worker *w;
	int fd;
	SSL *ssl;
	enum conn_state st;
	uint32_t events; /* current epoll interest */
	uint64_t t_connect, t_start;
	size_t wr_off;
	/* response */
	char head[8192];
	size_t head_len;
	bool head_done, server_closes;
	int status;
	enum body_mode body_mode;
	uint64_t body_left;
	enum chunk_state chunk;
	uint64_t chunk_left;
	int chunk_line_len;
};

struct worker {
	int epfd;
	pthread_t tid;
	SSL_CTX *ctx;
	struct conn *conns; /* n_slots: n_conns, or with --idle this thread's share of N */
	int n_conns, n_slots, next_slot;
	long long quota; /* requests left with --count; < 0 unlimited */
	/* --rate: due times of requests waiting for an idle connection */
	uint64_t interval_ns, next_due, *pending;
	size_t pending_head, pending_len, pending_cap;
	struct conn **idle;
	int n_idle;
	struct stats st;
};

static const char *g_request;
static size_t g_request_len;
static const char *g_request_close; /* the same with Connection: close (--new-conn) */
static size_t g_request_close_len;
static struct addrinfo *g_addr;

static atomic_bool g_measuring, g_stop;
static atomic_long g_idle_held_total;

static bool measuring(void)
{
	return atomic_load_explicit(&g_measuring, memory_order_relaxed);
}

static void count_error(struct worker *w, enum error_kind k)
{
	if (measuring())
		w->st.errors[k]++;
}

/* ---- connections ----------------------------------------------------------------------- */

static void conn_set_events(struct conn *c, uint32_t ev)
{
	if (c->events == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	epoll_ctl(c->w->epfd, c->events ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, c->fd, &e);
	c->events = ev;
}

/* After an SSL call returned e: waits for the readiness OpenSSL asked for (true), or false
 * when e is not a want. */
static bool conn_wait_for(struct conn *c, int e)
{
	if (e == SSL_ERROR_WANT_READ)
		conn_set_events(c, EPOLLIN);
	else if (e == SSL_ERROR_WANT_WRITE)
		conn_set_events(c, EPOLLOUT);
	else
		return false;
	return true;
}

static void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0) {
		close(c->fd); /* also leaves the epoll set */
		c->fd = -1;
	}
	c->events = 0;
}

static bool want_more_requests(struct worker *w)
{
	return !atomic_load_explicit(&g_stop, memory_order_relaxed) && w->quota != 0;
}

static void conn_start(struct conn *c);
static void conn_send(struct conn *c, uint64_t t_start);
static void conn_step(struct conn *c);

/* After an error or a completed --new-conn request: the slot opens its next connection. */
static void conn_restart(struct conn *c)
{
	conn_close(c);
	if (want_more_requests(c->w))
		conn_start(c);
}

static void conn_fail(struct conn *c, enum error_kind k)
{
	count_error(c->w, k);
	ERR_clear_error();
	if (c->w->quota > 0)
		c->w->quota--; /* a failed attempt counts, so --count ends against a dead server */
	conn_restart(c);
}

static void conn_start(struct conn *c)
{
	struct worker *w = c->w;
	c->t_connect = now_ns();
	c->fd = socket(g_addr->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		count_error(w, ERR_connect);
		return;
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->st = C_CONNECTING;
	if (connect(c->fd, g_addr->ai_addr, g_addr->ai_addrlen) < 0 && errno != EINPROGRESS) {
		close(c->fd);
		c->fd = -1;
		count_error(w, ERR_connect);
		return;
	}
	conn_set_events(c, EPOLLOUT);
}

static void response_reset(struct conn *c)
{
	c->head_len = 0;
	c->head_done = false;
	c->server_closes = false;
	c->status = 0;
}

static void conn_send(struct conn *c, uint64_t t_start)
{
	c->t_start = t_start;
	c->wr_off = 0;
	c->st = C_WRITING;
	response_reset(c);
	conn_step(c);
}

/* Case-insensitive search for a header's value in the head (name given lowercase). */
static const char *head_value(const char *head, const char *name)
{
	size_t nl = strlen(name);
	for (const char *p = strstr(head, "\r\n"); p && p[2] != '\r'; p = strstr(p + 2, "\r\n")) {
		if (strncasecmp(p + 2, name, nl) == 0 && p[2 + nl] == ':') {
			const char *v = p + 3 + nl;
			while (*v == ' ' || *v == '\t')
				v++;
			return v;
		}
	}
	return NULL;
}

/* Parses the status line and framing headers once the head is complete. */
static int response_head(struct conn *c)
{
	if (sscanf(c->head, "HTTP/1.%*c %3d", &c->status) != 1)
		return -1;
	const char *te = head_value(c->head, "transfer-encoding");
	const char *cl = head_value(c->head, "content-length");
	const char *cn = head_value(c->head, "connection");
	c->server_closes = cn && strncasecmp(cn, "close", 5) == 0;
	if (te && strncasecmp(te, "chunked", 7) == 0) {
		c->body_mode = BODY_CHUNKED;
		c->chunk = CH_SIZE;
		c->chunk_left = 0;
		c->chunk_line_len = 0;
	} else if (cl) {
		c->body_mode = BODY_LENGTH;
		c->body_left = strtoull(cl, NULL, 10);
	} else if (c->status == 204 || c->status == 304) {
		c->body_mode = BODY_LENGTH;
		c->body_left = 0;
	} else {
		c->body_mode = BODY_TO_EOF;
		c->server_closes = true;
	}
	return 0;
}

/* Consumes body bytes; returns 1 when the response is complete, 0 for more, -1 on error. */
static int response_body(struct conn *c, const char *p, size_t n)
{
	switch (c->body_mode) {
	case BODY_TO_EOF:
		return 0;
	case BODY_LENGTH:
		if (n > c->body_left)
			return -1; /* nothing may follow a response we have not asked for */
		c->body_left -= n;
		return c->body_left == 0;
	case BODY_CHUNKED:
		break;
	}
	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		switch (c->chunk) {
		case CH_SIZE:
			if (ch == '\n') {
				if (c->chunk_line_len == 0)
					return -1;
				c->chunk = c->chunk_left ? CH_DATA : CH_TRAILER_LINE;
				c->chunk_line_len = 0;
			} else if (ch == ';') {
				c->chunk = CH_SIZE_EXT;
			} else if (ch != '\r') {
				int d = ch >= '0' && ch <= '9'   ? ch - '0'
					: ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
					: ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
								 : -1;
				if (d < 0 || c->chunk_left >> 56)
					return -1;
				c->chunk_left = c->chunk_left * 16 + (uint64_t)d;
				c->chunk_line_len++;
			}
			break;
		case CH_SIZE_EXT:
			if (ch == '\n') {
				c->chunk = c->chunk_left ? CH_DATA : CH_TRAILER_LINE;
				c->chunk_line_len = 0;
			}
			break;
		case CH_DATA: {
			size_t take = n - i < c->chunk_left ? n - i : (size_t)c->chunk_left;
			c->chunk_left -= take;
			i += take - 1;
			if (c->chunk_left == 0)
				c->chunk = CH_DATA_CR;
			break;
		}
		case CH_DATA_CR:
			if (ch == '\n')
				c->chunk = CH_SIZE;
			break;
		case CH_TRAILER_LINE:
			if (ch == '\n') {
				if (c->chunk_line_len == 0) {
					c->chunk = CH_DONE;
					return i + 1 == n ? 1 : -1;
				}
				c->chunk_line_len = 0;
			} else if (ch != '\r') {
				c->chunk_line_len++;
			}
			break;
		case CH_DONE:
			return -1;
		}
	}
	return 0;
}

static void record_response(struct conn *c)
{
	struct worker *w = c->w;
	if (!measuring())
		return;
	int cls = c->status / 100;
	if (cls == 4)
		w->st.errors[ERR_status_4xx]++;
	else if (cls == 5)
		w->st.errors[ERR_status_5xx]++;
	else if (cls != 2)
		w->st.errors[ERR_status_other]++;
	if (cls != 2)
		return;
	w->st.requests++;
	uint64_t t0 = opt.new_conn ? c->t_connect : c->t_start;
	w->st.hist[hist_index((now_ns() - t0) / 1000)]++;
}

static void dispatch_pending_or_idle(struct conn *c);

static void response_complete(struct conn *c)
{
	struct worker *w = c->w;
	record_response(c);
	if (w->quota > 0)
		w->quota--;
	if (opt.new_conn || c->server_closes) {
		conn_restart(c);
		return;
	}
	if (opt.idle) {
		/* Hold it, and let the next slot open while at most --conns are in progress. */
		c->st = C_HELD;
		atomic_fetch_add(&g_idle_held_total, 1);
		conn_set_events(c, EPOLLIN);
		if (w->next_slot < w->n_slots)
			conn_start(&w->conns[w->next_slot++]);
		return;
	}
	if (!want_more_requests(w)) {
		c->st = C_IDLE;
		return;
	}
	if (opt.rate > 0)
		dispatch_pending_or_idle(c);
	else
		conn_send(c, now_ns());
}

/* Runs the connection as far as it can go without blocking. */
static void conn_step(struct conn *c)
{
	struct worker *w = c->w;
	for (;;) {
		switch (c->st) {
		case C_CONNECTING: {
			int err = 0;
			socklen_t len = sizeof(err);
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
				conn_fail(c, ERR_connect);
				return;
			}
			c->ssl = SSL_new(w->ctx);
			SSL_set_fd(c->ssl, c->fd);
			SSL_set_connect_state(c->ssl);
			if (opt.sni)
				SSL_set_tlsext_host_name(c->ssl, opt.sni);
			c->st = C_HANDSHAKE;
			break;
		}
		case C_HANDSHAKE: {
			int r = SSL_do_handshake(c->ssl);
			if (r == 1) {
				if (measuring())
					w->st.handshakes++;
				if (opt.rate > 0) {
					dispatch_pending_or_idle(c);
					return;
				}
				c->t_start = now_ns();
				c->wr_off = 0;
				c->st = C_WRITING;
				response_reset(c);
				break;
			}
			if (!conn_wait_for(c, SSL_get_error(c->ssl, r)))
				conn_fail(c, ERR_handshake);
			return;
		}
		case C_WRITING: {
			const char *req = opt.new_conn ? g_request_close : g_request;
			size_t len = opt.new_conn ? g_request_close_len : g_request_len;
			size_t written;
			int r = SSL_write_ex(c->ssl, req + c->wr_off, len - c->wr_off, &written);
			if (r == 1) {
				c->wr_off += written;
				if (c->wr_off < len)
					break;
				c->st = C_READING;
				conn_set_events(c, EPOLLIN);
				break;
			}
			if (!conn_wait_for(c, SSL_get_error(c->ssl, r)))
				conn_fail(c, ERR_tls_write);
			return;
		}
		case C_READING: {
			char buf[16384];
			size_t n;
			int r = SSL_read_ex(c->ssl, buf, sizeof(buf), &n);
			if (r != 1) {
				int e = SSL_get_error(c->ssl, r);
				if (conn_wait_for(c, e))
					return;
				if (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL) {
					if (c->head_done && c->body_mode == BODY_TO_EOF) {
						response_complete(c);
						return;
					}
					conn_fail(c, ERR_eof);
					return;
				}
				conn_fail(c, ERR_tls_read);
				return;
			}
			const char *body = buf;
			size_t body_len = n;
			if (!c->head_done) {
				size_t take = n < sizeof(c->head) - 1 - c->head_len
						      ? n
						      : sizeof(c->head) - 1 - c->head_len;
				memcpy(c->head + c->head_len, buf, take);
				size_t old = c->head_len;
				c->head_len += take;
				c->head[c->head_len] = 0;
				char *end = strstr(c->head, "\r\n\r\n");
				if (!end) {
					if (c->head_len == sizeof(c->head) - 1)
						conn_fail(c, ERR_http_parse);
					break;
				}
				size_t head_bytes = (size_t)(end + 4 - c->head);
				end[2] = 0; /* keep the last header's CRLF for head_value */
				c->head_done = true;
				if (response_head(c) < 0) {
					conn_fail(c, ERR_http_parse);
					return;
				}
				body = buf + (head_bytes - old);
				body_len = n - (head_bytes - old);
				if (c->body_mode == BODY_LENGTH && c->body_left == 0 && body_len == 0) {
					response_complete(c);
					return;
				}
			}
			int done = response_body(c, body, body_len);
			if (done < 0) {
				conn_fail(c, ERR_http_parse);
				return;
			}
			if (done) {
				response_complete(c);
				return;
			}
			break;
		}
		case C_IDLE:
		case C_HELD: {
			/* Nothing is expected: the server closed the connection (or sent junk). */
			char buf[512];
			size_t n;
			int r = SSL_read_ex(c->ssl, buf, sizeof(buf), &n);
			if (r != 1 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ)
				return;
			if (c->st == C_HELD) {
				atomic_fetch_sub(&g_idle_held_total, 1);
				count_error(w, ERR_eof);
				conn_close(c);
			} else {
				for (int i = 0; i < w->n_idle; i++)
					if (w->idle[i] == c) {
						w->idle[i] = w->idle[--w->n_idle];
						break;
					}
				conn_restart(c); /* a keep-alive timeout is not an error */
			}
			return;
		}
		}
	}
}

/* ---- fixed offered load ---------------------------------------------------------------- */

static void dispatch_pending_or_idle(struct conn *c)
{
	struct worker *w = c->w;
	if (w->pending_len) {
		uint64_t due = w->pending[w->pending_head];
		w->pending_head = (w->pending_head + 1) % w->pending_cap;
		w->pending_len--;
		conn_send(c, due);
		return;
	}
	c->st = C_IDLE;
	conn_set_events(c, EPOLLIN);
	w->idle[w->n_idle++] = c;
}

/* Issues every request that has fallen due; returns the ns until the next one. */
static uint64_t rate_tick(struct worker *w)
{
	uint64_t now = now_ns();
	while (w->next_due <= now && want_more_requests(w)) {
		uint64_t due = w->next_due;
		w->next_due += w->interval_ns;
		if (w->n_idle) {
			conn_send(w->idle[--w->n_idle], due);
		} else if (w->pending_len < w->pending_cap) {
			w->pending[(w->pending_head + w->pending_len++) % w->pending_cap] = due;
		} else {
			count_error(w, ERR_overload);
		}
	}
	return w->next_due > now ? w->next_due - now : 0;
}

/* ---- threads ----------------------------------------------------------------------------- */

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct epoll_event evs[256];
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (opt.rate > 0) {
		w->interval_ns = (uint64_t)(1e9 * opt.threads / opt.rate);
		w->next_due = now_ns() + w->interval_ns;
		w->pending_cap = 1 << 20;
		w->pending = calloc(w->pending_cap, sizeof(*w->pending));
		w->idle = calloc((size_t)w->n_conns, sizeof(*w->idle));
		if (!w->pending || !w->idle) {
			fprintf(stderr, "loadgen: out of memory\n");
			exit(2);
		}
	}
	for (int i = 0; i < w->n_slots; i++) {
		w->conns[i].w = w;
		w->conns[i].fd = -1;
	}
	for (w->next_slot = 0; w->next_slot < w->n_conns && w->next_slot < w->n_slots; w->next_slot++)
		conn_start(&w->conns[w->next_slot]);
	while (!atomic_load_explicit(&g_stop, memory_order_relaxed) && w->quota != 0) {
		struct timespec ts = {0, 100 * 1000 * 1000};
		if (opt.rate > 0) {
			uint64_t wait = rate_tick(w);
			if (wait < (uint64_t)ts.tv_nsec)
				ts.tv_nsec = (long)wait;
		}
		int n = epoll_pwait2(w->epfd, evs, 256, &ts, NULL);
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->fd >= 0)
				conn_step(c);
		}
	}
	return NULL;
}

/* ---- request and report ----------------------------------------------------------------- */

static char *build_request(bool close_conn, size_t *len_out)
{
	size_t body_len = opt.body, form_len = 0;
	if (opt.id_in == ID_FORM) {
		/* client_id=ID, padded to the body size with a second field: &p=aaa... */
		form_len = strlen("client_id=") + strlen(opt.client_id);
		if (body_len < form_len)
			body_len = form_len;
		else if (body_len > form_len && body_len < form_len + 3)
			body_len = form_len + 3;
	}
	size_t cap = 1024 + strlen(opt.path) + strlen(opt.client_id) + body_len;
	for (int i = 0; i < opt.n_headers; i++)
		cap += strlen(opt.headers[i]) + 2;
	char *r = malloc(cap), *body;
	if (!r)
		return NULL;
	const char *host = opt.sni ? opt.sni : opt.host;
	int n = snprintf(r, cap, "%s %s%s%s HTTP/1.1\r\nHost: %s\r\n", body_len ? "POST" : "GET",
			 opt.path, opt.id_in == ID_QUERY ? "?client_id=" : "",
			 opt.id_in == ID_QUERY ? opt.client_id : "", host);
	if (opt.id_in == ID_HEADER)
		n += snprintf(r + n, cap - (size_t)n, "X-Client-Id: %s\r\n", opt.client_id);
	for (int i = 0; i < opt.n_headers; i++)
		n += snprintf(r + n, cap - (size_t)n, "%s\r\n", opt.headers[i]);
	if (body_len)
		n += snprintf(r + n, cap - (size_t)n, "Content-Type: %s\r\nContent-Length: %zu\r\n",
			      opt.id_in == ID_FORM ? "application/x-www-form-urlencoded"
						   : "application/octet-stream",
			      body_len);
	if (close_conn)
		n += snprintf(r + n, cap - (size_t)n, "Connection: close\r\n");
	n += snprintf(r + n, cap - (size_t)n, "\r\n");
	body = r + n;
	memset(body, 'a', body_len);
	if (opt.id_in == ID_FORM) {
		memcpy(body, "client_id=", 10);
		memcpy(body + 10, opt.client_id, form_len - 10);
		if (body_len > form_len)
			memcpy(body + form_len, "&p=", 3);
	}
	*len_out = (size_t)n + body_len;
	return r;
}

static double hist_percentile(const uint64_t *hist, uint64_t total, double q)
{
	if (!total)
		return 0;
	uint64_t want = (uint64_t)(q * (double)total + 0.5), seen = 0;
	if (want < 1)
		want = 1;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += hist[i];
		if (seen >= want)
			return (double)hist_value(i) / 1000.0; /* ms */
	}
	return (double)hist_value(HIST_BUCKETS - 1) / 1000.0;
}

struct window {
	double wall_s, server_cpu_s, self_cpu_s;
};

static void print_report(const struct stats *t, const struct window *win, long rss_before,
			 long rss_after, long held)
{
	const char *mode = opt.idle ? "idle" : opt.new_conn ? "new_conn" : opt.rate > 0 ? "rate" : "keepalive";
	printf("{\"mode\":\"%s\",\"tls\":\"%s\",\"conns\":%d,\"threads\":%d,\"duration_s\":%.3f,",
	       mode, opt.tls_version == TLS1_3_VERSION ? "1.3" : "1.2", opt.conns, opt.threads,
	       win->wall_s);
	if (opt.rate > 0)
		printf("\"offered_rps\":%.1f,", opt.rate);
	printf("\"requests\":%llu,\"handshakes\":%llu,\"rps\":%.1f,\"handshakes_per_s\":%.1f,",
	       (unsigned long long)t->requests, (unsigned long long)t->handshakes,
	       (double)t->requests / win->wall_s, (double)t->handshakes / win->wall_s);
	printf("\"latency_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"p999\":%.3f},",
	       hist_percentile(t->hist, t->requests, 0.50), hist_percentile(t->hist, t->requests, 0.99),
	       hist_percentile(t->hist, t->requests, 0.999));
	printf("\"errors\":{");
	uint64_t nerr = 0;
	for (int k = 0; k < N_ERROR_KINDS; k++) {
		printf("%s\"%s\":%llu", k ? "," : "", error_names[k], (unsigned long long)t->errors[k]);
		nerr += t->errors[k];
	}
	printf("},\"errors_total\":%llu,", (unsigned long long)nerr);
	printf("\"client_cpu_s\":%.3f", win->self_cpu_s);
	if (opt.n_server_pids) {
		printf(",\"server_cpu_s\":%.3f", win->server_cpu_s);
		if (t->requests)
			printf(",\"server_cpu_per_request_us\":%.1f",
			       win->server_cpu_s * 1e6 / (double)t->requests);
		if (t->handshakes && (opt.new_conn || opt.idle))
			printf(",\"server_cpu_per_handshake_ms\":%.3f",
			       win->server_cpu_s * 1e3 / (double)t->handshakes);
	}
	if (opt.idle) {
		printf(",\"idle_held\":%ld,\"server_rss_before_kib\":%ld,\"server_rss_after_kib\":%ld",
		       held, rss_before, rss_after);
		if (held > 0 && rss_before >= 0)
			printf(",\"server_bytes_per_idle_conn\":%.0f",
			       (double)(rss_after - rss_before) * 1024.0 / (double)held);
	}
	printf("}\n");
	fprintf(stderr,
		"loadgen: %s %.1f req/s, %.1f handshakes/s, p50 %.3f ms p99 %.3f ms, %llu errors",
		mode, (double)t->requests / win->wall_s, (double)t->handshakes / win->wall_s,
		hist_percentile(t->hist, t->requests, 0.50),
		hist_percentile(t->hist, t->requests, 0.99), (unsigned long long)nerr);
	if (opt.n_server_pids && t->requests)
		fprintf(stderr, ", server %.1f us CPU/request",
			win->server_cpu_s * 1e6 / (double)t->requests);
	fprintf(stderr, "\n");
}

static void parse_pids(const char *s)
{
	char *copy = strdup(s), *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
		if (opt.n_server_pids == (int)(sizeof(opt.server_pids) / sizeof(opt.server_pids[0])))
			usage(2);
		opt.server_pids[opt.n_server_pids++] = (pid_t)atoi(tok);
	}
	free(copy);
}

static SSL_CTX *client_ctx(void)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, opt.tls_version);
	SSL_CTX_set_max_proto_version(ctx, opt.tls_version);
	/* One suite, so that every server negotiates the same one whatever its preference. */
	if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256") != 1 ||
	    SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256") != 1 ||
	    SSL_CTX_set1_groups_list(ctx, opt.groups) != 1 ||
	    SSL_CTX_use_certificate_chain_file(ctx, opt.cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, opt.key, SSL_FILETYPE_PEM) != 1)
		goto fail;
	/* Every --new-conn handshake is a full one, as a TPP's first call would be. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (opt.ca) {
		if (SSL_CTX_load_verify_locations(ctx, opt.ca, NULL) != 1)
			goto fail;
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"host", required_argument, NULL, 'H'}, {"port", required_argument, NULL, 'p'},
		{"sni", required_argument, NULL, 'S'}, {"ca", required_argument, NULL, 'A'},
		{"cert", required_argument, NULL, 'C'}, {"key", required_argument, NULL, 'K'},
		{"conns", required_argument, NULL, 'c'}, {"threads", required_argument, NULL, 't'},
		{"duration", required_argument, NULL, 'd'}, {"count", required_argument, NULL, 'n'},
		{"warmup", required_argument, NULL, 'w'}, {"new-conn", no_argument, NULL, 'N'},
		{"rate", required_argument, NULL, 'r'}, {"idle", required_argument, NULL, 'I'},
		{"hold", required_argument, NULL, 'h'}, {"tls", required_argument, NULL, 'V'},
		{"groups", required_argument, NULL, 'g'}, {"path", required_argument, NULL, 'P'},
		{"client-id", required_argument, NULL, 'i'}, {"id-in", required_argument, NULL, 'l'},
		{"body", required_argument, NULL, 'b'}, {"server-pid", required_argument, NULL, 's'},
		{"header", required_argument, NULL, 'e'}, {"help", no_argument, NULL, 'u'}, {0},
	};
	int o;
	while ((o = getopt_long(argc, argv, "H:p:c:t:d:n:w:", longopts, NULL)) != -1) {
		switch (o) {
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'S': opt.sni = optarg; break;
		case 'A': opt.ca = optarg; break;
		case 'C': opt.cert = optarg; break;
		case 'K': opt.key = optarg; break;
		case 'c': opt.conns = atoi(optarg); break;
		case 't': opt.threads = atoi(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'n': opt.count = atoll(optarg); break;
		case 'w': opt.warmup = atof(optarg); break;
		case 'N': opt.new_conn = true; break;
		case 'r': opt.rate = atof(optarg); break;
		case 'I': opt.idle = atol(optarg); break;
		case 'h': opt.hold = atof(optarg); break;
		case 'V':
			if (strcmp(optarg, "1.3") == 0)
				opt.tls_version = TLS1_3_VERSION;
			else if (strcmp(optarg, "1.2") == 0)
				opt.tls_version = TLS1_2_VERSION;
			else
				usage(2);
			break;
		case 'g': opt.groups = optarg; break;
		case 'P': opt.path = optarg; break;
		case 'i': opt.client_id = optarg; break;
		case 'l':
			if (strcmp(optarg, "header") == 0)
				opt.id_in = ID_HEADER;
			else if (strcmp(optarg, "form") == 0)
				opt.id_in = ID_FORM;
			else if (strcmp(optarg, "query") == 0)
				opt.id_in = ID_QUERY;
			else if (strcmp(optarg, "none") == 0)
				opt.id_in = ID_NONE;
			else
				usage(2);
			break;
		case 'b': opt.body = (size_t)atol(optarg); break;
		case 's': parse_pids(optarg); break;
		case 'e':
			if (opt.n_headers == (int)(sizeof(opt.headers) / sizeof(opt.headers[0])) ||
			    !strchr(optarg, ':') || strpbrk(optarg, "\r\n"))
				usage(2);
			opt.headers[opt.n_headers++] = optarg;
			break;
		case 'u': usage(0); break;
		default: usage(2);
		}
	}
	if (optind != argc || !opt.cert || !opt.key || opt.conns < 1 || opt.threads < 1 ||
	    opt.threads > opt.conns || (opt.idle && opt.idle < opt.threads) || opt.duration <= 0 || opt.port < 1 || opt.port > 65535 ||
	    (opt.rate > 0 && (opt.new_conn || opt.idle)) || (opt.idle && opt.new_conn))
		usage(2);

	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_TIMERSLACK, 1UL); /* --rate schedules requests tens of microseconds apart */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	char port[8];
	snprintf(port, sizeof(port), "%d", opt.port);
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST};
	int gai = getaddrinfo(opt.host, port, &hints, &g_addr);
	if (gai) {
		fprintf(stderr, "loadgen: %s: %s\n", opt.host, gai_strerror(gai));
		return 2;
	}
	SSL_CTX *ctx = client_ctx();
	if (!ctx) {
		fprintf(stderr, "loadgen: TLS setup (--cert, --key, --ca, --groups): ");
		ERR_print_errors_fp(stderr);
		return 2;
	}
	char *req = build_request(false, &g_request_len);
	char *req_close = build_request(true, &g_request_close_len);
	if (!req || !req_close)
		return 2;
	g_request = req;
	g_request_close = req_close;

	struct worker *ws = calloc((size_t)opt.threads, sizeof(*ws));
	if (!ws)
		return 2;
	long rss_before = opt.idle ? server_rss_kib() : 0;
	atomic_store(&g_measuring, opt.warmup <= 0);
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &ws[i];
		w->ctx = ctx;
		w->n_conns = opt.conns / opt.threads + (i < opt.conns % opt.threads);
		w->quota = opt.count ? opt.count / opt.threads + (i < opt.count % opt.threads) : -1;
		w->n_slots = opt.idle ? (int)(opt.idle / opt.threads + (i < opt.idle % opt.threads))
				      : w->n_conns;
		w->conns = calloc((size_t)w->n_slots, sizeof(*w->conns));
		if (!w->conns || pthread_create(&w->tid, NULL, worker_main, w) != 0) {
			fprintf(stderr, "loadgen: cannot start thread %d\n", i);
			return 2;
		}
	}

	struct window win = {0};
	long rss_after = 0, held = 0;
	if (opt.warmup > 0) {
		struct timespec ts = {(time_t)opt.warmup,
				      (long)((opt.warmup - (double)(time_t)opt.warmup) * 1e9)};
		nanosleep(&ts, NULL);
		atomic_store(&g_measuring, true);
	}
	uint64_t t0 = now_ns();
	double s0 = server_cpu_s(), c0 = self_cpu_s();
	if (opt.idle) {
		/* Wait until every connection is held (or the duration runs out), let the server
		 * settle, then read its memory. */
		uint64_t deadline = t0 + (uint64_t)(opt.duration * 1e9);
		while (atomic_load(&g_idle_held_total) < opt.idle && now_ns() < deadline)
			usleep(10000);
		usleep(500000);
		held = atomic_load(&g_idle_held_total);
		rss_after = server_rss_kib();
		struct timespec ts = {(time_t)opt.hold,
				      (long)((opt.hold - (double)(time_t)opt.hold) * 1e9)};
		nanosleep(&ts, NULL);
	} else if (!opt.count) {
		struct timespec ts = {(time_t)opt.duration,
				      (long)((opt.duration - (double)(time_t)opt.duration) * 1e9)};
		nanosleep(&ts, NULL);
	}
	if (!opt.count)
		atomic_store(&g_measuring, false);
	atomic_store(&g_stop, !opt.count || opt.idle);
	for (int i = 0; i < opt.threads; i++)
		pthread_join(ws[i].tid, NULL);
	win.wall_s = (double)(now_ns() - t0) / 1e9;
	win.server_cpu_s = server_cpu_s() - s0;
	win.self_cpu_s = self_cpu_s() - c0;

	struct stats total = {0};
	for (int i = 0; i < opt.threads; i++) {
		struct stats *s = &ws[i].st;
		total.requests += s->requests;
		total.handshakes += s->handshakes;
		for (int k = 0; k < N_ERROR_KINDS; k++)
			total.errors[k] += s->errors[k];
		for (unsigned b = 0; b < HIST_BUCKETS; b++)
			total.hist[b] += s->hist[b];
	}
	print_report(&total, &win, rss_before, rss_after, held);
	return total.requests || held ? 0 : 1;
}
