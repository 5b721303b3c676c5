/* The client_id a request claims, read so that the application behind the gateway cannot read
 * another one.
 *
 * Each configured source yields nothing, one value, or a problem; a source that carries the name
 * twice with different values is a conflict, and so are two sources that disagree. Malformed
 * input anywhere (bad percent-encoding, a value that is not a valid client_id) makes the whole
 * claim invalid rather than letting another source decide.
 *
 * The application may read parameters differently: Rack merges query and form (the body wins),
 * reads a POST without Content-Type as a form, strips brackets around names (`[client_id]`,
 * `client_id[]`) and, before 3.0, splits on ';' too; Go reads the form then the query, first
 * value, and drops a pair holding a ';'; a Servlet reads the query then the form, first value;
 * PHP takes the last value, drops leading spaces of names, turns ' ', '.' and an unclosed '['
 * into '_', ends a name at NUL, and its $_REQUEST may include cookies; some frameworks ignore the
 * case of names, and Java's equalsIgnoreCase also matches 'ı', 'İ', 'ſ' and the Kelvin sign to
 * ASCII letters; IIS decodes %uXXXX. So, when a form or query source is configured (their names
 * are the "parameter names" below; with header sources only there is none, and parameters and
 * bodies are not looked at):
 *  - A parameter whose (percent-decoded) name is exactly a parameter name counts wherever it is,
 *    query or form body: where the configuration does not list it (a query client_id with only
 *    form:client_id configured) it must agree with the claim but cannot make the claim alone.
 *  - A name that only resembles one is refused (400): the same letters and digits in any case
 *    once decoded, whatever else it holds, possibly followed by a NUL, '[' or ']' and anything
 *    (`Client_Id`, `CLIENT_ID`, `client_id[]`, `client.id`, `+client_id`, `client_id%00x`).
 *    Stacks disagree on whether it is the client_id, so no reading of it can be checked.
 *  - A ';' in a query or form pair where either splitting yields such a name is refused (400),
 *    and so is a cookie with such a name. (A '#' in the request target, which some servers keep
 *    in the query, never gets here: http.c refuses it.)
 *  - Bodies whose parameters the gateway does not read are refused (400): any multipart type
 *    (Rack, Go and Servlets merge its fields into the parameters, whether or not a form source
 *    is configured), a form with a Content-Encoding, a form whose charset is not UTF-8 or
 *    US-ASCII, a repeated Content-Type, text after the form media type other than parameters
 *    (PHP ends the media type at ',' or whitespace, Rack at ','). A POST body without
 *    Content-Type is read as a form, as Rack does, but its client_ids cannot make the claim
 *    alone either.
 *  - Rails merges the top-level members of a JSON body into the parameters (any Content-Type
 *    that mentions json, whatever the method), so such a body is read too: a member named
 *    exactly like a parameter must be a string and agree with the claim, one that resembles a
 *    parameter name, a body that does not parse, repeats a member or has a Content-Encoding
 *    is refused (400). */
#include "clientid.h"
#include "hex.h"

#include <jansson.h>
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

/* Text as the most lenient reader sees it, one folded character at a time: letters and digits
 * lowercased, the four non-ASCII letters whose case mapping is ASCII counted as that letter
 * (Java's equalsIgnoreCase, Go's ToLower), everything else skipped but a NUL, '[' or ']', which
 * ends a name for some readers (a NUL ends a C string, brackets start Rack's and PHP's nested
 * names). With decode, percent-encoding is undone first ('+', %XX, and %uXXXX below 0x80 as IIS
 * does; a bad escape stays as it is, as in PHP). */
struct fold {
	const char *s, *end;
	bool decode;
	unsigned char utf8[3]; /* a non-ASCII sequence being read */
	unsigned n_utf8;
};

enum { FOLD_END = -1, FOLD_STOP = -2 };

