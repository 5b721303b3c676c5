/* Differential fuzzer: the client_id the gateway checks against what the application behind it
 * could read. Input: one byte choosing the configured client_id sources, then one raw request.
 *
 * The request goes through the gateway's own parser (http_msg_feed) and clientid_extract the way
 * the proxy drives them: the body is buffered only when clientid_needs_body asks for it,
 * otherwise the decision is taken at the head and the body is forwarded unread. Whenever the
 * gateway accepts a client_id X, readers written here, independently of user/clientid.c, read
 * the same bytes (the target, the de-chunked body, the headers) as these stacks would:
 *   Rack 2 (splits on '&' and ';', skips spaces after them, strips brackets around names)
 *   Rack 3 (splits on '&', a name ends at a '[' after its first byte)
 *   Go (form then query; a pair holding ';' is dropped; Unicode ToLower of the media type)
 *   a Servlet container (query and form, POST only, body decoded in the Content-Type's charset),
 *     and one whose application looks names up with Java's equalsIgnoreCase
 *   PHP (last value wins; names lose leading spaces, end at NUL, ' ' '.' and an unclosed '['
 *     become '_'; $_REQUEST may include cookies)
 *   Python before 3.9.2 (splits on ';' too, keeps bad escapes)
 *   a framework that lowercases names, behind a proxy that inflates Content-Encoding
 *   IIS (case-insensitive names, %uXXXX)
 * and, for header sources, a CGI stack (header names case-insensitive, '_' read as '-').
 * Each reader takes every value it reads for a configured parameter name (first or last wins
 * depending on the stack, so all of them count) and the query as everything after the first
 * '?' (some servers keep what follows a '#'). Every such value must be X or something no
 * client can be bound to (not a valid client_id even trimmed or cut at a NUL); a body a reader
 * would decode another way (another charset, inflated, multipart) must not have been accepted.
 * abort() otherwise. A bad escape skips its pair in every reader (Rack refuses the whole
 * request instead: skipping reads more, which is the stricter check). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "clientid.h"
#include "http.h"

#define MAX_BODY 4096

static const struct http_limits limits = {
	.max_header_bytes = 2048,
	.max_body_bytes = MAX_BODY,
	.max_buffered_body = 1024,
};

static const struct client_id_source all_three[] = {
	{CID_SOURCE_FORM, "client_id"},
	{CID_SOURCE_QUERY, "client_id"},
	{CID_SOURCE_HEADER, "x-client-id"},
};
static const struct client_id_source form_header[] = {
	{CID_SOURCE_FORM, "client_id"},
	{CID_SOURCE_HEADER, "x-client-id"},
};
static const struct client_id_source query_header[] = {
	{CID_SOURCE_QUERY, "client_id"},
	{CID_SOURCE_HEADER, "x-client-id"},
};
static const struct client_id_source form_only[] = {{CID_SOURCE_FORM, "client_id"}};
static const struct client_id_source two_names[] = {
	{CID_SOURCE_QUERY, "cid"},
	{CID_SOURCE_FORM, "client_id"},
	{CID_SOURCE_HEADER, "client-id"}, /* a header the gateway forwards as it is */
};
static const struct client_id_source header_only[] = {{CID_SOURCE_HEADER, "x-client-id"}};

#define SET(a) {a, sizeof(a) / sizeof(a[0])}
static const struct {
	const struct client_id_source *src;
	unsigned n;
} source_sets[] = {
	SET(all_three), SET(form_header), SET(query_header),
	SET(form_only), SET(two_names),   SET(header_only),
};

/* --- the readers ------------------------------------------------------------------------------ */

enum sep_rule { SEP_AMP, SEP_AMP_SEMI, SEP_AMP_DROP_SEMI };
enum escape_rule { ESC_SKIP_PAIR, ESC_LITERAL, ESC_IIS };
enum name_rule { NAME_EXACT, NAME_RACK2, NAME_RACK3, NAME_PHP, NAME_ASCII_CI, NAME_JAVA_CI };
enum form_rule { FORM_RACK, FORM_GO, FORM_SERVLET, FORM_PHP };

