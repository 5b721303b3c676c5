/* psd2edgectl: the operator's CLI for the psd2edged control socket.
 *
 * Table-driven: each subcommand is a row of `subcmds` naming its positional arguments, its
 * options table, a function that builds the request and one that prints the result. Files are
 * read here and sent as text; the daemon parses and verifies them.
 *
 * Exit codes: 0 ok, 1 refused by the daemon, 2 usage error, 3 cannot reach the daemon. */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl_client.h"

#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3

#define CERT_FILE_MAX (1024 * 1024)
#define MAX_POS 2
#define THUMB_SHORT 16

struct args {
	const char *socket;
	const char *timeout; /* seconds */
	bool json;
	bool help;
	const char *pos[MAX_POS];
	int npos;
	/* subcommand options */
	bool rotate;
	const char *cert;
	const char *thumbprint;
	const char *limit;
	const char *pps, *bps, *burst, *burst_bytes, *per_sec; /* limit set / limit src */
	bool src_default;
	const char *key; /* quota show / reset */
	const char *expiring; /* certs: days */
};

enum opt_kind { OPT_FLAG, OPT_VALUE };

struct opt {
	const char *name; /* without the leading "--" */
	enum opt_kind kind;
	size_t off;       /* of the bool (flag) or const char * (value) in struct args */
	const char *metavar;
	const char *help;
};

#define FLAG(n, field, h) {n, OPT_FLAG, offsetof(struct args, field), NULL, h}
#define VALUE(n, field, mv, h) {n, OPT_VALUE, offsetof(struct args, field), mv, h}

static const struct opt global_opts[] = {
	VALUE("socket", socket, "PATH",
	      "control socket (default $" CTL_SOCKET_ENV " or " CTL_DEFAULT_SOCKET ")"),
	VALUE("timeout", timeout, "SECONDS", "give up waiting for the daemon after this long (30)"),
	FLAG("json", json, "print the daemon's result as JSON"),
	FLAG("help", help, "show help"),
	{0},
};

/* Builds the request object for a; 0, or EXIT_USAGE after printing why. */
typedef int build_fn(const struct args *a, json_t *req);
typedef void print_fn(const struct args *a, json_t *result);

struct subcmd {
	const char *name; /* one or two words: "deny add" */
	const char *wire; /* the protocol's cmd */
	const char *usage;
	const char *summary;
	int min_pos, max_pos;
	const char *const pos_names[MAX_POS]; /* request fields for positionals (NULL: none) */
	const struct opt *opts;
	build_fn *build;
	print_fn *print;
};

static const char *prog = "psd2edgectl";

static void fail_msg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void fail_msg(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "%s: ", prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

/* --- output helpers ------------------------------------------------------------------- */

/* A copy of s safe to print on a terminal (control characters become '?'). */
static char *clean(const char *s)
{
	char *c = strdup(s ? s : "");
	if (!c) {
		perror(prog);
		exit(EXIT_UNREACHABLE);
	}
	for (char *p = c; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	return c;
}

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s ? s : "-";
}

static char *jval(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);
	char tmp[32];
	if (json_is_string(v))
		return clean(json_string_value(v));
	if (json_is_integer(v)) {
		snprintf(tmp, sizeof(tmp), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return clean(tmp);
	}
	if (!v || json_is_null(v))
		return clean("-");
	char *d = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	char *c = clean(d);
	free(d);
	return c;
}

static char *short_thumb(const char *hex)
{
	char *c = clean(hex);
	if (strlen(c) > THUMB_SHORT)
		c[THUMB_SHORT] = '\0';
	return c;
}

/* An aligned table: columns separated by two spaces, the last one unpadded. */
struct table {
	size_t ncols, nrows, cap;
	char **cells; /* row-major, owned */
};

static void table_row(struct table *t, char **cells)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? t->cap * 2 : 16;
		t->cells = realloc(t->cells, t->cap * t->ncols * sizeof(char *));
		if (!t->cells) {
			perror(prog);
			exit(EXIT_UNREACHABLE);
		}
	}
	memcpy(t->cells + t->nrows * t->ncols, cells, t->ncols * sizeof(char *));
	t->nrows++;
}

static void table_header(struct table *t, const char *const *names)
{
	char *row[16];
	for (size_t i = 0; i < t->ncols; i++)
		row[i] = clean(names[i]);
	table_row(t, row);
}

static void table_print(struct table *t)
{
	size_t w[16] = {0};
	for (size_t r = 0; r < t->nrows; r++)
		for (size_t c = 0; c < t->ncols; c++) {
			size_t n = strlen(t->cells[r * t->ncols + c]);
			if (n > w[c])
				w[c] = n;
		}
	for (size_t r = 0; r < t->nrows; r++) {
		char **row = t->cells + r * t->ncols;
		size_t last = t->ncols; /* no padding after the last non-empty cell */
		while (last > 1 && !row[last - 1][0])
			last--;
		for (size_t c = 0; c < t->ncols; c++) {
			if (c + 1 < last)
				printf("%-*s  ", (int)w[c], row[c]);
			else if (c + 1 == last)
				printf("%s\n", row[c]);
			free(row[c]);
		}
	}
	free(t->cells);
	t->cells = NULL;
	t->nrows = t->cap = 0;
}

