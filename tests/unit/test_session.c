/* Sessions end to end without a daemon: a TPP on one end of a socketpair (a blocking TLS client
 * with its certificate, in a thread), the session on the other, driven by an event loop on the
 * test's thread through a session_env built here (the configuration loaded from a file, the real
 * TPP-facing TLS context, a registry binding the TPP's certificate, the route table and this
 * "worker's" upstream pools), and plain HTTP upstreams in threads on loopback.
 *
 * Each scenario is a row of the table below: the requests a TPP sends on one keep-alive
 * connection with the answers it must get, the requests each upstream must have received (in
 * order, on how many connections), and the counters the exchange's outcome hook must leave on
 * each route. Nothing is timed: the one timer only ends a scenario that hangs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cert.h"
#include "config.h"
#include "ev.h"
#include "exchange.h"
#include "metrics.h"
#include "registry.h"
#include "session.h"
#include "tls.h"
#include "upconn.h"
#include "testpki.h"

/* Only against a hang: a scenario takes milliseconds. */
#define SCENARIO_GUARD_MS 10000
#define MAX_STEPS 8
#define MAX_REQUESTS 16 /* request lines an upstream records */
#define MAX_CONNS 8     /* connections an upstream serves (more are counted, then closed) */
#define TPP_CLIENT_ID "tpp1"

/* --- the table ------------------------------------------------------------------------------ */

/* One request on the TPP's connection and the answer it must get. */
struct step {
	const char *path;
	int status;
	const char *body;  /* 2xx: the upstream's answer, "<upstream> <path>" */
	const char *error; /* otherwise: the JSON body's "error" */
	bool retry_after;  /* Retry-After: >= 1 (else absent) */
	bool closes;       /* Connection: close, and the gateway then closes */
	bool pipelined;    /* sent in one write with the next step's request, before any answer */
};

/* What one upstream must have seen; an upstream not listed saw nothing. */
struct upstream_want {
	const char *name;
	unsigned accepts;
	const char *requests[MAX_REQUESTS]; /* request lines, in the order they came */
};

/* A route's counters afterwards; a route not listed counted nothing. */
struct route_want {
	const char *prefix;
	unsigned requests, r2xx, r4xx, r5xx;
	unsigned spike_passed, spike_refused;
};

struct scenario {
	const char *name;
	struct step steps[MAX_STEPS];
	struct upstream_want upstreams[3];
	struct route_want routes[4];
};

/* Routes of every scenario (load_config): /a -> alpha, /b -> beta, /s -> spiky with a spike
 * arrest of 1 a minute, burst 2 (nothing refills during a scenario), /r -> recycling, which
 * closes each connection when its second request comes, /c -> closing, which
 * answers with Connection: close and closes, /dead -> an upstream whose port refuses
 * connections. */