struct reader {
	const char *stack;
	enum sep_rule sep;
	bool skip_space_after_sep;
	enum escape_rule esc;
	enum name_rule name;
	enum form_rule form;
	bool cookies;  /* PHP's $_REQUEST */
	bool inflates; /* reads the body after undoing Content-Encoding */
};

static const struct reader readers[] = {
	{"Rack 2", SEP_AMP_SEMI, true, ESC_SKIP_PAIR, NAME_RACK2, FORM_RACK, false, false},
	{"Rack 3", SEP_AMP, true, ESC_SKIP_PAIR, NAME_RACK3, FORM_RACK, false, false},
	{"Go", SEP_AMP_DROP_SEMI, false, ESC_SKIP_PAIR, NAME_EXACT, FORM_GO, false, false},
	{"Servlet", SEP_AMP, false, ESC_SKIP_PAIR, NAME_EXACT, FORM_SERVLET, false, false},
	{"Servlet, equalsIgnoreCase", SEP_AMP, false, ESC_SKIP_PAIR, NAME_JAVA_CI, FORM_SERVLET, false,
	 false},
	{"PHP", SEP_AMP, false, ESC_LITERAL, NAME_PHP, FORM_PHP, true, false},
	{"Python < 3.9.2", SEP_AMP_SEMI, false, ESC_LITERAL, NAME_EXACT, FORM_GO, false, false},
	{"lowercasing, inflating", SEP_AMP, false, ESC_SKIP_PAIR, NAME_ASCII_CI, FORM_GO, false, true},
	{"IIS", SEP_AMP, false, ESC_IIS, NAME_ASCII_CI, FORM_PHP, false, false},
};

/* What the gateway accepted and the request it accepted it for. */
struct oracle {
	const char *id; /* X */
	const struct client_id_source *src;
	unsigned n;
	const struct http_msg *req;
	const char *body;
	size_t body_len;
};

static void disagree(const struct reader *r, const char *what, const char *v, size_t len,
		     const char *id)
{
	fprintf(stderr, "%s reads %s \"%.*s\" where the gateway accepted client_id \"%s\"\n",
		r ? r->stack : "CGI", what, (int)len, v, id);
	abort();
}

static bool is_space(unsigned char c)
{
	return c == ' ' || (c >= '\t' && c <= '\r');
}

/* v as some application could take it: as is, trimmed, cut at a NUL and trimmed. */
static void expect_value(const struct oracle *o, const struct reader *r, const char *what,
			 const char *v, size_t len)
{
	size_t id_len = strlen(o->id);
	for (int form = 0; form < 3; form++) {
		const char *s = v;
		size_t n = len;
		if (form == 2) {
			const char *nul = memchr(s, '\0', n);
			if (nul)
				n = (size_t)(nul - s);
		}
		if (form >= 1) {
			while (n && is_space((unsigned char)*s)) {
				s++;
				n--;
			}
			while (n && is_space((unsigned char)s[n - 1]))
				n--;
		}
		if (registry_client_id_valid_n(s, n) && (n != id_len || memcmp(s, o->id, n) != 0))
			disagree(r, what, v, len, o->id);
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (char)(c | 0x20);
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static size_t put_utf8(char *out, unsigned cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	out[0] = (char)(0xe0 | cp >> 12);
	out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[2] = (char)(0x80 | (cp & 0x3f));
	return 3;
}

/* Percent-decodes per the reader into out (at least 3 * len bytes); -1: skip the pair. */
static long reader_decode(const struct reader *r, const char *s, size_t len, char *out)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '+') {
			out[o++] = ' ';
			continue;
		}
		if (s[i] != '%') {
			out[o++] = s[i];
			continue;
		}
		if (i + 2 < len && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
			out[o++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
			i += 2;
			continue;
		}
		if (r->esc == ESC_IIS && i + 5 < len && (s[i + 1] | 0x20) == 'u' && hexval(s[i + 2]) >= 0 &&
		    hexval(s[i + 3]) >= 0 && hexval(s[i + 4]) >= 0 && hexval(s[i + 5]) >= 0) {
			unsigned cp = (unsigned)(hexval(s[i + 2]) << 12 | hexval(s[i + 3]) << 8 |
						 hexval(s[i + 4]) << 4 | hexval(s[i + 5]));
			o += put_utf8(out + o, cp);
			i += 5;
			continue;
		}
		if (r->esc == ESC_SKIP_PAIR)
			return -1;
		out[o++] = '%';
	}
	return (long)o;
}