static const struct {
	const char *utf8;
	char ascii;
} case_mapped_to_ascii[] = {
	{"\xc4\xb0", 'i'},     /* U+0130 capital I with dot: lowercases to 'i' */
	{"\xc4\xb1", 'i'},     /* U+0131 dotless i: uppercases to 'I' */
	{"\xc5\xbf", 's'},     /* U+017F long s: uppercases to 'S' */
	{"\xe2\x84\xaa", 'k'}, /* U+212A Kelvin sign: lowercases to 'k' */
};

static unsigned char fold_read_byte(struct fold *f)
{
	const char *s = f->s++;
	size_t left = (size_t)(f->end - s);
	if (!f->decode || (*s != '+' && *s != '%'))
		return (unsigned char)*s;
	if (*s == '+')
		return ' ';
	if (left >= 3 && hex_digit_value(s[1]) >= 0 && hex_digit_value(s[2]) >= 0) {
		f->s += 2;
		return (unsigned char)(hex_digit_value(s[1]) << 4 | hex_digit_value(s[2]));
	}
	if (left >= 6 && (s[1] == 'u' || s[1] == 'U') && s[2] == '0' && s[3] == '0' &&
	    hex_digit_value(s[4]) >= 0 && hex_digit_value(s[4]) < 8 && hex_digit_value(s[5]) >= 0) {
		f->s += 5;
		return (unsigned char)(hex_digit_value(s[4]) << 4 | hex_digit_value(s[5]));
	}
	return '%';
}

/* The next folded character, FOLD_STOP, or FOLD_END. */
static int fold_next(struct fold *f)
{
	while (f->s < f->end) {
		unsigned char b = fold_read_byte(f);
		if (b >= 0x80) {
			if (b >= 0xc0 || f->n_utf8 == sizeof(f->utf8))
				f->n_utf8 = 0; /* a lead byte starts a new sequence */
			f->utf8[f->n_utf8++] = b;
			for (size_t i = 0; i < sizeof(case_mapped_to_ascii) / sizeof(case_mapped_to_ascii[0]); i++) {
				const char *seq = case_mapped_to_ascii[i].utf8;
				if (strlen(seq) == f->n_utf8 && memcmp(seq, f->utf8, f->n_utf8) == 0) {
					f->n_utf8 = 0;
					return case_mapped_to_ascii[i].ascii;
				}
			}
			continue;
		}
		f->n_utf8 = 0;
		if (b == '\0' || b == '[' || b == ']')
			return FOLD_STOP;
		if ((b >= '0' && b <= '9') || (b >= 'a' && b <= 'z'))
			return b;
		if (b >= 'A' && b <= 'Z')
			return b - 'A' + 'a';
	}
	return FOLD_END;
}

/* A parameter name, folded: its letters and digits, and after how many of them a stop came. */
struct name_fold {
	char alnum[CONFIG_SOURCE_NAME_MAX];
	size_t len; /* letters and digits seen; beyond the capacity only counted */
	bool stop_at[CONFIG_SOURCE_NAME_MAX + 1];
};

static void fold_name(struct name_fold *nf, const char *s, size_t len)
{
	memset(nf, 0, sizeof(*nf));
	struct fold f = {.s = s, .end = s + len, .decode = true};
	for (int c; (c = fold_next(&f)) != FOLD_END;) {
		if (c != FOLD_STOP) {
			if (nf->len < sizeof(nf->alnum))
				nf->alnum[nf->len] = (char)c;
			nf->len++;
		} else if (nf->len <= CONFIG_SOURCE_NAME_MAX) {
			nf->stop_at[nf->len] = true;
		}
	}
}

/* name, folded, is target: its letters and digits begin with target's, and end there or go on
 * only after a NUL or bracket. */
static bool fold_resembles(const struct name_fold *name, const struct name_fold *target)
{
	return target->len <= sizeof(target->alnum) && name->len >= target->len &&
	       memcmp(name->alnum, target->alnum, target->len) == 0 &&
	       (name->len == target->len || name->stop_at[target->len]);
}