static const struct scenario scenarios[] = {
	{
		"two routes on one keep-alive connection: each upstream gets its own route's "
		"requests in order, on one pooled connection",
		.steps = {{"/a/1", 200, "alpha /a/1"},
			  {"/b/1", 200, "beta /b/1"},
			  {"/a/2", 200, "alpha /a/2"},
			  {"/b/2", 200, "beta /b/2"}},
		.upstreams = {{"alpha", 1, {"GET /a/1 HTTP/1.1", "GET /a/2 HTTP/1.1"}},
			      {"beta", 1, {"GET /b/1 HTTP/1.1", "GET /b/2 HTTP/1.1"}}},
		.routes = {{"/a", 2, .r2xx = 2}, {"/b", 2, .r2xx = 2}},
	},
	{
		"pipelined requests of two routes: answered in order, each by its own upstream",
		.steps = {{"/a/1", 200, "alpha /a/1", .pipelined = true},
			  {"/b/1", 200, "beta /b/1", .pipelined = true},
			  {"/a/2", 200, "alpha /a/2"}},
		.upstreams = {{"alpha", 1, {"GET /a/1 HTTP/1.1", "GET /a/2 HTTP/1.1"}},
			      {"beta", 1, {"GET /b/1 HTTP/1.1"}}},
		.routes = {{"/a", 2, .r2xx = 2}, {"/b", 1, .r2xx = 1}},
	},
	{
		"an upstream that closes after its answer: its connection is not pooled, the TPP's "
		"stays open",
		.steps = {{"/c/1", 200, "closing /c/1"}, {"/c/2", 200, "closing /c/2"}},
		.upstreams = {{"closing", 2, {"GET /c/1 HTTP/1.1", "GET /c/2 HTTP/1.1"}}},
		.routes = {{"/c", 2, .r2xx = 2}},
	},
	{
		"a pooled connection the upstream closes as the next request arrives: that GET "
		"is sent again on a new connection, and the TPP gets its answer, not a 502",
		.steps = {{"/r/1", 200, "recycling /r/1"},
			  {"/r/2", 200, "recycling /r/2"},
			  {"/r/3", 200, "recycling /r/3"}},
		.upstreams = {{"recycling", 3,
			       {"GET /r/1 HTTP/1.1", "GET /r/2 HTTP/1.1", "GET /r/2 HTTP/1.1",
				"GET /r/3 HTTP/1.1", "GET /r/3 HTTP/1.1"}}},
		.routes = {{"/r", 3, .r2xx = 3}},
	},
	{
		"a path without a route: 404 not_found, and the connection goes on",
		.steps = {{"/nowhere", 404, .error = "not_found"},
			  {"/ab", 404, .error = "not_found"}, /* /a only on a segment boundary */
			  {"/a/1", 200, "alpha /a/1"}},
		.upstreams = {{"alpha", 1, {"GET /a/1 HTTP/1.1"}}},
		.routes = {{"/a", 1, .r2xx = 1}},
	},
	{
		"spike arrest: the third request gets 429 with Retry-After, is not forwarded, and "
		"the connection goes on",
		.steps = {{"/s/1", 200, "spiky /s/1"},
			  {"/s/2", 200, "spiky /s/2"},
			  {"/s/3", 429, .error = "too_many_requests", .retry_after = true},
			  {"/a/1", 200, "alpha /a/1"}},
		.upstreams = {{"spiky", 1, {"GET /s/1 HTTP/1.1", "GET /s/2 HTTP/1.1"}},
			      {"alpha", 1, {"GET /a/1 HTTP/1.1"}}},
		.routes = {{"/s", 3, .r2xx = 2, .r4xx = 1, .spike_passed = 2, .spike_refused = 1},
			   {"/a", 1, .r2xx = 1}},
	},
	{
		"an upstream that refuses the connection: 502 upstream_error, then the connection "
		"closes",
		.steps = {{"/a/1", 200, "alpha /a/1"},
			  {"/dead/1", 502, .error = "upstream_error", .closes = true}},
		.upstreams = {{"alpha", 1, {"GET /a/1 HTTP/1.1"}}},
		.routes = {{"/a", 1, .r2xx = 1}, {"/dead", 1, .r5xx = 1}},
	},
};

/* --- blocking HTTP/1.1 reading, for the TPP (through TLS) and the upstreams (plain) ------- */

/* Bytes from a blocking socket; what was read past one message stays for the next. */
struct reader {
	int fd;
	SSL *ssl; /* NULL: plain */
	char buf[8192];
	size_t len;
};

/* Reads more; false on EOF, error, or a full buffer. */
static bool reader_fill(struct reader *r)
{
	size_t room = sizeof(r->buf) - r->len;
	if (!room)
		return false;
	ssize_t n = r->ssl ? SSL_read(r->ssl, r->buf + r->len, (int)room)
			   : read(r->fd, r->buf + r->len, room);
	if (n <= 0)
		return false;
	r->len += (size_t)n;
	return true;
}

static void reader_take(struct reader *r, char *out, size_t n)
{
	memcpy(out, r->buf, n);
	out[n] = '\0';
	memmove(r->buf, r->buf + n, r->len - n);
	r->len -= n;
}

/* A message head through its blank line, NUL-terminated; false on EOF before it. */
static bool reader_head(struct reader *r, char *head, size_t cap)
{
	for (;;) {
		const char *end = memmem(r->buf, r->len, "\r\n\r\n", 4);
		if (end) {
			size_t n = (size_t)(end - r->buf) + 4;
			if (n >= cap)
				return false;
			reader_take(r, head, n);
			return true;
		}
		if (!reader_fill(r))
			return false;
	}
}

