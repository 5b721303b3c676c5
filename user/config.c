/* Configuration loading: one JSON file, validated against a fixed schema.
 *
 * Every check reports "<key path>: <problem>" and stops: the first wrong key wins. At each object
 * level unknown keys are refused first (in document order), then the known keys are checked in
 * the schema's fixed order (the order of the tables below), so the same file always yields the
 * same message. Files named by the configuration are opened and lightly parsed here (PEM
 * certificate, key, CRL) so that `--check-config` catches what would otherwise fail at start. */
#include "config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <net/if.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "http.h"
#include "mask.h"
#include "path.h"
#include "psd2edge_abi.h"
#include "qcstatement.h"

#define KEYPATH_MAX 160
#define SHOW_MAX 64 /* bytes of a user-supplied value quoted in an error */
#define URL_MAX 2048

struct loader {
	struct config *cfg;
	char *err;
	size_t errlen;
};

/* Writes "<path>: <message>" into the error buffer; always returns -1. */
static int __attribute__((format(printf, 3, 4)))
fail(struct loader *l, const char *path, const char *fmt, ...)
{
	int n = snprintf(l->err, l->errlen, "%s: ", path);
	if (n < 0 || (size_t)n >= l->errlen)
		return -1;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->err + n, l->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* "prefix.key", or "key" at top level; "..." at the end of one that does not fit. */
static const char *keypath(char out[KEYPATH_MAX], const char *prefix, const char *key)
{
	bool top = !prefix || !*prefix;
	if (snprintf(out, KEYPATH_MAX, "%s%s%s", top ? "" : prefix, top ? "" : ".", key) >=
	    KEYPATH_MAX)
		memcpy(out + KEYPATH_MAX - 4, "...", 4);
	return out;
}

/* A copy of a user-supplied string that is safe to put in a one-line message. */
static const char *show(char out[SHOW_MAX + 4], const char *s)
{
	size_t i = 0;
	for (; s[i] && i < SHOW_MAX; i++)
		out[i] = isprint((unsigned char)s[i]) ? s[i] : '?';
	if (s[i])
		memcpy(out + i, "...", 3), i += 3;
	out[i] = '\0';
	return out;
}

/* Refuses the first key of obj (document order) that is not in allowed (NULL-terminated). */
static int check_unknown_keys(struct loader *l, json_t *obj, const char *prefix,
			      const char *const *allowed)
{
	const char *key;
	json_t *v;
	json_object_foreach(obj, key, v) {
		bool known = false;
		for (const char *const *a = allowed; *a && !known; a++)
			known = strcmp(*a, key) == 0;
		if (!known) {
			char p[KEYPATH_MAX], s[SHOW_MAX + 4];
			return fail(l, keypath(p, prefix, show(s, key)), "unknown key");
		}
	}
	return 0;
}

/* Fetches obj[key] as a string. 1 present, 0 absent (error when required), -1 on error. */
static int get_string(struct loader *l, json_t *obj, const char *prefix, const char *key,
		      bool required, const char **out)
{
	char p[KEYPATH_MAX];
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return required ? fail(l, keypath(p, prefix, key), "missing") : 0;
	if (!json_is_string(v))
		return fail(l, keypath(p, prefix, key), "must be a string");
	if (json_string_length(v) == 0)
		return fail(l, keypath(p, prefix, key), "must not be empty");
	*out = json_string_value(v);
	return 1;
}

/* Fetches obj[key] as an object. 1 present, 0 absent (error when required), -1 on error. */
static int get_object(struct loader *l, json_t *obj, const char *prefix, const char *key,
		      bool required, json_t **out)
{
	char p[KEYPATH_MAX];
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v)
		return required ? fail(l, keypath(p, prefix, key), "missing") : 0;
	if (!json_is_object(v))
		return fail(l, keypath(p, prefix, key), "must be an object");
	*out = v;
	return 1;
}

/* Fetches obj[key] as an integer in min..max. 1 present, 0 absent (error when required), -1 on
 * error. */
static int get_uint(struct loader *l, json_t *obj, const char *prefix, const char *key,
		    bool required, uint64_t min, uint64_t max, uint64_t *out)
{
	char p[KEYPATH_MAX];
	json_t *v = json_object_get(obj, key);
	if (!v)
		return required ? fail(l, keypath(p, prefix, key), "missing") : 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 ||
	    (uint64_t)json_integer_value(v) < min || (uint64_t)json_integer_value(v) > max)
		return fail(l, keypath(p, prefix, key), "must be between %llu and %llu",
			    (unsigned long long)min, (unsigned long long)max);
	*out = (uint64_t)json_integer_value(v);
	return 1;
}

/* get_uint into a uint32_t (max fits). */
static int get_u32(struct loader *l, json_t *obj, const char *prefix, const char *key,
		   bool required, uint32_t min, uint32_t max, uint32_t *out)
{
	uint64_t v;
	int rc = get_uint(l, obj, prefix, key, required, min, max, &v);
	if (rc > 0)
		*out = (uint32_t)v;
	return rc;
}

/* Fetches obj[key] as a boolean. 1 present, 0 absent, -1 on error. */
static int get_bool(struct loader *l, json_t *obj, const char *prefix, const char *key, bool *out)
{
	char p[KEYPATH_MAX];
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return fail(l, keypath(p, prefix, key), "must be true or false");
	*out = json_is_true(v);
	return 1;
}

/* Fetches obj[key] as one of names (NULL-terminated), its index in *out. 1 present, 0 absent
 * (error when required), -1 on error: "must be a, b or c, not 'd'". */
static int get_keyword(struct loader *l, json_t *obj, const char *prefix, const char *key,
		       bool required, const char *const *names, unsigned *out)
{
	char p[KEYPATH_MAX], s[SHOW_MAX + 4], list[128] = "";
	const char *v;
	int rc = get_string(l, obj, prefix, key, required, &v);
	if (rc <= 0)
		return rc;
	for (unsigned i = 0; names[i]; i++) {
		if (strcmp(names[i], v) == 0) {
			*out = i;
			return 1;
		}
	}
	size_t n = 0;
	for (unsigned i = 0; names[i] && n < sizeof(list); i++)
		n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%s",
				      i == 0 ? "" : names[i + 1] ? ", " : " or ", names[i]);
	return fail(l, keypath(p, prefix, key), "must be %s, not '%s'", list, show(s, v));
}

/* --- paths and files ---------------------------------------------------------------------- */

/* Absolute path for value (relative to the configuration's directory). */
static int resolve_path(struct loader *l, const char *path, const char *value, char **out)
{
	char *res;
	if (value[0] == '/')
		res = strdup(value);
	else if (asprintf(&res, "%s/%s", l->cfg->dir, value) < 0)
		res = NULL;
	if (!res)
		return fail(l, path, "out of memory");
	if (strlen(res) >= PATH_MAX) {
		free(res);
		return fail(l, path, "path too long");
	}
	*out = res;
	return 0;
}

static int errno_fail(struct loader *l, const char *path, int e)
{
	switch (e) {
	case ENOENT: return fail(l, path, "file not found");
	case EACCES:
	case EPERM: return fail(l, path, "permission denied");
	case EISDIR: return fail(l, path, "is a directory");
	default: return fail(l, path, "%s", strerror(e));
	}
}

/* Resolves obj[key] (a required or optional path), checks that it is a readable regular file
 * and opens it. 1 with *fp open, 0 when absent and optional, -1 on error. */
static int open_file(struct loader *l, json_t *obj, const char *prefix, const char *key,
		     bool required, char **abs, FILE **fp)
{
	char p[KEYPATH_MAX];
	const char *v;
	int rc = get_string(l, obj, prefix, key, required, &v);
	if (rc <= 0)
		return rc;
	keypath(p, prefix, key);
	if (resolve_path(l, p, v, abs) < 0)
		return -1;
	struct stat st;
	if (stat(*abs, &st) < 0)
		return errno_fail(l, p, errno);
	if (S_ISDIR(st.st_mode))
		return fail(l, p, "is a directory");
	if (!S_ISREG(st.st_mode))
		return fail(l, p, "not a regular file");
	*fp = fopen(*abs, "re");
	if (!*fp)
		return errno_fail(l, p, errno);
	return 1;
}

/* Never prompt for a passphrase: note that one was wanted and refuse. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf, (void)size, (void)rwflag;
	*(bool *)arg = true;
	return -1;
}

/* The first certificate of a PEM file (a certificate file may carry its chain after it). */
static int load_cert(struct loader *l, json_t *obj, const char *prefix, const char *key,
		     char **abs, X509 **out)
{
	char p[KEYPATH_MAX];
	FILE *fp = NULL;
	int rc = open_file(l, obj, prefix, key, true, abs, &fp);
	if (rc <= 0)
		return -1;
	*out = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	ERR_clear_error();
	if (!*out)
		return fail(l, keypath(p, prefix, key), "no certificate in file");
	return 0;
}

/* A private key that matches cert ("<prefix>.key: does not match <prefix>.cert"). */
static int load_key(struct loader *l, json_t *obj, const char *prefix, X509 *cert, char **abs)
{
	char p[KEYPATH_MAX];
	FILE *fp = NULL;
	int rc = open_file(l, obj, prefix, "key", true, abs, &fp);
	if (rc <= 0)
		return -1;
	bool wanted_pass = false;
	EVP_PKEY *pkey = PEM_read_PrivateKey(fp, NULL, no_passphrase, &wanted_pass);
	fclose(fp);
	ERR_clear_error();
	keypath(p, prefix, "key");
	if (!pkey)
		return wanted_pass ? fail(l, p, "encrypted private keys are not supported")
				   : fail(l, p, "not a private key");
	int match = X509_check_private_key(cert, pkey);
	EVP_PKEY_free(pkey);
	ERR_clear_error();
	if (match != 1)
		return fail(l, p, "does not match %s.cert", prefix);
	return 0;
}