/* --- request builders ------------------------------------------------------------------ */

/* Reads a certificate file (or stdin for "-") as text into field of req. */
static int put_file(json_t *req, const char *field, const char *path)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
	if (!f) {
		fail_msg("cannot read %s: %s", path, strerror(errno));
		return EXIT_USAGE;
	}
	char *data = malloc(CERT_FILE_MAX + 1);
	size_t n = data ? fread(data, 1, CERT_FILE_MAX + 1, f) : 0;
	int rerr = ferror(f) ? errno : 0;
	if (f != stdin)
		fclose(f);
	int rc = EXIT_USAGE;
	if (!data)
		fail_msg("out of memory");
	else if (rerr)
		fail_msg("cannot read %s: %s", path, strerror(rerr));
	else if (n > CERT_FILE_MAX)
		fail_msg("cannot read %s: larger than %d bytes", path, CERT_FILE_MAX);
	else if (n == 0)
		fail_msg("cannot read %s: file is empty", path);
	else if (memchr(data, '\0', n))
		fail_msg("cannot read %s: not a text (PEM) file", path);
	else {
		json_t *s = json_stringn(data, n);
		if (!s)
			fail_msg("cannot read %s: not a text (PEM) file", path);
		else if (json_object_set_new(req, field, s) == 0)
			rc = 0;
	}
	free(data);
	return rc;
}

static int build_bind(const struct args *a, json_t *req)
{
	if (put_file(req, "cert_pem", a->pos[1]))
		return EXIT_USAGE;
	if (a->rotate)
		json_object_set_new(req, "rotate", json_true());
	return 0;
}

static int build_unbind(const struct args *a, json_t *req)
{
	if (a->cert && a->thumbprint) {
		fail_msg("unbind: --cert and --thumbprint are mutually exclusive");
		return EXIT_USAGE;
	}
	if (a->cert)
		return put_file(req, "cert_pem", a->cert);
	if (a->thumbprint)
		json_object_set_new(req, "thumbprint", json_string(a->thumbprint));
	return 0;
}

static int build_audit(const struct args *a, json_t *req)
{
	if (a->limit) {
		char *end;
		errno = 0;
		long n = strtol(a->limit, &end, 10);
		if (errno || end == a->limit || *end || n < 1 || n > 10000) {
			fail_msg("audit: --limit must be an integer from 1 to 10000");
			return EXIT_USAGE;
		}
		json_object_set_new(req, "limit", json_integer(n));
	}
	return 0;
}

/* A decimal count from 0 to max into field of req; 0, or EXIT_USAGE after printing why. */
static int put_count(json_t *req, const char *field, const char *opt, const char *text,
		     unsigned long long max)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(text, &end, 10);
	if (!text[0] || text[0] == '-' || text[0] == '+' || errno || *end || v > max) {
		fail_msg("--%s must be a non-negative integer", opt);
		return EXIT_USAGE;
	}
	json_object_set_new(req, field, json_integer((json_int_t)v));
	return 0;
}

/* The daemon checks the bounds; this one only keeps the number inside a JSON integer. */
#define COUNT_MAX 1000000000000000ULL

static int build_limit_set(const struct args *a, json_t *req)
{
	if ((a->pps && put_count(req, "pps", "pps", a->pps, COUNT_MAX)) ||
	    (a->bps && put_count(req, "bps", "bps", a->bps, COUNT_MAX)) ||
	    (a->burst && put_count(req, "burst", "burst", a->burst, COUNT_MAX)) ||
	    (a->burst_bytes &&
	     put_count(req, "burst_bytes", "burst-bytes", a->burst_bytes, COUNT_MAX)))
		return EXIT_USAGE;
	return 0;
}

static int build_limit_src(const struct args *a, json_t *req)
{
	if (a->src_default) {
		if (a->per_sec || a->burst) {
			fail_msg("limit src: --default takes neither --per-sec nor --burst");
			return EXIT_USAGE;
		}
		json_object_set_new(req, "cmd", json_string("src-rate-del"));
		return 0;
	}
	if (!a->per_sec || !a->burst) {
		fail_msg("limit src: --per-sec and --burst are both required (or --default)");
		return EXIT_USAGE;
	}
	if (put_count(req, "per_sec", "per-sec", a->per_sec, COUNT_MAX) ||
	    put_count(req, "burst", "burst", a->burst, COUNT_MAX))
		return EXIT_USAGE;
	return 0;
}

static int build_certs(const struct args *a, json_t *req)
{
	if (!a->expiring) {
		fail_msg("certs: --expiring DAYS is required");
		return EXIT_USAGE;
	}
	return put_count(req, "days", "expiring", a->expiring, COUNT_MAX);
}

static int build_quota(const struct args *a, json_t *req)
{
	if (a->key)
		json_object_set_new(req, "key", json_string(a->key));
	return 0;
}

/* --- result printers ------------------------------------------------------------------- */