/* Exactly len body bytes, NUL-terminated (cap > len). */
static bool reader_body(struct reader *r, char *body, size_t len, size_t cap)
{
	if (len >= cap)
		return false;
	while (r->len < len)
		if (!reader_fill(r))
			return false;
	reader_take(r, body, len);
	return true;
}

/* The value of header name in head (case-insensitive name), or false. */
static bool header_value(const char *head, const char *name, char *out, size_t cap)
{
	size_t nlen = strlen(name);
	for (const char *line = strstr(head, "\r\n"); line && line[2] != '\r';
	     line = strstr(line + 2, "\r\n")) {
		const char *h = line + 2;
		if (strncasecmp(h, name, nlen) != 0 || h[nlen] != ':')
			continue;
		const char *v = h + nlen + 1;
		v += strspn(v, " \t");
		snprintf(out, cap, "%.*s", (int)strcspn(v, "\r"), v);
		return true;
	}
	return false;
}

static int write_all(int fd, const char *p, size_t len)
{
	while (len) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* --- upstreams: plain HTTP on 127.0.0.1, a thread per connection ------------------------ */

struct upstream_server;

struct upstream_conn {
	struct upstream_server *srv;
	int fd;
	pthread_t thread;
};

struct upstream_server {
	const char *name;
	bool answers_close; /* Connection: close, then FIN */
	/* Keeps its connections alive, but closes each one without an answer when its second
	 * request comes: a keep-alive timeout that struck as the gateway reused the connection. */
	bool drops_second;
	int listen_fd;
	char url[64];
	pthread_t acceptor;
	pthread_mutex_t lock; /* guards what follows */
	unsigned accepts;
	struct upstream_conn conns[MAX_CONNS];
	unsigned n_conns;
	char requests[MAX_REQUESTS][128];
	unsigned n_requests;
};

/* A TCP socket bound to 127.0.0.1 on a free port; listening or not (then a connect to it is
 * refused). */
static int loopback_socket(bool listening, uint16_t *port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	if (listening)
		assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
	*port = ntohs(a.sin_port);
	return fd;
}

/* Records each request line and answers 200 with "<name> <path>", keeping the connection unless
 * the server answers with close. The requests forwarded in these scenarios have no body. */
static void *upstream_serve(void *arg)
{
	struct upstream_conn *c = arg;
	struct upstream_server *srv = c->srv;
	struct reader r = {.fd = c->fd};
	char head[4096], body[256], resp[512];
	for (unsigned on_conn = 1; reader_head(&r, head, sizeof(head)); on_conn++) {
		int line_len = (int)strcspn(head, "\r");
		pthread_mutex_lock(&srv->lock);
		if (srv->n_requests < MAX_REQUESTS)
			snprintf(srv->requests[srv->n_requests++], sizeof(srv->requests[0]), "%.*s",
				 line_len, head);
		pthread_mutex_unlock(&srv->lock);
		if (srv->drops_second && on_conn == 2) {
			shutdown(c->fd, SHUT_RDWR);
			break;
		}
		const char *target = strchr(head, ' ');
		target = target ? target + 1 : "";
		int blen = snprintf(body, sizeof(body), "%s %.*s", srv->name,
				    (int)strcspn(target, " \r"), target);
		int n = snprintf(resp, sizeof(resp),
				 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				 "Content-Length: %d\r\n%s\r\n%s",
				 blen, srv->answers_close ? "Connection: close\r\n" : "", body);
		if (write_all(c->fd, resp, (size_t)n) < 0)
			break;
		if (srv->answers_close) {
			shutdown(c->fd, SHUT_WR);
			break;
		}
	}
	return NULL;
}

static void *upstream_accept(void *arg)
{
	struct upstream_server *srv = arg;
	for (;;) {
		int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return NULL; /* shut down by upstream_stop */
		}
		pthread_mutex_lock(&srv->lock);
		srv->accepts++;
		struct upstream_conn *c = srv->n_conns < MAX_CONNS ? &srv->conns[srv->n_conns] : NULL;
		if (c) {
			c->srv = srv;
			c->fd = fd;
			if (pthread_create(&c->thread, NULL, upstream_serve, c) == 0)
				srv->n_conns++;
			else
				c = NULL;
		}
		pthread_mutex_unlock(&srv->lock);
		if (!c)
			close(fd);
	}
}