#define FOLD_NEEDLE_MAX 32

/* Whether the header value s, folded (not decoded), holds needle (lowercase letters and
 * digits, at most FOLD_NEEDLE_MAX). */
static bool fold_contains(const char *s, size_t len, const char *needle)
{
	size_t n = strlen(needle), seen = 0;
	char last[FOLD_NEEDLE_MAX]; /* the last n folded characters, a ring */
	struct fold f = {.s = s, .end = s + len};
	for (int c; (c = fold_next(&f)) != FOLD_END;) {
		if (c == FOLD_STOP)
			continue;
		last[seen++ % n] = (char)c;
		size_t i = 0;
		while (seen >= n && i < n && last[(seen + i) % n] == needle[i])
			i++;
		if (i == n)
			return true;
	}
	return false;
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

/* Records a percent-encoded occurrence. */
static void found_encoded(struct found *f, const char *v, size_t len)
{
	char val[REGISTRY_CLIENT_ID_MAX + 1];
	long vl = form_decode(v, len, val, sizeof(val));
	if (vl == -1)
		found_invalid(f, "client_id has a bad percent-encoding");
	else if (vl < 0)
		found_invalid(f, "client_id too long");
	else
		found_add(f, val, (size_t)vl);
}

/* Where a parameter was read: CID_SOURCE_QUERY, CID_SOURCE_FORM, or a POST body without
 * Content-Type, which no source lists. */
enum { UNLISTED_PLACE = -1 };

/* One request, read once: what each configured source found, the parameters found where the
 * configuration does not list them (they must agree, they cannot claim alone), and the first
 * reason the request is ambiguous. */
struct scan {
	const struct client_id_source *src;
	unsigned n;
	bool any_param;                                     /* a form or query source exists */
	struct name_fold param_fold[CONFIG_MAX_CLIENT_ID_SOURCES]; /* of the form and query sources */
	struct found found[CONFIG_MAX_CLIENT_ID_SOURCES];
	struct found stray;
	const char *ambiguous;
};

static bool is_param_source(const struct client_id_source *s)
{
	return s->kind == CID_SOURCE_FORM || s->kind == CID_SOURCE_QUERY;
}

static void scan_init(struct scan *sc, const struct client_id_source *src, unsigned n)
{
	memset(sc, 0, sizeof(*sc));
	sc->src = src;
	sc->n = n < CONFIG_MAX_CLIENT_ID_SOURCES ? n : CONFIG_MAX_CLIENT_ID_SOURCES;
	sc->stray.res = CLIENTID_MISSING;
	for (unsigned i = 0; i < sc->n; i++) {
		sc->found[i].res = CLIENTID_MISSING;
		if (is_param_source(&src[i])) {
			fold_name(&sc->param_fold[i], src[i].name, strlen(src[i].name));
			sc->any_param = true;
		}
	}
}

static void scan_ambiguous(struct scan *sc, const char *why)
{
	if (!sc->ambiguous)
		sc->ambiguous = why;
}

/* The parameter name that the encoded name decodes to exactly, or NULL. */
static const char *exact_param(const struct scan *sc, const char *name, size_t len)
{
	char key[CONFIG_SOURCE_NAME_MAX];
	long kl = form_decode(name, len, key, sizeof(key));
	if (kl <= 0)
		return NULL;
	for (unsigned i = 0; i < sc->n; i++)
		if (is_param_source(&sc->src[i]) && strlen(sc->src[i].name) == (size_t)kl &&
		    memcmp(key, sc->src[i].name, (size_t)kl) == 0)
			return sc->src[i].name;
	return NULL;
}

static bool resembles_param(const struct scan *sc, const char *name, size_t len)
{
	struct name_fold f;
	fold_name(&f, name, len);
	for (unsigned i = 0; i < sc->n; i++)
		if (is_param_source(&sc->src[i]) && fold_resembles(&f, &sc->param_fold[i]))
			return true;
	return false;
}

static bool named_like_param(const struct scan *sc, const char *name, size_t len)
{
	return exact_param(sc, name, len) || resembles_param(sc, name, len);
}

/* The length of a pair's name: up to its first '=', or all of it. */
static size_t pair_name_len(const char *s, const char *end)
{
	const char *eq = memchr(s, '=', (size_t)(end - s));
	return (size_t)((eq ? eq : end) - s);
}

/* One "name=value" pair (no '&' or ';' in it). */
static void scan_pair(struct scan *sc, const char *s, const char *end, int place)
{
	size_t name_len = pair_name_len(s, end);
	const char *name = exact_param(sc, s, name_len);
	if (!name) {
		if (resembles_param(sc, s, name_len))
			scan_ambiguous(sc, "a parameter name resembles the client_id parameter's "
					   "(case, brackets, encoding or padding differ)");
		return;
	}
	struct found *f = &sc->stray;
	for (unsigned i = 0; i < sc->n; i++)
		if ((int)sc->src[i].kind == place && strcmp(sc->src[i].name, name) == 0)
			f = &sc->found[i];
	const char *v = s + name_len < end ? s + name_len + 1 : end;
	found_encoded(f, v, (size_t)(end - v));
}

/* A pair holding a ';': Rack before 3.0 and Python before 3.9.2 split it there, Go drops it,
 * Servlets and PHP keep the ';' in the value. When either reading has a parameter name, none
 * can be checked. */
static void scan_semicolon_pair(struct scan *sc, const char *s, const char *end)
{
	bool named = named_like_param(sc, s, pair_name_len(s, end));
	while (!named) {
		const char *semi = memchr(s, ';', (size_t)(end - s));
		const char *piece_end = semi ? semi : end;
		named = named_like_param(sc, s, pair_name_len(s, piece_end));
		if (!semi)
			break;
		s = semi + 1;
	}
	if (named)
		scan_ambiguous(sc, "a ';' next to the client_id parameter (some applications split "
				   "parameters on it)");
}

/* An urlencoded list "a=1&b=2". */
static void scan_params(struct scan *sc, const char *s, size_t len, int place)
{
	const char *end = s + len;
	while (s < end) {
		const char *amp = memchr(s, '&', (size_t)(end - s));
		const char *pair_end = amp ? amp : end;
		if (memchr(s, ';', (size_t)(pair_end - s)))
			scan_semicolon_pair(sc, s, pair_end);
		else if (pair_end > s)
			scan_pair(sc, s, pair_end, place);
		s = amp ? amp + 1 : end;
	}
}

static void scan_query(struct scan *sc, const struct http_msg *req)
{
	const char *url = http_msg_url(req);
	size_t len = req->url_len;
	const char *q = memchr(url, '?', len);
	if (q)
		scan_params(sc, q + 1, len - (size_t)(q + 1 - url), CID_SOURCE_QUERY);
}

/* The next header named name (lowercase) at or after index *i, or NULL; *i moves past it. */
static const struct http_header *header_next(const struct http_msg *req, const char *name,
					     unsigned *i)
{
	size_t name_len = strlen(name);
	const char *head = buf_head(&req->head);
	for (; *i < req->n_hdr; (*i)++) {
		const struct http_header *h = &req->hdr[*i];
		if (h->name_len == name_len && strncasecmp(head + h->name_off, name, name_len) == 0) {
			(*i)++;
			return h;
		}
	}
	return NULL;
}

/* PHP's $_REQUEST includes cookies unless request_order leaves them out. */
static void scan_cookies(struct scan *sc, const struct http_msg *req)
{
	const char *head = buf_head(&req->head);
	unsigned i = 0;
	const struct http_header *h;
	while ((h = header_next(req, "cookie", &i))) {
		const char *s = head + h->value_off, *end = s + h->value_len;
		while (s < end) {
			const char *sep = s;
			while (sep < end && *sep != ';' && *sep != ',')
				sep++;
			if (named_like_param(sc, s, pair_name_len(s, sep))) {
				scan_ambiguous(sc, "a cookie is named like the client_id parameter");
				return;
			}
			s = sep < end ? sep + 1 : end;
		}
	}
}

enum body_kind {
	BODY_NONE,       /* no body, or one no application reads parameters from */
	BODY_FORM,       /* application/x-www-form-urlencoded, UTF-8 or US-ASCII, not encoded */
	BODY_UNTYPED,    /* a POST body without a media type: Rack reads it as a form */
	BODY_JSON,       /* a JSON body: Rails merges its top-level members into the parameters */
	BODY_UNREADABLE, /* parameters the gateway does not read */
};

/* Ends a Content-Type parameter's name or value; a quoted value may not hold these either, so
 * that no "charset=" hides in one. */
static bool ends_param_token(char c)
{
	return http_is_ows(c) || c == ';' || c == ',' || c == '=' || c == '"' || c == '\\';
}

static bool charset_is_utf8_or_ascii(const char *s, size_t len)
{
	return (len == 5 && strncasecmp(s, "utf-8", 5) == 0) ||
	       (len == 8 && strncasecmp(s, "us-ascii", 8) == 0);
}

static bool ends_with_ci(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);
	return len >= n && strncasecmp(s + len - n, suffix, n) == 0;
}

