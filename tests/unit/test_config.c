/* Configuration loading: a valid full file, defaults, path resolution, URL and listen parsing,
 * and the exact "<key path>: <problem>" message of each kind of mistake. A tiny PKI (CA, server
 * certificate, CRLs, keys) is generated with OpenSSL in a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "psd2edge_abi.h"
#include "qcstatement.h"

static char tmpdir[64];

/* --- fixture: files ------------------------------------------------------------------------- */

static char *tmp_path(const char *name)
{
	static char p[8][PATH_MAX];
	static unsigned n;
	char *out = p[n++ % 8];
	snprintf(out, PATH_MAX, "%s/%s", tmpdir, name);
	return out;
}

static void write_text(const char *name, const char *text)
{
	FILE *f = fopen(tmp_path(name), "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static EVP_PKEY *make_key(void)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	assert_non_null(k);
	return k;
}

static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key)
{
	static long serial = 1;
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : name);
	X509_set_pubkey(x, key);
	assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
	return x;
}

static void write_cert(const char *name, X509 *x)
{
	FILE *f = fopen(tmp_path(name), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, x), 1);
	fclose(f);
}

static void write_key(const char *name, EVP_PKEY *k, const char *pass)
{
	FILE *f = fopen(tmp_path(name), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_PrivateKey(f, k, pass ? EVP_aes_256_cbc() : NULL,
					      (unsigned char *)pass, pass ? (int)strlen(pass) : 0,
					      NULL, NULL),
			 1);
	fclose(f);
}

static void write_crl(const char *name, X509 *ca, EVP_PKEY *ca_key)
{
	X509_CRL *crl = X509_CRL_new();
	assert_non_null(crl);
	X509_CRL_set_version(crl, 1);
	X509_CRL_set_issuer_name(crl, X509_get_subject_name(ca));
	ASN1_TIME *t = ASN1_TIME_adj(NULL, time(NULL), 0, 0);
	X509_CRL_set1_lastUpdate(crl, t);
	ASN1_TIME_adj(t, time(NULL), 7, 0);
	X509_CRL_set1_nextUpdate(crl, t);
	ASN1_TIME_free(t);
	assert_true(X509_CRL_sign(crl, ca_key, EVP_sha256()) > 0);
	FILE *f = fopen(tmp_path(name), "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509_CRL(f, crl), 1);
	fclose(f);
	X509_CRL_free(crl);
}

static int setup_pki(void **state)
{
	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/psd2edge-test-config-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	chmod(tmpdir, 0755); /* the permission test reads it as nobody */

	EVP_PKEY *ca_key = make_key(), *other_ca_key = make_key(), *srv_key = make_key(),
		 *other_key = make_key();
	X509 *ca = make_cert(ca_key, "Test CA", NULL, NULL);
	X509 *other_ca = make_cert(other_ca_key, "Other CA", NULL, NULL);
	X509 *srv = make_cert(srv_key, "server.test", ca, ca_key);

	write_cert("ca.pem", ca);
	write_cert("other-ca.pem", other_ca);
	write_cert("server.pem", srv);
	write_key("server.key", srv_key, NULL);
	write_key("other.key", other_key, NULL);
	write_key("encrypted.key", srv_key, "secret");
	write_crl("ca.crl", ca, ca_key);
	write_crl("other.crl", other_ca, other_ca_key);
	write_text("garbage.txt", "not PEM at all\n");
	mkdir(tmp_path("adir"), 0755);
	mkdir(tmp_path("conf"), 0755);

	/* A CA bundle with the unrelated CA first: the CRL check must look at every entry. */
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof(cmd), "cat %s %s > %s", tmp_path("other-ca.pem"), tmp_path("ca.pem"),
		 tmp_path("bundle.pem"));
	if (system(cmd) != 0)
		return -1;

	X509_free(ca);
	X509_free(other_ca);
	X509_free(srv);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(other_ca_key);
	EVP_PKEY_free(srv_key);
	EVP_PKEY_free(other_key);
	return 0;
}

static int teardown_pki(void **state)
{
	(void)state;
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	return system(cmd) == 0 ? 0 : -1;
}

/* --- fixture: configurations ------------------------------------------------------------------ */

/* Every key set, relative paths, https upstream. */
static json_t *full_config(void)
{
	json_error_t jerr;
	json_t *root = json_loads(
		"{"
		"\"listen\": [\"0.0.0.0:8443\", \"[::1]:9443\"],"
		"\"tls\": {\"cert\": \"server.pem\", \"key\": \"server.key\", "
		"          \"client_ca\": \"bundle.pem\", \"crl\": \"ca.crl\"},"
		"\"upstream\": {\"url\": \"https://127.0.0.1:9443/api/v1/\", \"ca\": \"ca.pem\","
		"               \"cert\": \"server.pem\", \"key\": \"server.key\"},"
		"\"client_id\": [\"form:client_id\", \"query:client_id\", \"header:X-Client-Id\"],"
		"\"registry\": \"state/registry.db\","
		"\"control_socket\": \"/run/psd2edge-test/control.sock\","
		"\"control_group\": \"root\","
		"\"control_readonly_group\": \"daemon\","
		"\"bpf\": {\"pin_dir\": \"/sys/fs/bpf/psd2edge-test\", \"interface\": \"lo\","
		"          \"mode\": \"generic\"},"
		"\"limits\": {\"max_header_bytes\": 8192, \"max_body_bytes\": 20971520,"
		"             \"max_form_bytes\": 4096, \"header_timeout_ms\": 2000,"
		"             \"idle_timeout_ms\": 30000, \"upstream_connect_timeout_ms\": 1000,"
		"             \"upstream_timeout_ms\": 15000, \"drain_timeout_ms\": 5000,"
		"             \"max_connections\": 500, \"min_body_rate\": 2048,"
		"             \"body_rate_window_ms\": 5000},"
		"\"workers\": 2,"
		"\"access_log\": \"/var/log/psd2edge/access.log\","
		"\"log_level\": \"debug\""
		"}",
		0, &jerr);
	assert_non_null(root);
	return root;
}

/* Only the required keys, plain http upstream. */
static json_t *minimal_config(void)
{
	json_error_t jerr;
	json_t *root = json_loads(
		"{"
		"\"listen\": [\"127.0.0.1:8443\"],"
		"\"tls\": {\"cert\": \"server.pem\", \"key\": \"server.key\", \"client_ca\": \"ca.pem\"},"
		"\"upstream\": {\"url\": \"http://127.0.0.1:8080\"},"
		"\"client_id\": [\"header:x-client-id\"],"
		"\"registry\": \"/var/lib/psd2edge/registry.db\","
		"\"control_socket\": \"/run/psd2edge/control.sock\""
		"}",
		0, &jerr);
	assert_non_null(root);
	return root;
}

/* root[obj][key] = value (obj NULL: top level); value NULL deletes. Steals value. */
static void set(json_t *root, const char *obj, const char *key, json_t *value)
{
	json_t *o = obj ? json_object_get(root, obj) : root;
	assert_non_null(o);
	if (value)
		json_object_set_new(o, key, value);
	else
		json_object_del(o, key);
}

static void write_config_at(const char *name, json_t *root)
{
	assert_int_equal(json_dump_file(root, tmp_path(name), 0), 0);
	chmod(tmp_path(name), 0644);
	json_decref(root);
}

/* Writes root (consumed) as config.json and loads it. */
static int load(json_t *root, struct config *cfg, char *err, size_t errlen)
{
	write_config_at("config.json", root);
	return config_load(tmp_path("config.json"), cfg, err, errlen);
}

static void expect_error(json_t *root, const char *want)
{
	struct config cfg;
	char err[512];
	int rc = load(root, &cfg, err, sizeof(err));
	if (rc == 0) {
		config_free(&cfg);
		fail_msg("loaded, wanted \"%s\"", want);
	}
	assert_string_equal(err, want);
	assert_null(cfg.dir); /* freed and zeroed on failure */
	assert_int_equal(cfg.n_listen, 0);
	config_free(&cfg); /* harmless twice */
}

static void expect_ok(json_t *root, struct config *cfg)
{
	char err[512] = "";
	if (load(root, cfg, err, sizeof(err)) != 0)
		fail_msg("unexpected error: %s", err);
}

/* --- valid configurations ------------------------------------------------------------------- */

static void test_full_config(void **state)
{
	(void)state;
	struct config cfg;
	expect_ok(full_config(), &cfg);

	char real[PATH_MAX];
	assert_non_null(realpath(tmpdir, real));
	assert_string_equal(cfg.dir, real);

	assert_int_equal(cfg.n_listen, 2);
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&cfg.listen[0].addr;
	assert_int_equal(a4->sin_family, AF_INET);
	assert_int_equal(ntohs(a4->sin_port), 8443);
	assert_int_equal(a4->sin_addr.s_addr, htonl(INADDR_ANY));
	assert_int_equal(cfg.listen[0].addrlen, sizeof(struct sockaddr_in));
	assert_string_equal(cfg.listen[0].text, "0.0.0.0:8443");
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&cfg.listen[1].addr;
	assert_int_equal(a6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(a6->sin6_port), 9443);
	assert_memory_equal(&a6->sin6_addr, &in6addr_loopback, sizeof(in6addr_loopback));
	assert_int_equal(cfg.listen[1].addrlen, sizeof(struct sockaddr_in6));
	assert_string_equal(cfg.listen[1].text, "[::1]:9443");

	char want[2 * PATH_MAX];
	snprintf(want, sizeof(want), "%s/server.pem", real);
	assert_string_equal(cfg.tls.cert, want);
	snprintf(want, sizeof(want), "%s/server.key", real);
	assert_string_equal(cfg.tls.key, want);
	snprintf(want, sizeof(want), "%s/bundle.pem", real);
	assert_string_equal(cfg.tls.client_ca, want);
	snprintf(want, sizeof(want), "%s/ca.crl", real);
	assert_string_equal(cfg.tls.crl, want);

	assert_string_equal(cfg.upstreams[0].url, "https://127.0.0.1:9443/api/v1/");
	assert_true(cfg.upstreams[0].https);
	assert_string_equal(cfg.upstreams[0].host, "127.0.0.1");
	assert_int_equal(cfg.upstreams[0].port, 9443);
	assert_string_equal(cfg.upstreams[0].base_path, "/api/v1");
	assert_int_equal(cfg.upstreams[0].addr.addr.ss_family, AF_INET);
	assert_string_equal(cfg.upstreams[0].addr.text, "127.0.0.1:9443");
	snprintf(want, sizeof(want), "%s/ca.pem", real);
	assert_string_equal(cfg.upstreams[0].ca, want);
	snprintf(want, sizeof(want), "%s/server.pem", real);
	assert_string_equal(cfg.upstreams[0].cert, want);
	snprintf(want, sizeof(want), "%s/server.key", real);
	assert_string_equal(cfg.upstreams[0].key, want);

	assert_int_equal(cfg.n_client_id, 3);
	assert_int_equal(cfg.client_id[0].kind, CID_SOURCE_FORM);
	assert_string_equal(cfg.client_id[0].name, "client_id");
	assert_int_equal(cfg.client_id[1].kind, CID_SOURCE_QUERY);
	assert_string_equal(cfg.client_id[1].name, "client_id");
	assert_int_equal(cfg.client_id[2].kind, CID_SOURCE_HEADER);
	assert_string_equal(cfg.client_id[2].name, "x-client-id"); /* lowercased */

	snprintf(want, sizeof(want), "%s/state/registry.db", real);
	assert_string_equal(cfg.registry, want);
	assert_string_equal(cfg.control_socket, "/run/psd2edge-test/control.sock");
	assert_string_equal(cfg.control_group, "root");
	assert_int_equal(cfg.control_gid, 0);
	assert_string_equal(cfg.control_readonly_group, "daemon");
	assert_int_equal(cfg.control_readonly_gid, getgrnam("daemon")->gr_gid);

	assert_string_equal(cfg.bpf.pin_dir, "/sys/fs/bpf/psd2edge-test");
	assert_string_equal(cfg.bpf.interface, "lo");
	assert_int_equal(cfg.bpf.mode, BPF_MODE_GENERIC);

	assert_int_equal(cfg.limits.max_header_bytes, 8192);
	assert_int_equal(cfg.limits.max_body_bytes, 20971520);
	assert_int_equal(cfg.limits.max_form_bytes, 4096);
	assert_int_equal(cfg.limits.header_timeout_ms, 2000);
	assert_int_equal(cfg.limits.idle_timeout_ms, 30000);
	assert_int_equal(cfg.limits.upstream_connect_timeout_ms, 1000);
	assert_int_equal(cfg.limits.upstream_timeout_ms, 15000);
	assert_int_equal(cfg.limits.drain_timeout_ms, 5000);
	assert_int_equal(cfg.limits.max_connections, 500);
	assert_int_equal(cfg.limits.min_body_rate, 2048);
	assert_int_equal(cfg.limits.body_rate_window_ms, 5000);
	assert_int_equal(cfg.workers, 2);
	assert_string_equal(cfg.access_log, "/var/log/psd2edge/access.log");
	assert_string_equal(cfg.log_level, "debug");
	config_free(&cfg);
	assert_null(cfg.dir);
}