static void upstream_start(struct upstream_server *srv, const char *name, bool answers_close,
			   bool drops_second)
{
	uint16_t port;
	memset(srv, 0, sizeof(*srv));
	srv->name = name;
	srv->answers_close = answers_close;
	srv->drops_second = drops_second;
	pthread_mutex_init(&srv->lock, NULL);
	srv->listen_fd = loopback_socket(true, &port);
	snprintf(srv->url, sizeof(srv->url), "http://127.0.0.1:%u", port);
	assert_int_equal(pthread_create(&srv->acceptor, NULL, upstream_accept, srv), 0);
}

static void upstream_stop(struct upstream_server *srv)
{
	shutdown(srv->listen_fd, SHUT_RDWR); /* accept() returns */
	pthread_join(srv->acceptor, NULL);
	close(srv->listen_fd);
	for (unsigned i = 0; i < srv->n_conns; i++) {
		shutdown(srv->conns[i].fd, SHUT_RDWR);
		pthread_join(srv->conns[i].thread, NULL);
		close(srv->conns[i].fd);
	}
	pthread_mutex_destroy(&srv->lock);
}

/* --- the TPP: a blocking TLS client in a thread ------------------------------------------ */

struct tpp_response {
	char head[2048];
	char body[512];
};

struct tpp {
	SSL_CTX *ctx;
	int fd;
	int done_fd; /* written when the thread is done: ends the event loop */
	const struct step *steps;
	unsigned n_steps;
	struct tpp_response got[MAX_STEPS];
	unsigned n_got;
	bool eof_after; /* the gateway closed the connection after the last response */
	char failure[160];
};

static bool tpp_read_response(struct reader *r, struct tpp_response *resp)
{
	char length[32];
	return reader_head(r, resp->head, sizeof(resp->head)) &&
	       header_value(resp->head, "content-length", length, sizeof(length)) &&
	       reader_body(r, resp->body, strtoul(length, NULL, 10), sizeof(resp->body));
}

/* Runs the steps on one connection; only records what came (cmocka asserts on the test's
 * thread). */
static void *tpp_main(void *arg)
{
	struct tpp *t = arg;
	SSL *ssl = SSL_new(t->ctx);
	struct reader r = {.fd = t->fd, .ssl = ssl};
	if (!ssl || SSL_set_fd(ssl, t->fd) != 1 || SSL_connect(ssl) != 1) {
		snprintf(t->failure, sizeof(t->failure), "TLS handshake with the session failed");
		goto out;
	}
	for (unsigned i = 0; i < t->n_steps;) {
		char req[MAX_STEPS * 128]; /* the table's paths are short */
		int n = 0;
		unsigned last = i;
		for (;; last++) {
			n += snprintf(req + n, sizeof(req) - (size_t)n,
				      "GET %s HTTP/1.1\r\nHost: gw.test\r\nX-Client-Id: " TPP_CLIENT_ID
				      "\r\n\r\n",
				      t->steps[last].path);
			if (!t->steps[last].pipelined || last + 1 == t->n_steps)
				break;
		}
		if (SSL_write(ssl, req, n) != n) {
			snprintf(t->failure, sizeof(t->failure), "cannot send %s", t->steps[i].path);
			goto out;
		}
		for (; i <= last; i++, t->n_got++)
			if (!tpp_read_response(&r, &t->got[i])) {
				snprintf(t->failure, sizeof(t->failure), "no complete response to %s",
					 t->steps[i].path);
				goto out;
			}
	}
	/* Waits for EOF only after a response that announced it (else a wrong answer would
	 * leave the loop to the guard). */
	char connection[16];
	if (t->n_steps && t->steps[t->n_steps - 1].closes &&
	    header_value(t->got[t->n_steps - 1].head, "connection", connection, sizeof(connection)) &&
	    strcasecmp(connection, "close") == 0)
		t->eof_after = r.len == 0 && !reader_fill(&r);
out:
	SSL_free(ssl);
	close(t->fd);
	uint64_t one = 1;
	if (write(t->done_fd, &one, sizeof(one)) != sizeof(one))
		abort(); /* the loop would wait for the guard: a hang, not a verdict */
	return NULL;
}

/* --- fixture: PKI, registry, configuration, upstreams, and one worker's session_env ------- */