/* What follows the form media type: *(OWS ";" OWS name "=" value) OWS, the value a token or a
 * quoted token. A charset, given once, must be UTF-8 or US-ASCII, which read the client_id's
 * bytes as the gateway does (a Servlet decodes the body in the charset it names); any name
 * ending in "charset" counts, as Tomcat before 8.5 finds it by searching for "charset=". */
static enum body_kind form_parameters(const char *p, size_t len, const char **why)
{
	bool charset_seen = false;
	size_t i = 0;
	for (;;) {
		while (i < len && http_is_ows(p[i]))
			i++;
		if (i == len)
			return BODY_FORM;
		if (p[i++] != ';')
			break;
		while (i < len && http_is_ows(p[i]))
			i++;
		if (i == len)
			return BODY_FORM;
		size_t name = i;
		while (i < len && !ends_param_token(p[i]))
			i++;
		size_t name_len = i - name;
		if (name_len == 0 || i == len || p[i++] != '=')
			break;
		bool quoted = i < len && p[i] == '"';
		if (quoted)
			i++;
		size_t value = i;
		while (i < len && !ends_param_token(p[i]))
			i++;
		size_t value_len = i - value;
		if (quoted && (i == len || p[i++] != '"'))
			break;
		if (ends_with_ci(p + name, name_len, "charset")) {
			if (charset_seen || !charset_is_utf8_or_ascii(p + value, value_len)) {
				*why = "the form's charset is not UTF-8 or US-ASCII";
				return BODY_UNREADABLE;
			}
			charset_seen = true;
		}
	}
	*why = "the form's Content-Type has text after the media type";
	return BODY_UNREADABLE;
}