/* A UTF-8 code point at *p (U+FFFD for a bad sequence); advances *p. */
static unsigned next_code_point(const unsigned char **p, const unsigned char *end)
{
	const unsigned char *s = *p;
	unsigned c = *s++;
	unsigned need = c >= 0xf0 ? 3 : c >= 0xe0 ? 2 : c >= 0xc0 ? 1 : 0;
	if (c >= 0x80 && !need) {
		*p = s;
		return 0xfffd;
	}
	unsigned cp = need == 3 ? c & 7 : need == 2 ? c & 15 : need == 1 ? c & 31 : c;
	for (unsigned k = 0; k < need; k++) {
		if (s == end || (*s & 0xc0) != 0x80) {
			*p = s;
			return 0xfffd;
		}
		cp = cp << 6 | (*s++ & 0x3f);
	}
	*p = s;
	return cp;
}

static unsigned ascii_upper(unsigned c)
{
	return c >= 'a' && c <= 'z' ? c - 32 : c;
}

static unsigned ascii_lower(unsigned c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Character.toUpperCase / toLowerCase where the result is ASCII. */
static unsigned java_upper(unsigned cp)
{
	return cp == 0x131 ? 'I' : cp == 0x17f ? 'S' : ascii_upper(cp);
}

static unsigned java_lower(unsigned cp)
{
	return cp == 0x130 ? 'i' : cp == 0x212a ? 'k' : ascii_lower(cp);
}

static bool java_equals_ignore_case(const char *s, size_t len, const char *ascii)
{
	const unsigned char *p = (const unsigned char *)s, *end = p + len;
	size_t i = 0, n = strlen(ascii);
	while (p < end) {
		unsigned cp = next_code_point(&p, end);
		if (i == n)
			return false;
		unsigned c = (unsigned char)ascii[i++];
		if (cp != c && java_upper(cp) != ascii_upper(c) && java_lower(cp) != ascii_lower(c))
			return false;
	}
	return i == n;
}

/* PHP's variable name for name: leading spaces dropped, ends at NUL, ' ' and '.' become '_'
 * up to a '['; "a[...]" is the array a; an unclosed '[' becomes '_' (PHP 8 also turns the
 * ' ', '.' and '[' after it into '_'; older versions keep them: rest_mangled chooses). */
static bool php_name_is(const char *name, size_t len, const char *want, bool rest_mangled)
{
	char v[256];
	const char *nul = memchr(name, '\0', len);
	if (nul)
		len = (size_t)(nul - name);
	while (len && *name == ' ') {
		name++;
		len--;
	}
	size_t o = 0, i = 0;
	for (; i < len && name[i] != '['; i++) {
		if (o == sizeof(v))
			return false;
		v[o++] = name[i] == ' ' || name[i] == '.' ? '_' : name[i];
	}
	if (i < len && !memchr(name + i, ']', len - i)) {
		/* an unclosed '[' (with a ']' after it, the name is an array's: what came before) */
		for (; i < len; i++) {
			if (o == sizeof(v))
				return false;
			bool mangled = name[i] == '[' || (rest_mangled && (name[i] == ' ' || name[i] == '.'));
			v[o++] = mangled ? '_' : name[i];
		}
	}
	return o == strlen(want) && memcmp(v, want, o) == 0;
}

static bool reader_name_is(const struct reader *r, const char *name, size_t len, const char *want)
{
	size_t want_len = strlen(want);
	switch (r->name) {
	case NAME_EXACT:
		return len == want_len && memcmp(name, want, len) == 0;
	case NAME_RACK2: {
		/* leading '[' and ']' are skipped; the name runs to the next bracket */
		size_t i = 0;
		while (i < len && (name[i] == '[' || name[i] == ']'))
			i++;
		size_t k = i;
		while (i < len && name[i] != '[' && name[i] != ']')
			i++;
		return i - k == want_len && memcmp(name + k, want, want_len) == 0;
	}
	case NAME_RACK3: {
		const char *bracket = len > 1 ? memchr(name + 1, '[', len - 1) : NULL;
		size_t k = bracket ? (size_t)(bracket - name) : len;
		return k == want_len && memcmp(name, want, k) == 0;
	}
	case NAME_PHP:
		return php_name_is(name, len, want, true) || php_name_is(name, len, want, false);
	case NAME_ASCII_CI:
		return len == want_len && strncasecmp(name, want, len) == 0 && !memchr(name, '\0', len);
	case NAME_JAVA_CI:
		return java_equals_ignore_case(name, len, want);
	}
	return false;
}

static bool is_param(const struct client_id_source *s)
{
	return s->kind == CID_SOURCE_FORM || s->kind == CID_SOURCE_QUERY;
}

/* One "name=value" pair as the reader decodes it. */
static void reader_pair(const struct oracle *o, const struct reader *r, const char *what,
			const char *s, size_t len)
{
	if (r->skip_space_after_sep)
		while (len && *s == ' ') {
			s++;
			len--;
		}
	if (len == 0)
		return;
	const char *eq = memchr(s, '=', len);
	size_t nl = eq ? (size_t)(eq - s) : len;
	char name[3 * MAX_BODY], value[3 * MAX_BODY];
	long dn = reader_decode(r, s, nl, name);
	long dv = eq ? reader_decode(r, eq + 1, len - nl - 1, value) : 0;
	if (dn < 0 || dv < 0)
		return;
	for (unsigned i = 0; i < o->n; i++)
		if (is_param(&o->src[i]) && reader_name_is(r, name, (size_t)dn, o->src[i].name))
			expect_value(o, r, what, value, (size_t)dv);
}

static void reader_params(const struct oracle *o, const struct reader *r, const char *what,
			  const char *s, size_t len)
{
	const char *end = s + len;
	while (s < end) {
		const char *p = s;
		while (p < end && *p != '&' && !(r->sep == SEP_AMP_SEMI && *p == ';'))
			p++;
		if (!(r->sep == SEP_AMP_DROP_SEMI && memchr(s, ';', (size_t)(p - s))))
			reader_pair(o, r, what, s, (size_t)(p - s));
		s = p < end ? p + 1 : end;
	}
}

/* --- what a reader makes of the body --------------------------------------------------------- */

enum body_reading { READ_NOTHING, READ_FORM, READ_UNKNOWN };

static bool lower_equals(const char *s, size_t len, const char *lit)
{
	return len == strlen(lit) && strncasecmp(s, lit, len) == 0;
}

/* Go's strings.TrimSpace: ASCII whitespace and the Unicode spaces. */
static size_t go_space_len(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	if (len && is_space(p[0]))
		return 1;
	const unsigned char *q = p;
	unsigned cp = len ? next_code_point(&q, p + len) : 0;
	bool space = cp == 0x85 || cp == 0xa0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200a) ||
		     cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f || cp == 0x3000;
	return space ? (size_t)(q - p) : 0;
}