/* "pps 100, bps 0, burst 10, burst_bytes 0" for a limit object, "default" for null. */
static char *limit_text(json_t *lim)
{
	if (!json_is_object(lim))
		return clean("default");
	char buf[160];
	snprintf(buf, sizeof(buf),
		 "pps %" JSON_INTEGER_FORMAT ", bps %" JSON_INTEGER_FORMAT
		 ", burst %" JSON_INTEGER_FORMAT ", burst_bytes %" JSON_INTEGER_FORMAT,
		 json_integer_value(json_object_get(lim, "pps")),
		 json_integer_value(json_object_get(lim, "bps")),
		 json_integer_value(json_object_get(lim, "burst")),
		 json_integer_value(json_object_get(lim, "burst_bytes")));
	return clean(buf);
}

static void print_limit_set(const struct args *a, json_t *r)
{
	(void)a;
	char *id = jval(r, "client_id"), *l = limit_text(json_object_get(r, "limit"));
	printf("limit of %s (slot %" JSON_INTEGER_FORMAT "): %s\n", id,
	       json_integer_value(json_object_get(r, "slot")), l);
	free(id), free(l);
}

static void print_limit_del(const struct args *a, json_t *r)
{
	(void)a;
	char *id = jval(r, "client_id");
	printf("removed the limit of %s: the configured default applies\n", id);
	free(id);
}

static void print_limit_src(const struct args *a, json_t *r)
{
	(void)a;
	json_t *src = json_object_get(r, "src_rate");
	if (!json_is_object(src)) {
		printf("new connections per source: as configured (bpf.src_rate)\n");
		return;
	}
	printf("new connections per source: %" JSON_INTEGER_FORMAT "/s, burst %" JSON_INTEGER_FORMAT
	       "\n",
	       json_integer_value(json_object_get(src, "per_sec")),
	       json_integer_value(json_object_get(src, "burst")));
}

/* A certificate's PSD2 roles as "PSP_PI,PSP_AI", "-" for none. */
static char *roles_text(json_t *cert)
{
	char buf[64] = "";
	size_t i, n = 0;
	json_t *v;
	json_array_foreach(json_object_get(cert, "psd2_roles"), i, v)
		if (json_is_string(v))
			n += (size_t)snprintf(buf + n, n < sizeof(buf) ? sizeof(buf) - n : 0, "%s%s",
					      n ? "," : "", json_string_value(v));
	return clean(n ? buf : "-");
}

static void print_bind(const struct args *a, json_t *r)
{
	(void)a;
	char *id = jval(r, "client_id"), *th = jval(r, "thumbprint"), *na = jval(r, "not_after");
	char *subj = jval(r, "subject");
	printf("%s %s to %s (slot %" JSON_INTEGER_FORMAT ")\n",
	       strcmp(jstr(r, "action"), "rotate") == 0 ? "added for rotation" : "bound", th, id,
	       json_integer_value(json_object_get(r, "slot")));
	char *roles = roles_text(r);
	printf("  subject   %s\n  not_after %s\n  roles     %s\n", subj, na, roles);
	free(id), free(th), free(na), free(subj), free(roles);
}

static void print_unbind(const struct args *a, json_t *r)
{
	(void)a;
	char *id = jval(r, "client_id");
	if (strcmp(jstr(r, "removed"), "cert") == 0) {
		char *th = jval(r, "thumbprint");
		printf("unbound certificate %s from %s\n", th, id);
		free(th);
	} else {
		printf("unbound client %s and all its active certificates\n", id);
	}
	free(id);
}

static void print_revoke(const struct args *a, json_t *r)
{
	(void)a;
	char *id = jval(r, "client_id");
	json_t *arr = json_object_get(r, "revoked");
	size_t i, n = json_array_size(arr);
	printf("revoked %zu certificate%s of %s\n", n, n == 1 ? "" : "s", id);
	json_t *v;
	json_array_foreach(arr, i, v) {
		char *th = clean(json_string_value(v));
		printf("  %s\n", th);
		free(th);
	}
	free(id);
}

/* The certificate a one-line summary shows: the newest active one, else the newest. */
static json_t *main_cert(json_t *client, size_t *n_active)
{
	json_t *certs = json_object_get(client, "certs"), *c, *pick = NULL;
	size_t i;
	*n_active = 0;
	json_array_foreach(certs, i, c) {
		if (strcmp(jstr(c, "state"), "active") == 0) {
			if (!*n_active)
				pick = c;
			(*n_active)++;
		}
	}
	return pick ? pick : json_array_get(certs, 0);
}