#define FORM_FOLDED "applicationxwwwformurlencoded"
_Static_assert(sizeof(FORM_FOLDED) <= FOLD_NEEDLE_MAX, "fold_contains needle");

/* The form media type exactly (case aside), then parameters. Any other spelling that a reader
 * could still take for a form or multipart is refused: PHP ends the media type at ',' or
 * whitespace, Rack at ',', Go lowercases it with Unicode case mapping and trims Unicode
 * spaces. A Content-Type without a media type is none (Rack reads a POST body as a form). */
static enum body_kind content_type_kind(const char *ct, size_t len, const char **why)
{
	if (fold_contains(ct, len, "multipart")) {
		*why = "multipart bodies are refused: the gateway does not read their fields";
		return BODY_UNREADABLE;
	}
	size_t i = 0;
	while (i < len && http_is_ows(ct[i]))
		i++;
	const char *type = ct + i;
	while (i < len && ct[i] != ';' && ct[i] != ',' && !http_is_ows(ct[i]))
		i++;
	size_t type_len = (size_t)(ct + i - type);
	if (type_len == 0)
		return BODY_UNTYPED;
	if (type_len == sizeof(FORM_MEDIA_TYPE) - 1 && strncasecmp(type, FORM_MEDIA_TYPE, type_len) == 0)
		return form_parameters(ct + i, len - i, why);
	if (fold_contains(ct, len, FORM_FOLDED)) {
		*why = "the Content-Type names the form media type in an unusual way";
		return BODY_UNREADABLE;
	}
	return fold_contains(ct, len, "json") ? BODY_JSON : BODY_NONE;
}