/* Go: mime.ParseMediaType lowercases (Unicode) and trims what precedes the first ';'. */
static bool go_media_type_is(const char *ct, size_t len, const char *want)
{
	const char *semi = memchr(ct, ';', len);
	if (semi)
		len = (size_t)(semi - ct);
	size_t n;
	while (len && (n = go_space_len(ct, len))) {
		ct += n;
		len -= n;
	}
	char low[512];
	size_t o = 0;
	const unsigned char *p = (const unsigned char *)ct, *end = p + len;
	while (p < end && o + 4 < sizeof(low)) {
		const unsigned char *at = p;
		unsigned cp = next_code_point(&p, end);
		unsigned l = java_lower(cp); /* İ -> i, K -> k as unicode.ToLower does */
		if (l < 0x80)
			low[o++] = (char)l;
		else
			for (; at < p; at++)
				low[o++] = (char)*at;
	}
	while (o) {
		size_t cut = 0;
		for (size_t k = 1; k <= 3 && k <= o; k++)
			if (go_space_len(low + o - k, k) == k)
				cut = k;
		if (!cut)
			break;
		o -= cut;
	}
	return lower_equals(low, o, want);
}

static bool method_is(const struct http_msg *req, unsigned m)
{
	return req->method == m;
}

/* The charset a Servlet container finds: "charset=" anywhere, as Tomcat before 8.5 searched. */
static bool servlet_charset_reads_ascii(const char *ct, size_t len)
{
	for (size_t i = 0; i + 8 <= len; i++) {
		if (strncasecmp(ct + i, "charset=", 8) != 0)
			continue;
		const char *v = ct + i + 8, *end = ct + len;
		const char *e = v;
		while (e < end && *e != ';')
			e++;
		while (v < e && (is_space((unsigned char)*v) || *v == '"'))
			v++;
		while (e > v && (is_space((unsigned char)e[-1]) || e[-1] == '"'))
			e--;
		size_t n = (size_t)(e - v);
		if (!lower_equals(v, n, "utf-8") && !lower_equals(v, n, "us-ascii") &&
		    !lower_equals(v, n, "iso-8859-1"))
			return false;
	}
	return true;
}