/* A CA bundle: every certificate of the file, as SSL_CTX_load_verify_locations reads it. */
static int load_ca_bundle(struct loader *l, json_t *obj, const char *prefix, const char *key,
			  char **abs, STACK_OF(X509) **out)
{
	char p[KEYPATH_MAX];
	FILE *fp = NULL;
	int rc = open_file(l, obj, prefix, key, true, abs, &fp);
	if (rc <= 0)
		return -1;
	keypath(p, prefix, key);
	STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read(fp, NULL, NULL, NULL);
	fclose(fp);
	ERR_clear_error();
	if (!infos)
		return fail(l, p, "invalid PEM data");
	STACK_OF(X509) *certs = sk_X509_new_null();
	for (int i = 0; certs && i < sk_X509_INFO_num(infos); i++) {
		X509_INFO *info = sk_X509_INFO_value(infos, i);
		if (info->x509 && sk_X509_push(certs, info->x509) > 0)
			info->x509 = NULL; /* moved into certs */
	}
	sk_X509_INFO_pop_free(infos, X509_INFO_free);
	if (!certs)
		return fail(l, p, "out of memory");
	if (sk_X509_num(certs) == 0) {
		sk_X509_free(certs);
		return fail(l, p, "no certificate in file");
	}
	*out = certs;
	return 0;
}

/* An optional CRL that must be signed by one of the client CAs (otherwise revocation would
 * silently not apply to the certificates it is meant for). */
static int load_crl(struct loader *l, json_t *obj, STACK_OF(X509) *cas)
{
	FILE *fp = NULL;
	int rc = open_file(l, obj, "tls", "crl", false, &l->cfg->tls.crl, &fp);
	if (rc <= 0)
		return rc;
	X509_CRL *crl = PEM_read_X509_CRL(fp, NULL, NULL, NULL);
	fclose(fp);
	ERR_clear_error();
	if (!crl)
		return fail(l, "tls.crl", "not a CRL");
	bool issued = false;
	for (int i = 0; i < sk_X509_num(cas) && !issued; i++) {
		X509 *ca = sk_X509_value(cas, i);
		issued = X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(ca)) == 0 &&
			 X509_CRL_verify(crl, X509_get0_pubkey(ca)) == 1;
	}
	X509_CRL_free(crl);
	ERR_clear_error();
	if (!issued)
		return fail(l, "tls.crl", "not issued by a certificate in tls.client_ca");
	return 0;
}

/* --- listen ------------------------------------------------------------------------------- */

static bool all_digits(const char *s, size_t n)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)s[i]))
			return false;
	return true;
}

/* Port text of n digits to 1..65535; 0 when invalid. */
static uint16_t parse_port(const char *s, size_t n)
{
	if (!all_digits(s, n) || n > 5)
		return 0;
	unsigned long v = strtoul(s, NULL, 10);
	return v >= 1 && v <= 65535 ? (uint16_t)v : 0;
}

/* "A.B.C.D:PORT" or "[IPV6]:PORT", numeric only. */
static int parse_listen(struct loader *l, const char *path, const char *s, struct config_addr *out)
{
	char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2], port[8];
	const char *hs, *he, *ps;
	bool v6 = s[0] == '[';
	if (strlen(s) >= sizeof(out->text))
		return fail(l, path, "invalid address");
	if (v6) {
		hs = s + 1;
		he = strchr(hs, ']');
		if (!he || he[1] != ':')
			return fail(l, path, "invalid address");
		ps = he + 2;
	} else {
		hs = s;
		he = strchr(s, ':');
		if (!he || strchr(he + 1, ':'))
			return fail(l, path, "invalid address");
		ps = he + 1;
	}
	size_t hlen = (size_t)(he - hs);
	if (hlen == 0 || hlen >= sizeof(host))
		return fail(l, path, "invalid address");
	memcpy(host, hs, hlen);
	host[hlen] = '\0';
	uint16_t pnum = parse_port(ps, strlen(ps));
	if (!pnum)
		return fail(l, path, "invalid port");
	snprintf(port, sizeof(port), "%u", pnum);

	struct in_addr a4;
	if (!v6 && inet_pton(AF_INET, host, &a4) != 1) /* getaddrinfo would take "1.2.3" */
		return fail(l, path, "invalid address");
	struct addrinfo hints = {
		.ai_family = v6 ? AF_INET6 : AF_INET,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
	}, *res = NULL;
	if (getaddrinfo(host, port, &hints, &res) != 0 || !res)
		return fail(l, path, "invalid address");
	memcpy(&out->addr, res->ai_addr, res->ai_addrlen);
	out->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(out->text, sizeof(out->text), "%s", s);
	return 0;
}

/* A required, non-empty array of at most max elements (each checked by the caller, in order,
 * so that the first wrong key still wins). NULL after fail(). */
static json_t *load_array(struct loader *l, json_t *root, const char *key, size_t max,
			  const char *noun)
{
	json_t *arr = json_object_get(root, key);
	if (!arr)
		fail(l, key, "missing");
	else if (!json_is_array(arr))
		fail(l, key, "must be an array");
	else if (json_array_size(arr) == 0)
		fail(l, key, "must not be empty");
	else if (json_array_size(arr) > max)
		fail(l, key, "at most %zu %s", max, noun);
	else
		return arr;
	return NULL;
}

/* Element i of array key as a string, its key path ("key[i]") in path. NULL after fail(). */
static const char *array_string(struct loader *l, const char *key, json_t *v, size_t i,
				char path[KEYPATH_MAX])
{
	snprintf(path, KEYPATH_MAX, "%s[%zu]", key, i);
	if (json_is_string(v))
		return json_string_value(v);
	fail(l, path, "must be a string");
	return NULL;
}

static int load_listen(struct loader *l, json_t *root)
{
	struct config *cfg = l->cfg;
	json_t *arr = load_array(l, root, "listen", CONFIG_MAX_LISTEN, "addresses");
	if (!arr)
		return -1;
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		char p[KEYPATH_MAX];
		const char *text = array_string(l, "listen", v, i, p);
		struct config_addr *a = &cfg->listen[i];
		if (!text || parse_listen(l, p, text, a) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (cfg->listen[j].addrlen == a->addrlen &&
			    memcmp(&cfg->listen[j].addr, &a->addr, a->addrlen) == 0)
				return fail(l, p, "duplicate of listen[%zu]", j);
		cfg->n_listen++;
	}
	return 0;
}

/* --- tls ---------------------------------------------------------------------------------- */

static int load_tls(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"cert", "key", "client_ca", "crl", "expiry_warning_days",
					   NULL};
	struct config *cfg = l->cfg;
	json_t *obj;
	X509 *cert = NULL;
	STACK_OF(X509) *cas = NULL;
	int rc = -1;
	if (get_object(l, root, NULL, "tls", true, &obj) < 0 ||
	    check_unknown_keys(l, obj, "tls", keys) < 0)
		return -1;
	if (load_cert(l, obj, "tls", "cert", &cfg->tls.cert, &cert) < 0 ||
	    load_key(l, obj, "tls", cert, &cfg->tls.key) < 0 ||
	    load_ca_bundle(l, obj, "tls", "client_ca", &cfg->tls.client_ca, &cas) < 0 ||
	    load_crl(l, obj, cas) < 0)
		goto out;
	cfg->tls.expiry_warning_days = CONFIG_EXPIRY_WARNING_DAYS;
	if (get_u32(l, obj, "tls", "expiry_warning_days", false, 0, 3650,
		    &cfg->tls.expiry_warning_days) < 0)
		goto out;
	rc = 0;
out:
	X509_free(cert);
	sk_X509_pop_free(cas, X509_free);
	return rc;
}

/* --- upstream ----------------------------------------------------------------------------- */

static bool host_name_ok(const char *h)
{
	for (; *h; h++)
		if (!isalnum((unsigned char)*h) && *h != '-' && *h != '.' && *h != '_')
			return false;
	return true;
}

/* scheme://host[:port][/path]; no userinfo, query or fragment. Fills https, host, port and
 * base_path (without trailing slashes). */