static enum body_kind body_kind(const struct http_msg *req, const char **why)
{
	if (!req->chunked && !(req->has_content_length && req->content_length > 0))
		return BODY_NONE;
	size_t len;
	unsigned count;
	const char *ct = http_msg_header(req, "content-type", &len, &count);
	if (count > 1) {
		*why = "Content-Type is repeated";
		return BODY_UNREADABLE;
	}
	enum body_kind kind = ct ? content_type_kind(ct, len, why) : BODY_UNTYPED;
	if (kind == BODY_UNTYPED && req->method != HTTP_POST)
		return BODY_NONE;
	if ((kind == BODY_FORM || kind == BODY_UNTYPED || kind == BODY_JSON) &&
	    http_msg_header(req, "content-encoding", NULL, NULL)) {
		*why = "a form or JSON body with a Content-Encoding is refused";
		return BODY_UNREADABLE;
	}
	return kind;
}

static bool has_param_source(const struct client_id_source *src, unsigned n)
{
	for (unsigned i = 0; i < n && i < CONFIG_MAX_CLIENT_ID_SOURCES; i++)
		if (is_param_source(&src[i]))
			return true;
	return false;
}

bool clientid_needs_body(const struct client_id_source *src, unsigned n, const struct http_msg *req)
{
	const char *why;
	if (!has_param_source(src, n))
		return false;
	enum body_kind kind = body_kind(req, &why);
	return kind == BODY_FORM || kind == BODY_UNTYPED || kind == BODY_JSON;
}

/* The top-level members of a JSON object body, as Rails merges them into the parameters. A
 * member name is literal (JSON has no percent-encoding): one holding '%' or '+' can only
 * resemble a parameter name. */
static void scan_json(struct scan *sc, const char *body, size_t len)
{
	json_error_t err;
	json_t *doc = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
	if (!doc) {
		scan_ambiguous(sc, "a JSON body that does not parse or repeats a member");
		return;
	}
	const char *key;
	json_t *value;
	json_object_foreach(doc, key, value) {
		size_t key_len = strlen(key);
		bool literal = !strpbrk(key, "%+");
		if (!literal || !exact_param(sc, key, key_len)) {
			if (resembles_param(sc, key, key_len))
				scan_ambiguous(sc, "a JSON member name resembles the client_id parameter's");
			continue;
		}
		if (!json_is_string(value)) {
			scan_ambiguous(sc, "a JSON member named like the client_id parameter is not a "
					   "string");
			continue;
		}
		found_add(&sc->stray, json_string_value(value), json_string_length(value));
	}
	json_decref(doc);
}