enum { UP_ALPHA, UP_BETA, UP_SPIKY, UP_CLOSING, UP_RECYCLING, N_SERVERS };
static const char *const server_names[N_SERVERS] = {"alpha", "beta", "spiky", "closing",
						    "recycling"};

struct fixture {
	const struct scenario *sc;
	char dir[64];
	struct testpki pki;
	EVP_PKEY *server_key;
	X509 *server_cert;
	struct registry *reg;
	struct upstream_server servers[N_SERVERS];
	int dead_fd; /* bound, never listening: connections to its port are refused */
	uint16_t dead_port;
	struct config cfg;
	struct cert_store *trust;
	SSL_CTX *server_ctx, *tpp_ctx;
	struct ev_loop *loop;
	int done_fd;
	bool timed_out;
	struct route_table routes;
	struct upconn_pool pools[CONFIG_MAX_UPSTREAMS];
	char host_header[CONFIG_MAX_UPSTREAMS][80];
	struct buf access_log;
	struct session_env env;
};

static const char *fixture_path(const struct fixture *f, const char *name)
{
	static char p[160];
	snprintf(p, sizeof(p), "%s/%s", f->dir, name);
	return p;
}

static void write_pem_files(struct fixture *f)
{
	assert_int_equal(testpki_append(fixture_path(f, "ca.pem"), f->pki.ca, NULL), 0);
	assert_int_equal(testpki_append(fixture_path(f, "server.pem"), f->server_cert, NULL), 0);
	FILE *key = fopen(fixture_path(f, "server.key"), "w");
	assert_non_null(key);
	assert_int_equal(PEM_write_PrivateKey(key, f->server_key, NULL, NULL, 0, NULL, NULL), 1);
	assert_int_equal(fclose(key), 0);
}

static void bind_tpp(struct fixture *f)
{
	struct cert_info ci;
	char err[256];
	assert_int_equal(cert_get_info(f->pki.good, &ci), 0);
	char *pem = testpki_pem(f->pki.good);
	assert_non_null(pem);
	assert_int_equal(registry_bind(f->reg, TPP_CLIENT_ID, &ci, pem, false, 0, NULL, err,
				       sizeof(err)),
			 REG_OK);
	free(pem);
}

static void load_config(struct fixture *f)
{
	char json[2048], err[256];
	snprintf(json, sizeof(json),
		 "{\"listen\": [\"127.0.0.1:8443\"],"
		 " \"tls\": {\"cert\": \"server.pem\", \"key\": \"server.key\","
		 "          \"client_ca\": \"ca.pem\"},"
		 " \"upstreams\": {\"alpha\": {\"url\": \"%s\"}, \"beta\": {\"url\": \"%s\"},"
		 "               \"spiky\": {\"url\": \"%s\"}, \"closing\": {\"url\": \"%s\"},"
		 "               \"recycling\": {\"url\": \"%s\"},"
		 "               \"dead\": {\"url\": \"http://127.0.0.1:%u\"}},"
		 " \"routes\": [{\"prefix\": \"/a\", \"upstream\": \"alpha\"},"
		 "            {\"prefix\": \"/b\", \"upstream\": \"beta\"},"
		 "            {\"prefix\": \"/s\", \"upstream\": \"spiky\","
		 "             \"spike_arrest\": {\"rate\": 1, \"per\": \"minute\", \"burst\": 2}},"
		 "            {\"prefix\": \"/c\", \"upstream\": \"closing\"},"
		 "            {\"prefix\": \"/r\", \"upstream\": \"recycling\"},"
		 "            {\"prefix\": \"/dead\", \"upstream\": \"dead\"}],"
		 " \"client_id\": [\"header:x-client-id\"],"
		 " \"registry\": \"registry.db\","
		 " \"control_socket\": \"control.sock\"}",
		 f->servers[UP_ALPHA].url, f->servers[UP_BETA].url, f->servers[UP_SPIKY].url,
		 f->servers[UP_CLOSING].url, f->servers[UP_RECYCLING].url, f->dead_port);
	FILE *cf = fopen(fixture_path(f, "config.json"), "w");
	assert_non_null(cf);
	assert_true(fputs(json, cf) >= 0);
	assert_int_equal(fclose(cf), 0);
	if (config_load(fixture_path(f, "config.json"), &f->cfg, err, sizeof(err)) < 0)
		fail_msg("config: %s", err);
}