static enum body_reading reader_content_type(const struct reader *r, const struct http_msg *req,
					     const char *ct, size_t len)
{
	const char *form = "application/x-www-form-urlencoded";
	switch (r->form) {
	case FORM_RACK: {
		size_t i = 0;
		while (i < len && is_space((unsigned char)ct[i]))
			i++;
		size_t start = i;
		while (i < len && ct[i] != ';' && ct[i] != ',')
			i++;
		size_t e = i;
		while (e > start && is_space((unsigned char)ct[e - 1]))
			e--;
		if (len == 0)
			return method_is(req, HTTP_POST) ? READ_FORM : READ_NOTHING;
		if (lower_equals(ct + start, e - start, form))
			return READ_FORM;
		if (lower_equals(ct + start, e - start, "multipart/form-data") ||
		    lower_equals(ct + start, e - start, "multipart/mixed") ||
		    lower_equals(ct + start, e - start, "multipart/related"))
			return READ_UNKNOWN;
		return READ_NOTHING;
	}
	case FORM_GO:
		if (!method_is(req, HTTP_POST) && !method_is(req, HTTP_PUT) && !method_is(req, HTTP_PATCH))
			return READ_NOTHING;
		if (go_media_type_is(ct, len, form))
			return READ_FORM;
		if (go_media_type_is(ct, len, "multipart/form-data") ||
		    go_media_type_is(ct, len, "multipart/mixed"))
			return READ_UNKNOWN;
		return READ_NOTHING;
	case FORM_SERVLET: {
		if (!method_is(req, HTTP_POST))
			return READ_NOTHING;
		const char *semi = memchr(ct, ';', len);
		size_t tl = semi ? (size_t)(semi - ct) : len, s = 0;
		while (s < tl && (unsigned char)ct[s] <= ' ')
			s++;
		while (tl > s && (unsigned char)ct[tl - 1] <= ' ')
			tl--;
		if (tl - s == strlen("multipart/form-data") &&
		    memcmp(ct + s, "multipart/form-data", tl - s) == 0)
			return READ_UNKNOWN;
		if (!lower_equals(ct + s, tl - s, form))
			return READ_NOTHING;
		return servlet_charset_reads_ascii(ct, len) ? READ_FORM : READ_UNKNOWN;
	}
	case FORM_PHP: {
		if (!method_is(req, HTTP_POST))
			return READ_NOTHING;
		size_t s = 0;
		while (s < len && (ct[s] == ' ' || ct[s] == '\t'))
			s++;
		size_t e = s;
		while (e < len && ct[e] != ';' && ct[e] != ',' && ct[e] != ' ')
			e++;
		if (lower_equals(ct + s, e - s, form))
			return READ_FORM;
		if (lower_equals(ct + s, e - s, "multipart/form-data"))
			return READ_UNKNOWN;
		return READ_NOTHING;
	}
	}
	return READ_NOTHING;
}