static void scan_body(struct scan *sc, const struct http_msg *req)
{
	const char *why = NULL;
	enum body_kind kind = body_kind(req, &why);
	if (kind == BODY_NONE)
		return;
	if (kind == BODY_UNREADABLE) {
		scan_ambiguous(sc, why);
		return;
	}
	if (!req->buffer_body || req->state != HTTP_MSG_DONE) {
		found_invalid(&sc->stray, "form body was not read");
		return;
	}
	if (kind == BODY_JSON)
		scan_json(sc, req->body.data ? buf_head(&req->body) : "", req->body.len);
	else if (req->body.data)
		scan_params(sc, buf_head(&req->body), req->body.len,
			    kind == BODY_FORM ? CID_SOURCE_FORM : UNLISTED_PLACE);
}

bool clientid_needs_token(const struct client_id_source *src, unsigned n)
{
	for (unsigned i = 0; i < n && i < CONFIG_MAX_CLIENT_ID_SOURCES; i++)
		if (src[i].kind == CID_SOURCE_JWT)
			return true;
	return false;
}

/* A claim of the verified token, which only a string can carry. */
static void from_claim(const json_t *claims, const char *name, struct found *f)
{
	json_t *v = claims ? json_object_get(claims, name) : NULL;
	if (!v)
		return;
	if (json_is_string(v))
		found_add(f, json_string_value(v), json_string_length(v));
	else
		found_invalid(f, "the token's client_id claim is not a string");
}

static void from_header(const struct http_msg *req, const char *name, struct found *f)
{
	const char *head = buf_head(&req->head);
	unsigned i = 0;
	const struct http_header *h;
	while ((h = header_next(req, name, &i)) && f->res != CLIENTID_INVALID) {
		const char *v = head + h->value_off;
		size_t len = h->value_len;
		while (len && http_is_ows(*v)) {
			v++;
			len--;
		}
		while (len && http_is_ows(v[len - 1]))
			len--;
		found_add(f, v, len);
	}
}

enum clientid_result clientid_extract(const struct client_id_source *src, unsigned n,
				      const struct http_msg *req, char out[REGISTRY_CLIENT_ID_MAX + 1],
				      const char **why)
{
	return clientid_extract_claims(src, n, req, NULL, out, why);
}

enum clientid_result clientid_extract_claims(const struct client_id_source *src, unsigned n,
					     const struct http_msg *req, const json_t *claims,
					     char out[REGISTRY_CLIENT_ID_MAX + 1], const char **why)
{
	const char *dummy;
	if (!why)
		why = &dummy;
	out[0] = '\0';
	struct scan sc;
	scan_init(&sc, src, n);
	if (sc.any_param) {
		scan_query(&sc, req);
		scan_cookies(&sc, req);
		scan_body(&sc, req);
	}
	for (unsigned i = 0; i < sc.n; i++)
		if (src[i].kind == CID_SOURCE_HEADER)
			from_header(req, src[i].name, &sc.found[i]);
		else if (src[i].kind == CID_SOURCE_JWT)
			from_claim(claims, src[i].name, &sc.found[i]);
	if (sc.ambiguous) {
		*why = sc.ambiguous;
		return CLIENTID_AMBIGUOUS;
	}

	*why = "no client_id in the request";
	enum clientid_result res = CLIENTID_MISSING;
	bool conflict = false;
	for (unsigned i = 0; i <= sc.n; i++) {
		const struct found *f = i < sc.n ? &sc.found[i] : &sc.stray;
		switch (f->res) {
		case CLIENTID_INVALID:
			*why = f->why;
			out[0] = '\0';
			return CLIENTID_INVALID; /* malformed input decides nothing */
		case CLIENTID_CONFLICT:
			if (!conflict)
				*why = f->why;
			conflict = true;
			break;
		case CLIENTID_MISSING:
		case CLIENTID_AMBIGUOUS:
			break;
		case CLIENTID_OK:
			if (res == CLIENTID_MISSING && f == &sc.stray) {
				*why = "client_id only where the configuration does not read it";
			} else if (res == CLIENTID_MISSING) {
				memcpy(out, f->value, f->len + 1);
				res = CLIENTID_OK;
			} else if (strcmp(out, f->value) != 0 && !conflict) {
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