static void test_defaults(void **state)
{
	(void)state;
	struct config cfg;
	expect_ok(minimal_config(), &cfg);
	assert_null(cfg.tls.crl);
	assert_int_equal(cfg.tls.expiry_warning_days, 30);
	assert_false(cfg.upstreams[0].https);
	assert_int_equal(cfg.upstreams[0].port, 8080);
	assert_string_equal(cfg.upstreams[0].base_path, "");
	assert_null(cfg.upstreams[0].ca);
	assert_null(cfg.upstreams[0].cert);
	assert_null(cfg.upstreams[0].key);
	assert_null(cfg.control_group);
	assert_int_equal(cfg.control_gid, (gid_t)-1);
	assert_null(cfg.control_readonly_group);
	assert_int_equal(cfg.control_readonly_gid, (gid_t)-1);
	assert_int_equal(cfg.bpf.mode, BPF_MODE_OFF);
	assert_string_equal(cfg.bpf.pin_dir, "/sys/fs/bpf/psd2edge");
	assert_null(cfg.bpf.interface);
	assert_int_equal(cfg.limits.max_header_bytes, 16384);
	assert_int_equal(cfg.limits.max_body_bytes, 10 * 1024 * 1024);
	assert_int_equal(cfg.limits.max_form_bytes, 65536);
	assert_int_equal(cfg.limits.header_timeout_ms, 10000);
	assert_int_equal(cfg.limits.idle_timeout_ms, 60000);
	assert_int_equal(cfg.limits.upstream_connect_timeout_ms, 5000);
	assert_int_equal(cfg.limits.upstream_timeout_ms, 30000);
	assert_int_equal(cfg.limits.drain_timeout_ms, 10000);
	assert_int_equal(cfg.limits.max_connections, 10000);
	assert_int_equal(cfg.limits.min_body_rate, 1024);
	assert_int_equal(cfg.limits.body_rate_window_ms, 10000);
	assert_int_equal(cfg.workers, 0);
	assert_null(cfg.access_log);
	assert_string_equal(cfg.log_level, "info");
	config_free(&cfg);

	/* bpf present: mode defaults to native, pin_dir to the standard one. */
	json_t *root = minimal_config();
	set(root, NULL, "bpf", json_pack("{s:s}", "interface", "lo"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.bpf.mode, BPF_MODE_NATIVE);
	assert_string_equal(cfg.bpf.pin_dir, "/sys/fs/bpf/psd2edge");
	config_free(&cfg);

	/* mode off needs no interface; a given one is kept without being looked up. */
	root = minimal_config();
	set(root, NULL, "bpf", json_pack("{s:s}", "mode", "off"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.bpf.mode, BPF_MODE_OFF);
	assert_null(cfg.bpf.interface);
	config_free(&cfg);
	root = minimal_config();
	set(root, NULL, "bpf", json_pack("{s:s,s:s}", "mode", "off", "interface", "nosuch0"));
	expect_ok(root, &cfg);
	assert_string_equal(cfg.bpf.interface, "nosuch0");
	config_free(&cfg);

	/* "-" is stderr and stays as is. */
	root = minimal_config();
	set(root, NULL, "access_log", json_string("-"));
	expect_ok(root, &cfg);
	assert_string_equal(cfg.access_log, "-");
	config_free(&cfg);
}

static void test_relative_paths(void **state)
{
	(void)state;
	char real[PATH_MAX], want[2 * PATH_MAX], cwd[PATH_MAX];
	assert_non_null(realpath(tmpdir, real));

	/* The file lives in conf/; paths are relative to it, whatever the working directory. */
	json_t *root = minimal_config();
	set(root, "tls", "cert", json_string("../server.pem"));
	set(root, "tls", "key", json_sprintf("%s/server.key", real)); /* absolute stays as is */
	set(root, "tls", "client_ca", json_string("../ca.pem"));
	set(root, NULL, "registry", json_string("registry.db"));
	set(root, NULL, "access_log", json_string("logs/access.log"));
	write_config_at("conf/config.json", root);

	assert_non_null(getcwd(cwd, sizeof(cwd)));
	assert_int_equal(chdir(tmpdir), 0);
	struct config cfg;
	char err[512];
	int rc = config_load("conf/config.json", &cfg, err, sizeof(err)); /* relative itself */
	assert_int_equal(chdir(cwd), 0);
	if (rc != 0)
		fail_msg("unexpected error: %s", err);

	snprintf(want, sizeof(want), "%s/conf", real);
	assert_string_equal(cfg.dir, want);
	snprintf(want, sizeof(want), "%s/conf/../server.pem", real);
	assert_string_equal(cfg.tls.cert, want);
	snprintf(want, sizeof(want), "%s/server.key", real);
	assert_string_equal(cfg.tls.key, want);
	snprintf(want, sizeof(want), "%s/conf/registry.db", real);
	assert_string_equal(cfg.registry, want);
	snprintf(want, sizeof(want), "%s/conf/logs/access.log", real);
	assert_string_equal(cfg.access_log, want);
	config_free(&cfg);

	/* A bare file name in the working directory. */
	write_config_at("config.json", minimal_config());
	assert_int_equal(chdir(tmpdir), 0);
	rc = config_load("config.json", &cfg, err, sizeof(err));
	assert_int_equal(chdir(cwd), 0);
	if (rc != 0)
		fail_msg("unexpected error: %s", err);
	assert_string_equal(cfg.dir, real);
	config_free(&cfg);
}

/* --- upstream.url ----------------------------------------------------------------------------- */

static void test_upstream_url(void **state)
{
	(void)state;
	static const struct {
		const char *url;
		bool https;
		const char *host;
		unsigned port;
		const char *base_path;
		int family;
	} ok[] = {
		{"http://127.0.0.1", false, "127.0.0.1", 80, "", AF_INET},
		{"http://127.0.0.1/", false, "127.0.0.1", 80, "", AF_INET},
		{"http://127.0.0.1:8080/", false, "127.0.0.1", 8080, "", AF_INET},
		{"HTTP://127.0.0.1/a/b//", false, "127.0.0.1", 80, "/a/b", AF_INET},
		{"http://localhost:8081/psd2", false, "localhost", 8081, "/psd2", 0},
		{"http://[::1]:8080/x/", false, "::1", 8080, "/x", AF_INET6},
		{"https://127.0.0.1", true, "127.0.0.1", 443, "", AF_INET},
		{"https://[::1]/v1", true, "::1", 443, "/v1", AF_INET6},
	};
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		json_t *root = minimal_config();
		set(root, "upstream", "url", json_string(ok[i].url));
		if (ok[i].https) {
			set(root, "upstream", "ca", json_string("ca.pem"));
			set(root, "upstream", "cert", json_string("server.pem"));
			set(root, "upstream", "key", json_string("server.key"));
		}
		struct config cfg;
		expect_ok(root, &cfg);
		assert_string_equal(cfg.upstreams[0].url, ok[i].url);
		assert_int_equal(cfg.upstreams[0].https, ok[i].https);
		assert_string_equal(cfg.upstreams[0].host, ok[i].host);
		assert_int_equal(cfg.upstreams[0].port, ok[i].port);
		assert_string_equal(cfg.upstreams[0].base_path, ok[i].base_path);
		if (ok[i].family)
			assert_int_equal(cfg.upstreams[0].addr.addr.ss_family, ok[i].family);
		assert_true(cfg.upstreams[0].addr.addrlen > 0);
		config_free(&cfg);
	}

	static const struct {
		const char *url, *err;
	} bad[] = {
		{"ftp://127.0.0.1/", "upstream.url: scheme must be http or https"},
		{"127.0.0.1:8080", "upstream.url: scheme must be http or https"},
		{"http://", "upstream.url: missing host"},
		{"http:///path", "upstream.url: missing host"},
		{"http://127.0.0.1:0/", "upstream.url: invalid port"},
		{"http://127.0.0.1:65536/", "upstream.url: invalid port"},
		{"http://127.0.0.1:/", "upstream.url: invalid port"},
		{"http://127.0.0.1:80x/", "upstream.url: invalid port"},
		{"http://user:pw@127.0.0.1/", "upstream.url: credentials are not allowed"},
		{"http://127.0.0.1/a?b=c", "upstream.url: query and fragment are not allowed"},
		{"http://127.0.0.1#frag", "upstream.url: query and fragment are not allowed"},
		{"http://127.0.0.1/a b", "upstream.url: invalid character in path"},
		{"http://bad_host!/", "upstream.url: invalid host"},
		{"http://127.1/", "upstream.url: invalid host"},
		{"http://[::1/", "upstream.url: invalid host"},
		{"http://[nothex]:80/", "upstream.url: invalid host"},
		{"http://[::1]x/", "upstream.url: invalid host"},
		{"http://::1:80/", "upstream.url: invalid host"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *root = minimal_config();
		set(root, "upstream", "url", json_string(bad[i].url));
		expect_error(root, bad[i].err);
	}

	json_t *root = minimal_config();
	set(root, "upstream", "url", json_integer(80));
	expect_error(root, "upstream.url: must be a string");
	root = minimal_config();
	set(root, "upstream", "url", NULL);
	expect_error(root, "upstream.url: missing");
}

static void test_upstream_tls(void **state)
{
	(void)state;
	/* http: the TLS files are refused, first one in schema order named. */
	json_t *root = minimal_config();
	set(root, "upstream", "key", json_string("server.key"));
	set(root, "upstream", "ca", json_string("ca.pem"));
	expect_error(root, "upstream.ca: only valid for https upstreams");
	root = minimal_config();
	set(root, "upstream", "cert", json_string("server.pem"));
	expect_error(root, "upstream.cert: only valid for https upstreams");

	/* https: ca, cert and key are required and checked. */
	root = full_config();
	set(root, "upstream", "ca", NULL);
	expect_error(root, "upstream.ca: missing");
	root = full_config();
	set(root, "upstream", "ca", json_string("bank-ca.pem"));
	expect_error(root, "upstream.ca: file not found");
	root = full_config();
	set(root, "upstream", "ca", json_string("server.key"));
	expect_error(root, "upstream.ca: no certificate in file");
	root = full_config();
	set(root, "upstream", "cert", NULL);
	expect_error(root, "upstream.cert: missing");
	root = full_config();
	set(root, "upstream", "key", NULL);
	expect_error(root, "upstream.key: missing");
	root = full_config();
	set(root, "upstream", "key", json_string("other.key"));
	expect_error(root, "upstream.key: does not match upstream.cert");
	root = full_config();
	set(root, "upstream", "cert", json_string("garbage.txt"));
	expect_error(root, "upstream.cert: no certificate in file");
}

/* --- upstreams, routes ------------------------------------------------------------------------ */

static json_t *parse(const char *text)
{
	json_error_t jerr;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
	if (!v)
		fail_msg("fixture is not JSON (%s): %s", jerr.text, text);
	return v;
}

/* The minimal file with a named upstream and two routes, one to each upstream. */
static json_t *routed_config(void)
{
	json_t *root = minimal_config();
	set(root, NULL, "upstreams", parse("{\"accounts\": {\"url\": \"http://127.0.0.1:8081/acc\"}}"));
	set(root, NULL, "routes", parse("[{\"prefix\": \"/accounts\", \"upstream\": \"accounts\"},"
					" {\"prefix\": \"/\", \"upstream\": \"default\"}]"));
	return root;
}

/* {"u0": {...}, ..., "u<n-1>": {...}} */
static json_t *numbered_upstreams(int n)
{
	json_t *obj = json_object();
	for (int i = 0; i < n; i++) {
		char name[16];
		snprintf(name, sizeof(name), "u%d", i);
		json_object_set_new(obj, name, json_pack("{s:s}", "url", "http://127.0.0.1:8081"));
	}
	return obj;
}

static void test_upstreams(void **state)
{
	(void)state;
	struct config cfg;

	/* The single upstream alone: named default, routed from "/", timeouts from limits. */
	expect_ok(minimal_config(), &cfg);
	assert_int_equal(cfg.n_upstreams, 1);
	assert_string_equal(cfg.upstreams[0].name, "default");
	assert_int_equal(cfg.upstreams[0].connect_timeout_ms, 5000);
	assert_int_equal(cfg.upstreams[0].tls_timeout_ms, 5000);
	assert_int_equal(cfg.upstreams[0].response_timeout_ms, 30000);
	assert_int_equal(cfg.upstreams[0].pool_size, CONFIG_POOL_SIZE_DEFAULT);
	assert_false(cfg.upstreams[0].breaker.enabled);
	assert_int_equal(cfg.n_routes, 1);
	assert_string_equal(cfg.routes[0].prefix, "/");
	assert_int_equal(cfg.routes[0].upstream, 0);
	config_free(&cfg);

	/* Every key of an upstream (upstream takes them too); upstream first, then upstreams in
	 * the file's order. */
	json_t *root = routed_config();
	set(root, NULL, "limits", json_pack("{s:i,s:i}", "upstream_connect_timeout_ms", 700,
					    "upstream_timeout_ms", 9000));
	set(root, "upstream", "pool_size", json_integer(4));
	set(root, "upstreams", "payments", parse(
		"{\"url\": \"https://127.0.0.1:9443/pay/\", \"ca\": \"ca.pem\", \"cert\": \"server.pem\","
		" \"key\": \"server.key\", \"connect_timeout_ms\": 2000, \"tls_timeout_ms\": 3000,"
		" \"response_timeout_ms\": 60000, \"pool_size\": 1024,"
		" \"circuit_breaker\": {\"consecutive_failures\": 5, \"failure_ratio\": 50,"
		"   \"window_ms\": 20000, \"min_requests\": 20, \"cooldown_ms\": 100, \"probes\": 3}}"));
	set(root, "upstreams", "hub-2.v1_x", parse(
		"{\"url\": \"http://127.0.0.1:8082\", \"tls_timeout_ms\": 1,"
		" \"circuit_breaker\": {\"failure_ratio\": 100}}"));
	set(root, "upstreams", "bank", parse(
		"{\"url\": \"http://127.0.0.1:8083\", \"circuit_breaker\": {\"consecutive_failures\": 1}}"));
	expect_ok(root, &cfg);
	static const char *const names[] = {"default", "accounts", "payments", "hub-2.v1_x", "bank"};
	assert_int_equal(cfg.n_upstreams, 5);
	for (unsigned i = 0; i < 5; i++)
		assert_string_equal(cfg.upstreams[i].name, names[i]);
	const struct config_upstream *d = &cfg.upstreams[0], *a = &cfg.upstreams[1],
				     *p = &cfg.upstreams[2], *h = &cfg.upstreams[3],
				     *b = &cfg.upstreams[4];
	assert_int_equal(d->pool_size, 4);
	assert_int_equal(d->connect_timeout_ms, 700);
	assert_false(a->https);
	assert_int_equal(a->port, 8081);
	assert_string_equal(a->base_path, "/acc");
	assert_int_equal(a->connect_timeout_ms, 700);
	assert_int_equal(a->tls_timeout_ms, 700);
	assert_int_equal(a->response_timeout_ms, 9000);
	assert_int_equal(a->pool_size, CONFIG_POOL_SIZE_DEFAULT);
	assert_false(a->breaker.enabled);
	assert_true(p->https);
	assert_string_equal(p->base_path, "/pay");
	assert_non_null(p->ca);
	assert_non_null(p->cert);
	assert_non_null(p->key);
	assert_int_equal(p->connect_timeout_ms, 2000);
	assert_int_equal(p->tls_timeout_ms, 3000);
	assert_int_equal(p->response_timeout_ms, 60000);
	assert_int_equal(p->pool_size, 1024);
	assert_true(p->breaker.enabled);
	assert_int_equal(p->breaker.consecutive_failures, 5);
	assert_int_equal(p->breaker.failure_ratio_pct, 50);
	assert_int_equal(p->breaker.window_ms, 20000);
	assert_int_equal(p->breaker.min_requests, 20);
	assert_int_equal(p->breaker.cooldown_ms, 100);
	assert_int_equal(p->breaker.probes, 3);
	assert_int_equal(h->tls_timeout_ms, 1);
	assert_int_equal(h->connect_timeout_ms, 700);
	assert_true(h->breaker.enabled); /* by the ratio alone; the rest defaults */
	assert_int_equal(h->breaker.consecutive_failures, 0);
	assert_int_equal(h->breaker.failure_ratio_pct, 100);
	assert_int_equal(h->breaker.window_ms, 10000);
	assert_int_equal(h->breaker.min_requests, 10);
	assert_int_equal(h->breaker.cooldown_ms, 5000);
	assert_int_equal(h->breaker.probes, 1);
	assert_true(b->breaker.enabled); /* by a run of failures alone */
	assert_int_equal(b->breaker.consecutive_failures, 1);
	assert_int_equal(b->breaker.failure_ratio_pct, 0);
	config_free(&cfg);

	/* upstreams without upstream: the first named one is upstreams[0]. */
	root = routed_config();
	set(root, NULL, "upstream", NULL);
	set(root, NULL, "routes", parse("[{\"prefix\": \"/\", \"upstream\": \"accounts\"}]"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.n_upstreams, 1);
	assert_string_equal(cfg.upstreams[0].name, "accounts");
	assert_int_equal(cfg.routes[0].upstream, 0);
	config_free(&cfg);

	/* As many as fit, upstream among them. */
	root = routed_config();
	set(root, NULL, "upstreams", numbered_upstreams(CONFIG_MAX_UPSTREAMS - 1));
	set(root, NULL, "routes", parse("[{\"prefix\": \"/\", \"upstream\": \"u30\"}]"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.n_upstreams, CONFIG_MAX_UPSTREAMS);
	assert_int_equal(cfg.routes[0].upstream, CONFIG_MAX_UPSTREAMS - 1);
	config_free(&cfg);

	char long_name[128];
	snprintf(long_name, sizeof(long_name), "{\"%064d\": {\"url\": \"http://127.0.0.1\"}}", 0);
	const struct {
		const char *upstreams, *err;
	} bad[] = {
		{"[]", "upstreams: must be an object"},
		{"{}", "upstreams: must not be empty"},
		{"{\"bad name\": {}}",
		 "upstreams.bad name: name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
		{"{\"a/b\": {}}", "upstreams.a/b: name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
		{"{\"\": {}}", "upstreams.: name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
		{"{\"default\": {\"url\": \"http://127.0.0.1\"}}",
		 "upstreams.default: the name of upstream (the single upstream is named default)"},
		{"{\"a\": \"http://127.0.0.1\"}", "upstreams.a: must be an object"},
		{"{\"a\": {}}", "upstreams.a.url: missing"},
		{"{\"a\": {\"url\": \"ftp://127.0.0.1\"}}",
		 "upstreams.a.url: scheme must be http or https"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"sni\": \"bank\"}}",
		 "upstreams.a.sni: unknown key"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"ca\": \"ca.pem\"}}",
		 "upstreams.a.ca: only valid for https upstreams"},
		{"{\"a\": {\"url\": \"https://127.0.0.1\", \"ca\": \"ca.pem\", \"cert\": \"server.pem\"}}",
		 "upstreams.a.key: missing"},
		{"{\"a\": {\"url\": \"https://127.0.0.1\", \"ca\": \"ca.pem\", \"cert\": \"server.pem\","
		 " \"key\": \"other.key\"}}",
		 "upstreams.a.key: does not match upstreams.a.cert"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"connect_timeout_ms\": 0}}",
		 "upstreams.a.connect_timeout_ms: must be between 1 and 600000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"tls_timeout_ms\": 600001}}",
		 "upstreams.a.tls_timeout_ms: must be between 1 and 600000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"response_timeout_ms\": \"30s\"}}",
		 "upstreams.a.response_timeout_ms: must be between 1 and 3600000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"pool_size\": 0}}",
		 "upstreams.a.pool_size: must be between 1 and 1024"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"pool_size\": 1025}}",
		 "upstreams.a.pool_size: must be between 1 and 1024"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": true}}",
		 "upstreams.a.circuit_breaker: must be an object"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": {}}}",
		 "upstreams.a.circuit_breaker: needs consecutive_failures or failure_ratio"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": {\"probes\": 2}}}",
		 "upstreams.a.circuit_breaker: needs consecutive_failures or failure_ratio"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": {\"failures\": 2}}}",
		 "upstreams.a.circuit_breaker.failures: unknown key"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"consecutive_failures\": 0}}}",
		 "upstreams.a.circuit_breaker.consecutive_failures: must be between 1 and 1000000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": {\"failure_ratio\": 0}}}",
		 "upstreams.a.circuit_breaker.failure_ratio: must be between 1 and 100"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": {\"failure_ratio\": 101}}}",
		 "upstreams.a.circuit_breaker.failure_ratio: must be between 1 and 100"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\", \"circuit_breaker\": {\"failure_ratio\": 0.5}}}",
		 "upstreams.a.circuit_breaker.failure_ratio: must be between 1 and 100"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"failure_ratio\": 50, \"window_ms\": 99}}}",
		 "upstreams.a.circuit_breaker.window_ms: must be between 100 and 3600000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"failure_ratio\": 50, \"min_requests\": 0}}}",
		 "upstreams.a.circuit_breaker.min_requests: must be between 1 and 1000000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"consecutive_failures\": 5, \"cooldown_ms\": 3600001}}}",
		 "upstreams.a.circuit_breaker.cooldown_ms: must be between 100 and 3600000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"consecutive_failures\": 5, \"probes\": 0}}}",
		 "upstreams.a.circuit_breaker.probes: must be between 1 and 1000"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"consecutive_failures\": 5, \"window_ms\": 1000}}}",
		 "upstreams.a.circuit_breaker.window_ms: only with failure_ratio"},
		{"{\"a\": {\"url\": \"http://127.0.0.1\","
		 " \"circuit_breaker\": {\"consecutive_failures\": 5, \"min_requests\": 3}}}",
		 "upstreams.a.circuit_breaker.min_requests: only with failure_ratio"},
		{long_name, "upstreams.0000000000000000000000000000000000000000000000000000000000000000: "
			    "name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		root = routed_config();
		set(root, NULL, "upstreams", parse(bad[i].upstreams));
		expect_error(root, bad[i].err);
	}

	root = routed_config();
	set(root, NULL, "upstreams", numbered_upstreams(CONFIG_MAX_UPSTREAMS));
	expect_error(root, "upstreams: at most 31 upstreams besides upstream");
	root = routed_config();
	set(root, NULL, "upstream", NULL);
	set(root, NULL, "upstreams", numbered_upstreams(CONFIG_MAX_UPSTREAMS + 1));
	expect_error(root, "upstreams: at most 32 upstreams");
	root = routed_config();
	set(root, NULL, "upstream", NULL);
	set(root, NULL, "upstreams", NULL);
	expect_error(root, "upstream: missing (give upstream or upstreams)");
	root = routed_config();
	set(root, NULL, "routes", NULL);
	expect_error(root, "routes: missing (required with upstreams)");
	/* The single upstream is checked first. */
	root = routed_config();
	set(root, "upstream", "url", json_string("ftp://127.0.0.1"));
	set(root, NULL, "upstreams", json_object());
	expect_error(root, "upstream.url: scheme must be http or https");
}

static void test_routes(void **state)
{
	(void)state;
	struct config cfg;

	/* Every key; longest prefix first after loading (the file's order among equals). */
	json_t *root = routed_config();
	set(root, NULL, "routes", parse(
		"[{\"prefix\": \"/\", \"upstream\": \"default\"},"
		" {\"prefix\": \"/accounts/\", \"upstream\": \"accounts\","
		"  \"quota\": {\"limit\": 4, \"window\": \"day\", \"key\": \"header:X-Account-Id\","
		"             \"name\": \"ais\", \"headers\": \"x\"},"
		"  \"spike_arrest\": {\"rate\": 10, \"per\": \"second\", \"burst\": 20},"
		"  \"require_roles\": [\"PSP_AI\"]},"
		" {\"prefix\": \"/v1/payments\", \"upstream\": \"default\","
		"  \"require_roles\": [\"PSP_PI\", \"PSP_IC\", \"PSP_AS\"],"
		"  \"quota\": {\"limit\": 1000000000, \"window\": \"rolling\", \"rolling_seconds\": 2678400,"
		"             \"headers\": \"none\"},"
		"  \"spike_arrest\": {\"rate\": 1000000, \"per\": \"minute\"}},"
		" {\"prefix\": \"/balances\", \"upstream\": \"accounts\","
		"  \"quota\": {\"limit\": 4, \"window\": \"day\", \"name\": \"ais\"}},"
		" {\"prefix\": \"/Cards~1.x_y-z\", \"upstream\": \"accounts\","
		"  \"quota\": {\"limit\": 1, \"window\": \"minute\", \"key\": \"query:iban\"}},"
		" {\"prefix\": \"/h\", \"upstream\": \"default\","
		"  \"quota\": {\"limit\": 7, \"window\": \"hour\", \"key\": \"form:account\"}}]"));
	expect_ok(root, &cfg);
	static const char *const order[] = {"/Cards~1.x_y-z", "/v1/payments", "/accounts",
					    "/balances", "/h", "/"};
	assert_int_equal(cfg.n_routes, 6);
	for (unsigned i = 0; i < 6; i++)
		assert_string_equal(cfg.routes[i].prefix, order[i]);
	const struct config_route *cards = &cfg.routes[0], *pay = &cfg.routes[1],
				  *acc = &cfg.routes[2], *bal = &cfg.routes[3], *h = &cfg.routes[4],
				  *all = &cfg.routes[5];
	assert_int_equal(acc->upstream, 1);
	assert_int_equal(acc->quota.limit, 4);
	assert_int_equal(acc->quota.window, PSD2_QUOTA_DAY);
	assert_int_equal(acc->quota.window_seconds, 86400);
	assert_true(acc->quota.per_key);
	assert_int_equal(acc->quota.key.kind, CID_SOURCE_HEADER);
	assert_string_equal(acc->quota.key.name, "x-account-id");
	assert_string_equal(acc->quota.name, "ais");
	assert_int_equal(acc->quota.headers, RATELIMIT_HEADERS_X);
	assert_int_equal(acc->spike_arrest.rate, 10);
	assert_int_equal(acc->spike_arrest.period_ms, 1000);
	assert_int_equal(acc->spike_arrest.burst, 20);
	assert_int_equal(acc->require_roles, PSD2_ROLE_AI);
	assert_int_equal(pay->require_roles, PSD2_ROLE_PI | PSD2_ROLE_IC | PSD2_ROLE_AS);
	assert_int_equal(bal->require_roles, 0); /* none */
	assert_int_equal(pay->upstream, 0);
	assert_int_equal(pay->quota.limit, 1000000000);
	assert_int_equal(pay->quota.window, PSD2_QUOTA_ROLLING);
	assert_int_equal(pay->quota.window_seconds, 2678400);
	assert_false(pay->quota.per_key);
	assert_string_equal(pay->quota.name, "/v1/payments"); /* the prefix by default */
	assert_int_equal(pay->quota.headers, RATELIMIT_HEADERS_NONE);
	assert_int_equal(pay->spike_arrest.rate, 1000000);
	assert_int_equal(pay->spike_arrest.period_ms, 60000);
	assert_int_equal(pay->spike_arrest.burst, 1);
	assert_string_equal(bal->quota.name, "ais");
	assert_false(bal->quota.per_key);
	assert_int_equal(bal->quota.headers, RATELIMIT_HEADERS_DRAFT);
	assert_int_equal(bal->spike_arrest.rate, 0); /* none */
	assert_int_equal(cards->quota.window, PSD2_QUOTA_MINUTE);
	assert_int_equal(cards->quota.window_seconds, 60);
	assert_int_equal(cards->quota.key.kind, CID_SOURCE_QUERY);
	assert_string_equal(cards->quota.key.name, "iban");
	assert_string_equal(cards->quota.name, "/Cards~1.x_y-z");
	assert_int_equal(h->quota.window, PSD2_QUOTA_HOUR);
	assert_int_equal(h->quota.window_seconds, 3600);
	assert_int_equal(h->quota.key.kind, CID_SOURCE_FORM);
	assert_int_equal(all->upstream, 0);
	assert_int_equal(all->quota.limit, 0); /* none */
	config_free(&cfg);

	/* routes without upstreams route to the single upstream by its name; no "/" is needed;
	 * a quota name of 63 characters (the prefix's) is accepted. */
	char prefix63[80];
	snprintf(prefix63, sizeof(prefix63), "/%062d", 0);
	root = minimal_config();
	set(root, NULL, "routes", json_pack("[{s:s,s:s,s:{s:i,s:s}}]", "prefix", prefix63,
					    "upstream", "default", "quota", "limit", 1, "window",
					    "day"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.n_routes, 1);
	assert_string_equal(cfg.routes[0].quota.name, prefix63);
	config_free(&cfg);

	/* As many routes as fit. */
	json_t *many = json_array();
	for (int i = 0; i < CONFIG_MAX_ROUTES; i++) {
		char prefix[16];
		snprintf(prefix, sizeof(prefix), "/r%d", i);
		json_array_append_new(many, json_pack("{s:s,s:s}", "prefix", prefix, "upstream",
						      "default"));
	}
	root = routed_config();
	set(root, NULL, "routes", json_deep_copy(many));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.n_routes, CONFIG_MAX_ROUTES);
	config_free(&cfg);
	json_array_append_new(many, json_pack("{s:s,s:s}", "prefix", "/", "upstream", "default"));
	root = routed_config();
	set(root, NULL, "routes", many);
	expect_error(root, "routes: at most 128 routes");
}

/* routes[0] (the route being checked) and, for clashes, routes[1]: each row gives one route
 * as JSON text; a second route, when given, comes first in the file. */
static void test_route_refusals(void **state)
{
	(void)state;
	char long_prefix[300], prefix64[160], name64[80], long_route[400], name_route[200];
	memset(long_prefix, 'a', 256);
	long_prefix[0] = '/';
	long_prefix[256] = '\0';
	snprintf(long_route, sizeof(long_route), "{\"prefix\": \"%s\", \"upstream\": \"default\"}",
		 long_prefix);
	snprintf(prefix64, sizeof(prefix64),
		 "{\"prefix\": \"/%063d\", \"upstream\": \"default\","
		 " \"quota\": {\"limit\": 1, \"window\": \"day\"}}", 0);
	snprintf(name64, sizeof(name64), "%064d", 0);
	snprintf(name_route, sizeof(name_route),
		 "{\"prefix\": \"/a\", \"upstream\": \"default\","
		 " \"quota\": {\"limit\": 1, \"window\": \"day\", \"name\": \"%s\"}}", name64);
#define ROUTE(extra) "{\"prefix\": \"/a\", \"upstream\": \"default\"" extra "}"
#define QUOTA(q) ROUTE(", \"quota\": {" q "}")
#define SPIKE(s) ROUTE(", \"spike_arrest\": {" s "}")
	const struct {
		const char *first; /* NULL: the route alone */
		const char *route, *err;
	} bad[] = {
		{NULL, "\"/a\"", "routes[0]: must be an object"},
		{NULL, ROUTE(", \"policy\": 1"), "routes[0].policy: unknown key"},
		{NULL, "{\"upstream\": \"default\"}", "routes[0].prefix: missing"},
		{NULL, "{\"prefix\": 1, \"upstream\": \"default\"}", "routes[0].prefix: must be a string"},
		{NULL, "{\"prefix\": \"accounts\", \"upstream\": \"default\"}",
		 "routes[0].prefix: must start with '/'"},
		{NULL, long_route, "routes[0].prefix: too long (at most 255 bytes)"},
		{NULL, "{\"prefix\": \"/%61ccounts\", \"upstream\": \"default\"}",
		 "routes[0].prefix: only letters, digits, '-', '.', '_', '~' and '/', none "
		 "percent-encoded (a route matches their encoded forms too)"},
		{NULL, "{\"prefix\": \"/a;b\", \"upstream\": \"default\"}",
		 "routes[0].prefix: only letters, digits, '-', '.', '_', '~' and '/', none "
		 "percent-encoded (a route matches their encoded forms too)"},
		{NULL, "{\"prefix\": \"/a b\", \"upstream\": \"default\"}",
		 "routes[0].prefix: only letters, digits, '-', '.', '_', '~' and '/', none "
		 "percent-encoded (a route matches their encoded forms too)"},
		{NULL, "{\"prefix\": \"/a/b?c\", \"upstream\": \"default\"}",
		 "routes[0].prefix: only letters, digits, '-', '.', '_', '~' and '/', none "
		 "percent-encoded (a route matches their encoded forms too)"},
		{NULL, "{\"prefix\": \"/a//b\", \"upstream\": \"default\"}",
		 "routes[0].prefix: empty segment (a route matches '//' as '/')"},
		{NULL, "{\"prefix\": \"/payments/../accounts\", \"upstream\": \"default\"}",
		 "routes[0].prefix: has dot segments: a request for it reads '/accounts'"},
		{NULL, "{\"prefix\": \"/a/./b\", \"upstream\": \"default\"}",
		 "routes[0].prefix: has dot segments: a request for it reads '/a/b'"},
		{NULL, "{\"prefix\": \"/a/.\", \"upstream\": \"default\"}",
		 "routes[0].prefix: has dot segments: a request for it reads '/a/'"},
		{NULL, "{\"prefix\": \"/..\", \"upstream\": \"default\"}",
		 "routes[0].prefix: path climbs above its root"},
		{NULL, "{\"prefix\": \"/a/...\", \"upstream\": \"default\"}",
		 "routes[0].prefix: segment of dots only in path"},
		{ROUTE(""), ROUTE(""), "routes[1].prefix: duplicate of routes[0]"},
		{ROUTE(""), "{\"prefix\": \"/a/\", \"upstream\": \"default\"}",
		 "routes[1].prefix: duplicate of routes[0]"},
		{ROUTE(""), "{\"prefix\": \"/A\", \"upstream\": \"default\"}",
		 "routes[1].prefix: duplicate of routes[0] (routes match letters in either case)"},
		{NULL, "{\"prefix\": \"/a\"}", "routes[0].upstream: missing"},
		{ROUTE(""), "{\"prefix\": \"/b\", \"upstream\": \"x\"}",
		 "routes[1].upstream: unknown upstream 'x'"},
		{NULL, "{\"prefix\": \"/a\", \"upstream\": \"Accounts\"}",
		 "routes[0].upstream: unknown upstream 'Accounts'"},
		{NULL, ROUTE(", \"quota\": 4"), "routes[0].quota: must be an object"},
		{NULL, QUOTA(""), "routes[0].quota.limit: missing"},
		{NULL, QUOTA("\"limit\": 1, \"window\": \"day\", \"per\": \"client\""),
		 "routes[0].quota.per: unknown key"},
		{NULL, QUOTA("\"limit\": 0, \"window\": \"day\""),
		 "routes[0].quota.limit: must be between 1 and 1000000000"},
		{NULL, QUOTA("\"limit\": 1000000001, \"window\": \"day\""),
		 "routes[0].quota.limit: must be between 1 and 1000000000"},
		{NULL, QUOTA("\"limit\": -4, \"window\": \"day\""),
		 "routes[0].quota.limit: must be between 1 and 1000000000"},
		{NULL, QUOTA("\"limit\": 4"), "routes[0].quota.window: missing"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"week\""),
		 "routes[0].quota.window: must be minute, hour, day or rolling, not 'week'"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"rolling\""),
		 "routes[0].quota.rolling_seconds: missing"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"rolling\", \"rolling_seconds\": 59"),
		 "routes[0].quota.rolling_seconds: must be between 60 and 2678400"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"rolling\", \"rolling_seconds\": 2678401"),
		 "routes[0].quota.rolling_seconds: must be between 60 and 2678400"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"rolling_seconds\": 3600"),
		 "routes[0].quota.rolling_seconds: only with window rolling"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"key\": \"cookie:account\""),
		 "routes[0].quota.key: unknown source kind 'cookie'"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"key\": \"x-account-id\""),
		 "routes[0].quota.key: expected KIND:NAME (form, query, header or jwt)"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"key\": \"header:x_account_id\""),
		 "routes[0].quota.key: header names with '_' are refused in requests; use '-'"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"name\": \"a b\""),
		 "routes[0].quota.name: name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"name\": \"/a\""),
		 "routes[0].quota.name: name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
		{NULL, name_route,
		 "routes[0].quota.name: name must be 1 to 63 characters of A-Z a-z 0-9 _ . -"},
		{NULL, prefix64,
		 "routes[0].quota.name: missing: the prefix is too long to name the quota (at most "
		 "63 bytes)"},
		{NULL, QUOTA("\"limit\": 4, \"window\": \"day\", \"headers\": \"ietf\""),
		 "routes[0].quota.headers: must be draft, x or none, not 'ietf'"},
		{QUOTA("\"limit\": 4, \"window\": \"day\", \"name\": \"ais\""),
		 "{\"prefix\": \"/b\", \"upstream\": \"default\","
		 " \"quota\": {\"limit\": 5, \"window\": \"day\", \"name\": \"ais\"}}",
		 "routes[1].quota: shares the name 'ais' with routes[0].quota, whose limit or window "
		 "differs"},
		{QUOTA("\"limit\": 4, \"window\": \"day\", \"name\": \"ais\""),
		 "{\"prefix\": \"/b\", \"upstream\": \"default\","
		 " \"quota\": {\"limit\": 4, \"window\": \"hour\", \"name\": \"ais\"}}",
		 "routes[1].quota: shares the name 'ais' with routes[0].quota, whose limit or window "
		 "differs"},
		{QUOTA("\"limit\": 4, \"window\": \"rolling\", \"rolling_seconds\": 60, \"name\": \"q\""),
		 "{\"prefix\": \"/b\", \"upstream\": \"default\", \"quota\": {\"limit\": 4,"
		 " \"window\": \"rolling\", \"rolling_seconds\": 120, \"name\": \"q\"}}",
		 "routes[1].quota: shares the name 'q' with routes[0].quota, whose limit or window "
		 "differs"},
		{NULL, ROUTE(", \"spike_arrest\": []"), "routes[0].spike_arrest: must be an object"},
		{NULL, SPIKE(""), "routes[0].spike_arrest.rate: missing"},
		{NULL, SPIKE("\"rate\": 1, \"period\": \"second\""),
		 "routes[0].spike_arrest.period: unknown key"},
		{NULL, SPIKE("\"rate\": 0"), "routes[0].spike_arrest.rate: must be between 1 and 1000000"},
		{NULL, SPIKE("\"rate\": 1000001"),
		 "routes[0].spike_arrest.rate: must be between 1 and 1000000"},
		{NULL, SPIKE("\"rate\": 10, \"per\": \"hour\""),
		 "routes[0].spike_arrest.per: must be second or minute, not 'hour'"},
		{NULL, SPIKE("\"rate\": 10, \"burst\": 0"),
		 "routes[0].spike_arrest.burst: must be between 1 and 1000000"},
		{NULL, SPIKE("\"rate\": 10, \"burst\": 1000001"),
		 "routes[0].spike_arrest.burst: must be between 1 and 1000000"},
		{NULL, ROUTE(", \"require_roles\": \"PSP_AI\""),
		 "routes[0].require_roles: must be an array of PSD2 role names"},
		{NULL, ROUTE(", \"require_roles\": []"),
		 "routes[0].require_roles: must not be empty (leave it out to require no role)"},
		{NULL, ROUTE(", \"require_roles\": [\"PSP_AI\", 3]"),
		 "routes[0].require_roles[1]: must be a string"},
		{NULL, ROUTE(", \"require_roles\": [\"PSP_AI\", \"AISP\"]"),
		 "routes[0].require_roles[1]: unknown PSD2 role 'AISP' (PSP_AS, PSP_PI, PSP_AI or "
		 "PSP_IC)"},
		{NULL, ROUTE(", \"require_roles\": [\"psp_ai\"]"),
		 "routes[0].require_roles[0]: unknown PSD2 role 'psp_ai' (PSP_AS, PSP_PI, PSP_AI or "
		 "PSP_IC)"},
		{NULL, ROUTE(", \"require_roles\": [\"PSP_PI\", \"PSP_AI\", \"PSP_PI\"]"),
		 "routes[0].require_roles[2]: PSP_PI is listed twice"},
	};
#undef ROUTE
#undef QUOTA
#undef SPIKE
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *root = routed_config(), *routes = json_array();
		if (bad[i].first)
			json_array_append_new(routes, parse(bad[i].first));
		json_array_append_new(routes, parse(bad[i].route));
		set(root, NULL, "routes", routes);
		expect_error(root, bad[i].err);
	}

	struct {
		json_t *routes;
		const char *err;
	} shape[] = {
		{json_object(), "routes: must be an array"},
		{json_array(), "routes: must not be empty"},
	};
	for (size_t i = 0; i < sizeof(shape) / sizeof(shape[0]); i++) {
		json_t *root = routed_config();
		set(root, NULL, "routes", shape[i].routes);
		expect_error(root, shape[i].err);
	}
}