static enum body_reading worse(enum body_reading a, enum body_reading b)
{
	return a > b ? a : b;
}

/* Each Content-Type header on its own and, when repeated, joined with ", " as some servers
 * hand them over. */
static enum body_reading reader_body(const struct reader *r, const struct http_msg *req)
{
	const char *head = buf_head(&req->head);
	enum body_reading got = READ_NOTHING;
	char joined[2048];
	size_t joined_len = 0;
	unsigned count = 0;
	for (unsigned i = 0; i < req->n_hdr; i++) {
		const struct http_header *h = &req->hdr[i];
		if (!lower_equals(head + h->name_off, h->name_len, "content-type"))
			continue;
		got = worse(got, reader_content_type(r, req, head + h->value_off, h->value_len));
		if (joined_len + h->value_len + 2 < sizeof(joined)) {
			if (count)
				joined_len += (size_t)snprintf(joined + joined_len, 3, ", ");
			memcpy(joined + joined_len, head + h->value_off, h->value_len);
			joined_len += h->value_len;
		}
		count++;
	}
	if (count > 1)
		got = worse(got, reader_content_type(r, req, joined, joined_len));
	if (count == 0 && r->form == FORM_RACK && method_is(req, HTTP_POST))
		got = READ_FORM;
	if (got == READ_FORM && r->inflates && http_msg_header(req, "content-encoding", NULL, NULL))
		got = READ_UNKNOWN;
	return got;
}

/* PHP's cookies: "a=1; b=2", names and values url-decoded. */
static void reader_cookies(const struct oracle *o, const struct reader *r)
{
	const char *head = buf_head(&o->req->head);
	for (unsigned i = 0; i < o->req->n_hdr; i++) {
		const struct http_header *h = &o->req->hdr[i];
		if (!lower_equals(head + h->name_off, h->name_len, "cookie"))
			continue;
		const char *s = head + h->value_off, *end = s + h->value_len;
		while (s < end) {
			const char *p = memchr(s, ';', (size_t)(end - s));
			if (!p)
				p = end;
			const char *t = s;
			while (t < p && is_space((unsigned char)*t))
				t++;
			reader_pair(o, r, "a cookie", t, (size_t)(p - t));
			s = p < end ? p + 1 : end;
		}
	}
}

/* A CGI stack: HTTP_X_CLIENT_ID for X-Client-Id and X_Client_Id alike. The gateway drops
 * what the client sent as X-Client-Id (exactly that name) and adds its own. */
static bool cgi_name_is(const char *name, size_t len, const char *want)
{
	if (len != strlen(want))
		return false;
	for (size_t i = 0; i < len; i++) {
		char a = name[i] == '_' ? '-' : name[i], b = want[i] == '_' ? '-' : want[i];
		if (ascii_lower((unsigned char)a) != ascii_lower((unsigned char)b))
			return false;
	}
	return true;
}

static void read_headers(const struct oracle *o)
{
	const char *head = buf_head(&o->req->head);
	for (unsigned s = 0; s < o->n; s++) {
		if (o->src[s].kind != CID_SOURCE_HEADER)
			continue;
		for (unsigned i = 0; i < o->req->n_hdr; i++) {
			const struct http_header *h = &o->req->hdr[i];
			const char *name = head + h->name_off;
			if (!cgi_name_is(name, h->name_len, o->src[s].name) ||
			    lower_equals(name, h->name_len, "x-client-id"))
				continue;
			expect_value(o, NULL, "a header", head + h->value_off, h->value_len);
		}
	}
}

/* Rails: a JSON body's top-level members join params (ActionDispatch's JSON parameter parser, for
 * the JSON MIME types, whatever the method; the last of repeated members wins); a number is
 * read as its text by params[:client_id].to_s. */