static void on_tpp_done(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)mask;
	(void)arg;
	uint64_t v;
	if (read(fd, &v, sizeof(v)) == sizeof(v))
		ev_stop(loop);
}

/* What worker_init does for its env and pools, with this fixture's pieces. */
static void build_env(struct fixture *f)
{
	char err[256];
	assert_int_equal(route_table_init(&f->routes, &f->cfg, NULL, err, sizeof(err)), 0);
	for (unsigned i = 0; i < f->cfg.n_upstreams; i++) {
		const struct config_upstream *u = &f->cfg.upstreams[i];
		char host[sizeof(f->host_header[i])]; /* u is inside f: GCC sees a possible overlap */
		snprintf(host, sizeof(host), "%s:%u", u->host, u->port);
		memcpy(f->host_header[i], host, sizeof(host));
		upconn_pool_init(&f->pools[i], f->loop, u, NULL, f->host_header[i]);
	}
	f->env = (struct session_env){
		.cfg = &f->cfg,
		.loop = f->loop,
		.server_ctx = f->server_ctx,
		.reg = f->reg,
		.routes = &f->routes,
		.pools = f->pools,
		.access_log = &f->access_log,
		.worker_id = 0,
		.request_id_salt = 0x5e5510,
	};
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[256];
	assert_non_null(f);
	f->sc = *state;
	f->done_fd = f->dead_fd = -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/psd2e-session.XXXXXX");
	assert_non_null(mkdtemp(f->dir));

	assert_int_equal(testpki_init(&f->pki), 0);
	f->server_key = testpki_key();
	assert_non_null(f->server_key);
	f->server_cert = testpki_leaf("gw.test", f->server_key, f->pki.ca, f->pki.ca_key, 200);
	assert_non_null(f->server_cert);
	write_pem_files(f);

	if (registry_open(fixture_path(f, "registry.db"), &f->reg, err, sizeof(err)) < 0)
		fail_msg("registry: %s", err);
	bind_tpp(f);

	for (unsigned i = 0; i < N_SERVERS; i++)
		upstream_start(&f->servers[i], server_names[i], i == UP_CLOSING,
			       i == UP_RECYCLING);
	f->dead_fd = loopback_socket(false, &f->dead_port);
	load_config(f);

	if (cert_store_load(f->cfg.tls.client_ca, NULL, &f->trust, err, sizeof(err)) < 0)
		fail_msg("trust: %s", err);
	f->server_ctx = tls_server_ctx_new(&f->cfg, f->trust, err, sizeof(err));
	if (!f->server_ctx)
		fail_msg("server context: %s", err);
	/* The TPP presents its certificate; the gateway's is not what is under test here. */
	f->tpp_ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(f->tpp_ctx);
	assert_int_equal(SSL_CTX_use_certificate(f->tpp_ctx, f->pki.good), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(f->tpp_ctx, f->pki.leaf_key), 1);
	SSL_CTX_set_verify(f->tpp_ctx, SSL_VERIFY_NONE, NULL);

	f->loop = ev_loop_new(4096);
	assert_non_null(f->loop);
	f->done_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(f->done_fd >= 0);
	assert_int_equal(ev_set(f->loop, f->done_fd, EV_READ, on_tpp_done, f), 0);
	build_env(f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	for (unsigned i = 0; i < f->cfg.n_upstreams; i++)
		upconn_pool_free(&f->pools[i]);
	route_table_free(&f->routes);
	buf_free(&f->access_log);
	ev_set(f->loop, f->done_fd, EV_NONE, NULL, NULL);
	close(f->done_fd);
	ev_loop_free(f->loop);
	for (unsigned i = 0; i < N_SERVERS; i++)
		upstream_stop(&f->servers[i]);
	close(f->dead_fd);
	SSL_CTX_free(f->tpp_ctx);
	SSL_CTX_free(f->server_ctx);
	cert_store_free(f->trust);
	config_free(&f->cfg);
	registry_close(f->reg);
	X509_free(f->server_cert);
	EVP_PKEY_free(f->server_key);
	testpki_free(&f->pki);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* --- running a scenario ------------------------------------------------------------------- */

static int64_t on_guard(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	(void)t;
	struct fixture *f = arg;
	f->timed_out = true;
	ev_stop(loop);
	return -1;
}

/* One session over a socketpair, served by the loop until the TPP is done. */
static void run_tpp(struct fixture *f, struct tpp *t)
{
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	assert_int_equal(fcntl(sv[0], F_SETFL, O_NONBLOCK), 0);
	struct sockaddr_storage peer = {0};
	struct sockaddr_in *in = (struct sockaddr_in *)&peer;
	in->sin_family = AF_INET;
	in->sin_port = htons(40000);
	assert_int_equal(inet_pton(AF_INET, "192.0.2.10", &in->sin_addr), 1);
	t->ctx = f->tpp_ctx;
	t->fd = sv[1];
	t->done_fd = f->done_fd;
	pthread_t thread;
	assert_int_equal(pthread_create(&thread, NULL, tpp_main, t), 0);

	struct session *s = session_new(&f->env, sv[0], &peer);
	struct ev_timer *guard = ev_timer_add(f->loop, SCENARIO_GUARD_MS, on_guard, f);
	if (s && guard)
		ev_run(f->loop);
	if (guard && !f->timed_out)
		ev_timer_del(f->loop, guard);
	if (s) {
		session_close(s); /* the TPP, still waiting if the loop was cut short, sees EOF */
		session_free(s);
	}
	pthread_join(thread, NULL);
	assert_non_null(s);
	assert_non_null(guard);
	if (f->timed_out)
		fail_msg("%s: no end after %d ms (%u of %u responses)", f->sc->name,
			 SCENARIO_GUARD_MS, t->n_got, t->n_steps);
}

static void check_step(const struct fixture *f, const struct step *st,
		       const struct tpp_response *got)
{
	const char *name = f->sc->name;
	char value[64];
	int status = 0;
	if (sscanf(got->head, "HTTP/1.1 %d ", &status) != 1 || status != st->status)
		fail_msg("%s: %s: status %d, want %d\n%s", name, st->path, status, st->status,
			 got->head);
	if (st->body) {
		if (strcmp(got->body, st->body) != 0)
			fail_msg("%s: %s: body '%s', want '%s'", name, st->path, got->body,
				 st->body);
	} else {
		json_t *j = json_loads(got->body, 0, NULL);
		const char *error = NULL;
		if (!j || json_unpack(j, "{s:s}", "error", &error) < 0 ||
		    strcmp(error, st->error) != 0)
			fail_msg("%s: %s: body %s, want error '%s'", name, st->path, got->body,
				 st->error);
		json_decref(j);
	}
	bool has_retry = header_value(got->head, "retry-after", value, sizeof(value));
	if (st->retry_after ? !has_retry || atoi(value) < 1 : has_retry)
		fail_msg("%s: %s: Retry-After %s, want %s", name, st->path,
			 has_retry ? value : "absent", st->retry_after ? ">= 1" : "absent");
	bool closes = header_value(got->head, "connection", value, sizeof(value)) &&
		      strcasecmp(value, "close") == 0;
	if (closes != st->closes)
		fail_msg("%s: %s: Connection: close %s", name, st->path,
			 closes ? "sent, want none" : "missing");
}

static void check_upstream(const struct fixture *f, struct upstream_server *srv)
{
	static const struct upstream_want none;
	const struct upstream_want *w = &none;
	for (size_t i = 0; i < sizeof(f->sc->upstreams) / sizeof(f->sc->upstreams[0]); i++)
		if (f->sc->upstreams[i].name && strcmp(f->sc->upstreams[i].name, srv->name) == 0)
			w = &f->sc->upstreams[i];
	pthread_mutex_lock(&srv->lock);
	unsigned accepts = srv->accepts, n = srv->n_requests;
	pthread_mutex_unlock(&srv->lock);
	if (accepts != w->accepts)
		fail_msg("%s: upstream %s accepted %u connections, want %u", f->sc->name, srv->name,
			 accepts, w->accepts);
	for (unsigned i = 0; i < MAX_REQUESTS && (i < n || w->requests[i]); i++) {
		const char *got = i < n ? srv->requests[i] : "(nothing)";
		const char *want = w->requests[i] ? w->requests[i] : "(nothing)";
		if (strcmp(got, want) != 0)
			fail_msg("%s: upstream %s request %u: '%s', want '%s'", f->sc->name,
				 srv->name, i + 1, got, want);
	}
}

/* The outcome hook as `stats` reports it (the route table's metrics, from zero at each
 * fixture's route_table_init): every routed request's outcome counted once, by class, and the
 * spike arrest's verdicts. */
static void check_routes(const struct fixture *f)
{
	json_t *stats = json_object(), *route;
	size_t i;
	assert_int_equal(metrics_render_json(stats), 0);
	json_t *routes = json_object_get(stats, "routes");
	assert_int_equal(json_array_size(routes), f->cfg.n_routes);
	json_array_foreach(routes, i, route)
	{
		static const struct route_want none;
		const char *prefix;
		json_int_t requests, none_, r1, r2, r3, r4, r5, passed = 0, refused = 0;
		json_t *policies = NULL; /* none when the route has no policy */
		assert_int_equal(json_unpack(route, "{s:s, s:I, s:{s:I, s:I, s:I, s:I, s:I, s:I}, s?o}",
					     "prefix", &prefix, "requests", &requests, "responses",
					     "none", &none_, "1xx", &r1, "2xx", &r2, "3xx", &r3,
					     "4xx", &r4, "5xx", &r5, "policies", &policies),
				 0);
		json_t *spike = json_object_get(policies, "spike_arrest");
		if (spike)
			assert_int_equal(json_unpack(spike, "{s:I, s:I}", "passed", &passed,
						     "refused", &refused),
					 0);
		const struct route_want *w = &none;
		for (size_t k = 0; k < sizeof(f->sc->routes) / sizeof(f->sc->routes[0]); k++)
			if (f->sc->routes[k].prefix && strcmp(f->sc->routes[k].prefix, prefix) == 0)
				w = &f->sc->routes[k];
		if (requests != w->requests || none_ + r1 + r2 + r3 + r4 + r5 != requests ||
		    r2 != w->r2xx || r4 != w->r4xx || r5 != w->r5xx || passed != w->spike_passed ||
		    refused != w->spike_refused)
			fail_msg("%s: route %s: requests %lld, responses none %lld 1xx %lld 2xx %lld "
				 "3xx %lld 4xx %lld 5xx %lld, spike arrest %lld passed %lld refused; "
				 "want requests %u = 2xx %u + 4xx %u + 5xx %u, spike arrest %u passed "
				 "%u refused",
				 f->sc->name, prefix, (long long)requests, (long long)none_,
				 (long long)r1, (long long)r2, (long long)r3, (long long)r4,
				 (long long)r5, (long long)passed, (long long)refused, w->requests,
				 w->r2xx, w->r4xx, w->r5xx, w->spike_passed, w->spike_refused);
	}
	json_decref(stats);
}

static void test_scenario(void **state)
{
	struct fixture *f = *state;
	const struct scenario *sc = f->sc;
	struct tpp *t = calloc(1, sizeof(*t));
	assert_non_null(t);
	t->steps = sc->steps;
	while (t->n_steps < MAX_STEPS && sc->steps[t->n_steps].path)
		t->n_steps++;
	run_tpp(f, t);
	for (unsigned i = 0; i < t->n_got; i++)
		check_step(f, &sc->steps[i], &t->got[i]);
	if (t->n_got != t->n_steps)
		fail_msg("%s: %u of %u responses: %s", sc->name, t->n_got, t->n_steps, t->failure);
	if (sc->steps[t->n_steps - 1].closes && !t->eof_after)
		fail_msg("%s: the connection stayed open after Connection: close", sc->name);
	for (unsigned i = 0; i < N_SERVERS; i++)
		check_upstream(f, &f->servers[i]);
	check_routes(f);
	free(t);
}

int main(void)
{
	enum { N = sizeof(scenarios) / sizeof(scenarios[0]) };
	struct CMUnitTest tests[N];
	signal(SIGPIPE, SIG_IGN); /* a peer gone mid-write is an error return, as in the daemon */
	for (size_t i = 0; i < N; i++)
		tests[i] = (struct CMUnitTest){
			.name = scenarios[i].name,
			.test_func = test_scenario,
			.setup_func = setup,
			.teardown_func = teardown,
			.initial_state = (void *)&scenarios[i],
		};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