/* --- tls files ------------------------------------------------------------------------------- */

static void test_tls_files(void **state)
{
	(void)state;
	static const struct {
		const char *key, *value, *err;
	} cases[] = {
		{"cert", "nope.pem", "tls.cert: file not found"},
		{"cert", "adir", "tls.cert: is a directory"},
		{"cert", "/dev/null", "tls.cert: not a regular file"},
		{"cert", "garbage.txt", "tls.cert: no certificate in file"},
		{"cert", "server.key", "tls.cert: no certificate in file"},
		{"cert", "", "tls.cert: must not be empty"},
		{"key", "nope.key", "tls.key: file not found"},
		{"key", "server.pem", "tls.key: not a private key"},
		{"key", "garbage.txt", "tls.key: not a private key"},
		{"key", "encrypted.key", "tls.key: encrypted private keys are not supported"},
		{"key", "other.key", "tls.key: does not match tls.cert"},
		{"client_ca", "nope.pem", "tls.client_ca: file not found"},
		{"client_ca", "garbage.txt", "tls.client_ca: no certificate in file"},
		{"client_ca", "server.key", "tls.client_ca: no certificate in file"},
		{"crl", "nope.crl", "tls.crl: file not found"},
		{"crl", "ca.pem", "tls.crl: not a CRL"},
		{"crl", "other.crl", "tls.crl: not issued by a certificate in tls.client_ca"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *root = full_config();
		set(root, "tls", "client_ca", json_string("ca.pem"));
		set(root, "tls", cases[i].key, json_string(cases[i].value));
		expect_error(root, cases[i].err);
	}

	json_t *root = full_config();
	set(root, "tls", "cert", json_integer(1));
	expect_error(root, "tls.cert: must be a string");
	root = full_config();
	set(root, "tls", "client_ca", NULL);
	expect_error(root, "tls.client_ca: missing");
	root = full_config();
	set(root, NULL, "tls", NULL);
	expect_error(root, "tls: missing");
	root = full_config();
	set(root, NULL, "tls", json_string("server.pem"));
	expect_error(root, "tls: must be an object");

	/* The CRL's issuer may be any certificate of the bundle. */
	struct config cfg;
	root = full_config();
	set(root, "tls", "crl", json_string("other.crl"));
	expect_ok(root, &cfg);
	config_free(&cfg);

	/* The daily expiry warning's horizon: 0 turns it off. */
	root = full_config();
	set(root, "tls", "expiry_warning_days", json_integer(0));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.tls.expiry_warning_days, 0);
	config_free(&cfg);
	root = full_config();
	set(root, "tls", "expiry_warning_days", json_integer(3650));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.tls.expiry_warning_days, 3650);
	config_free(&cfg);
	root = full_config();
	set(root, "tls", "expiry_warning_days", json_integer(3651));
	expect_error(root, "tls.expiry_warning_days: must be between 0 and 3650");
	root = full_config();
	set(root, "tls", "expiry_warning_days", json_string("30"));
	expect_error(root, "tls.expiry_warning_days: must be between 0 and 3650");
}