static void print_list(const struct args *a, json_t *r)
{
	(void)a;
	static const char *const hdr[] = {"CLIENT_ID", "STATE", "CERTS", "THUMBPRINT",
					  "NOT_AFTER", "ROLES", "LIMIT"};
	struct table t = {.ncols = 7};
	table_header(&t, hdr);
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(r, "clients"), i, c) {
		size_t n_active;
		json_t *mc = main_cert(c, &n_active);
		char num[24];
		snprintf(num, sizeof(num), "%zu", n_active);
		char *row[] = {jval(c, "client_id"), jval(c, "state"), clean(num),
			       short_thumb(mc ? jstr(mc, "thumbprint") : "-"),
			       mc ? jval(mc, "not_after") : clean("-"),
			       mc ? roles_text(mc) : clean("-"),
			       limit_text(json_object_get(c, "limit"))};
		table_row(&t, row);
	}
	table_print(&t);
	json_t *src = json_object_get(r, "src_rate");
	if (json_is_object(src))
		printf("\nnew connections per source (set at run time): %" JSON_INTEGER_FORMAT
		       "/s, burst %" JSON_INTEGER_FORMAT "\n",
		       json_integer_value(json_object_get(src, "per_sec")),
		       json_integer_value(json_object_get(src, "burst")));
}

static void print_show(const struct args *a, json_t *r)
{
	(void)a;
	static const char *const keys[] = {"client_id", "slot", "state", "created_at"};
	struct table kv = {.ncols = 2};
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char *row[] = {clean(keys[i]), jval(r, keys[i])};
		table_row(&kv, row);
	}
	char *lrow[] = {clean("limit"), limit_text(json_object_get(r, "limit"))};
	table_row(&kv, lrow);
	json_t *xdp = json_object_get(r, "xdp");
	if (xdp) {
		static const char *const counters[] = {"pass_packets", "pass_bytes", "drop_revoked",
						       "drop_policed"};
		for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
			char name[32];
			snprintf(name, sizeof(name), "xdp.%s", counters[i]);
			char *row[] = {clean(name), jval(xdp, counters[i])};
			table_row(&kv, row);
		}
	}
	table_print(&kv);
	json_t *certs = json_object_get(r, "certs"), *c;
	if (!json_array_size(certs)) {
		printf("\nno certificates\n");
		return;
	}
	static const char *const hdr[] = {"THUMBPRINT", "STATE",  "NOT_BEFORE", "NOT_AFTER",
					  "BOUND_AT",   "REVOKED_AT", "ROLES",   "ORG_ID",
					  "NCA_ID",     "NCA_NAME",   "SERIAL",  "SUBJECT"};
	struct table t = {.ncols = 12};
	table_header(&t, hdr);
	size_t i;
	json_array_foreach(certs, i, c) {
		char *row[] = {jval(c, "thumbprint"), jval(c, "state"),
			       jval(c, "not_before"), jval(c, "not_after"),
			       jval(c, "bound_at"),   jval(c, "revoked_at"),
			       roles_text(c),         jval(c, "organization_identifier"),
			       jval(c, "nca_id"),     jval(c, "nca_name"),
			       jval(c, "serial"),     jval(c, "subject")};
		table_row(&t, row);
	}
	printf("\n");
	table_print(&t);
}

static void print_audit(const struct args *a, json_t *r)
{
	(void)a;
	static const char *const hdr[] = {"TIME", "UID", "ACTION", "CLIENT_ID", "THUMBPRINT",
					  "DETAIL"};
	struct table t = {.ncols = 6};
	table_header(&t, hdr);
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(r, "entries"), i, e) {
		const char *th = jstr(e, "thumbprint");
		const char *id = jstr(e, "client_id");
		char *row[] = {jval(e, "time"), jval(e, "uid"), jval(e, "action"),
			       clean(*id ? id : "-"), short_thumb(*th ? th : "-"),
			       jval(e, "detail")};
		table_row(&t, row);
	}
	table_print(&t);
}

static void print_deny_add(const struct args *a, json_t *r)
{
	(void)a;
	char *c = jval(r, "cidr");
	printf("added %s to the deny-list\n", c);
	free(c);
}

static void print_deny_del(const struct args *a, json_t *r)
{
	(void)a;
	char *c = jval(r, "cidr");
	printf("removed %s from the deny-list\n", c);
	free(c);
}

static void print_deny_list(const struct args *a, json_t *r)
{
	(void)a;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(r, "cidrs"), i, v) {
		char *c = clean(json_string_value(v));
		printf("%s\n", c);
		free(c);
	}
}

/* Nothing at all for no counters: a script tests the output for emptiness. */
static void print_quota_show(const struct args *a, json_t *r)
{
	(void)a;
	if (!json_array_size(r))
		return;
	static const char *const hdr[] = {"NAME", "KEY",       "LIMIT",     "WINDOW",
					  "USED", "REMAINING", "RESETS_IN", "RESETS_AT"};
	struct table t = {.ncols = 8};
	table_header(&t, hdr);
	size_t i;
	json_t *q;
	json_array_foreach(r, i, q) {
		const char *key = jstr(q, "key");
		char window[48], reset[32];
		if (strcmp(jstr(q, "window"), "rolling") == 0)
			snprintf(window, sizeof(window), "rolling %" JSON_INTEGER_FORMAT "s",
				 json_integer_value(json_object_get(q, "window_seconds")));
		else
			snprintf(window, sizeof(window), "%s", jstr(q, "window"));
		snprintf(reset, sizeof(reset), "%" JSON_INTEGER_FORMAT "s",
			 json_integer_value(json_object_get(q, "reset_in")));
		char *row[] = {jval(q, "name"),      clean(*key ? key : "-"), jval(q, "limit"),
			       clean(window),        jval(q, "used"),         jval(q, "remaining"),
			       clean(reset),         jval(q, "reset_at")};
		table_row(&t, row);
	}
	table_print(&t);
}