static int parse_url(struct loader *l, struct config_upstream *u, const char *key,
		     const char *url)
{
	const char *p = url;
	if (strlen(url) > URL_MAX)
		return fail(l, key, "too long");
	if (strncasecmp(p, "https://", 8) == 0) {
		u->https = true;
		p += 8;
	} else if (strncasecmp(p, "http://", 7) == 0) {
		p += 7;
	} else {
		return fail(l, key, "scheme must be http or https");
	}
	size_t alen = strcspn(p, "/?#");
	const char *path = p + alen;
	if (memchr(p, '@', alen))
		return fail(l, key, "credentials are not allowed");
	const char *hs = p, *he, *port = NULL;
	if (*p == '[') {
		hs = p + 1;
		he = memchr(hs, ']', alen - 1);
		if (!he)
			return fail(l, key, "invalid host");
		if (he + 1 < p + alen) {
			if (he[1] != ':')
				return fail(l, key, "invalid host");
			port = he + 2;
		}
	} else {
		he = memchr(p, ':', alen);
		if (he && memchr(he + 1, ':', (size_t)(p + alen - he - 1)))
			return fail(l, key, "invalid host"); /* IPv6 needs brackets */
		if (he)
			port = he + 1;
		else
			he = p + alen;
	}
	size_t hlen = (size_t)(he - hs);
	if (hlen == 0)
		return fail(l, key, "missing host");
	if (hlen >= sizeof(u->host))
		return fail(l, key, "host too long");
	memcpy(u->host, hs, hlen);
	u->host[hlen] = '\0';
	struct in_addr a4;
	if (*p != '[' && (!host_name_ok(u->host) ||
			  (strspn(u->host, "0123456789.") == hlen &&
			   inet_pton(AF_INET, u->host, &a4) != 1)))
		return fail(l, key, "invalid host");
	if (port) {
		u->port = parse_port(port, (size_t)(p + alen - port));
		if (!u->port)
			return fail(l, key, "invalid port");
	} else {
		u->port = u->https ? 443 : 80;
	}

	if (strpbrk(path, "?#"))
		return fail(l, key, "query and fragment are not allowed");
	for (const char *c = path; *c; c++)
		if (*c <= ' ' || *c >= 0x7f)
			return fail(l, key, "invalid character in path");
	size_t plen = strlen(path);
	while (plen > 0 && path[plen - 1] == '/')
		plen--;
	u->base_path = strndup(path, plen);
	if (!u->base_path)
		return fail(l, key, "out of memory");

	/* Resolve now: the first address is the one connected to. Literals stay numeric. */
	char portstr[8], s[SHOW_MAX + 4];
	snprintf(portstr, sizeof(portstr), "%u", u->port);
	struct addrinfo hints = {
		.ai_family = *p == '[' ? AF_INET6 : AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICSERV | (*p == '[' ? AI_NUMERICHOST : 0),
	}, *res = NULL;
	int gai = getaddrinfo(u->host, portstr, &hints, &res);
	if (gai != 0 || !res) {
		if (*p == '[')
			return fail(l, key, "invalid host");
		return fail(l, key, "cannot resolve '%s': %s",
			    show(s, u->host), gai ? gai_strerror(gai) : "no address");
	}
	struct config_addr *a = &u->addr;
	memcpy(&a->addr, res->ai_addr, res->ai_addrlen);
	a->addrlen = res->ai_addrlen;
	freeaddrinfo(res);
	char num[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
	if (getnameinfo((struct sockaddr *)&a->addr, a->addrlen, num, sizeof(num), NULL, 0,
			NI_NUMERICHOST) != 0)
		snprintf(num, sizeof(num), "?");
	snprintf(a->text, sizeof(a->text), "%s%s%s:%u", a->addr.ss_family == AF_INET6 ? "[" : "",
		 num, a->addr.ss_family == AF_INET6 ? "]" : "", u->port);
	return 0;
}

/* Upstream and quota names: what psd2edgectl and bpftool show, and what routes refer to. */
static bool name_ok(const char *name)
{
	static const char chars[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-";
	size_t len = strlen(name);
	return len >= 1 && len <= CONFIG_NAME_MAX && strspn(name, chars) == len;
}

static int name_fail(struct loader *l, const char *path)
{
	return fail(l, path, "name must be 1 to %d characters of A-Z a-z 0-9 _ . -",
		    CONFIG_NAME_MAX);
}

/* The index of the upstream called name, or -1. */
static int upstream_index(const struct config *cfg, const char *name)
{
	for (unsigned i = 0; i < cfg->n_upstreams; i++)
		if (strcmp(cfg->upstreams[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* ca, cert and key of an https upstream; refused for http. */
static int load_upstream_tls(struct loader *l, json_t *obj, const char *prefix,
			     struct config_upstream *u)
{
	static const char *const keys[] = {"ca", "cert", "key"};
	X509 *cert = NULL;
	STACK_OF(X509) *cas = NULL;
	int rc = -1;
	if (!u->https) {
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			char p[KEYPATH_MAX];
			if (json_object_get(obj, keys[i]))
				return fail(l, keypath(p, prefix, keys[i]),
					    "only valid for https upstreams");
		}
		return 0;
	}
	if (load_ca_bundle(l, obj, prefix, "ca", &u->ca, &cas) < 0 ||
	    load_cert(l, obj, prefix, "cert", &u->cert, &cert) < 0 ||
	    load_key(l, obj, prefix, cert, &u->key) < 0)
		goto out;
	rc = 0;
out:
	X509_free(cert);
	sk_X509_pop_free(cas, X509_free);
	return rc;
}

/* The upstream's optional "circuit_breaker"; it opens one way or both. */
static int load_breaker(struct loader *l, json_t *up, const char *up_path,
			struct config_breaker *b)
{
	static const char *const keys[] = {"consecutive_failures", "failure_ratio", "window_ms",
					   "min_requests", "cooldown_ms", "probes", NULL};
	static const char *const ratio_keys[] = {"window_ms", "min_requests"};
	char path[KEYPATH_MAX], p[KEYPATH_MAX];
	const char *prefix = keypath(path, up_path, "circuit_breaker");
	json_t *obj;
	int rc = get_object(l, up, up_path, "circuit_breaker", false, &obj);
	if (rc <= 0)
		return rc;
	b->window_ms = 10000;
	b->min_requests = 10;
	b->cooldown_ms = 5000;
	b->probes = 1;
	if (check_unknown_keys(l, obj, prefix, keys) < 0 ||
	    get_u32(l, obj, prefix, "consecutive_failures", false, 1, 1000000,
		    &b->consecutive_failures) < 0 ||
	    get_u32(l, obj, prefix, "failure_ratio", false, 1, 100, &b->failure_ratio_pct) < 0 ||
	    get_u32(l, obj, prefix, "window_ms", false, 100, 3600000, &b->window_ms) < 0 ||
	    get_u32(l, obj, prefix, "min_requests", false, 1, 1000000, &b->min_requests) < 0 ||
	    get_u32(l, obj, prefix, "cooldown_ms", false, 100, 3600000, &b->cooldown_ms) < 0 ||
	    get_u32(l, obj, prefix, "probes", false, 1, 1000, &b->probes) < 0)
		return -1;
	if (!b->consecutive_failures && !b->failure_ratio_pct)
		return fail(l, prefix, "needs consecutive_failures or failure_ratio");
	for (size_t i = 0; !b->failure_ratio_pct && i < sizeof(ratio_keys) / sizeof(ratio_keys[0]);
	     i++)
		if (json_object_get(obj, ratio_keys[i]))
			return fail(l, keypath(p, prefix, ratio_keys[i]),
				    "only with failure_ratio");
	b->enabled = true;
	return 0;
}

/* One upstream object at prefix ("upstream" or "upstreams.NAME"): the next of cfg->upstreams. */
static int load_upstream_obj(struct loader *l, json_t *obj, const char *prefix, const char *name)
{
	static const char *const keys[] = {"url", "ca", "cert", "key", "connect_timeout_ms",
					   "tls_timeout_ms", "response_timeout_ms", "pool_size",
					   "circuit_breaker", NULL};
	struct config_upstream *u = &l->cfg->upstreams[l->cfg->n_upstreams];
	char p[KEYPATH_MAX];
	const char *url;
	if (check_unknown_keys(l, obj, prefix, keys) < 0 ||
	    get_string(l, obj, prefix, "url", true, &url) < 0)
		return -1;
	snprintf(u->name, sizeof(u->name), "%s", name);
	l->cfg->n_upstreams++; /* config_free frees what it holds from here on */
	keypath(p, prefix, "url");
	u->url = strdup(url);
	if (!u->url)
		return fail(l, p, "out of memory");
	if (parse_url(l, u, p, url) < 0 || load_upstream_tls(l, obj, prefix, u) < 0 ||
	    get_u32(l, obj, prefix, "connect_timeout_ms", false, 1, 600000,
		    &u->connect_timeout_ms) < 0 ||
	    get_u32(l, obj, prefix, "tls_timeout_ms", false, 1, 600000, &u->tls_timeout_ms) < 0 ||
	    get_u32(l, obj, prefix, "response_timeout_ms", false, 1, 3600000,
		    &u->response_timeout_ms) < 0 ||
	    get_u32(l, obj, prefix, "pool_size", false, 1, 1024, &u->pool_size) < 0)
		return -1;
	return load_breaker(l, obj, prefix, &u->breaker);
}

/* The single "upstream": the upstream named "default". Optional when "upstreams" is given. */
static int load_upstream(struct loader *l, json_t *root)
{
	json_t *obj;
	int rc = get_object(l, root, NULL, "upstream", false, &obj);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return json_object_get(root, "upstreams") ? 0 :
			fail(l, "upstream", "missing (give upstream or upstreams)");
	return load_upstream_obj(l, obj, "upstream", "default");
}

/* "upstreams": name -> upstream, after the "default" of "upstream". */
static int load_upstreams(struct loader *l, json_t *root)
{
	struct config *cfg = l->cfg;
	size_t room = CONFIG_MAX_UPSTREAMS - cfg->n_upstreams;
	const char *name;
	json_t *obj, *v;
	int rc = get_object(l, root, NULL, "upstreams", false, &obj);
	if (rc <= 0)
		return rc;
	if (json_object_size(obj) == 0)
		return fail(l, "upstreams", "must not be empty");
	if (json_object_size(obj) > room)
		return fail(l, "upstreams", "at most %zu upstreams%s", room,
			    cfg->n_upstreams ? " besides upstream" : "");
	json_object_foreach(obj, name, v) {
		char p[KEYPATH_MAX], s[SHOW_MAX + 4];
		keypath(p, "upstreams", show(s, name));
		if (!name_ok(name))
			return name_fail(l, p);
		if (upstream_index(cfg, name) >= 0)
			return fail(l, p,
				    "the name of upstream (the single upstream is named default)");
		if (!json_is_object(v))
			return fail(l, p, "must be an object");
		if (load_upstream_obj(l, v, p, name) < 0)
			return -1;
	}
	return 0;
}

/* --- client_id ---------------------------------------------------------------------------- */

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
	return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A token (RFC 9110 §5.6.2) of 1 to max characters: a header or parameter name. */
static bool is_token(const char *s, size_t max)
{
	size_t len = strlen(s);
	bool ok = len >= 1 && len <= max;
	for (size_t i = 0; ok && i < len; i++)
		ok = is_tchar((unsigned char)s[i]);
	return ok;
}

static int parse_source(struct loader *l, const char *path, const char *s,
			struct client_id_source *out)
{
	static const struct {
		const char *kind;
		enum client_id_source_kind value;
	} kinds[] = {
		{"form", CID_SOURCE_FORM},
		{"query", CID_SOURCE_QUERY},
		{"header", CID_SOURCE_HEADER},
		{"jwt", CID_SOURCE_JWT},
	};
	char sh[SHOW_MAX + 4];
	const char *colon = strchr(s, ':');
	if (!colon)
		return fail(l, path, "expected KIND:NAME (form, query, header or jwt)");
	size_t klen = (size_t)(colon - s);
	size_t k = 0;
	while (k < sizeof(kinds) / sizeof(kinds[0]) &&
	       !(strlen(kinds[k].kind) == klen && strncmp(kinds[k].kind, s, klen) == 0))
		k++;
	if (k == sizeof(kinds) / sizeof(kinds[0])) {
		char kind[SHOW_MAX + 1];
		snprintf(kind, sizeof(kind), "%.*s", (int)(klen < SHOW_MAX ? klen : SHOW_MAX), s);
		return fail(l, path, "unknown source kind '%s'", show(sh, kind));
	}
	const char *name = colon + 1;
	size_t nlen = strlen(name);
	if (!is_token(name, CONFIG_SOURCE_NAME_MAX))
		return fail(l, path, "name must be 1 to %d token characters",
			    CONFIG_SOURCE_NAME_MAX);
	out->kind = kinds[k].value;
	if (out->kind == CID_SOURCE_JWT && !l->cfg->jwt.jwks)
		return fail(l, path, "jwt:%s needs the top-level jwt object", name);
	/* Requests with '_' in a header name are refused (http.c), so such a source never speaks. */
	if (out->kind == CID_SOURCE_HEADER && strchr(name, '_'))
		return fail(l, path, "header names with '_' are refused in requests; use '-'");
	for (size_t i = 0; i <= nlen; i++)
		out->name[i] = out->kind == CID_SOURCE_HEADER ? (char)tolower((unsigned char)name[i])
							      : name[i];
	return 0;
}

static int load_client_id(struct loader *l, json_t *root)
{
	struct config *cfg = l->cfg;
	json_t *arr = load_array(l, root, "client_id", CONFIG_MAX_CLIENT_ID_SOURCES, "sources");
	if (!arr)
		return -1;
	size_t i;
	json_t *v;
	json_array_foreach(arr, i, v) {
		char p[KEYPATH_MAX];
		const char *text = array_string(l, "client_id", v, i, p);
		struct client_id_source *src = &cfg->client_id[i];
		if (!text || parse_source(l, p, text, src) < 0)
			return -1;
		for (size_t j = 0; j < i; j++)
			if (cfg->client_id[j].kind == src->kind &&
			    strcmp(cfg->client_id[j].name, src->name) == 0)
				return fail(l, p, "duplicate of client_id[%zu]", j);
		cfg->n_client_id++;
	}
	return 0;
}

/* --- routes ------------------------------------------------------------------------------ */

/* A route's prefix, in the one spelling route_match compares (route.h): unreserved characters
 * and single '/' between segments, no dot segment, no trailing '/' (but "/"). */
static int load_prefix(struct loader *l, json_t *route, const char *route_path,
		       char out[CONFIG_ROUTE_PREFIX_MAX + 1])
{
	static const char allowed[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/";
	char p[KEYPATH_MAX], normal[CONFIG_ROUTE_PREFIX_MAX + 1];
	const char *v, *why;
	if (get_string(l, route, route_path, "prefix", true, &v) < 0)
		return -1;
	keypath(p, route_path, "prefix");
	size_t len = strlen(v);
	if (v[0] != '/')
		return fail(l, p, "must start with '/'");
	if (len > CONFIG_ROUTE_PREFIX_MAX)
		return fail(l, p, "too long (at most %d bytes)", CONFIG_ROUTE_PREFIX_MAX);
	if (strspn(v, allowed) != len)
		return fail(l, p, "only letters, digits, '-', '.', '_', '~' and '/', none "
			    "percent-encoded (a route matches their encoded forms too)");
	if (strstr(v, "//"))
		return fail(l, p, "empty segment (a route matches '//' as '/')");
	ssize_t n = path_normalize(v, len, normal, &why);
	if (n < 0)
		return fail(l, p, "%s", why);
	if ((size_t)n != len || memcmp(normal, v, len) != 0)
		return fail(l, p, "has dot segments: a request for it reads '%.*s'", (int)n,
			    normal);
	if (len > 1 && v[len - 1] == '/')
		len--;
	memcpy(out, v, len);
	out[len] = '\0';
	return 0;
}

/* A route's optional "quota". Routes whose quotas share a name share counters, so they must
 * count alike. */
static int load_quota(struct loader *l, json_t *route, const char *route_path, unsigned index)
{
	static const char *const keys[] = {"limit", "window", "rolling_seconds", "key", "name",
					   "headers", NULL};
	static const char *const windows[] = {"minute", "hour", "day", "rolling", NULL};
	static const struct {
		uint32_t window, seconds;
	} window_kinds[] = {
		{PSD2_QUOTA_MINUTE, 60}, {PSD2_QUOTA_HOUR, 3600}, {PSD2_QUOTA_DAY, 86400},
		{PSD2_QUOTA_ROLLING, 0},
	};
	static const char *const headers[] = {"draft", "x", "none", NULL};
	static const enum config_ratelimit_headers header_kinds[] = {
		RATELIMIT_HEADERS_DRAFT, RATELIMIT_HEADERS_X, RATELIMIT_HEADERS_NONE,
	};
	struct config_route *r = &l->cfg->routes[index];
	struct config_quota *q = &r->quota;
	char path[KEYPATH_MAX], p[KEYPATH_MAX], s[SHOW_MAX + 4];
	const char *prefix = keypath(path, route_path, "quota"), *key, *name;
	unsigned window, hdrs = 0; /* draft */
	json_t *obj;
	int rc = get_object(l, route, route_path, "quota", false, &obj);
	if (rc <= 0)
		return rc;
	if (check_unknown_keys(l, obj, prefix, keys) < 0 ||
	    get_uint(l, obj, prefix, "limit", true, 1, 1000000000, &q->limit) < 0 ||
	    get_keyword(l, obj, prefix, "window", true, windows, &window) < 0)
		return -1;
	q->window = window_kinds[window].window;
	q->window_seconds = window_kinds[window].seconds;
	if (q->window == PSD2_QUOTA_ROLLING) {
		if (get_u32(l, obj, prefix, "rolling_seconds", true, 60, 31 * 86400,
			    &q->window_seconds) < 0)
			return -1;
	} else if (json_object_get(obj, "rolling_seconds")) {
		return fail(l, keypath(p, prefix, "rolling_seconds"), "only with window rolling");
	}
	if (get_string(l, obj, prefix, "key", false, &key) < 0 ||
	    (key && parse_source(l, keypath(p, prefix, "key"), key, &q->key) < 0) ||
	    get_string(l, obj, prefix, "name", false, &name) < 0)
		return -1;
	if (key && q->key.kind == CID_SOURCE_JWT)
		return fail(l, keypath(p, prefix, "key"), "a quota cannot count by a token claim");
	q->per_key = key != NULL;
	keypath(p, prefix, "name");
	if (name && !name_ok(name))
		return name_fail(l, p);
	if (!name && strlen(r->prefix) > CONFIG_NAME_MAX)
		return fail(l, p, "missing: the prefix is too long to name the quota (at most %d "
			    "bytes)", CONFIG_NAME_MAX);
	snprintf(q->name, sizeof(q->name), "%s", name ? name : r->prefix);
	if (get_keyword(l, obj, prefix, "headers", false, headers, &hdrs) < 0)
		return -1;
	q->headers = header_kinds[hdrs];
	for (unsigned j = 0; j < index; j++) {
		const struct config_quota *o = &l->cfg->routes[j].quota;
		if (o->limit && strcmp(o->name, q->name) == 0 &&
		    (o->limit != q->limit || o->window != q->window ||
		     o->window_seconds != q->window_seconds))
			return fail(l, prefix, "shares the name '%s' with routes[%u].quota, whose "
				    "limit or window differs", show(s, q->name), j);
	}
	return 0;
}

/* A route's optional "require_roles": PSD2 role names, each of which the certificate's PSD2
 * QCStatement must list. */
static int load_require_roles(struct loader *l, json_t *route, const char *route_path,
			      uint32_t *out)
{
	char path[KEYPATH_MAX], p[KEYPATH_MAX + 24], s[SHOW_MAX + 4];
	const char *key = keypath(path, route_path, "require_roles");
	json_t *arr = json_object_get(route, "require_roles"), *v;
	size_t i;
	*out = 0;
	if (!arr)
		return 0;
	if (!json_is_array(arr))
		return fail(l, key, "must be an array of PSD2 role names");
	if (json_array_size(arr) == 0)
		return fail(l, key, "must not be empty (leave it out to require no role)");
	json_array_foreach(arr, i, v) {
		snprintf(p, sizeof(p), "%s[%zu]", key, i);
		if (!json_is_string(v))
			return fail(l, p, "must be a string");
		const char *name = json_string_value(v);
		uint32_t role = psd2_role_by_name(name, strlen(name));
		if (!role)
			return fail(l, p, "unknown PSD2 role '%s' (PSP_AS, PSP_PI, PSP_AI or PSP_IC)",
				    show(s, name));
		if (*out & role)
			return fail(l, p, "%s is listed twice", name);
		*out |= role;
	}
	return 0;
}

/* A route's optional "spike_arrest". */
static int load_spike_arrest(struct loader *l, json_t *route, const char *route_path,
			     struct config_spike_arrest *sa)
{
	static const char *const keys[] = {"rate", "per", "burst", NULL};
	static const char *const periods[] = {"second", "minute", NULL};
	static const uint32_t period_ms[] = {1000, 60000};
	char path[KEYPATH_MAX];
	const char *prefix = keypath(path, route_path, "spike_arrest");
	unsigned per = 0; /* second */
	json_t *obj;
	int rc = get_object(l, route, route_path, "spike_arrest", false, &obj);
	if (rc <= 0)
		return rc;
	sa->burst = 1;
	if (check_unknown_keys(l, obj, prefix, keys) < 0 ||
	    get_uint(l, obj, prefix, "rate", true, 1, 1000000, &sa->rate) < 0 ||
	    get_keyword(l, obj, prefix, "per", false, periods, &per) < 0 ||
	    get_uint(l, obj, prefix, "burst", false, 1, 1000000, &sa->burst) < 0)
		return -1;
	sa->period_ms = period_ms[per];
	return 0;
}

/* A required string of a hub object that goes into URLs and forms as is: visible ASCII, no
 * space, at most URL_MAX bytes, starting with `start` (when not NULL). A strdup'd copy. */
static int get_hub_string(struct loader *l, json_t *obj, const char *prefix, const char *key,
			  const char *start, char **out)
{
	char p[KEYPATH_MAX];
	const char *v;
	if (get_string(l, obj, prefix, key, true, &v) < 0)
		return -1;
	keypath(p, prefix, key);
	if (strlen(v) > URL_MAX)
		return fail(l, p, "too long (at most %d bytes)", URL_MAX);
	for (const char *c = v; *c; c++)
		if (*c <= ' ' || *c >= 0x7f || *c == '#')
			return fail(l, p, "only visible ASCII without spaces or '#'");
	if (start && strncasecmp(v, start, strlen(start)) != 0)
		return fail(l, p, "must start with '%s'", start);
	*out = strdup(v);
	return *out ? 0 : fail(l, p, "out of memory");
}

/* A route's optional "hub": the bank's OAuth endpoints and the TPP's registration there. The
 * bank is the route's upstream, reached over mTLS with the upstream's cert (the QWAC). */

/* PREFIX.jwks: a file holding a JWK set (a JSON object with a "keys" array); its path into *path. */
static int load_jwks(struct loader *l, json_t *obj, const char *prefix, char **path)
{
	FILE *fp;
	char p[KEYPATH_MAX];
	if (open_file(l, obj, prefix, "jwks", true, path, &fp) < 0)
		return -1;
	json_error_t jerr;
	json_t *set = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
	fclose(fp);
	bool is_set = json_is_array(json_object_get(set, "keys"));
	json_decref(set);
	if (!is_set)
		return fail(l, keypath(p, prefix, "jwks"),
			    "not a JWK set (a JSON object with a \"keys\" array)");
	return 0;
}
static int load_hub(struct loader *l, json_t *route, const char *route_path,
		    struct config_route *r)
{
	static const char *const keys[] = {"authorization_endpoint", "token_endpoint", "client_id",
					   "redirect_uri", "scopes", "jwks", "issuer",
					   "refresh_margin_s", NULL};
	struct config_hub *h = &r->hub;
	char path[KEYPATH_MAX], p[KEYPATH_MAX + 32];
	const char *prefix = keypath(path, route_path, "hub"), *issuer;
	json_t *obj, *scopes, *v;
	int rc = get_object(l, route, route_path, "hub", false, &obj);
	if (rc <= 0)
		return rc;
	if (!l->cfg->upstreams[r->upstream].https)
		return fail(l, keypath(p, route_path, "upstream"), "a hub route's upstream must "
			    "be https (the bank is reached with the TPP's QWAC)");
	if (r->verify_jwt)
		return fail(l, keypath(p, route_path, "verify_jwt"), "not with hub (the backend's "
			    "Authorization header carries its session handle)");
	if (check_unknown_keys(l, obj, prefix, keys) < 0 ||
	    get_hub_string(l, obj, prefix, "authorization_endpoint", "https://",
			   &h->authorization_endpoint) < 0 ||
	    get_hub_string(l, obj, prefix, "token_endpoint", "/", &h->token_endpoint) < 0 ||
	    get_hub_string(l, obj, prefix, "client_id", NULL, &h->client_id) < 0 ||
	    get_hub_string(l, obj, prefix, "redirect_uri", "https://", &h->redirect_uri) < 0)
		return -1;
	keypath(p, prefix, "scopes");
	scopes = json_object_get(obj, "scopes");
	if (!json_is_array(scopes) || json_array_size(scopes) == 0)
		return fail(l, p, scopes ? "must be a non-empty array of scope names" : "missing");
	size_t i, len = 0;
	json_array_foreach(scopes, i, v) {
		snprintf(p, sizeof(p), "%s.scopes[%zu]", prefix, i);
		const char *sc = json_string_value(v);
		if (!sc || !*sc || strcspn(sc, " \"\\") != strlen(sc))
			return fail(l, p, "must be a scope name (a string without spaces)");
		len += strlen(sc) + 1;
	}
	if (len > URL_MAX)
		return fail(l, keypath(p, prefix, "scopes"), "too long (at most %d bytes)", URL_MAX);
	h->scopes = calloc(1, len);
	if (!h->scopes)
		return fail(l, prefix, "out of memory");
	json_array_foreach(scopes, i, v) {
		if (i)
			strcat(h->scopes, " ");
		strcat(h->scopes, json_string_value(v));
	}
	if (load_jwks(l, obj, prefix, &h->id_token.jwks) < 0)
		return -1;
	if (get_string(l, obj, prefix, "issuer", true, &issuer) < 0)
		return -1;
	h->id_token.issuer = strdup(issuer);
	h->id_token.audience = strdup(h->client_id);
	if (!h->id_token.issuer || !h->id_token.audience)
		return fail(l, prefix, "out of memory");
	h->id_token.algorithms = CONFIG_JWT_DEFAULT_ALGS;
	h->id_token.leeway_s = 30;
	h->refresh_margin_s = CONFIG_HUB_REFRESH_MARGIN_S;
	return get_u32(l, obj, prefix, "refresh_margin_s", false, 0, 3600, &h->refresh_margin_s);
}

static int load_route(struct loader *l, json_t *obj, unsigned index)
{
	static const char *const keys[] = {"prefix", "upstream", "quota", "spike_arrest",
					   "verify_jwt", "require_roles", "hub", NULL};
	struct config *cfg = l->cfg;
	struct config_route *r = &cfg->routes[index];
	char rp[KEYPATH_MAX], p[KEYPATH_MAX], s[SHOW_MAX + 4];
	const char *upstream;
	snprintf(rp, sizeof(rp), "routes[%u]", index);
	if (!json_is_object(obj))
		return fail(l, rp, "must be an object");
	if (check_unknown_keys(l, obj, rp, keys) < 0 || load_prefix(l, obj, rp, r->prefix) < 0)
		return -1;
	for (unsigned j = 0; j < index; j++)
		if (strcasecmp(cfg->routes[j].prefix, r->prefix) == 0)
			return fail(l, keypath(p, rp, "prefix"), "duplicate of routes[%u]%s", j,
				    strcmp(cfg->routes[j].prefix, r->prefix) ?
					    " (routes match letters in either case)" : "");
	if (get_string(l, obj, rp, "upstream", true, &upstream) < 0)
		return -1;
	int u = upstream_index(cfg, upstream);
	if (u < 0)
		return fail(l, keypath(p, rp, "upstream"), "unknown upstream '%s'",
			    show(s, upstream));
	r->upstream = (unsigned)u;
	if (load_quota(l, obj, rp, index) < 0 ||
	    load_spike_arrest(l, obj, rp, &r->spike_arrest) < 0 ||
	    get_bool(l, obj, rp, "verify_jwt", &r->verify_jwt) < 0 ||
	    load_require_roles(l, obj, rp, &r->require_roles) < 0 ||
	    load_hub(l, obj, rp, r) < 0)
		return -1;
	if (r->verify_jwt && !cfg->jwt.jwks)
		return fail(l, keypath(p, rp, "verify_jwt"), "needs the top-level jwt object");
	return 0;
}

/* Longest prefix first, so that route_match takes the first that matches (route.h); stable. */
static void sort_routes(struct config *cfg)
{
	for (unsigned i = 1; i < cfg->n_routes; i++) {
		struct config_route r = cfg->routes[i];
		size_t len = strlen(r.prefix);
		unsigned j = i;
		for (; j > 0 && strlen(cfg->routes[j - 1].prefix) < len; j--)
			cfg->routes[j] = cfg->routes[j - 1];
		cfg->routes[j] = r;
	}
}

/* "routes", required with "upstreams" (else only the first would ever be reached); without
 * both, finish_upstreams routes "/" to the single upstream. */
static int load_routes(struct loader *l, json_t *root)
{
	struct config *cfg = l->cfg;
	if (!json_object_get(root, "routes"))
		return json_object_get(root, "upstreams") ?
			fail(l, "routes", "missing (required with upstreams)") : 0;
	json_t *arr = load_array(l, root, "routes", CONFIG_MAX_ROUTES, "routes"), *v;
	if (!arr)
		return -1;
	size_t i;
	json_array_foreach(arr, i, v) {
		if (load_route(l, v, (unsigned)i) < 0)
			return -1;
		cfg->n_routes++;
	}
	sort_routes(cfg);
	return 0;
}

/* --- registry, control socket, group -------------------------------------------------------- */

/* A path that need not exist yet (created by the daemon). */
static int load_path(struct loader *l, json_t *obj, const char *prefix, const char *key,
		     bool required, char **out)
{
	char p[KEYPATH_MAX];
	const char *v;
	int rc = get_string(l, obj, prefix, key, required, &v);
	if (rc <= 0)
		return rc;
	return resolve_path(l, keypath(p, prefix, key), v, out);
}

static int load_registry(struct loader *l, json_t *root)
{
	return load_path(l, root, NULL, "registry", true, &l->cfg->registry);
}

/* The PIN of a PKCS#11 token, the first line of a file (so it is not in the configuration,
 * which operators share and diff). */
static int load_pin(struct loader *l, json_t *obj, char **pin)
{
	char *abs = NULL, line[256];
	FILE *fp;
	int rc = open_file(l, obj, "token_store", "pin_file", true, &abs, &fp);
	free(abs);
	if (rc <= 0)
		return rc;
	bool got = fgets(line, sizeof(line), fp) != NULL;
	fclose(fp);
	size_t n = got ? strcspn(line, "\r\n") : 0;
	if (n == 0 || n == sizeof(line) - 1) {
		OPENSSL_cleanse(line, sizeof(line));
		return fail(l, "token_store.pin_file", "must hold the PIN (1 to 254 bytes) on its "
			    "first line");
	}
	*pin = strndup(line, n);
	OPENSSL_cleanse(line, sizeof(line));
	return *pin ? 0 : fail(l, "token_store.pin_file", "out of memory");
}

/* Required when a route has a hub; the KEK in a PKCS#11 token unless kek_file is given. */
static int load_token_store(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"path", "pkcs11_module", "token_label", "pin_file",
					   "key_label", "kek_file", NULL};
	struct config_token_store *ts = &l->cfg->token_store;
	bool hub = false;
	for (unsigned i = 0; i < l->cfg->n_routes; i++)
		hub = hub || l->cfg->routes[i].hub.authorization_endpoint;
	json_t *obj;
	int rc = get_object(l, root, NULL, "token_store", hub, &obj);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return 0;
	if (check_unknown_keys(l, obj, "token_store", keys) < 0 ||
	    load_path(l, obj, "token_store", "path", true, &ts->path) < 0)
		return -1;
	FILE *fp;
	rc = open_file(l, obj, "token_store", "kek_file", false, &ts->kek_file, &fp);
	if (rc < 0)
		return -1;
	if (rc == 1) {
		fclose(fp);
		static const char *const pkcs11_keys[] = {"pkcs11_module", "token_label", "pin_file",
							  "key_label"};
		for (size_t i = 0; i < sizeof(pkcs11_keys) / sizeof(pkcs11_keys[0]); i++)
			if (json_object_get(obj, pkcs11_keys[i])) {
				char p[KEYPATH_MAX];
				return fail(l, keypath(p, "token_store", pkcs11_keys[i]),
					    "not with kek_file (the KEK is either in a PKCS#11 "
					    "token or in the file)");
			}
		return 0;
	}
	const char *module, *token, *key;
	if (get_string(l, obj, "token_store", "pkcs11_module", false, &module) < 0 ||
	    get_string(l, obj, "token_store", "token_label", true, &token) < 0 ||
	    get_string(l, obj, "token_store", "key_label", false, &key) < 0)
		return -1;
	if (module && module[0] != '/')
		return fail(l, "token_store.pkcs11_module", "must be an absolute path");
	ts->pkcs11_module = strdup(module ? module : CONFIG_TOKEN_STORE_MODULE);
	ts->token_label = strdup(token);
	ts->key_label = strdup(key ? key : CONFIG_TOKEN_STORE_KEY_LABEL);
	if (!ts->pkcs11_module || !ts->token_label || !ts->key_label)
		return fail(l, "token_store", "out of memory");
	if (access(ts->pkcs11_module, R_OK) != 0)
		return errno_fail(l, "token_store.pkcs11_module", errno);
	return load_pin(l, obj, &ts->pin);
}

/* An optional group name, looked up here once: the control socket never asks the user database
 * per connection. */
static int load_group(struct loader *l, json_t *root, const char *key, char **name, gid_t *gid)
{
	const char *group;
	int rc = get_string(l, root, NULL, key, false, &group);
	if (rc <= 0)
		return rc;
	struct group gr, *found = NULL;
	char buf[4096], s[SHOW_MAX + 4];
	int e = getgrnam_r(group, &gr, buf, sizeof(buf), &found);
	if (e != 0 && e != ENOENT && e != ESRCH)
		return fail(l, key, "cannot look up '%s': %s", show(s, group), strerror(e));
	if (!found)
		return fail(l, key, "unknown group '%s'", show(s, group));
	*gid = gr.gr_gid;
	*name = strdup(group);
	if (!*name)
		return fail(l, key, "out of memory");
	return 0;
}

static int load_control(struct loader *l, json_t *root)
{
	struct config *cfg = l->cfg;
	if (load_path(l, root, NULL, "control_socket", true, &cfg->control_socket) < 0)
		return -1;
	if (strlen(cfg->control_socket) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return fail(l, "control_socket", "path too long (at most %zu bytes)",
			    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
	if (load_group(l, root, "control_group", &cfg->control_group, &cfg->control_gid) < 0 ||
	    load_group(l, root, "control_readonly_group", &cfg->control_readonly_group,
		       &cfg->control_readonly_gid) < 0)
		return -1;
	if (cfg->control_group && cfg->control_readonly_group &&
	    cfg->control_readonly_gid == cfg->control_gid)
		return fail(l, "control_readonly_group",
			    "the same group as control_group, whose members may change state");
	return 0;
}

/* --- bpf ---------------------------------------------------------------------------------- */

/* The data plane's rates: "bpf.src_rate" and "bpf.client_rate", each key optional. */
static const struct rate_spec {
	const char *obj, *key;
	size_t off;  /* in struct config_rates */
	bool narrow; /* uint8_t rather than uint64_t */
	uint64_t def, min, max;
} rate_specs[] = {
#define RATE(o, k, f, n, d, lo, hi) {o, k, offsetof(struct config_rates, f), n, d, lo, hi}
	RATE("src_rate", "per_sec", src_per_sec, false, 50, 0, RATE_PPS_MAX),
	RATE("src_rate", "burst", src_burst, false, 100, 1, RATE_BURST_MAX),
	RATE("src_rate", "v4_prefix", src_v4_prefix, true, 32, 0, 32),
	RATE("src_rate", "v6_prefix", src_v6_prefix, true, 64, 0, 128),
	RATE("client_rate", "pps", client.pps, false, 0, 0, RATE_PPS_MAX),
	RATE("client_rate", "bps", client.bps, false, 0, 0, RATE_BPS_MAX),
	RATE("client_rate", "burst", client.burst, false, 1, 1, RATE_BURST_MAX),
	RATE("client_rate", "burst_bytes", client.burst_bytes, false, 0, 0, RATE_BURST_BYTES_MAX),
#undef RATE
};
#define N_RATES (sizeof(rate_specs) / sizeof(rate_specs[0]))

static void rate_store(struct config_rates *r, const struct rate_spec *rs, uint64_t v)
{
	char *field = (char *)r + rs->off;
	if (rs->narrow) {
		uint8_t v8 = (uint8_t)v;
		memcpy(field, &v8, sizeof(v8));
	} else {
		memcpy(field, &v, sizeof(v));
	}
}

/* Defaults everywhere, then the keys of bpf.src_rate and bpf.client_rate (bpf may be NULL). */
static int load_rates(struct loader *l, json_t *bpf)
{
	static const char *const objs[] = {"src_rate", "client_rate"};
	static const char *const paths[] = {"bpf.src_rate", "bpf.client_rate"};
	struct config_rates *r = &l->cfg->bpf.rates;
	for (size_t i = 0; i < N_RATES; i++)
		rate_store(r, &rate_specs[i], rate_specs[i].def);
	for (size_t o = 0; bpf && o < sizeof(objs) / sizeof(objs[0]); o++) {
		const char *keys[N_RATES + 1], *prefix = paths[o];
		size_t nk = 0;
		char p[KEYPATH_MAX];
		json_t *obj = json_object_get(bpf, objs[o]);
		if (!obj)
			continue;
		if (!json_is_object(obj))
			return fail(l, prefix, "must be an object");
		for (size_t i = 0; i < N_RATES; i++)
			if (strcmp(rate_specs[i].obj, objs[o]) == 0)
				keys[nk++] = rate_specs[i].key;
		keys[nk] = NULL;
		if (check_unknown_keys(l, obj, prefix, keys) < 0)
			return -1;
		for (size_t i = 0; i < N_RATES; i++) {
			const struct rate_spec *rs = &rate_specs[i];
			json_t *v = json_object_get(obj, rs->key);
			if (strcmp(rs->obj, objs[o]) != 0 || !v)
				continue;
			keypath(p, prefix, rs->key);
			if (!json_is_integer(v))
				return fail(l, p, "must be an integer");
			json_int_t n = json_integer_value(v);
			if (n < 0 || (uint64_t)n < rs->min)
				return fail(l, p, "must be at least %llu", (unsigned long long)rs->min);
			if ((uint64_t)n > rs->max)
				return fail(l, p, "must be at most %llu", (unsigned long long)rs->max);
			if (rs->off == offsetof(struct config_rates, client.burst_bytes) && n != 0 &&
			    (uint64_t)n < RATE_BURST_BYTES_MIN)
				return fail(l, p, "must be 0 (burst * %llu) or at least %llu",
					    RATE_BURST_BYTES_MIN, RATE_BURST_BYTES_MIN);
			rate_store(r, rs, (uint64_t)n);
		}
	}
	return 0;
}

static int load_bpf(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"pin_dir", "interface", "mode", "src_rate",
					   "client_rate", NULL};
	static const char *const modes[] = {"native", "generic", "off", NULL};
	static const enum bpf_mode mode_values[] = {BPF_MODE_NATIVE, BPF_MODE_GENERIC, BPF_MODE_OFF};
	struct config *cfg = l->cfg;
	json_t *obj;
	const char *pin_dir = "/sys/fs/bpf/psd2edge", *iface = NULL;
	char s[SHOW_MAX + 4];
	int rc = get_object(l, root, NULL, "bpf", false, &obj);
	if (rc < 0)
		return -1;
	cfg->bpf.mode = BPF_MODE_OFF;
	if (rc > 0) {
		const char *dir;
		unsigned mode = 0; /* native */
		if (check_unknown_keys(l, obj, "bpf", keys) < 0 ||
		    get_string(l, obj, "bpf", "pin_dir", false, &dir) < 0 ||
		    get_string(l, obj, "bpf", "interface", false, &iface) < 0 ||
		    get_keyword(l, obj, "bpf", "mode", false, modes, &mode) < 0)
			return -1;
		cfg->bpf.mode = mode_values[mode];
		if (dir)
			pin_dir = dir;
	}
	if (resolve_path(l, "bpf.pin_dir", pin_dir, &cfg->bpf.pin_dir) < 0)
		return -1;
	if (iface) {
		/* An interface only matters when XDP is attached; with mode off it is kept as is. */
		if (strlen(iface) >= IF_NAMESIZE ||
		    (cfg->bpf.mode != BPF_MODE_OFF && if_nametoindex(iface) == 0))
			return fail(l, "bpf.interface", "no such interface '%s'", show(s, iface));
		cfg->bpf.interface = strdup(iface);
		if (!cfg->bpf.interface)
			return fail(l, "bpf.interface", "out of memory");
	} else if (cfg->bpf.mode != BPF_MODE_OFF) {
		return fail(l, "bpf.interface", "missing (required unless bpf.mode is off)");
	}
	return load_rates(l, rc > 0 ? obj : NULL);
}

/* --- limits ------------------------------------------------------------------------------- */

static const struct limit_spec {
	const char *key;
	size_t off;
	bool wide; /* uint64_t rather than uint32_t */
	uint64_t min, def, max;
} limit_specs[] = {
#define LIMIT_FROM(k, w, lo, d, m) {#k, offsetof(struct config, limits.k), w, lo, d, m}
#define LIMIT(k, w, d, m) LIMIT_FROM(k, w, 1, d, m)
	LIMIT(max_header_bytes, false, 16384, 1048576),
	LIMIT(max_uri_bytes, false, 8192, 1048576),
	LIMIT(max_body_bytes, true, 10485760, 1099511627776ULL),
	LIMIT(max_form_bytes, false, 65536, 16777216),
	LIMIT(header_timeout_ms, false, 10000, 600000),
	LIMIT(idle_timeout_ms, false, 60000, 3600000),
	LIMIT(upstream_connect_timeout_ms, false, 5000, 600000),
	LIMIT(upstream_timeout_ms, false, 30000, 3600000),
	LIMIT(drain_timeout_ms, false, 10000, 300000),
	LIMIT(max_connections, false, 10000, 1000000),
	LIMIT_FROM(min_body_rate, false, 0, 1024, 1000000000),
	LIMIT(body_rate_window_ms, false, 10000, 3600000),
#undef LIMIT
#undef LIMIT_FROM
};
#define N_LIMITS (sizeof(limit_specs) / sizeof(limit_specs[0]))

static void limit_store(struct config *cfg, const struct limit_spec *ls, uint64_t v)
{
	char *field = (char *)cfg + ls->off;
	if (ls->wide) {
		memcpy(field, &v, sizeof(v));
	} else {
		uint32_t v32 = (uint32_t)v;
		memcpy(field, &v32, sizeof(v32));
	}
}

static int load_limits(struct loader *l, json_t *root)
{
	const char *keys[N_LIMITS + 1];
	json_t *obj;
	for (size_t i = 0; i < N_LIMITS; i++) {
		keys[i] = limit_specs[i].key;
		limit_store(l->cfg, &limit_specs[i], limit_specs[i].def);
	}
	keys[N_LIMITS] = NULL;
	int rc = get_object(l, root, NULL, "limits", false, &obj);
	if (rc <= 0)
		return rc;
	if (check_unknown_keys(l, obj, "limits", keys) < 0)
		return -1;
	for (size_t i = 0; i < N_LIMITS; i++) {
		const struct limit_spec *ls = &limit_specs[i];
		uint64_t v;
		rc = get_uint(l, obj, "limits", ls->key, false, ls->min, ls->max, &v);
		if (rc < 0)
			return -1;
		if (rc > 0)
			limit_store(l->cfg, ls, v);
	}
	/* The target is part of the head: the default follows a smaller head, a larger value
	 * given could never apply. */
	struct config *cfg = l->cfg;
	if (cfg->limits.max_uri_bytes > cfg->limits.max_header_bytes) {
		if (json_object_get(obj, "max_uri_bytes"))
			return fail(l, "limits.max_uri_bytes",
				    "must not exceed limits.max_header_bytes (%u)",
				    cfg->limits.max_header_bytes);
		cfg->limits.max_uri_bytes = cfg->limits.max_header_bytes;
	}
	return 0;
}

/* --- http --------------------------------------------------------------------------------- */

/* Client headers dropped unless http.drop_headers says otherwise (the gateway's own,
 * X-Client-Id, X-Client-Cert-Sha256, X-Forwarded-For, Forwarded and X-Request-Id, always
 * are): those through which other proxies pass on a client certificate or the original
 * address, host, scheme or URL, which an application used to sitting behind one may trust. */
static const char *const default_drop_headers[] = {
	"x-forwarded-client-cert", "x-ssl-client-cert", "ssl-client-cert", "x-client-cert",
	"x-real-ip", "true-client-ip", "x-forwarded-host", "x-forwarded-proto",
	"x-forwarded-prefix", "x-original-url", "x-rewrite-url",
};

/* obj[key] as an array of at most max elements: 1 present, 0 absent, -1 on error. */
static int get_array(struct loader *l, json_t *obj, const char *path, const char *key, size_t max,
		     json_t **out)
{
	*out = json_object_get(obj, key);
	if (!*out)
		return 0;
	if (!json_is_array(*out))
		return fail(l, path, "must be an array");
	if (json_array_size(*out) > max)
		return fail(l, path, "at most %zu entries", max);
	return 1;
}

static int parse_method(struct loader *l, const char *path, const char *name, uint64_t *methods)
{
	char s[SHOW_MAX + 4];
	for (unsigned m = 0; m < HTTP_METHOD_COUNT; m++) {
		if (strcmp(name, http_method_str((enum http_method)m)) != 0)
			continue;
		if (HTTP_METHOD_BIT(m) & HTTP_METHODS_NEVER)
			return fail(l, path, "%s is never forwarded", name);
		if (*methods & HTTP_METHOD_BIT(m))
			return fail(l, path, "%s listed twice", name);
		*methods |= HTTP_METHOD_BIT(m);
		return 0;
	}
	return fail(l, path, "not a method: '%s' (methods are case-sensitive, e.g. GET)",
		    show(s, name));
}

static int add_drop_header(struct loader *l, const char *path, const char *name)
{
	struct config *cfg = l->cfg;
	if (!is_token(name, CONFIG_HEADER_NAME_MAX))
		return fail(l, path, "not a header name (1 to %d token characters)",
			    CONFIG_HEADER_NAME_MAX);
	char *lower = strdup(name);
	if (!lower)
		return fail(l, path, "out of memory");
	for (char *c = lower; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	for (unsigned j = 0; j < cfg->http.n_drop_headers; j++) {
		if (strcmp(cfg->http.drop_headers[j], lower) == 0) {
			free(lower);
			return fail(l, path, "duplicate of http.drop_headers[%u]", j);
		}
	}
	cfg->http.drop_headers[cfg->http.n_drop_headers++] = lower;
	return 0;
}

static int load_http(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"methods", "drop_headers", NULL};
	struct config *cfg = l->cfg;
	json_t *obj = NULL, *methods = NULL, *drop = NULL, *v;
	size_t i;
	if (get_object(l, root, NULL, "http", false, &obj) < 0 ||
	    (obj && (check_unknown_keys(l, obj, "http", keys) < 0 ||
		     get_array(l, obj, "http.methods", "methods", HTTP_METHOD_COUNT, &methods) < 0 ||
		     get_array(l, obj, "http.drop_headers", "drop_headers", CONFIG_MAX_DROP_HEADERS,
			       &drop) < 0)))
		return -1;
	if (!methods) {
		cfg->http.methods = HTTP_DEFAULT_METHODS;
	} else {
		if (json_array_size(methods) == 0)
			return fail(l, "http.methods", "must not be empty");
		json_array_foreach(methods, i, v) {
			char p[KEYPATH_MAX];
			const char *name = array_string(l, "http.methods", v, i, p);
			if (!name || parse_method(l, p, name, &cfg->http.methods) < 0)
				return -1;
		}
	}
	size_t n = drop ? json_array_size(drop)
			: sizeof(default_drop_headers) / sizeof(default_drop_headers[0]);
	cfg->http.drop_headers = calloc(n ? n : 1, sizeof(*cfg->http.drop_headers));
	if (!cfg->http.drop_headers)
		return fail(l, "http.drop_headers", "out of memory");
	for (i = 0; i < n; i++) {
		char p[KEYPATH_MAX];
		const char *name = drop ? array_string(l, "http.drop_headers", json_array_get(drop, i),
						       i, p)
					: default_drop_headers[i];
		if (!name || add_drop_header(l, drop ? p : "http.drop_headers", name) < 0)
			return -1;
	}
	return 0;
}

/* --- jwt --------------------------------------------------------------------------------- */

/* "algorithms": the JWS algorithms tokens may use (jwt.h); HMAC and "none" never. */
static int load_jwt_algorithms(struct loader *l, json_t *obj, uint32_t *out)
{
	char s[SHOW_MAX + 4];
	json_t *arr, *v;
	size_t i;
	*out = CONFIG_JWT_DEFAULT_ALGS;
	int rc = get_array(l, obj, "jwt.algorithms", "algorithms", CONFIG_JWT_N_ALGS, &arr);
	if (rc <= 0)
		return rc;
	if (json_array_size(arr) == 0)
		return fail(l, "jwt.algorithms", "must not be empty");
	*out = 0;
	json_array_foreach(arr, i, v) {
		char p[KEYPATH_MAX];
		const char *name = array_string(l, "jwt.algorithms", v, i, p);
		if (!name)
			return -1;
		unsigned a = 0;
		while (a < CONFIG_JWT_N_ALGS && strcmp(config_jwt_alg_name(a), name) != 0)
			a++;
		if (a == CONFIG_JWT_N_ALGS)
			return strncasecmp(name, "HS", 2) == 0 || strcasecmp(name, "none") == 0
				       ? fail(l, p, "%s is never accepted: tokens are verified with "
					      "public keys only", show(s, name))
				       : fail(l, p, "unknown algorithm '%s' (PS256, ES256 or RS256)",
					      show(s, name));
		if (*out & (1u << a))
			return fail(l, p, "%s listed twice", show(s, name));
		*out |= 1u << a;
	}
	return 0;
}

/* The optional "jwt" object: how the bearer tokens of verify_jwt routes and jwt:CLAIM sources
 * are verified. The key file is read whole at start (jwt.h names a bad key there); here it
 * must at least be a JWK set. */
static int load_jwt(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"jwks", "issuer", "audience", "algorithms", "leeway_s",
					   "require_cnf", NULL};
	struct config_jwt *j = &l->cfg->jwt;
	const char *issuer, *audience;
	json_t *obj;
	int rc = get_object(l, root, NULL, "jwt", false, &obj);
	if (rc <= 0)
		return rc;
	if (check_unknown_keys(l, obj, "jwt", keys) < 0 || load_jwks(l, obj, "jwt", &j->jwks) < 0)
		return -1;
	if (get_string(l, obj, "jwt", "issuer", false, &issuer) < 0 ||
	    get_string(l, obj, "jwt", "audience", true, &audience) < 0)
		return -1;
	j->issuer = issuer ? strdup(issuer) : NULL;
	j->audience = strdup(audience);
	if ((issuer && !j->issuer) || !j->audience)
		return fail(l, "jwt", "out of memory");
	j->leeway_s = 30;
	j->require_cnf = true;
	if (load_jwt_algorithms(l, obj, &j->algorithms) < 0 ||
	    get_u32(l, obj, "jwt", "leeway_s", false, 0, CONFIG_JWT_LEEWAY_MAX, &j->leeway_s) < 0 ||
	    get_bool(l, obj, "jwt", "require_cnf", &j->require_cnf) < 0)
		return -1;
	return 0;
}

/* --- workers, logging --------------------------------------------------------------------- */

static int load_misc(struct loader *l, json_t *root)
{
	struct config *cfg = l->cfg;
	json_t *w = json_object_get(root, "workers");
	if (w) {
		if (!json_is_integer(w) || json_integer_value(w) < 0 || json_integer_value(w) > 256)
			return fail(l, "workers", "must be between 0 and 256 (0: one per CPU)");
		cfg->workers = (unsigned)json_integer_value(w);
	}
	const char *v;
	int rc = get_string(l, root, NULL, "access_log", false, &v);
	if (rc < 0)
		return -1;
	if (rc > 0) {
		if (strcmp(v, "-") == 0)
			cfg->access_log = strdup("-");
		else if (resolve_path(l, "access_log", v, &cfg->access_log) < 0)
			return -1;
		if (!cfg->access_log)
			return fail(l, "access_log", "out of memory");
	}
	static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
	unsigned level = 1; /* info */
	if (get_keyword(l, root, NULL, "log_level", false, levels, &level) < 0)
		return -1;
	cfg->log_level = strdup(levels[level]);
	if (!cfg->log_level)
		return fail(l, "log_level", "out of memory");
	return 0;
}

/* --- logs --------------------------------------------------------------------------------- */

/* Each pattern is compiled here so that a bad one is refused by its key path at load. */
static int load_logs(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"mask", NULL};
	struct config *cfg = l->cfg;
	json_t *obj = NULL, *arr = NULL, *v;
	size_t i;
	if (get_object(l, root, NULL, "logs", false, &obj) < 0 ||
	    (obj && (check_unknown_keys(l, obj, "logs", keys) < 0 ||
		     get_array(l, obj, "logs.mask", "mask", CONFIG_MAX_LOG_MASKS, &arr) < 0)))
		return -1;
	if (!arr || json_array_size(arr) == 0)
		return 0;
	cfg->logs.mask = calloc(json_array_size(arr), sizeof(*cfg->logs.mask));
	if (!cfg->logs.mask)
		return fail(l, "logs.mask", "out of memory");
	json_array_foreach(arr, i, v) {
		char p[KEYPATH_MAX];
		const char *pattern = array_string(l, "logs.mask", v, i, p);
		if (!pattern)
			return -1;
		cfg->logs.mask[i] = strdup(pattern);
		if (!cfg->logs.mask[i])
			return fail(l, p, "out of memory");
		cfg->logs.n_mask++;
	}
	char why[256];
	size_t bad;
	struct mask *m = mask_create((const char *const *)cfg->logs.mask, cfg->logs.n_mask, &bad,
				     why, sizeof(why));
	if (!m) {
		char p[KEYPATH_MAX];
		snprintf(p, sizeof(p), "logs.mask[%zu]", bad);
		return fail(l, bad < cfg->logs.n_mask ? p : "logs.mask", "%s", why);
	}
	mask_free(m);
	return 0;
}

/* --- metrics ------------------------------------------------------------------------------ */

/* On by default, on loopback: the endpoint has no authentication of its own. */
static int load_metrics(struct loader *l, json_t *root)
{
	static const char *const keys[] = {"listen", NULL};
	struct config *cfg = l->cfg;
	const char *listen = NULL;
	json_t *obj;
	int rc = get_object(l, root, NULL, "metrics", false, &obj);
	if (rc < 0 || (rc > 0 && (check_unknown_keys(l, obj, "metrics", keys) < 0 ||
				  get_string(l, obj, "metrics", "listen", false, &listen) < 0)))
		return -1;
	if (listen && strcmp(listen, "off") == 0)
		return 0;
	struct config_addr *a = &cfg->metrics.listen;
	if (parse_listen(l, "metrics.listen", listen ? listen : CONFIG_METRICS_LISTEN, a) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->n_listen; i++)
		if (cfg->listen[i].addrlen == a->addrlen &&
		    memcmp(&cfg->listen[i].addr, &a->addr, a->addrlen) == 0)
			return fail(l, "metrics.listen", "same address as listen[%u]", i);
	cfg->metrics.enabled = true;
	return 0;
}

/* --- entry points ------------------------------------------------------------------------- */

static int set_dir(struct loader *l, const char *path)
{
	char *copy = strdup(path);
	if (!copy)
		return fail(l, "config", "out of memory");
	char *slash = strrchr(copy, '/');
	const char *dir = ".";
	if (slash == copy)
		dir = "/";
	else if (slash) {
		*slash = '\0';
		dir = copy;
	}
	l->cfg->dir = realpath(dir, NULL);
	int e = errno;
	free(copy);
	if (!l->cfg->dir)
		return fail(l, "config", "%s", strerror(e));
	return 0;
}

/* Upstream timeouts default to the global limits; without "routes", every path goes to the
 * one upstream. */
static int finish_upstreams(struct loader *l, json_t *root)
{
	(void)root;
	struct config *cfg = l->cfg;
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		struct config_upstream *u = &cfg->upstreams[i];
		if (!u->connect_timeout_ms)
			u->connect_timeout_ms = cfg->limits.upstream_connect_timeout_ms;
		if (!u->tls_timeout_ms)
			u->tls_timeout_ms = u->connect_timeout_ms;
		if (!u->response_timeout_ms)
			u->response_timeout_ms = cfg->limits.upstream_timeout_ms;
		if (!u->pool_size)
			u->pool_size = CONFIG_POOL_SIZE_DEFAULT;
	}
	if (cfg->n_routes == 0) {
		snprintf(cfg->routes[0].prefix, sizeof(cfg->routes[0].prefix), "/");
		cfg->routes[0].upstream = 0;
		cfg->n_routes = 1;
	}
	return 0;
}

int config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
	static const char *const top_keys[] = {
		"listen", "tls", "upstream", "upstreams", "jwt", "routes", "client_id", "registry",
		"control_socket", "control_group", "control_readonly_group", "bpf", "limits",
		"http", "workers", "access_log", "log_level", "logs", "metrics", "token_store", NULL,
	};
	static int (*const loaders[])(struct loader *, json_t *) = {
		/* schema order: control covers control_socket, control_group and
		 * control_readonly_group, misc covers workers, access_log and log_level */
		load_listen, load_tls, load_upstream, load_upstreams, load_jwt, load_routes,
		load_client_id,
		load_registry, load_control, load_bpf, load_limits, load_http, load_misc, load_logs,
		load_metrics, load_token_store, finish_upstreams,
	};
	struct loader l = {.cfg = cfg, .err = err, .errlen = errlen};
	json_t *root = NULL;
	int rc = -1;

	memset(cfg, 0, sizeof(*cfg));
	cfg->control_gid = (gid_t)-1;
	cfg->control_readonly_gid = (gid_t)-1;
	if (errlen)
		err[0] = '\0';

	FILE *fp = fopen(path, "re");
	if (!fp) {
		fail(&l, "config", "%s", strerror(errno));
		goto out;
	}
	struct stat st;
	if (fstat(fileno(fp), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(fp);
		fail(&l, "config", "%s", strerror(EISDIR));
		goto out;
	}
	json_error_t jerr;
	root = json_loadf(fp, JSON_REJECT_DUPLICATES, &jerr);
	fclose(fp);
	if (!root) {
		snprintf(err, errlen, "config: line %d column %d: %s", jerr.line, jerr.column,
			 jerr.text);
		goto out;
	}
	if (!json_is_object(root)) {
		fail(&l, "config", "must be a JSON object");
		goto out;
	}
	if (set_dir(&l, path) < 0 || check_unknown_keys(&l, root, NULL, top_keys) < 0)
		goto out;
	for (size_t i = 0; i < sizeof(loaders) / sizeof(loaders[0]); i++)
		if (loaders[i](&l, root) < 0)
			goto out;
	rc = 0;
out:
	json_decref(root);
	ERR_clear_error();
	if (rc < 0)
		config_free(cfg);
	return rc;
}

void config_free(struct config *cfg)
{
	free(cfg->dir);
	free(cfg->tls.cert);
	free(cfg->tls.key);
	free(cfg->tls.client_ca);
	free(cfg->tls.crl);
	free(cfg->jwt.jwks);
	free(cfg->jwt.issuer);
	free(cfg->jwt.audience);
	for (unsigned i = 0; i < CONFIG_MAX_ROUTES; i++) {
		struct config_hub *h = &cfg->routes[i].hub;
		free(h->authorization_endpoint);
		free(h->token_endpoint);
		free(h->client_id);
		free(h->redirect_uri);
		free(h->scopes);
		free(h->id_token.jwks);
		free(h->id_token.issuer);
		free(h->id_token.audience);
	}
	for (unsigned i = 0; i < cfg->n_upstreams; i++) {
		struct config_upstream *u = &cfg->upstreams[i];
		free(u->url);
		free(u->base_path);
		free(u->ca);
		free(u->cert);
		free(u->key);
	}
	free(cfg->registry);
	struct config_token_store *ts = &cfg->token_store;
	free(ts->path);
	free(ts->pkcs11_module);
	free(ts->token_label);
	if (ts->pin)
		OPENSSL_cleanse(ts->pin, strlen(ts->pin));
	free(ts->pin);
	free(ts->key_label);
	free(ts->kek_file);
	free(cfg->control_socket);
	free(cfg->control_group);
	free(cfg->control_readonly_group);
	free(cfg->bpf.pin_dir);
	free(cfg->bpf.interface);
	free(cfg->access_log);
	free(cfg->log_level);
	for (size_t i = 0; i < cfg->logs.n_mask; i++)
		free(cfg->logs.mask[i]);
	free(cfg->logs.mask);
	for (unsigned i = 0; i < cfg->http.n_drop_headers; i++)
		free((char *)cfg->http.drop_headers[i]);
	free(cfg->http.drop_headers);
	memset(cfg, 0, sizeof(*cfg));
	cfg->control_gid = (gid_t)-1;
	cfg->control_readonly_gid = (gid_t)-1;
}
