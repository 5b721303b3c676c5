/* The client_id a request claims. Each configured source yields nothing, one value, or a
 * problem; a source that carries the name twice with different values is a conflict, and so
 * are two sources that disagree. Malformed input anywhere (bad percent-encoding, a value that
 * is not a valid client_id) makes the whole claim invalid rather than letting another source
 * decide. */
#include "clientid.h"
#include "hex.h"

#include <string.h>
#include <strings.h>

#define FORM_MEDIA_TYPE "application/x-www-form-urlencoded"

/* application/x-www-form-urlencoded decoding ('+' is a space) of s into out (cap bytes, no
 * terminator). Returns the length, -1 for a bad escape, -2 when it does not fit. */
static long form_decode(const char *s, size_t len, char *out, size_t cap)
{
	size_t o = 0;
	for (size_t i = 0; i < len; i++) {
		char c = s[i];
		if (c == '+') {
			c = ' ';
		} else if (c == '%') {
			if (len - i < 3)
				return -1;
			int hi = hex_digit_value(s[i + 1]), lo = hex_digit_value(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			c = (char)(hi << 4 | lo);
			i += 2;
		}
		if (o == cap)
			return -2;
		out[o++] = c;
	}
	return (long)o;
}

/* What one source found. */
struct found {
	enum clientid_result res; /* OK (value set), MISSING, CONFLICT or INVALID */
	const char *why;
	char value[REGISTRY_CLIENT_ID_MAX + 1];
	size_t len;
};

/* Records one occurrence of the id in a source. */
static void found_add(struct found *f, const char *v, size_t len)
{
	if (f->res == CLIENTID_INVALID)
		return;
	if (!registry_client_id_valid_n(v, len)) {
		f->res = CLIENTID_INVALID;
		f->why = "client_id has invalid characters or length";
		return;
	}
	if (f->res == CLIENTID_MISSING) {
		memcpy(f->value, v, len);
		f->value[len] = '\0';
		f->len = len;
		f->res = CLIENTID_OK;
	} else if (f->len != len || memcmp(f->value, v, len) != 0) {
		f->res = CLIENTID_CONFLICT;
		f->why = "client_id given twice with different values";
	}
}

static void found_invalid(struct found *f, const char *why)
{
	f->res = CLIENTID_INVALID;
	f->why = why;
}

/* Scans an urlencoded list "a=1&b=2" for the parameter name. */
static void scan_urlencoded(const char *s, size_t len, const char *name, struct found *f)
{
	size_t name_len = strlen(name);
	const char *end = s + len;
	while (s < end && f->res != CLIENTID_INVALID) {
		const char *amp = memchr(s, '&', (size_t)(end - s));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(s, '=', (size_t)(pe - s));
		const char *ne = eq ? eq : pe;
		char key[CONFIG_SOURCE_NAME_MAX];
		long kl = form_decode(s, (size_t)(ne - s), key, sizeof(key));
		if (kl >= 0 && (size_t)kl == name_len && memcmp(key, name, name_len) == 0) {
			char val[REGISTRY_CLIENT_ID_MAX + 1];
			const char *v = eq ? eq + 1 : pe;
			long vl = form_decode(v, (size_t)(pe - v), val, sizeof(val));
			if (vl == -1)
				found_invalid(f, "client_id has a bad percent-encoding");
			else if (vl < 0)
				found_invalid(f, "client_id too long");
			else
				found_add(f, val, (size_t)vl);
		}
		s = amp ? amp + 1 : end;
	}
}

static void from_query(const struct http_msg *req, const char *name, struct found *f)
{
	const char *url = http_msg_url(req);
	size_t len = req->url_len;
	const char *hash = memchr(url, '#', len);
	if (hash)
		len = (size_t)(hash - url);
	const char *q = memchr(url, '?', len);
	if (q)
		scan_urlencoded(q + 1, len - (size_t)(q + 1 - url), name, f);
}

static void from_header(const struct http_msg *req, const char *name, struct found *f)
{
	size_t name_len = strlen(name);
	const char *head = buf_head(&req->head);
	for (unsigned i = 0; i < req->n_hdr && f->res != CLIENTID_INVALID; i++) {
		const struct http_header *h = &req->hdr[i];
		if (h->name_len != name_len || strncasecmp(head + h->name_off, name, name_len) != 0)
			continue;
		const char *v = head + h->value_off;
		size_t len = h->value_len;
		while (len && (*v == ' ' || *v == '\t')) {
			v++;
			len--;
		}
		while (len && (v[len - 1] == ' ' || v[len - 1] == '\t'))
			len--;
		found_add(f, v, len);
	}
}

/* 1: the request is a form, 0: it is not, -1: Content-Type is repeated (ambiguous). */
static int form_content_type(const struct http_msg *req)
{
	size_t len;
	unsigned count;
	const char *ct = http_msg_header(req, "content-type", &len, &count);
	if (count > 1)
		return -1;
	if (!ct)
		return 0;
	size_t ml = sizeof(FORM_MEDIA_TYPE) - 1;
	if (len < ml || strncasecmp(ct, FORM_MEDIA_TYPE, ml) != 0)
		return 0;
	size_t i = ml;
	while (i < len && (ct[i] == ' ' || ct[i] == '\t'))
		i++;
	return i == len || ct[i] == ';';
}

static bool has_form_source(const struct client_id_source *src, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (src[i].kind == CID_SOURCE_FORM)
			return true;
	return false;
}

bool clientid_needs_body(const struct client_id_source *src, unsigned n, const struct http_msg *req)
{
	return has_form_source(src, n) && form_content_type(req) != 0;
}

static void from_form(const struct http_msg *req, const char *name, struct found *f)
{
	int form = form_content_type(req);
	if (form == 0)
		return;
	if (form < 0) {
		found_invalid(f, "Content-Type is repeated");
		return;
	}
	if (!req->buffer_body || req->state != HTTP_MSG_DONE) {
		found_invalid(f, "form body was not read");
		return;
	}
	if (req->body.data)
		scan_urlencoded(buf_head(&req->body), req->body.len, name, f);
}

enum clientid_result clientid_extract(const struct client_id_source *src, unsigned n,
				      const struct http_msg *req, char out[REGISTRY_CLIENT_ID_MAX + 1],
				      const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	out[0] = '\0';
	*why = "no client_id in the request";
	enum clientid_result res = CLIENTID_MISSING;
	bool conflict = false;
	for (unsigned i = 0; i < n && i < CONFIG_MAX_CLIENT_ID_SOURCES; i++) {
		struct found f = {.res = CLIENTID_MISSING};
		switch (src[i].kind) {
		case CID_SOURCE_FORM:
			from_form(req, src[i].name, &f);
			break;
		case CID_SOURCE_QUERY:
			from_query(req, src[i].name, &f);
			break;
		case CID_SOURCE_HEADER:
			from_header(req, src[i].name, &f);
			break;
		}
		switch (f.res) {
		case CLIENTID_INVALID:
			*why = f.why;
			out[0] = '\0';
			return CLIENTID_INVALID; /* malformed input decides nothing */
		case CLIENTID_CONFLICT:
			if (!conflict)
				*why = f.why;
			conflict = true;
			break;
		case CLIENTID_MISSING:
			break;
		case CLIENTID_OK:
			if (res == CLIENTID_MISSING) {
				memcpy(out, f.value, f.len + 1);
				res = CLIENTID_OK;
			} else if (strcmp(out, f.value) != 0 && !conflict) {
				*why = "client_id sources disagree";
				conflict = true;
			}
			break;
		}
	}
	if (conflict) {
		out[0] = '\0';
		return CLIENTID_CONFLICT;
	}
	if (res == CLIENTID_OK)
		*why = NULL;
	return res;
}