static void print_quota_reset(const struct args *a, json_t *r)
{
	(void)a;
	json_int_t n = json_integer_value(json_object_get(r, "reset"));
	char *id = jval(r, "client_id");
	json_t *key = json_object_get(r, "key");
	char *k = json_is_string(key) ? jval(r, "key") : NULL;
	printf("reset %" JSON_INTEGER_FORMAT " quota counter%s of %s%s%s\n", n, n == 1 ? "" : "s",
	       id, k ? " with key " : "", k ? k : "");
	free(id), free(k);
}

static void print_breaker_list(const struct args *a, json_t *r)
{
	(void)a;
	static const char *const hdr[] = {"UPSTREAM",        "STATE",     "FAILURES",
					  "WINDOW_REQUESTS", "WINDOW_FAILURES", "OPENED_AT",
					  "OPENED_TOTAL",    "REJECTED_TOTAL"};
	struct table t = {.ncols = 8};
	table_header(&t, hdr);
	size_t i;
	json_t *b;
	json_array_foreach(r, i, b) {
		char *row[] = {jval(b, "name"),
			       jval(b, "state"),
			       jval(b, "consecutive_failures"),
			       jval(b, "window_requests"),
			       jval(b, "window_failures"),
			       jval(b, "opened_at"),
			       jval(b, "opened_total"),
			       jval(b, "rejected_total")};
		table_row(&t, row);
	}
	table_print(&t);
}

static void print_breaker_reset(const struct args *a, json_t *r)
{
	(void)a;
	char *name = jval(r, "upstream"), *was = jval(r, "was");
	printf("closed the circuit breaker of upstream %s (was %s)\n", name, was);
	free(name), free(was);
}

static void print_certs(const struct args *a, json_t *r)
{
	(void)a;
	static const char *const hdr[] = {"KIND",      "OWNER",      "NOT_AFTER",
					  "DAYS_LEFT", "THUMBPRINT", "SUBJECT"};
	json_t *certs = json_object_get(r, "certs"), *c;
	size_t i;
	if (!json_array_size(certs)) {
		printf("no certificate expires within %" JSON_INTEGER_FORMAT " days\n",
		       json_integer_value(json_object_get(r, "days")));
		return;
	}
	struct table t = {.ncols = 6};
	table_header(&t, hdr);
	json_array_foreach(certs, i, c) {
		char *row[] = {jval(c, "kind"),      jval(c, "owner"),
			       jval(c, "not_after"), jval(c, "days_left"),
			       short_thumb(jstr(c, "thumbprint")), jval(c, "subject")};
		table_row(&t, row);
	}
	table_print(&t);
}

static void print_rotate_kek(const struct args *a, json_t *r)
{
	(void)a;
	printf("token store: every data key is wrapped by KEK %s\n",
	       json_string_value(json_object_get(r, "kek_label")));
}

static void print_reload(const struct args *a, json_t *r)
{
	(void)a;
	json_t *files = json_object_get(r, "reloaded"), *revoked = json_object_get(r, "revoked");
	size_t i, n = json_array_size(revoked);
	json_t *v;
	printf("reloaded");
	json_array_foreach(files, i, v) {
		char *key = clean(json_string_value(v));
		printf(" %s", key);
		free(key);
	}
	printf("\nrevoked %zu bound certificate%s whose chain no longer verifies\n", n,
	       n == 1 ? "" : "s");
	json_array_foreach(revoked, i, v) {
		char *id = jval(v, "client_id"), *th = jval(v, "thumbprint"), *why = jval(v, "reason"),
		     *error = json_object_get(v, "error") ? jval(v, "error") : NULL;
		printf("  %s %s: %s%s%s\n", id, th, why, error ? "; not revoked: " : "",
		       error ? error : "");
		free(id), free(th), free(why), free(error);
	}
}

/* Nested figures (xdp.packets.drop_deny, per_worker.1.sessions) become dotted names so that
 * every counter is one greppable line. */
static void stats_rows(struct table *t, const char *prefix, json_t *parent, const char *key)
{
	json_t *v = json_object_get(parent, key);
	char name[256];
	snprintf(name, sizeof(name), "%s%s%s", prefix, prefix[0] ? "." : "", key);
	if (json_is_object(v)) {
		const char *k;
		json_t *child;
		json_object_foreach(v, k, child) {
			(void)child;
			stats_rows(t, name, v, k);
		}
		return;
	}
	if (json_is_array(v)) {
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item) {
			char idx[24];
			snprintf(idx, sizeof(idx), "%zu", i);
			json_t *wrap = json_pack("{s:O}", idx, item);
			stats_rows(t, name, wrap, idx);
			json_decref(wrap);
		}
		return;
	}
	char *row[] = {clean(name), jval(parent, key)};
	table_row(t, row);
}