/* Root reads everything, so the check runs in a child that has become nobody. */
static void test_permission_denied(void **state)
{
	(void)state;
	char cmd[3 * PATH_MAX];
	snprintf(cmd, sizeof(cmd), "cp %s %s && chmod 0600 %s", tmp_path("server.pem"),
		 tmp_path("private.pem"), tmp_path("private.pem"));
	assert_int_equal(system(cmd), 0);
	json_t *root = minimal_config();
	set(root, "tls", "cert", json_string("private.pem"));
	write_config_at("config.json", root);

	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
			_exit(2);
		struct config cfg;
		char err[512] = "";
		int rc = config_load(tmp_path("config.json"), &cfg, err, sizeof(err));
		if (rc == 0)
			config_free(&cfg);
		ssize_t w = write(fds[1], err, strlen(err));
		_exit(w < 0 || rc == 0 ? 1 : 0);
	}
	close(fds[1]);
	char got[512] = "";
	ssize_t n = read(fds[0], got, sizeof(got) - 1);
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(n > 0);
	got[n] = '\0';
	assert_string_equal(got, "tls.cert: permission denied");
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* --- listen ----------------------------------------------------------------------------------- */

static void test_listen(void **state)
{
	(void)state;
	static const struct {
		const char *addr, *err;
	} bad[] = {
		{"8443", "listen[1]: invalid address"},
		{":8443", "listen[1]: invalid address"},
		{"localhost:8443", "listen[1]: invalid address"},
		{"1.2.3:8443", "listen[1]: invalid address"},
		{"127.1:8443", "listen[1]: invalid address"},
		{"0x7f.0.0.1:8443", "listen[1]: invalid address"},
		{"::1:8443", "listen[1]: invalid address"},
		{"[::1]8443", "listen[1]: invalid address"},
		{"[127.0.0.1]:8443", "listen[1]: invalid address"},
		{"[::1:8443", "listen[1]: invalid address"},
		{"127.0.0.1:", "listen[1]: invalid port"},
		{"127.0.0.1:0", "listen[1]: invalid port"},
		{"127.0.0.1:65536", "listen[1]: invalid port"},
		{"127.0.0.1:https", "listen[1]: invalid port"},
		{"[::]:-1", "listen[1]: invalid port"},
		{"127.0.0.1:8443", "listen[1]: duplicate of listen[0]"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *root = minimal_config();
		json_array_append_new(json_object_get(root, "listen"), json_string(bad[i].addr));
		expect_error(root, bad[i].err);
	}

	json_t *root = minimal_config();
	set(root, NULL, "listen", json_pack("[s,i]", "127.0.0.1:1", 8443));
	expect_error(root, "listen[1]: must be a string");
	root = minimal_config();
	set(root, NULL, "listen", json_string("127.0.0.1:8443"));
	expect_error(root, "listen: must be an array");
	root = minimal_config();
	set(root, NULL, "listen", json_array());
	expect_error(root, "listen: must not be empty");
	root = minimal_config();
	set(root, NULL, "listen", NULL);
	expect_error(root, "listen: missing");
	root = minimal_config();
	json_t *many = json_array();
	for (int i = 0; i <= CONFIG_MAX_LISTEN; i++)
		json_array_append_new(many, json_sprintf("127.0.0.1:%d", 8000 + i));
	set(root, NULL, "listen", many);
	expect_error(root, "listen: at most 16 addresses");

	/* IPv6 forms, including the wildcard and a v4-mapped address. */
	struct config cfg;
	root = minimal_config();
	set(root, NULL, "listen", json_pack("[s,s,s]", "[::]:8443", "[::ffff:127.0.0.1]:8444",
					    "127.0.0.1:8445"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.n_listen, 3);
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&cfg.listen[0].addr;
	assert_int_equal(a6->sin6_family, AF_INET6);
	assert_memory_equal(&a6->sin6_addr, &in6addr_any, sizeof(in6addr_any));
	assert_int_equal(ntohs(a6->sin6_port), 8443);
	assert_int_equal(cfg.listen[1].addr.ss_family, AF_INET6);
	assert_int_equal(cfg.listen[2].addr.ss_family, AF_INET);
	assert_string_equal(cfg.listen[0].text, "[::]:8443");
	config_free(&cfg);
}

/* --- client_id -------------------------------------------------------------------------------- */

static void test_client_id(void **state)
{
	(void)state;
	char long_name[128];
	snprintf(long_name, sizeof(long_name), "header:%065d", 0);
	struct {
		const char *src, *err;
	} bad[] = {
		{"jwt:sub", "client_id[1]: jwt:sub needs the top-level jwt object"},
		{"cookie:id", "client_id[1]: unknown source kind 'cookie'"},
		{":id", "client_id[1]: unknown source kind ''"},
		{"Header:x-id", "client_id[1]: unknown source kind 'Header'"},
		{"client_id", "client_id[1]: expected KIND:NAME (form, query, header or jwt)"},
		{"query:", "client_id[1]: name must be 1 to 64 token characters"},
		{"header:x id", "client_id[1]: name must be 1 to 64 token characters"},
		{"header:x:id", "client_id[1]: name must be 1 to 64 token characters"},
		{"header:x_tpp_id",
		 "client_id[1]: header names with '_' are refused in requests; use '-'"},
		{"form:a=b", "client_id[1]: name must be 1 to 64 token characters"},
		{long_name, "client_id[1]: name must be 1 to 64 token characters"},
		{"header:X-CLIENT-ID", "client_id[1]: duplicate of client_id[0]"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *root = minimal_config();
		json_array_append_new(json_object_get(root, "client_id"), json_string(bad[i].src));
		expect_error(root, bad[i].err);
	}

	json_t *root = minimal_config();
	set(root, NULL, "client_id", json_array());
	expect_error(root, "client_id: must not be empty");
	root = minimal_config();
	set(root, NULL, "client_id", json_string("header:x-client-id"));
	expect_error(root, "client_id: must be an array");
	root = minimal_config();
	set(root, NULL, "client_id", json_pack("[n]"));
	expect_error(root, "client_id[0]: must be a string");
	root = minimal_config();
	set(root, NULL, "client_id", NULL);
	expect_error(root, "client_id: missing");
	root = minimal_config();
	json_t *many = json_array();
	for (int i = 0; i <= CONFIG_MAX_CLIENT_ID_SOURCES; i++)
		json_array_append_new(many, json_sprintf("query:id%d", i));
	set(root, NULL, "client_id", many);
	expect_error(root, "client_id: at most 8 sources");

	/* Same name from different kinds is fine; form and query names keep their case; a name
	 * of exactly 64 characters is accepted. */
	struct config cfg;
	char max_name[128];
	snprintf(max_name, sizeof(max_name), "header:%064d", 0);
	root = minimal_config();
	set(root, NULL, "client_id", json_pack("[s,s,s]", "form:Client_ID", "query:Client_ID",
					       max_name));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.n_client_id, 3);
	assert_string_equal(cfg.client_id[0].name, "Client_ID");
	assert_string_equal(cfg.client_id[1].name, "Client_ID");
	assert_int_equal(strlen(cfg.client_id[2].name), 64);
	config_free(&cfg);
}

/* --- jwt -------------------------------------------------------------------------------------- */

#define JWT_OBJ(extra) "{\"jwks\": \"jwks.json\", \"audience\": \"psd2edge\"" extra "}"

static void test_jwt_keys(void **state)
{
	(void)state;
	write_text("jwks.json", "{\"keys\": []}");
	write_text("notaset.json", "{\"key\": []}");
	struct {
		const char *jwt;   /* the jwt object; NULL: none */
		const char *route; /* routes[0]'s extra members */
		const char *source; /* client_id[1] */
		const char *err;
	} cases[] = {
		{"\"jwks.json\"", "", NULL, "jwt: must be an object"},
		{"{\"audience\": \"psd2edge\"}", "", NULL, "jwt.jwks: missing"},
		{"{\"jwks\": \"missing.json\", \"audience\": \"a\"}", "", NULL,
		 "jwt.jwks: file not found"},
		{"{\"jwks\": \"notaset.json\", \"audience\": \"a\"}", "", NULL,
		 "jwt.jwks: not a JWK set (a JSON object with a \"keys\" array)"},
		{"{\"jwks\": \"jwks.json\"}", "", NULL, "jwt.audience: missing"},
		{JWT_OBJ(", \"audience2\": 1"), "", NULL, "jwt.audience2: unknown key"},
		{JWT_OBJ(", \"issuer\": \"\""), "", NULL, "jwt.issuer: must not be empty"},
		{JWT_OBJ(", \"algorithms\": []"), "", NULL, "jwt.algorithms: must not be empty"},
		{JWT_OBJ(", \"algorithms\": \"PS256\""), "", NULL, "jwt.algorithms: must be an array"},
		{JWT_OBJ(", \"algorithms\": [\"PS256\", \"HS256\"]"), "", NULL,
		 "jwt.algorithms[1]: HS256 is never accepted: tokens are verified with public keys only"},
		{JWT_OBJ(", \"algorithms\": [\"none\"]"), "", NULL,
		 "jwt.algorithms[0]: none is never accepted: tokens are verified with public keys only"},
		{JWT_OBJ(", \"algorithms\": [\"RS512\"]"), "", NULL,
		 "jwt.algorithms[0]: unknown algorithm 'RS512' (PS256, ES256 or RS256)"},
		{JWT_OBJ(", \"algorithms\": [\"ps256\"]"), "", NULL,
		 "jwt.algorithms[0]: unknown algorithm 'ps256' (PS256, ES256 or RS256)"},
		{JWT_OBJ(", \"algorithms\": [\"ES256\", \"ES256\"]"), "", NULL,
		 "jwt.algorithms[1]: ES256 listed twice"},
		{JWT_OBJ(", \"leeway_s\": 301"), "", NULL, "jwt.leeway_s: must be between 0 and 300"},
		{JWT_OBJ(", \"require_cnf\": \"yes\""), "", NULL,
		 "jwt.require_cnf: must be true or false"},
		{NULL, ", \"verify_jwt\": true", NULL,
		 "routes[0].verify_jwt: needs the top-level jwt object"},
		{JWT_OBJ(""), ", \"verify_jwt\": 1", NULL, "routes[0].verify_jwt: must be true or false"},
		{NULL, "", "jwt:client_id", "client_id[1]: jwt:client_id needs the top-level jwt object"},
		{JWT_OBJ(""), ", \"quota\": {\"limit\": 1, \"window\": \"day\", \"key\": \"jwt:acct\"}",
		 NULL, "routes[0].quota.key: a quota cannot count by a token claim"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *root = routed_config();
		char route[256];
		snprintf(route, sizeof(route), "{\"prefix\": \"/a\", \"upstream\": \"default\"%s}",
			 cases[i].route);
		set(root, NULL, "routes", json_pack("[o]", parse(route)));
		if (cases[i].jwt)
			set(root, NULL, "jwt", parse(cases[i].jwt));
		if (cases[i].source)
			json_array_append_new(json_object_get(root, "client_id"),
					      json_string(cases[i].source));
		expect_error(root, cases[i].err);
	}

	/* Defaults, then every key set. */
	struct config cfg;
	json_t *root = routed_config();
	set(root, NULL, "jwt", parse(JWT_OBJ("")));
	expect_ok(root, &cfg);
	assert_string_equal(cfg.jwt.jwks, tmp_path("jwks.json"));
	assert_null(cfg.jwt.issuer);
	assert_string_equal(cfg.jwt.audience, "psd2edge");
	assert_int_equal(cfg.jwt.algorithms, CONFIG_JWT_DEFAULT_ALGS);
	assert_int_equal(cfg.jwt.leeway_s, 30);
	assert_true(cfg.jwt.require_cnf);
	assert_false(cfg.routes[0].verify_jwt);
	config_free(&cfg);

	root = routed_config();
	set(root, NULL, "jwt", parse(JWT_OBJ(", \"issuer\": \"https://as.example\", \"algorithms\": "
					     "[\"RS256\", \"ES256\"], \"leeway_s\": 0, "
					     "\"require_cnf\": false")));
	set(root, NULL, "routes", parse("[{\"prefix\": \"/a\", \"upstream\": \"default\", "
					"\"verify_jwt\": true}, {\"prefix\": \"/\", "
					"\"upstream\": \"default\", \"verify_jwt\": false}]"));
	set(root, NULL, "client_id", parse("[\"header:x-client-id\", \"jwt:client_id\"]"));
	expect_ok(root, &cfg);
	assert_string_equal(cfg.jwt.issuer, "https://as.example");
	assert_int_equal(cfg.jwt.algorithms, 1u << CONFIG_JWT_RS256 | 1u << CONFIG_JWT_ES256);
	assert_int_equal(cfg.jwt.leeway_s, 0);
	assert_false(cfg.jwt.require_cnf);
	assert_true(cfg.routes[0].verify_jwt);  /* "/a", sorted first */
	assert_false(cfg.routes[1].verify_jwt);
	assert_int_equal(cfg.client_id[1].kind, CID_SOURCE_JWT);
	assert_string_equal(cfg.client_id[1].name, "client_id");
	config_free(&cfg);
}

/* --- routes[].hub ------------------------------------------------------------------------- */

#define HUB_OBJ(extra)                                                                          \
	"{\"authorization_endpoint\": \"https://bank.test/authorize\", \"token_endpoint\": "     \
	"\"/token\", \"client_id\": \"tpp-at-bank\", \"redirect_uri\": \"https://tpp.test/cb\", " \
	"\"scopes\": [\"openid\", \"accounts\"], \"jwks\": \"jwks.json\", \"issuer\": "          \
	"\"https://bank.test\"" extra "}"

/* routed_config with an https upstream "bank" for hub routes. */
static json_t *hub_config(void)
{
	json_t *root = routed_config();
	set(root, "upstreams", "bank", parse("{\"url\": \"https://127.0.0.1:9444\", \"ca\": "
					     "\"ca.pem\", \"cert\": \"server.pem\", \"key\": "
					     "\"server.key\"}"));
	set(root, NULL, "token_store", parse("{\"path\": \"tokens.db\", \"kek_file\": "
					     "\"kek.bin\"}"));
	return root;
}

static void test_hub_keys(void **state)
{
	(void)state;
	write_text("kek.bin", "0123456789abcdef0123456789abcdef");
	write_text("jwks.json", "{\"keys\": []}");
	write_text("notaset.json", "{\"key\": []}");
	struct {
		const char *upstream; /* of routes[0] */
		const char *route;    /* routes[0]'s extra members */
		const char *err;
	} cases[] = {
		{"bank", ", \"hub\": []", "routes[0].hub: must be an object"},
		{"accounts", ", \"hub\": " HUB_OBJ(""),
		 "routes[0].upstream: a hub route's upstream must be https (the bank is reached with "
		 "the TPP's QWAC)"},
		{"bank", ", \"hub\": " HUB_OBJ(", \"pkce\": true"), "routes[0].hub.pkce: unknown key"},
		{"bank", ", \"hub\": {\"token_endpoint\": \"/t\"}",
		 "routes[0].hub.authorization_endpoint: missing"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"http://bank.test/a\"}",
		 "routes[0].hub.authorization_endpoint: must start with 'https://'"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://bank.test/a b\"}",
		 "routes[0].hub.authorization_endpoint: only visible ASCII without spaces or '#'"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"token\"}",
		 "routes[0].hub.token_endpoint: must start with '/'"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"\"}",
		 "routes[0].hub.client_id: must not be empty"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb#x\"}",
		 "routes[0].hub.redirect_uri: only visible ASCII without spaces or '#'"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb\"}",
		 "routes[0].hub.scopes: missing"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb\", \"scopes\": []}",
		 "routes[0].hub.scopes: must be a non-empty array of scope names"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb\", \"scopes\": [\"openid\", \"a b\"]}",
		 "routes[0].hub.scopes[1]: must be a scope name (a string without spaces)"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb\", \"scopes\": [\"openid\"]}",
		 "routes[0].hub.jwks: missing"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb\", \"scopes\": [\"openid\"], "
			    "\"jwks\": \"notaset.json\"}",
		 "routes[0].hub.jwks: not a JWK set (a JSON object with a \"keys\" array)"},
		{"bank", ", \"hub\": {\"authorization_endpoint\": \"https://b/a\", "
			    "\"token_endpoint\": \"/t\", \"client_id\": \"c\", "
			    "\"redirect_uri\": \"https://t/cb\", \"scopes\": [\"openid\"], "
			    "\"jwks\": \"jwks.json\"}",
		 "routes[0].hub.issuer: missing"},
		{"bank", ", \"hub\": " HUB_OBJ(", \"refresh_margin_s\": 3601"),
		 "routes[0].hub.refresh_margin_s: must be between 0 and 3600"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *root = hub_config();
		char route[1024];
		snprintf(route, sizeof(route), "{\"prefix\": \"/bank\", \"upstream\": \"%s\"%s}",
			 cases[i].upstream, cases[i].route);
		set(root, NULL, "routes", json_pack("[o]", parse(route)));
		expect_error(root, cases[i].err);
	}

	/* verify_jwt would read the handle's Authorization header as a bearer token. */
	json_t *root = hub_config();
	set(root, NULL, "jwt", parse("{\"jwks\": \"jwks.json\", \"audience\": \"a\"}"));
	set(root, NULL, "routes", json_pack("[o]", parse("{\"prefix\": \"/bank\", \"upstream\": "
							 "\"bank\", \"verify_jwt\": true, "
							 "\"hub\": " HUB_OBJ("") "}")));
	expect_error(root, "routes[0].verify_jwt: not with hub (the backend's Authorization header "
			   "carries its session handle)");

	/* Every key; the id_token is verified as the bank's, for this client. */
	struct config cfg;
	root = hub_config();
	set(root, NULL, "routes", parse("[{\"prefix\": \"/\", \"upstream\": \"default\"}, "
					"{\"prefix\": \"/bank\", \"upstream\": \"bank\", "
					"\"hub\": " HUB_OBJ("") "}]"));
	expect_ok(root, &cfg);
	const struct config_hub *h = &cfg.routes[0].hub; /* "/bank", sorted first */
	assert_string_equal(h->authorization_endpoint, "https://bank.test/authorize");
	assert_string_equal(h->token_endpoint, "/token");
	assert_string_equal(h->client_id, "tpp-at-bank");
	assert_string_equal(h->redirect_uri, "https://tpp.test/cb");
	assert_string_equal(h->scopes, "openid accounts");
	assert_int_equal(h->refresh_margin_s, CONFIG_HUB_REFRESH_MARGIN_S);
	assert_string_equal(h->id_token.jwks, tmp_path("jwks.json"));
	assert_string_equal(h->id_token.issuer, "https://bank.test");
	assert_string_equal(h->id_token.audience, "tpp-at-bank");
	assert_int_equal(h->id_token.algorithms, CONFIG_JWT_DEFAULT_ALGS);
	assert_false(h->id_token.require_cnf);
	assert_null(cfg.routes[1].hub.authorization_endpoint); /* "/": not a hub route */
	config_free(&cfg);

	root = hub_config();
	set(root, NULL, "routes", json_pack("[o]", parse("{\"prefix\": \"/bank\", \"upstream\": "
							 "\"bank\", \"hub\": "
							 HUB_OBJ(", \"refresh_margin_s\": 0") "}")));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.routes[0].hub.refresh_margin_s, 0);
	assert_string_equal(cfg.token_store.path, tmp_path("tokens.db"));
	assert_string_equal(cfg.token_store.kek_file, tmp_path("kek.bin"));
	assert_null(cfg.token_store.pkcs11_module);
	config_free(&cfg);

	/* The token store: required with a hub route, its KEK in a PKCS#11 token or a file. */
	write_text("kek.pin", "1234\n");
	write_text("empty.pin", "\n");
	const char *hub_route = "[{\"prefix\": \"/bank\", \"upstream\": \"bank\", \"hub\": "
				HUB_OBJ("") "}]";
	struct {
		const char *store; /* NULL: no token_store */
		const char *err;
	} stores[] = {
		{NULL, "token_store: missing"},
		{"[]", "token_store: must be an object"},
		{"{\"kek_file\": \"kek.bin\"}", "token_store.path: missing"},
		{"{\"path\": \"t.db\", \"kek_file\": \"kek.bin\", \"token_label\": \"x\"}",
		 "token_store.token_label: not with kek_file (the KEK is either in a PKCS#11 token or "
		 "in the file)"},
		{"{\"path\": \"t.db\", \"kek_file\": \"nothere.bin\"}",
		 "token_store.kek_file: file not found"},
		{"{\"path\": \"t.db\", \"pin_file\": \"kek.pin\"}", "token_store.token_label: missing"},
		{"{\"path\": \"t.db\", \"token_label\": \"psd2edge\"}",
		 "token_store.pin_file: missing"},
		{"{\"path\": \"t.db\", \"token_label\": \"psd2edge\", \"pin_file\": \"empty.pin\"}",
		 "token_store.pin_file: must hold the PIN (1 to 254 bytes) on its first line"},
		{"{\"path\": \"t.db\", \"token_label\": \"p\", \"pin_file\": \"kek.pin\", "
		 "\"pkcs11_module\": \"libsofthsm2.so\"}",
		 "token_store.pkcs11_module: must be an absolute path"},
		{"{\"path\": \"t.db\", \"token_label\": \"p\", \"pin_file\": \"kek.pin\", "
		 "\"pkcs11_module\": \"/nonexistent/p11.so\"}",
		 "token_store.pkcs11_module: file not found"},
		{"{\"path\": \"t.db\", \"kek_file\": \"kek.bin\", \"kek\": 1}",
		 "token_store.kek: unknown key"},
	};
	for (size_t i = 0; i < sizeof(stores) / sizeof(stores[0]); i++) {
		root = hub_config();
		json_object_del(root, "token_store");
		if (stores[i].store)
			set(root, NULL, "token_store", parse(stores[i].store));
		set(root, NULL, "routes", parse(hub_route));
		expect_error(root, stores[i].err);
	}
	/* PKCS#11 with its defaults; the PIN read from its file's first line. */
	root = hub_config();
	set(root, NULL, "token_store", parse("{\"path\": \"t.db\", \"token_label\": \"psd2edge\", "
					     "\"pin_file\": \"kek.pin\", \"pkcs11_module\": "
					     "\"/bin/sh\"}"));
	set(root, NULL, "routes", parse(hub_route));
	expect_ok(root, &cfg);
	assert_string_equal(cfg.token_store.pkcs11_module, "/bin/sh");
	assert_string_equal(cfg.token_store.token_label, "psd2edge");
	assert_string_equal(cfg.token_store.pin, "1234");
	assert_string_equal(cfg.token_store.key_label, CONFIG_TOKEN_STORE_KEY_LABEL);
	assert_null(cfg.token_store.kek_file);
	config_free(&cfg);
}

/* --- unknown keys and ordering --------------------------------------------------------------- */

static void test_unknown_keys(void **state)
{
	(void)state;
	json_t *root = full_config();
	set(root, "tls", "certt", json_string("server.pem"));
	expect_error(root, "tls.certt: unknown key");
	root = full_config();
	set(root, NULL, "listne", json_array());
	expect_error(root, "listne: unknown key");
	root = full_config();
	set(root, "upstream", "sni", json_string("bank.test"));
	expect_error(root, "upstream.sni: unknown key");
	root = full_config();
	set(root, "bpf", "iface", json_string("lo"));
	expect_error(root, "bpf.iface: unknown key");
	root = full_config();
	set(root, "limits", "max_bodybytes", json_integer(1));
	expect_error(root, "limits.max_bodybytes: unknown key");
	/* Control characters in a key are not echoed raw. */
	root = full_config();
	set(root, NULL, "a\nb", json_true());
	expect_error(root, "a?b: unknown key");
}

static void test_first_wrong_key_wins(void **state)
{
	(void)state;
	/* Unknown keys of an object are reported before its known keys... */
	json_t *root = full_config();
	set(root, "tls", "cert", json_string("nope.pem"));
	set(root, "tls", "zzz", json_true());
	expect_error(root, "tls.zzz: unknown key");
	/* ...and unknown top-level keys before anything else. */
	root = full_config();
	set(root, NULL, "listen", json_array());
	set(root, NULL, "extra", json_true());
	expect_error(root, "extra: unknown key");
	/* Known keys in the schema's order, not the file's. */
	root = full_config();
	set(root, NULL, "log_level", json_string("loud"));
	set(root, "upstream", "ca", json_string("nope.pem"));
	set(root, NULL, "listen", json_pack("[s]", "bad"));
	expect_error(root, "listen[0]: invalid address");
	root = full_config();
	set(root, NULL, "log_level", json_string("loud"));
	set(root, "upstream", "ca", json_string("nope.pem"));
	expect_error(root, "upstream.ca: file not found");
	root = full_config();
	set(root, NULL, "log_level", json_string("loud"));
	set(root, NULL, "workers", json_integer(-1));
	expect_error(root, "workers: must be between 0 and 256 (0: one per CPU)");
	/* upstream, upstreams, routes, then client_id. */
	root = routed_config();
	set(root, NULL, "client_id", json_array());
	set(root, NULL, "routes", json_array());
	set(root, "upstreams", "accounts", json_object());
	expect_error(root, "upstreams.accounts.url: missing");
	root = routed_config();
	set(root, NULL, "client_id", json_array());
	set(root, NULL, "routes", json_array());
	expect_error(root, "routes: must not be empty");
	/* Within tls: cert, key, client_ca, crl. */
	root = full_config();
	set(root, "tls", "crl", json_string("nope.crl"));
	set(root, "tls", "key", json_string("nope.key"));
	expect_error(root, "tls.key: file not found");
}

/* --- other keys ------------------------------------------------------------------------------ */

static void test_other_keys(void **state)
{
	(void)state;
	char long_path[200];
	memset(long_path, 'a', sizeof(long_path) - 1);
	long_path[0] = '/';
	long_path[sizeof(long_path) - 1] = '\0';
	struct {
		const char *obj, *key;
		json_t *value;
		const char *err;
	} cases[] = {
		{NULL, "registry", NULL, "registry: missing"},
		{NULL, "registry", json_string(""), "registry: must not be empty"},
		{NULL, "registry", json_false(), "registry: must be a string"},
		{NULL, "control_socket", NULL, "control_socket: missing"},
		{NULL, "control_socket", json_string(long_path),
		 "control_socket: path too long (at most 107 bytes)"},
		{NULL, "control_group", json_string("no-such-group-psd2"),
		 "control_group: unknown group 'no-such-group-psd2'"},
		{NULL, "control_group", json_integer(0), "control_group: must be a string"},
		{NULL, "control_readonly_group", json_string("no-such-group-psd2"),
		 "control_readonly_group: unknown group 'no-such-group-psd2'"},
		{NULL, "control_readonly_group", json_true(), "control_readonly_group: must be a string"},
		{NULL, "control_readonly_group", json_string("root"),
		 "control_readonly_group: the same group as control_group, whose members may change "
		 "state"},
		{NULL, "bpf", json_string("lo"), "bpf: must be an object"},
		{"bpf", "interface", NULL, "bpf.interface: missing (required unless bpf.mode is off)"},
		{"bpf", "interface", json_string("nosuch0"), "bpf.interface: no such interface 'nosuch0'"},
		{"bpf", "interface", json_string("an-interface-name-too-long"),
		 "bpf.interface: no such interface 'an-interface-name-too-long'"},
		{"bpf", "mode", json_string("skb"), "bpf.mode: must be native, generic or off, not 'skb'"},
		{"bpf", "pin_dir", json_integer(1), "bpf.pin_dir: must be a string"},
		{NULL, "limits", json_array(), "limits: must be an object"},
		{"limits", "max_header_bytes", json_integer(0),
		 "limits.max_header_bytes: must be between 1 and 1048576"},
		{"limits", "max_body_bytes", json_integer(1099511627777LL),
		 "limits.max_body_bytes: must be between 1 and 1099511627776"},
		{"limits", "max_form_bytes", json_string("64k"),
		 "limits.max_form_bytes: must be between 1 and 16777216"},
		{"limits", "header_timeout_ms", json_real(1.5),
		 "limits.header_timeout_ms: must be between 1 and 600000"},
		{"limits", "idle_timeout_ms", json_integer(-5),
		 "limits.idle_timeout_ms: must be between 1 and 3600000"},
		{"limits", "upstream_connect_timeout_ms", json_integer(600001),
		 "limits.upstream_connect_timeout_ms: must be between 1 and 600000"},
		{"limits", "upstream_timeout_ms", json_integer(3600001),
		 "limits.upstream_timeout_ms: must be between 1 and 3600000"},
		{"limits", "drain_timeout_ms", json_integer(300001),
		 "limits.drain_timeout_ms: must be between 1 and 300000"},
		{"limits", "max_connections", json_integer(1000001),
		 "limits.max_connections: must be between 1 and 1000000"},
		{"limits", "min_body_rate", json_integer(-1),
		 "limits.min_body_rate: must be between 0 and 1000000000"},
		{"limits", "min_body_rate", json_integer(1000000001),
		 "limits.min_body_rate: must be between 0 and 1000000000"},
		{"limits", "body_rate_window_ms", json_integer(0),
		 "limits.body_rate_window_ms: must be between 1 and 3600000"},
		{NULL, "workers", json_integer(257), "workers: must be between 0 and 256 (0: one per CPU)"},
		{NULL, "workers", json_string("2"), "workers: must be between 0 and 256 (0: one per CPU)"},
		{NULL, "access_log", json_string(""), "access_log: must not be empty"},
		{NULL, "log_level", json_string("INFO"),
		 "log_level: must be debug, info, warn or error, not 'INFO'"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *root = full_config();
		set(root, cases[i].obj, cases[i].key, cases[i].value);
		expect_error(root, cases[i].err);
	}

	/* Limits at their bounds are accepted. */
	struct config cfg;
	json_t *root = minimal_config();
	set(root, NULL, "limits", json_pack("{s:I,s:i,s:i,s:i}", "max_body_bytes",
					    (json_int_t)1099511627776LL, "max_header_bytes", 1,
					    "drain_timeout_ms", 300000, "min_body_rate", 0));
	set(root, NULL, "workers", json_integer(256));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.limits.max_body_bytes, 1099511627776ULL);
	assert_int_equal(cfg.limits.max_header_bytes, 1);
	assert_int_equal(cfg.limits.drain_timeout_ms, 300000);
	assert_int_equal(cfg.limits.min_body_rate, 0); /* off */
	assert_int_equal(cfg.limits.idle_timeout_ms, 60000); /* others keep their defaults */
	assert_int_equal(cfg.workers, 256);
	config_free(&cfg);
}

/* --- limits.max_uri_bytes, http ---------------------------------------------------------------- */

static void test_http_keys(void **state)
{
	(void)state;
	struct config cfg;
	expect_ok(minimal_config(), &cfg);
	assert_int_equal(cfg.limits.max_uri_bytes, 8192);
	assert_int_equal(cfg.http.methods, HTTP_DEFAULT_METHODS);
	static const char *const default_drop[] = {
		"x-forwarded-client-cert", "x-ssl-client-cert", "ssl-client-cert", "x-client-cert",
		"x-real-ip", "true-client-ip", "x-forwarded-host", "x-forwarded-proto",
		"x-forwarded-prefix", "x-original-url", "x-rewrite-url",
	};
	assert_int_equal(cfg.http.n_drop_headers, sizeof(default_drop) / sizeof(default_drop[0]));
	for (unsigned i = 0; i < cfg.http.n_drop_headers; i++)
		assert_string_equal(cfg.http.drop_headers[i], default_drop[i]);
	config_free(&cfg);

	/* The target's default follows a smaller head. */
	json_t *root = minimal_config();
	set(root, NULL, "limits", json_pack("{s:i}", "max_header_bytes", 4096));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.limits.max_uri_bytes, 4096);
	config_free(&cfg);
	root = minimal_config();
	set(root, NULL, "limits", json_pack("{s:i,s:i}", "max_header_bytes", 4096, "max_uri_bytes", 4096));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.limits.max_uri_bytes, 4096);
	config_free(&cfg);

	/* Methods as listed; header names lower case, '_' kept (http.c folds it with '-'). */
	root = minimal_config();
	set(root, NULL, "http", json_pack("{s:[s,s,s],s:[s,s]}", "methods", "GET", "PROPFIND", "POST",
					  "drop_headers", "X_Custom_Header", "Authorization"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.http.methods, HTTP_METHOD_BIT(HTTP_GET) | HTTP_METHOD_BIT(HTTP_PROPFIND) |
						   HTTP_METHOD_BIT(HTTP_POST));
	assert_int_equal(cfg.http.n_drop_headers, 2);
	assert_string_equal(cfg.http.drop_headers[0], "x_custom_header");
	assert_string_equal(cfg.http.drop_headers[1], "authorization");
	config_free(&cfg);
	root = minimal_config();
	set(root, NULL, "http", json_pack("{s:[]}", "drop_headers"));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.http.n_drop_headers, 0);
	assert_int_equal(cfg.http.methods, HTTP_DEFAULT_METHODS);
	config_free(&cfg);

	json_t *many = json_array();
	for (int i = 0; i <= CONFIG_MAX_DROP_HEADERS; i++)
		json_array_append_new(many, json_sprintf("x-h%d", i));
	struct {
		json_t *limits, *http;
		const char *err;
	} cases[] = {
		{json_pack("{s:i,s:i}", "max_header_bytes", 4096, "max_uri_bytes", 4097), NULL,
		 "limits.max_uri_bytes: must not exceed limits.max_header_bytes (4096)"},
		{json_pack("{s:i}", "max_uri_bytes", 0), NULL,
		 "limits.max_uri_bytes: must be between 1 and 1048576"},
		{NULL, json_string("strict"), "http: must be an object"},
		{NULL, json_pack("{s:[s]}", "method", "GET"), "http.method: unknown key"},
		{NULL, json_pack("{s:s}", "methods", "GET"), "http.methods: must be an array"},
		{NULL, json_pack("{s:[]}", "methods"), "http.methods: must not be empty"},
		{NULL, json_pack("{s:[s,s]}", "methods", "GET", "get"),
		 "http.methods[1]: not a method: 'get' (methods are case-sensitive, e.g. GET)"},
		{NULL, json_pack("{s:[s]}", "methods", "<unknown>"),
		 "http.methods[0]: not a method: '<unknown>' (methods are case-sensitive, e.g. GET)"},
		{NULL, json_pack("{s:[s,s]}", "methods", "GET", "TRACE"),
		 "http.methods[1]: TRACE is never forwarded"},
		{NULL, json_pack("{s:[s]}", "methods", "CONNECT"), "http.methods[0]: CONNECT is never forwarded"},
		{NULL, json_pack("{s:[s,s,s]}", "methods", "GET", "POST", "GET"),
		 "http.methods[2]: GET listed twice"},
		{NULL, json_pack("{s:[s,i]}", "methods", "GET", 1), "http.methods[1]: must be a string"},
		{NULL, json_pack("{s:s}", "drop_headers", "X-Real-IP"), "http.drop_headers: must be an array"},
		{NULL, json_pack("{s:[s,s]}", "drop_headers", "X-Real-IP", "X Real IP"),
		 "http.drop_headers[1]: not a header name (1 to 64 token characters)"},
		{NULL, json_pack("{s:[s]}", "drop_headers", ""),
		 "http.drop_headers[0]: not a header name (1 to 64 token characters)"},
		{NULL, json_pack("{s:[s,s]}", "drop_headers", "X-A", "x-a"),
		 "http.drop_headers[1]: duplicate of http.drop_headers[0]"},
		{NULL, json_pack("{s:[n]}", "drop_headers"), "http.drop_headers[0]: must be a string"},
		{NULL, json_pack("{s:o}", "drop_headers", many), "http.drop_headers: at most 64 entries"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		root = minimal_config();
		if (cases[i].limits)
			set(root, NULL, "limits", cases[i].limits);
		if (cases[i].http)
			set(root, NULL, "http", cases[i].http);
		expect_error(root, cases[i].err);
	}
}

/* --- bpf.src_rate, bpf.client_rate ------------------------------------------------------------ */

static void expect_default_rates(const struct config *cfg)
{
	const struct config_rates *r = &cfg->bpf.rates;
	assert_int_equal(r->src_per_sec, 50);
	assert_int_equal(r->src_burst, 100);
	assert_int_equal(r->src_v4_prefix, 32);
	assert_int_equal(r->src_v6_prefix, 64);
	assert_int_equal(r->client.pps, 0);
	assert_int_equal(r->client.bps, 0);
	assert_int_equal(r->client.burst, 1);
	assert_int_equal(r->client.burst_bytes, 0);
}

static void test_bpf_rates(void **state)
{
	(void)state;
	struct config cfg;

	/* No bpf object, and a bpf object without rates: the defaults. */
	expect_ok(minimal_config(), &cfg);
	expect_default_rates(&cfg);
	config_free(&cfg);
	expect_ok(full_config(), &cfg);
	expect_default_rates(&cfg);
	config_free(&cfg);

	/* Every key, at its bounds. */
	json_t *root = full_config();
	set(root, "bpf", "src_rate",
	    json_pack("{s:i, s:i, s:i, s:i}", "per_sec", 0, "burst", 1, "v4_prefix", 24,
		      "v6_prefix", 128));
	set(root, "bpf", "client_rate",
	    json_pack("{s:I, s:I, s:I, s:I}", "pps", (json_int_t)1000000000LL, "bps",
		      (json_int_t)1000000000000LL, "burst", (json_int_t)1000000000LL,
		      "burst_bytes", (json_int_t)1514));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.bpf.rates.src_per_sec, 0);
	assert_int_equal(cfg.bpf.rates.src_burst, 1);
	assert_int_equal(cfg.bpf.rates.src_v4_prefix, 24);
	assert_int_equal(cfg.bpf.rates.src_v6_prefix, 128);
	assert_int_equal(cfg.bpf.rates.client.pps, 1000000000ULL);
	assert_int_equal(cfg.bpf.rates.client.bps, 1000000000000ULL);
	assert_int_equal(cfg.bpf.rates.client.burst, 1000000000ULL);
	assert_int_equal(cfg.bpf.rates.client.burst_bytes, 1514);
	config_free(&cfg);

	/* Some keys: the others keep their defaults; accepted with mode off too. */
	root = full_config();
	set(root, "bpf", "mode", json_string("off"));
	set(root, "bpf", "src_rate", json_pack("{s:i}", "per_sec", 5));
	set(root, "bpf", "client_rate", json_pack("{s:i, s:i}", "pps", 100, "burst", 10));
	expect_ok(root, &cfg);
	assert_int_equal(cfg.bpf.rates.src_per_sec, 5);
	assert_int_equal(cfg.bpf.rates.src_burst, 100);
	assert_int_equal(cfg.bpf.rates.src_v6_prefix, 64);
	assert_int_equal(cfg.bpf.rates.client.pps, 100);
	assert_int_equal(cfg.bpf.rates.client.bps, 0);
	assert_int_equal(cfg.bpf.rates.client.burst, 10);
	config_free(&cfg);

	struct {
		const char *obj;
		json_t *value;
		const char *err;
	} cases[] = {
		{"src_rate", json_integer(5), "bpf.src_rate: must be an object"},
		{"client_rate", json_array(), "bpf.client_rate: must be an object"},
		{"src_rate", json_pack("{s:i}", "rate", 5), "bpf.src_rate.rate: unknown key"},
		{"client_rate", json_pack("{s:i}", "per_sec", 5),
		 "bpf.client_rate.per_sec: unknown key"},
		{"src_rate", json_pack("{s:i}", "burst", 0), "bpf.src_rate.burst: must be at least 1"},
		{"src_rate", json_pack("{s:I}", "burst", (json_int_t)1000000001LL),
		 "bpf.src_rate.burst: must be at most 1000000000"},
		{"src_rate", json_pack("{s:i}", "per_sec", -1),
		 "bpf.src_rate.per_sec: must be at least 0"},
		{"src_rate", json_pack("{s:s}", "per_sec", "50"),
		 "bpf.src_rate.per_sec: must be an integer"},
		{"src_rate", json_pack("{s:f}", "per_sec", 1.5),
		 "bpf.src_rate.per_sec: must be an integer"},
		{"src_rate", json_pack("{s:i}", "v4_prefix", 33),
		 "bpf.src_rate.v4_prefix: must be at most 32"},
		{"src_rate", json_pack("{s:i}", "v6_prefix", 129),
		 "bpf.src_rate.v6_prefix: must be at most 128"},
		{"client_rate", json_pack("{s:I}", "pps", (json_int_t)1000000001LL),
		 "bpf.client_rate.pps: must be at most 1000000000"},
		{"client_rate", json_pack("{s:I}", "bps", (json_int_t)1000000000001LL),
		 "bpf.client_rate.bps: must be at most 1000000000000"},
		{"client_rate", json_pack("{s:i}", "burst", 0),
		 "bpf.client_rate.burst: must be at least 1"},
		{"client_rate", json_pack("{s:i}", "burst_bytes", 1500),
		 "bpf.client_rate.burst_bytes: must be 0 (burst * 1514) or at least 1514"},
		{"client_rate", json_pack("{s:b}", "burst_bytes", 1),
		 "bpf.client_rate.burst_bytes: must be an integer"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		root = full_config();
		set(root, "bpf", cases[i].obj, cases[i].value);
		expect_error(root, cases[i].err);
	}

	/* Within bpf, the rates come after mode; src_rate before client_rate. */
	root = full_config();
	set(root, "bpf", "client_rate", json_pack("{s:i}", "burst", 0));
	set(root, "bpf", "src_rate", json_pack("{s:i}", "burst", 0));
	set(root, "bpf", "mode", json_string("skb"));
	expect_error(root, "bpf.mode: must be native, generic or off, not 'skb'");
	root = full_config();
	set(root, "bpf", "client_rate", json_pack("{s:i}", "burst", 0));
	set(root, "bpf", "src_rate", json_pack("{s:i}", "burst", 0));
	expect_error(root, "bpf.src_rate.burst: must be at least 1");
}

/* --- the file itself --------------------------------------------------------------------------- */

static void test_file_errors(void **state)
{
	(void)state;
	struct config cfg;
	char err[512];

	assert_int_equal(config_load(tmp_path("missing.json"), &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "config: No such file or directory");
	assert_int_equal(config_load(tmpdir, &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "config: Is a directory");

	write_text("syntax.json", "{\n  \"listen\": [\"0.0.0.0:8443\",]\n}\n");
	assert_int_equal(config_load(tmp_path("syntax.json"), &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "config: line 2 column 29: unexpected token near ']'");

	write_text("dup.json", "{\"registry\": \"a\",\n\"registry\": \"b\"}");
	assert_int_equal(config_load(tmp_path("dup.json"), &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "config: line 2 column 10: duplicate object key near '\"registry\"'");

	write_text("empty.json", "");
	assert_int_equal(config_load(tmp_path("empty.json"), &cfg, err, sizeof(err)), -1);
	assert_true(strncmp(err, "config: line 1 column 0: ", 25) == 0);

	write_text("array.json", "[]");
	assert_int_equal(config_load(tmp_path("array.json"), &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "config: must be a JSON object");

	/* A small error buffer truncates but stays terminated. */
	char small[12];
	assert_int_equal(config_load(tmp_path("array.json"), &cfg, small, sizeof(small)), -1);
	assert_string_equal(small, "config: mus");
}

/* "metrics": on at 127.0.0.1:9464 without the object; "off" turns it off. */
static void test_metrics_keys(void **state)
{
	(void)state;
	static const struct {
		const char *metrics; /* the object's text, NULL: none */
		const char *want;    /* the address served, "off", or the error */
	} cases[] = {
		{NULL, CONFIG_METRICS_LISTEN},
		{"{}", CONFIG_METRICS_LISTEN},
		{"{\"listen\": \"0.0.0.0:9100\"}", "0.0.0.0:9100"},
		{"{\"listen\": \"[::1]:9464\"}", "[::1]:9464"},
		{"{\"listen\": \"off\"}", "off"},
		{"\"off\"", "metrics: must be an object"},
		{"{\"listen\": \"localhost:9464\"}", "metrics.listen: invalid address"},
		{"{\"listen\": \"127.0.0.1:99999\"}", "metrics.listen: invalid port"},
		{"{\"listen\": 9464}", "metrics.listen: must be a string"},
		{"{\"listen\": \"127.0.0.1:8443\"}", "metrics.listen: same address as listen[0]"},
		{"{\"port\": 9464}", "metrics.port: unknown key"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *root = minimal_config();
		if (cases[i].metrics)
			set(root, NULL, "metrics", parse(cases[i].metrics));
		if (strchr(cases[i].want, ' ')) {
			expect_error(root, cases[i].want);
			continue;
		}
		struct config cfg;
		expect_ok(root, &cfg);
		assert_string_equal(cfg.metrics.enabled ? cfg.metrics.listen.text : "off",
				    cases[i].want);
		config_free(&cfg);
	}
}

static void test_logs_keys(void **state)
{
	(void)state;
	static const struct {
		const char *logs; /* the object's text, NULL: none */
		const char *want; /* the patterns kept, joined by '|', or the error */
	} cases[] = {
		{NULL, ""},
		{"{}", ""},
		{"{\"mask\": []}", ""},
		{"{\"mask\": [\"Jane Doe\", \"[A-Z]{2}-[0-9]{6}\"]}", "Jane Doe|[A-Z]{2}-[0-9]{6}"},
		{"[]", "logs: must be an object"},
		{"{\"mask\": \"Jane\"}", "logs.mask: must be an array"},
		{"{\"mask\": [\"Jane\", 7]}", "logs.mask[1]: must be a string"},
		{"{\"mask\": [\"Jane\", \"(Doe\"]}",
		 "logs.mask[1]: not a POSIX extended regex: Unmatched ( or \\("},
		{"{\"mask\": [\"x*\"]}", "logs.mask[0]: matches the empty string"},
		{"{\"fields\": []}", "logs.fields: unknown key"},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		json_t *root = minimal_config();
		if (cases[i].logs)
			set(root, NULL, "logs", parse(cases[i].logs));
		if (strchr(cases[i].want, ':')) {
			expect_error(root, cases[i].want);
			continue;
		}
		struct config cfg;
		expect_ok(root, &cfg);
		char got[256] = "";
		for (size_t k = 0; k < cfg.logs.n_mask; k++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), "%s%s", k ? "|" : "",
				 cfg.logs.mask[k]);
		assert_string_equal(got, cases[i].want);
		config_free(&cfg);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_config),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_relative_paths),
		cmocka_unit_test(test_upstream_url),
		cmocka_unit_test(test_upstream_tls),
		cmocka_unit_test(test_upstreams),
		cmocka_unit_test(test_routes),
		cmocka_unit_test(test_route_refusals),
		cmocka_unit_test(test_tls_files),
		cmocka_unit_test(test_permission_denied),
		cmocka_unit_test(test_listen),
		cmocka_unit_test(test_client_id),
		cmocka_unit_test(test_jwt_keys),
		cmocka_unit_test(test_hub_keys),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_first_wrong_key_wins),
		cmocka_unit_test(test_other_keys),
		cmocka_unit_test(test_bpf_rates),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_http_keys),
		cmocka_unit_test(test_metrics_keys),
		cmocka_unit_test(test_logs_keys),
	};
	return cmocka_run_group_tests(tests, setup_pki, teardown_pki);
}