static void read_json_like_rails(const struct oracle *o)
{
	static const struct reader rails = {.stack = "Rails, JSON body"};
	size_t len;
	const char *ct = http_msg_header(o->req, "content-type", &len, NULL);
	if (!ct)
		return;
	size_t type_len = 0;
	while (type_len < len && ct[type_len] != ';' && !is_space((unsigned char)ct[type_len]))
		type_len++;
	if (!lower_equals(ct, type_len, "application/json") &&
	    !lower_equals(ct, type_len, "text/x-json") &&
	    !lower_equals(ct, type_len, "application/jsonrequest"))
		return;
	json_t *doc = json_loadb(o->body, o->body_len, 0, NULL);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return;
	}
	for (unsigned i = 0; i < o->n; i++) {
		json_t *v = is_param(&o->src[i]) ? json_object_get(doc, o->src[i].name) : NULL;
		char text[64];
		if (json_is_string(v))
			expect_value(o, &rails, "a JSON member", json_string_value(v),
				     json_string_length(v));
		else if (json_is_integer(v))
			expect_value(o, &rails, "a JSON number", text,
				     (size_t)snprintf(text, sizeof(text), "%" JSON_INTEGER_FORMAT,
						      json_integer_value(v)));
	}
	json_decref(doc);
}

static void read_like_applications(const struct oracle *o)
{
	read_headers(o);
	bool params = false;
	for (unsigned i = 0; i < o->n; i++)
		params |= is_param(&o->src[i]);
	if (!params)
		return;
	const char *url = http_msg_url(o->req);
	const char *q = memchr(url, '?', o->req->url_len);
	for (size_t k = 0; k < sizeof(readers) / sizeof(readers[0]); k++) {
		const struct reader *r = &readers[k];
		if (q)
			reader_params(o, r, "the query", q + 1, o->req->url_len - (size_t)(q + 1 - url));
		switch (reader_body(r, o->req)) {
		case READ_NOTHING:
			break;
		case READ_FORM:
			reader_params(o, r, "the body", o->body, o->body_len);
			break;
		case READ_UNKNOWN:
			if (o->body_len)
				disagree(r, "a body it decodes otherwise", o->body, o->body_len, o->id);
			break;
		}
		if (r->cookies)
			reader_cookies(o, r);
	}
	read_json_like_rails(o);
}

/* --- the gateway ---------------------------------------------------------------------------- */

struct body_sink {
	char data[MAX_BODY];
	size_t len;
};

static int on_body(void *arg, const char *data, size_t len)
{
	struct body_sink *b = arg;
	if (len > sizeof(b->data) - b->len)
		abort(); /* the parser lets no more than max_body_bytes through */
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

static void feed(struct http_msg *m, const uint8_t *data, size_t size, size_t *off,
		 struct body_sink *body, enum http_msg_state until_past)
{
	while (m->state == until_past && *off < size) {
		size_t got = http_msg_feed(m, (const char *)data + *off, size - *off, on_body, body);
		if (!got)
			break;
		*off += got;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 8192)
		return 0;
	unsigned set = data[0] % (sizeof(source_sets) / sizeof(source_sets[0]));
	const struct client_id_source *src = source_sets[set].src;
	unsigned n = source_sets[set].n;
	data++;
	size--;

	static struct body_sink body;
	body.len = 0;
	struct http_msg m;
	http_msg_init(&m, HTTP_REQUEST, &limits);
	size_t off = 0;
	feed(&m, data, size, &off, &body, HTTP_MSG_HEAD);
	if (m.state == HTTP_MSG_BODY || m.state == HTTP_MSG_DONE) {
		char id[REGISTRY_CLIENT_ID_MAX + 1];
		enum clientid_result res = CLIENTID_MISSING;
		bool at_head = !clientid_needs_body(src, n, &m);
		if (at_head)
			res = clientid_extract(src, n, &m, id, NULL); /* the body then passes unread */
		else
			m.buffer_body = true;
		feed(&m, data, size, &off, &body, HTTP_MSG_BODY);
		if (!at_head && m.state == HTTP_MSG_DONE)
			res = clientid_extract(src, n, &m, id, NULL);
		if (res == CLIENTID_OK) {
			struct oracle o = {
				.id = id, .src = src, .n = n, .req = &m, .body = body.data,
				.body_len = body.len,
			};
			read_like_applications(&o);
		}
	}
	http_msg_free(&m);
	return 0;
}