static void print_stats(const struct args *a, json_t *r)
{
	(void)a;
	struct table t = {.ncols = 2};
	const char *k;
	json_t *v;
	json_object_foreach(r, k, v) {
		(void)v;
		stats_rows(&t, "", r, k);
	}
	table_print(&t);
}

/* --- the command table ----------------------------------------------------------------- */

static const struct opt bind_opts[] = {
	FLAG("rotate", rotate, "add a second certificate for the rotation window"),
	{0},
};
static const struct opt unbind_opts[] = {
	VALUE("cert", cert, "CERT.pem", "remove only this certificate"),
	VALUE("thumbprint", thumbprint, "HEX", "remove only the certificate with this SHA-256"),
	{0},
};
static const struct opt audit_opts[] = {
	VALUE("limit", limit, "N", "at most N entries, newest first (default 50)"),
	{0},
};
static const struct opt limit_set_opts[] = {
	VALUE("pps", pps, "N", "packets per second (0: unlimited, the default)"),
	VALUE("bps", bps, "N", "bytes per second of whole frames (0: unlimited, the default)"),
	VALUE("burst", burst, "N", "packets back to back (default 1)"),
	VALUE("burst-bytes", burst_bytes, "N", "bytes back to back (default 0: burst x 1514)"),
	{0},
};
static const struct opt limit_src_opts[] = {
	VALUE("per-sec", per_sec, "N", "new connections per source and second (0: off)"),
	VALUE("burst", burst, "N", "new connections a source may open back to back (>= 1)"),
	FLAG("default", src_default, "forget the run-time rate: bpf.src_rate applies again"),
	{0},
};
static const struct opt quota_opts[] = {
	VALUE("key", key, "VALUE", "only the counters of this key value (\"\": those per client_id)"),
	{0},
};
static const struct opt certs_opts[] = {
	VALUE("expiring", expiring, "DAYS", "the certificates that expire within DAYS (required)"),
	{0},
};
static const struct opt no_opts[] = {{0}};

static const struct subcmd subcmds[] = {
	{"bind", "bind", "CLIENT_ID CERT.pem [--rotate]",
	 "bind a certificate (must chain to client_ca and be valid now) to a client", 2, 2,
	 {"client_id", NULL}, bind_opts, build_bind, print_bind},
	{"unbind", "unbind", "CLIENT_ID [--cert CERT.pem | --thumbprint HEX]",
	 "remove one certificate, or the whole client so that it can be enrolled again", 1, 1,
	 {"client_id"}, unbind_opts, build_unbind, print_unbind},
	{"revoke", "revoke", "CLIENT_ID",
	 "revoke every active certificate of a client (final; live connections are cut)", 1, 1,
	 {"client_id"}, no_opts, NULL, print_revoke},
	{"list", "list", "", "list clients and their current certificate", 0, 0, {NULL},
	 no_opts, NULL, print_list},
	{"show", "show", "CLIENT_ID", "show one client and all its certificates", 1, 1,
	 {"client_id"}, no_opts, NULL, print_show},
	{"audit", "audit", "[CLIENT_ID] [--limit N]",
	 "show the audit trail (every change, who made it), newest first", 0, 1, {"client_id"},
	 audit_opts, build_audit, print_audit},
	{"deny add", "deny-add", "CIDR", "drop traffic from a network in XDP", 1, 1, {"cidr"},
	 no_opts, NULL, print_deny_add},
	{"deny del", "deny-del", "CIDR", "remove a network from the deny-list", 1, 1, {"cidr"},
	 no_opts, NULL, print_deny_del},
	{"deny list", "deny-list", "", "print the deny-list, one CIDR a line", 0, 0, {NULL},
	 no_opts, NULL, print_deny_list},
	{"limit set", "limit-set", "CLIENT_ID [--pps N] [--bps N] [--burst N] [--burst-bytes N]",
	 "police a client's packets in XDP (replaces its limit; omitted values take the defaults)",
	 1, 1, {"client_id"}, limit_set_opts, build_limit_set, print_limit_set},
	{"limit del", "limit-del", "CLIENT_ID",
	 "remove a client's own limit: the configured default (bpf.client_rate) applies", 1, 1,
	 {"client_id"}, no_opts, NULL, print_limit_del},
	{"limit src", "src-rate-set", "--per-sec N --burst N | --default",
	 "per-source rate of new connections, enforced in XDP (kept across restarts)", 0, 0,
	 {NULL}, limit_src_opts, build_limit_src, print_limit_src},
	{"stats", "stats", "", "daemon counters and registry figures", 0, 0, {NULL}, no_opts,
	 NULL, print_stats},
	{"quota show", "quota-show", "CLIENT_ID [--key VALUE]",
	 "a client's quota counters: used and remaining in the window, when it resets", 1, 1,
	 {"client_id"}, quota_opts, build_quota, print_quota_show},
	{"quota reset", "quota-reset", "CLIENT_ID [--key VALUE]",
	 "zero a client's quota counters (all of them, or those of one key value)", 1, 1,
	 {"client_id"}, quota_opts, build_quota, print_quota_reset},
	{"breaker list", "breaker-list", "", "the circuit breaker of every upstream", 0, 0,
	 {NULL}, no_opts, NULL, print_breaker_list},
	{"breaker reset", "breaker-reset", "NAME",
	 "close an upstream's circuit breaker (its counts cleared, totals kept)", 1, 1,
	 {"upstream"}, no_opts, NULL, print_breaker_reset},
	{"reload", "reload", "",
	 "read the TLS certificates, keys, CA bundles, CRL and JWK set again; revoke the bound "
	 "certificates they no longer verify",
	 0, 0, {NULL}, no_opts, NULL, print_reload},
	{"rotate-kek", "rotate-kek", "LABEL",
	 "re-wrap the hub token store's data keys under the KEK LABEL (created when missing); "
	 "then set token_store.key_label to LABEL",
	 1, 1, {"label"}, no_opts, NULL, print_rotate_kek},
	{"certs", "certs", "--expiring DAYS",
	 "bound client certificates, the server certificate and upstream client certificates "
	 "that expire within DAYS, soonest first",
	 0, 0, {NULL}, certs_opts, build_certs, print_certs},
};
#define N_SUBCMDS (sizeof(subcmds) / sizeof(subcmds[0]))

static void print_opts(FILE *out, const struct opt *o)
{
	for (; o->name; o++) {
		char left[64];
		snprintf(left, sizeof(left), "--%s%s%s", o->name, o->metavar ? " " : "",
			 o->metavar ? o->metavar : "");
		fprintf(out, "  %-22s %s\n", left, o->help);
	}
}

static void usage(FILE *out)
{
	fprintf(out, "usage: %s [--socket PATH] [--timeout SECONDS] COMMAND [ARGS] [--json]\n\n"
		     "commands:\n", prog);
	for (size_t i = 0; i < N_SUBCMDS; i++) {
		char left[80];
		snprintf(left, sizeof(left), "%s %s", subcmds[i].name, subcmds[i].usage);
		if (strlen(left) > 36)
			fprintf(out, "  %s\n  %-36s  %s\n", left, "", subcmds[i].summary);
		else
			fprintf(out, "  %-36s  %s\n", left, subcmds[i].summary);
	}
	fprintf(out, "\noptions:\n");
	print_opts(out, global_opts);
	fprintf(out, "\nexit codes: 0 ok, 1 refused by the daemon, 2 usage error, 3 cannot reach "
		     "the daemon\n'%s COMMAND --help' describes one command.\n", prog);
}

static void usage_cmd(FILE *out, const struct subcmd *c)
{
	fprintf(out, "usage: %s %s %s\n\n%s\n", prog, c->name, c->usage, c->summary);
	if (c->opts[0].name) {
		fprintf(out, "\noptions:\n");
		print_opts(out, c->opts);
	}
	fprintf(out, "\ncommon options:\n");
	print_opts(out, global_opts);
}

static const struct opt *find_opt(const struct opt *tab, const char *name, size_t len)
{
	for (; tab && tab->name; tab++)
		if (strlen(tab->name) == len && strncmp(tab->name, name, len) == 0)
			return tab;
	return NULL;
}

/* Handles argv[*i] when it is an option ("--name", "--name=value", "--name value").
 * 1 consumed, 0 not an option, -1 usage error (printed). */
static int parse_opt(int argc, char **argv, int *i, const struct subcmd *cmd, struct args *a)
{
	const char *arg = argv[*i];
	if (strcmp(arg, "-h") == 0) {
		a->help = true;
		return 1;
	}
	if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
		return 0;
	const char *name = arg + 2, *eq = strchr(name, '=');
	size_t len = eq ? (size_t)(eq - name) : strlen(name);
	const struct opt *o = find_opt(global_opts, name, len);
	if (!o && cmd)
		o = find_opt(cmd->opts, name, len);
	if (!o) {
		fail_msg("unknown option --%.*s%s%s", (int)len, name, cmd ? " for " : "",
			 cmd ? cmd->name : "");
		return -1;
	}
	if (o->kind == OPT_FLAG) {
		if (eq) {
			fail_msg("option --%s takes no value", o->name);
			return -1;
		}
		*(bool *)((char *)a + o->off) = true;
		return 1;
	}
	const char *val = eq ? eq + 1 : (*i + 1 < argc ? argv[++*i] : NULL);
	if (!val) {
		fail_msg("option --%s needs a value (%s)", o->name, o->metavar);
		return -1;
	}
	*(const char **)((char *)a + o->off) = val;
	return 1;
}

/* Finds the subcommand at argv[*i] (one or two words) and advances past it. */
static const struct subcmd *find_cmd(int argc, char **argv, int *i)
{
	const char *w1 = argv[*i];
	const char *w2 = *i + 1 < argc ? argv[*i + 1] : NULL;
	for (size_t k = 0; k < N_SUBCMDS; k++) {
		const char *n = subcmds[k].name, *sp = strchr(n, ' ');
		if (!sp && strcmp(n, w1) == 0) {
			*i += 1;
			return &subcmds[k];
		}
		if (sp && strlen(w1) == (size_t)(sp - n) && strncmp(n, w1, (size_t)(sp - n)) == 0 &&
		    w2 && strcmp(sp + 1, w2) == 0) {
			*i += 2;
			return &subcmds[k];
		}
	}
	return NULL;
}

static int run(const struct subcmd *cmd, const struct args *a)
{
	json_t *req = json_pack("{s:s}", "cmd", cmd->wire);
	for (int p = 0; p < a->npos; p++)
		if (cmd->pos_names[p])
			json_object_set_new(req, cmd->pos_names[p], json_string(a->pos[p]));
	int rc = cmd->build ? cmd->build(a, req) : 0;
	if (rc) {
		json_decref(req);
		return rc;
	}
	char *line = json_dumps(req, JSON_COMPACT);
	json_decref(req);
	if (!line) {
		fail_msg("out of memory");
		return EXIT_USAGE;
	}

	const char *path = a->socket ? a->socket : getenv(CTL_SOCKET_ENV);
	if (!path || !*path)
		path = CTL_DEFAULT_SOCKET;
	int timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
	if (a->timeout) {
		char *end;
		double s = strtod(a->timeout, &end);
		if (end == a->timeout || *end || !(s > 0) || s > 86400) {
			free(line);
			fail_msg("--timeout must be a number of seconds (0 < s <= 86400)");
			return EXIT_USAGE;
		}
		timeout_ms = (int)(s * 1000) > 0 ? (int)(s * 1000) : 1;
	}

	char *resp = NULL, err[512];
	int st = ctl_request(path, line, strlen(line), timeout_ms, &resp, err, sizeof(err));
	free(line);
	if (st != CTL_OK) {
		fail_msg("%s", err);
		return EXIT_UNREACHABLE;
	}
	json_error_t jerr;
	json_t *r = json_loads(resp, 0, &jerr);
	free(resp);
	json_t *ok = json_object_get(r, "ok");
	if (!json_is_object(r) || !json_is_boolean(ok)) {
		json_decref(r);
		fail_msg("malformed answer from the daemon at %s", path);
		return EXIT_UNREACHABLE;
	}
	if (!json_is_true(ok)) {
		const char *e = json_string_value(json_object_get(r, "error"));
		char *c = clean(e ? e : "refused (no reason given)");
		fail_msg("%s", c);
		free(c);
		json_decref(r);
		return EXIT_REFUSED;
	}
	json_t *result = json_object_get(r, "result");
	if (a->json) {
		char *s = json_dumps(result, JSON_INDENT(2) | JSON_ENCODE_ANY);
		if (s)
			printf("%s\n", s);
		free(s);
	} else {
		cmd->print(a, result);
	}
	json_decref(r);
	return fflush(stdout) == 0 ? 0 : EXIT_USAGE;
}

int main(int argc, char **argv)
{
	struct args a = {0};
	const struct subcmd *cmd = NULL;
	int i = 1;

	/* Options before the command. */
	for (; i < argc; i++) {
		int r = parse_opt(argc, argv, &i, NULL, &a);
		if (r < 0)
			return EXIT_USAGE;
		if (r == 0)
			break;
	}
	if (i < argc && strcmp(argv[i], "help") == 0) {
		a.help = true;
		i++;
	}
	if (i >= argc) {
		usage(a.help ? stdout : stderr);
		return a.help ? 0 : EXIT_USAGE;
	}
	cmd = find_cmd(argc, argv, &i);
	if (!cmd) {
		if (strcmp(argv[i], "deny") == 0)
			fail_msg("deny needs add CIDR, del CIDR or list");
		else if (strcmp(argv[i], "limit") == 0)
			fail_msg("limit needs set CLIENT_ID, del CLIENT_ID or src");
		else if (strcmp(argv[i], "quota") == 0)
			fail_msg("quota needs show CLIENT_ID or reset CLIENT_ID");
		else if (strcmp(argv[i], "breaker") == 0)
			fail_msg("breaker needs list or reset NAME");
		else
			fail_msg("unknown command '%s' (try --help)", argv[i]);
		return EXIT_USAGE;
	}

	/* Arguments and options, in any order. "--" ends the options. */
	bool opts_done = false;
	for (; i < argc; i++) {
		if (!opts_done && strcmp(argv[i], "--") == 0) {
			opts_done = true;
			continue;
		}
		if (!opts_done) {
			int r = parse_opt(argc, argv, &i, cmd, &a);
			if (r < 0)
				return EXIT_USAGE;
			if (r > 0)
				continue;
		}
		if (a.npos >= cmd->max_pos) {
			fail_msg("%s: unexpected argument '%s' (usage: %s %s %s)", cmd->name,
				 argv[i], prog, cmd->name, cmd->usage);
			return EXIT_USAGE;
		}
		a.pos[a.npos++] = argv[i];
	}
	if (a.help) {
		usage_cmd(stdout, cmd);
		return 0;
	}
	if (a.npos < cmd->min_pos) {
		fail_msg("%s: missing argument (usage: %s %s %s)", cmd->name, prog, cmd->name,
			 cmd->usage);
		return EXIT_USAGE;
	}
	return run(cmd, &a);
}
