/* client_id extraction: each source, percent-decoding, conflicts within and across sources,
 * missing and invalid values, form Content-Type detection, and the requests an application
 * could read another client_id from (look-alike names, ';', '#', cookies, unread bodies,
 * client_ids where the configuration does not look). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "clientid.h"

static const struct http_limits limits = {
	.max_header_bytes = 8192,
	.max_body_bytes = 4096,
	.max_buffered_body = 4096,
};

static const struct client_id_source all_sources[] = {
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
static const struct client_id_source header_only[] = {{CID_SOURCE_HEADER, "x-client-id"}};

/* Parses raw as a request, buffering the body when the sources need it (as the proxy does). */
static void parse(struct http_msg *m, const char *raw, const struct client_id_source *src,
		  unsigned n)
{
	http_msg_init(m, HTTP_REQUEST, &limits);
	size_t len = strlen(raw);
	size_t off = http_msg_feed(m, raw, len, NULL, NULL);
	if (m->state != HTTP_MSG_BODY && m->state != HTTP_MSG_DONE)
		fail_msg("request did not parse: %s", m->error_reason);
	if (clientid_needs_body(src, n, m))
		m->buffer_body = true;
	while (m->state == HTTP_MSG_BODY && off < len)
		off += http_msg_feed(m, raw + off, len - off, NULL, NULL);
}

struct case_ {
	const char *desc;
	const char *raw;
	enum clientid_result want;
	const char *id; /* when OK */
};

#define REQ(line, hdrs, body) line " HTTP/1.1\r\nHost: gw\r\n" hdrs "\r\n" body
#define FORM "Content-Type: application/x-www-form-urlencoded\r\n"
#define CL(n) "Content-Length: " #n "\r\n"
#define JSON "Content-Type: application/json\r\n"

static const struct case_ cases[] = {
	{"nothing", REQ("GET /a", "", ""), CLIENTID_MISSING, NULL},
	{"query", REQ("GET /a?client_id=tpp1", "", ""), CLIENTID_OK, "tpp1"},
	{"query among others", REQ("GET /a?x=1&client_id=tpp1&y=2", "", ""), CLIENTID_OK, "tpp1"},
	{"query percent-decoded", REQ("GET /a?client_id=tpp%2D1%7e", "", ""), CLIENTID_OK, "tpp-1~"},
	{"query encoded name", REQ("GET /a?client%5Fid=tpp1", "", ""), CLIENTID_OK, "tpp1"},
	{"query name prefix is not a match", REQ("GET /a?client_idx=tpp1&xclient_id=b", "", ""),
	 CLIENTID_MISSING, NULL},
	{"query name in another case", REQ("GET /a?Client_Id=tpp1", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name in capitals beside the exact one", REQ("GET /a?client_id=t&CLIENT_ID=v", "", ""),
	 CLIENTID_AMBIGUOUS, NULL},
	{"query name in capitals, same value", REQ("GET /a?client_id=t&CLIENT_ID=t", "", ""),
	 CLIENTID_AMBIGUOUS, NULL},
	{"query name with []", REQ("GET /a?client_id=t&client_id[]=v", "", ""), CLIENTID_AMBIGUOUS,
	 NULL},
	{"query name with [key]", REQ("GET /a?client_id%5Bx%5D=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name in brackets", REQ("GET /a?[client_id]=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with encoded NUL", REQ("GET /a?client_id%00=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with NUL and more", REQ("GET /a?client_id%00junk=v", "", ""), CLIENTID_AMBIGUOUS,
	 NULL},
	{"query name with a dot", REQ("GET /a?client.id=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with a trailing dot", REQ("GET /a?client_id.=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with a leading plus", REQ("GET /a?+client_id=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with a trailing space", REQ("GET /a?client_id%20=v", "", ""), CLIENTID_AMBIGUOUS,
	 NULL},
	{"query name with %u escape", REQ("GET /a?client%u005Fid=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with a bad escape", REQ("GET /a?client_id%=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with dotless i", REQ("GET /a?cl%C4%B1ent_id=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query name with dotted capital I", REQ("GET /a?cl%C4%B0ent_id=v", "", ""), CLIENTID_AMBIGUOUS,
	 NULL},
	{"query name padded past 64 bytes",
	 REQ("GET /a?++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++client_id=v", "",
	     ""),
	 CLIENTID_AMBIGUOUS, NULL},
	{"query name with a letter more", REQ("GET /a?client_ids=v&client_id2=w", "", ""),
	 CLIENTID_MISSING, NULL},
	{"query name with [ after a letter more", REQ("GET /a?client_idx[]=v", "", ""), CLIENTID_MISSING,
	 NULL},
	{"query plus is a space", REQ("GET /a?client_id=tpp+1", "", ""), CLIENTID_INVALID, NULL},
	{"query encoded plus", REQ("GET /a?client_id=tpp%2B1", "", ""), CLIENTID_OK, "tpp+1"},
	{"query bad escape", REQ("GET /a?client_id=tpp%2", "", ""), CLIENTID_INVALID, NULL},
	{"query bad hex", REQ("GET /a?client_id=tpp%zz", "", ""), CLIENTID_INVALID, NULL},
	{"query encoded NUL", REQ("GET /a?client_id=tpp%00x", "", ""), CLIENTID_INVALID, NULL},
	{"query encoded quote", REQ("GET /a?client_id=a%22b", "", ""), CLIENTID_INVALID, NULL},
	{"query encoded backslash", REQ("GET /a?client_id=a%5Cb", "", ""), CLIENTID_INVALID, NULL},
	{"query non-ASCII", REQ("GET /a?client_id=a%C3%A9", "", ""), CLIENTID_INVALID, NULL},
	{"query empty value", REQ("GET /a?client_id=", "", ""), CLIENTID_INVALID, NULL},
	{"query name without =", REQ("GET /a?client_id", "", ""), CLIENTID_INVALID, NULL},
	{"query 64 bytes",
	 REQ("GET /a?client_id=0123456789012345678901234567890123456789012345678901234567890123", "", ""),
	 CLIENTID_OK, "0123456789012345678901234567890123456789012345678901234567890123"},
	{"query 65 bytes",
	 REQ("GET /a?client_id=01234567890123456789012345678901234567890123456789012345678901234", "", ""),
	 CLIENTID_INVALID, NULL},
	{"query twice, equal", REQ("GET /a?client_id=t1&client_id=t1", "", ""), CLIENTID_OK, "t1"},
	{"query twice, equal once encoded", REQ("GET /a?client_id=t1&client_id=%741", "", ""),
	 CLIENTID_OK, "t1"},
	{"query twice, different", REQ("GET /a?client_id=t1&client_id=t2", "", ""), CLIENTID_CONFLICT,
	 NULL},
	{"query empty pairs", REQ("GET /a?&&client_id=t1&", "", ""), CLIENTID_OK, "t1"},
	{"query ';' before the name", REQ("GET /a?a=1;client_id=v", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query ';' in the value", REQ("GET /a?client_id=t1;x=1", "", ""), CLIENTID_AMBIGUOUS, NULL},
	{"query ';' before a look-alike", REQ("GET /a?a=1;Client_Id=v", "", ""), CLIENTID_AMBIGUOUS,
	 NULL},
	{"query ';' elsewhere", REQ("GET /a?a=1;b=2&client_id=t1", "", ""), CLIENTID_OK, "t1"},
	{"query ';' before an encoded name", REQ("GET /a?a;client%5Fid=v&client_id=t1", "", ""),
	 CLIENTID_AMBIGUOUS, NULL},

	{"cookie named client_id", REQ("GET /a?client_id=t1", "Cookie: client_id=v\r\n", ""),
	 CLIENTID_AMBIGUOUS, NULL},
	{"cookie named like client_id", REQ("GET /a?client_id=t1", "Cookie: a=1; Client.Id=v\r\n", ""),
	 CLIENTID_AMBIGUOUS, NULL},
	{"other cookies", REQ("GET /a?client_id=t1", "Cookie: session=client_id\r\n", ""), CLIENTID_OK,
	 "t1"},

	{"header", REQ("GET /a", "X-Client-Id: tpp1\r\n", ""), CLIENTID_OK, "tpp1"},
	{"header name case-insensitive", REQ("GET /a", "x-CLIENT-id:   tpp1  \r\n", ""), CLIENTID_OK,
	 "tpp1"},
	{"header not percent-decoded", REQ("GET /a", "X-Client-Id: t%41\r\n", ""), CLIENTID_OK, "t%41"},
	{"header with inner space", REQ("GET /a", "X-Client-Id: t 1\r\n", ""), CLIENTID_INVALID, NULL},
	{"header list", REQ("GET /a", "X-Client-Id: t1, t2\r\n", ""), CLIENTID_INVALID, NULL},
	{"header empty", REQ("GET /a", "X-Client-Id:\r\n", ""), CLIENTID_INVALID, NULL},
	{"header twice, equal", REQ("GET /a", "X-Client-Id: t1\r\nX-Client-Id: t1\r\n", ""), CLIENTID_OK,
	 "t1"},
	{"header twice, different", REQ("GET /a", "X-Client-Id: t1\r\nX-Client-Id: t2\r\n", ""),
	 CLIENTID_CONFLICT, NULL},
	{"header with a quote", REQ("GET /a", "X-Client-Id: t\"1\r\n", ""), CLIENTID_INVALID, NULL},

	{"form exact", REQ("POST /t", FORM CL(27), "grant_type=x&client_id=tpp1"), CLIENTID_OK, "tpp1"},
	{"form with charset", REQ("POST /t", "Content-Type: Application/X-WWW-Form-Urlencoded ; charset=utf-8\r\n" CL(14),
				  "client_id=tpp1"),
	 CLIENTID_OK, "tpp1"},
	{"form chunked",
	 REQ("POST /t", FORM "Transfer-Encoding: chunked\r\n", "5\r\nclien\r\n9\r\nt_id=tpp1\r\n0\r\n\r\n"),
	 CLIENTID_OK, "tpp1"},
	{"form encoded", REQ("POST /t", FORM CL(15), "client_id=t%2F1"), CLIENTID_OK, "t/1"},
	{"form plus", REQ("POST /t", FORM CL(13), "client_id=t+1"), CLIENTID_INVALID, NULL},
	{"a JSON Content-Type on a body that is not JSON", REQ("POST /t", "Content-Type: application/json\r\n" CL(14), "client_id=tpp1"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form-like media type", REQ("POST /t", "Content-Type: application/x-www-form-urlencodedx\r\n" CL(14),
				     "client_id=tpp1"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form media type with a dotted capital I (Go lowercases it)",
	 REQ("POST /t", "Content-Type: appl\xc4\xb0" "cation/x-www-form-urlencoded\r\n" CL(11), "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"a Content-Type naming multipart", REQ("POST /t", "Content-Type: text/plain; x=multipart\r\n" CL(11), "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form with a parameter ending in charset",
	 REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; xcharset=utf-16\r\n" CL(11), "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form with charset= in a quoted value",
	 REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; x=\"a;charset=utf-16\"\r\n" CL(11), "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"no Content-Type", REQ("POST /t", CL(14), "client_id=tpp1"), CLIENTID_MISSING, NULL},
	{"two Content-Types", REQ("POST /t", FORM "Content-Type: text/plain\r\n" CL(14), "client_id=tpp1"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form twice, different", REQ("POST /t", FORM CL(23), "client_id=a&client_id=b"),
	 CLIENTID_CONFLICT, NULL},
	{"form name in another case", REQ("POST /t", FORM CL(23), "client_id=t&Client_Id=v"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form name with a leading space", REQ("POST /t", FORM CL(12), " client_id=v"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form ';' before the name", REQ("POST /t", FORM CL(27), "a=1;client_id=v&client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form with charset in quotes", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; charset=\"UTF-8\"\r\n" CL(11),
					    "client_id=t"),
	 CLIENTID_OK, "t"},
	{"form in US-ASCII", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded;charset=us-ascii;x=y\r\n" CL(11),
				 "client_id=t"),
	 CLIENTID_OK, "t"},
	{"form with a trailing ';'", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded;\r\n" CL(11),
					 "client_id=t"),
	 CLIENTID_OK, "t"},
	{"form in UTF-16", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; charset=utf-16\r\n" CL(11),
			       "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form in UTF-7", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; charset=utf-7\r\n" CL(11),
			      "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form in EBCDIC", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; charset=ibm037\r\n" CL(11),
			       "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form with two charsets", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded; charset=utf-8; charset=utf-16\r\n" CL(11),
				       "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form with a comma after the type", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded, text/plain\r\n" CL(11),
						 "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form with a word after the type", REQ("POST /t", "Content-Type: application/x-www-form-urlencoded x\r\n" CL(11),
						"client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form gzip-encoded", REQ("POST /t", FORM "Content-Encoding: gzip\r\n" CL(11), "client_id=t"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"JSON with a Content-Encoding", REQ("POST /t?client_id=t", "Content-Type: application/json\r\nContent-Encoding: gzip\r\n" CL(2), "{}"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"multipart", REQ("POST /t?client_id=t", "Content-Type: multipart/form-data; boundary=x\r\n" CL(3), "a=b"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"multipart without a body", REQ("POST /t?client_id=t", "Content-Type: multipart/form-data; boundary=x\r\n", ""),
	 CLIENTID_OK, "t"},
	{"POST without Content-Type, agreeing", REQ("POST /t?client_id=t", CL(11), "client_id=t"),
	 CLIENTID_OK, "t"},
	{"POST without Content-Type, disagreeing", REQ("POST /t?client_id=t", CL(11), "client_id=v"),
	 CLIENTID_CONFLICT, NULL},
	{"POST with an empty Content-Type", REQ("POST /t?client_id=t", "Content-Type:\r\n" CL(11), "client_id=v"),
	 CLIENTID_CONFLICT, NULL},
	{"POST without Content-Type, look-alike", REQ("POST /t?client_id=t", CL(11), "Client_Id=v"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"PUT without Content-Type is not a form", REQ("PUT /t?client_id=t", CL(11), "client_id=v"),
	 CLIENTID_OK, "t"},

	{"form and query agree", REQ("POST /t?client_id=tpp1", FORM CL(14), "client_id=tpp1"),
	 CLIENTID_OK, "tpp1"},
	{"form and query disagree", REQ("POST /t?client_id=tpp2", FORM CL(14), "client_id=tpp1"),
	 CLIENTID_CONFLICT, NULL},
	{"query and header agree", REQ("GET /a?client_id=tpp1", "X-Client-Id: tpp1\r\n", ""), CLIENTID_OK,
	 "tpp1"},
	{"query and header disagree", REQ("GET /a?client_id=tpp1", "X-Client-Id: tpp2\r\n", ""),
	 CLIENTID_CONFLICT, NULL},
	{"all three agree", REQ("POST /t?client_id=t", FORM "X-Client-Id: t\r\n" CL(11), "client_id=t"),
	 CLIENTID_OK, "t"},
	{"form disagrees with the other two",
	 REQ("POST /t?client_id=t", FORM "X-Client-Id: t\r\n" CL(11), "client_id=u"), CLIENTID_CONFLICT,
	 NULL},
	{"one valid, another invalid", REQ("GET /a?client_id=tpp1", "X-Client-Id: bad id\r\n", ""),
	 CLIENTID_INVALID, NULL},

};

/* With only form and header sources: a query client_id must agree, and cannot claim alone. */
static const struct case_ form_header_cases[] = {
	{"query where only form and header are read, agreeing",
	 REQ("GET /a?client_id=t", "X-Client-Id: t\r\n", ""), CLIENTID_OK, "t"},
	{"query where only form and header are read, disagreeing",
	 REQ("GET /a?client_id=v", "X-Client-Id: t\r\n", ""), CLIENTID_CONFLICT, NULL},
	{"query where only form and header are read, alone", REQ("GET /a?client_id=t", "", ""),
	 CLIENTID_MISSING, NULL},
	{"query where only form and header are read, invalid",
	 REQ("GET /a?client_id=a%22b", "X-Client-Id: t\r\n", ""), CLIENTID_INVALID, NULL},
	{"query look-alike where only form and header are read",
	 REQ("GET /a?CLIENT_ID=v", "X-Client-Id: t\r\n", ""), CLIENTID_AMBIGUOUS, NULL},
};

/* With only query and header sources: the same for a form body. */
static const struct case_ query_header_cases[] = {
	{"multipart, no form source", REQ("POST /t?client_id=t", "Content-Type: Multipart/Mixed; boundary=x\r\n" CL(3), "a=b"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"form where only query and header are read, agreeing",
	 REQ("POST /t?client_id=t", FORM CL(11), "client_id=t"), CLIENTID_OK, "t"},
	{"form where only query and header are read, disagreeing",
	 REQ("POST /t?client_id=t", FORM CL(11), "client_id=v"), CLIENTID_CONFLICT, NULL},
	{"form in UTF-16 where only query and header are read",
	 REQ("POST /t?client_id=t", "Content-Type: application/x-www-form-urlencoded;charset=utf-16\r\n" CL(2), "{}"),
	 CLIENTID_AMBIGUOUS, NULL},
	/* Rails merges a JSON body's top-level members into params. */
	{"JSON member agreeing", REQ("PUT /t?client_id=t", JSON CL(18), "{\"client_id\": \"t\"}"),
	 CLIENTID_OK, "t"},
	{"JSON member disagreeing", REQ("POST /t?client_id=t", JSON CL(18), "{\"client_id\": \"v\"}"),
	 CLIENTID_CONFLICT, NULL},
	{"JSON member escaped", REQ("POST /t?client_id=t", JSON CL(23), "{\"\\u0063lient_id\": \"v\"}"),
	 CLIENTID_CONFLICT, NULL},
	{"JSON member alone", REQ("POST /t", JSON CL(18), "{\"client_id\": \"t\"}"),
	 CLIENTID_MISSING, NULL},
	{"JSON member not a string", REQ("POST /t?client_id=t", JSON CL(16), "{\"client_id\": 7}"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"JSON member look-alike", REQ("POST /t?client_id=t", JSON CL(18), "{\"Client_Id\": \"v\"}"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"JSON member repeated", REQ("POST /t?client_id=t", JSON CL(33), "{\"client_id\":\"t\",\"client_id\":\"v\"}"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"JSON body that does not parse", REQ("POST /t?client_id=t", JSON CL(13), "{\"client_id\":"),
	 CLIENTID_AMBIGUOUS, NULL},
	{"JSON by suffix, nested member ignored",
	 REQ("POST /t?client_id=t", "Content-Type: application/vnd.x+JSON\r\n" CL(25), "{\"a\": {\"client_id\": \"v\"}}"),
	 CLIENTID_OK, "t"},
	{"JSON array body", REQ("POST /t?client_id=t", JSON CL(17), "[{\"client_id\":1}]"),
	 CLIENTID_OK, "t"},
};

/* With header sources only there is no parameter name to protect. */
static const struct case_ header_only_cases[] = {
	{"cookie, header sources only", REQ("GET /a", "Cookie: client_id=v\r\nX-Client-Id: t\r\n", ""),
	 CLIENTID_OK, "t"},
	{"multipart, header sources only", REQ("POST /t", "Content-Type: multipart/form-data; boundary=x\r\nX-Client-Id: t\r\n" CL(3), "a=b"),
	 CLIENTID_OK, "t"},
	{"parameters are not looked at with header sources only",
	 REQ("POST /t?client_id=v&Client_Id=w", FORM "X-Client-Id: t\r\n" CL(11), "client_id=u"),
	 CLIENTID_OK, "t"},
};

static void run_cases(const struct case_ *cases, size_t n_cases,
		      const struct client_id_source *src, unsigned n)
{
	for (size_t i = 0; i < n_cases; i++) {
		const struct case_ *c = &cases[i];
		struct http_msg m;
		parse(&m, c->raw, src, n);
		if (m.state != HTTP_MSG_DONE)
			fail_msg("%s: request state %d (%s)", c->desc, m.state,
				 m.error_reason ? m.error_reason : "");
		char out[REGISTRY_CLIENT_ID_MAX + 1];
		const char *why = NULL;
		enum clientid_result r = clientid_extract(src, n, &m, out, &why);
		if (r != c->want)
			fail_msg("%s: got %d (%s), want %d", c->desc, r, why ? why : "", c->want);
		if (r == CLIENTID_OK) {
			if (c->id)
				assert_string_equal(out, c->id);
			assert_null(why);
		} else {
			assert_string_equal(out, "");
			assert_non_null(why);
		}
		http_msg_free(&m);
	}
}

#define RUN_CASES(cases, src) \
	run_cases(cases, sizeof(cases) / sizeof(cases[0]), src, sizeof(src) / sizeof(src[0]))

static void test_cases(void **state)
{
	(void)state;
	RUN_CASES(cases, all_sources);
	RUN_CASES(form_header_cases, form_header);
	RUN_CASES(query_header_cases, query_header);
	RUN_CASES(header_only_cases, header_only);
}

static void test_only_configured_sources(void **state)
{
	(void)state;
	static const struct client_id_source query_other[] = {{CID_SOURCE_QUERY, "cid"}};
	struct http_msg m;
	char out[REGISTRY_CLIENT_ID_MAX + 1];
	const char *raw = REQ("POST /t?client_id=q", FORM "X-Client-Id: h\r\n" CL(11), "client_id=f");
	parse(&m, raw, header_only, 1);
	assert_false(clientid_needs_body(header_only, 1, &m));
	assert_int_equal(clientid_extract(header_only, 1, &m, out, NULL), CLIENTID_OK);
	assert_string_equal(out, "h");
	assert_int_equal(clientid_extract(NULL, 0, &m, out, NULL), CLIENTID_MISSING);
	http_msg_free(&m);
	/* another parameter name: client_id is just a parameter */
	parse(&m, raw, query_other, 1);
	assert_true(clientid_needs_body(query_other, 1, &m));
	assert_int_equal(clientid_extract(query_other, 1, &m, out, NULL), CLIENTID_MISSING);
	http_msg_free(&m);
}

static void test_needs_body(void **state)
{
	(void)state;
	struct http_msg m;
	parse(&m, REQ("POST /t", FORM CL(3), "a=b"), all_sources, 3);
	assert_true(clientid_needs_body(all_sources, 3, &m));
	assert_true(clientid_needs_body(query_header, 2, &m)); /* an application may read it */
	assert_false(clientid_needs_body(header_only, 1, &m));
	http_msg_free(&m);
	parse(&m, REQ("POST /t", CL(3), "a=b"), all_sources, 3);
	assert_true(clientid_needs_body(all_sources, 3, &m)); /* Rack reads it as a form */
	http_msg_free(&m);
	parse(&m, REQ("PUT /t", CL(3), "a=b"), all_sources, 3);
	assert_false(clientid_needs_body(all_sources, 3, &m));
	http_msg_free(&m);
	parse(&m, REQ("PATCH /t", JSON CL(2), "{}"), all_sources, 3); /* Rails merges it */
	assert_true(clientid_needs_body(all_sources, 3, &m));
	assert_false(clientid_needs_body(header_only, 1, &m));
	http_msg_free(&m);
	parse(&m, REQ("POST /t", FORM CL(0), ""), all_sources, 3);
	assert_false(clientid_needs_body(all_sources, 3, &m));
	http_msg_free(&m);
	/* refused from the head alone: nothing to buffer */
	parse(&m, REQ("POST /t", "Content-Type: multipart/form-data; boundary=x\r\n" CL(3), "a=b"),
	      all_sources, 3);
	assert_false(clientid_needs_body(all_sources, 3, &m));
	http_msg_free(&m);
	parse(&m, REQ("POST /t", FORM "Content-Encoding: gzip\r\n" CL(3), "a=b"), all_sources, 3);
	assert_false(clientid_needs_body(all_sources, 3, &m));
	http_msg_free(&m);

	/* a form with an unbuffered body decides nothing: invalid, not missing */
	const char *raw = REQ("POST /t", FORM CL(11), "client_id=t");
	http_msg_init(&m, HTTP_REQUEST, &limits);
	size_t off = http_msg_feed(&m, raw, strlen(raw), NULL, NULL);
	http_msg_feed(&m, raw + off, strlen(raw) - off, NULL, NULL);
	char out[REGISTRY_CLIENT_ID_MAX + 1];
	assert_int_equal(clientid_extract(all_sources, 3, &m, out, NULL), CLIENTID_INVALID);
	assert_int_equal(clientid_extract(query_header, 2, &m, out, NULL), CLIENTID_INVALID);
	http_msg_free(&m);
}

/* jwt:CLAIM: a claim of the verified bearer token, one more source that must agree. */
static const struct client_id_source token_sources[] = {
	{CID_SOURCE_QUERY, "client_id"},
	{CID_SOURCE_HEADER, "x-client-id"},
	{CID_SOURCE_JWT, "client_id"},
};

static void test_token_claims(void **state)
{
	(void)state;
	static const struct {
		const char *desc, *raw;
		const char *claims; /* the verified token's payload; NULL: no valid token */
		enum clientid_result want;
		const char *id;
	} cases[] = {
		{"the claim alone", REQ("GET /a", "", ""), "{\"client_id\":\"tpp-a\"}", CLIENTID_OK,
		 "tpp-a"},
		{"claim and header agree", REQ("GET /a", "X-Client-Id: tpp-a\r\n", ""),
		 "{\"client_id\":\"tpp-a\",\"sub\":\"x\"}", CLIENTID_OK, "tpp-a"},
		{"claim and header disagree", REQ("GET /a", "X-Client-Id: tpp-b\r\n", ""),
		 "{\"client_id\":\"tpp-a\"}", CLIENTID_CONFLICT, NULL},
		{"claim and query disagree", REQ("GET /a?client_id=tpp-b", "", ""),
		 "{\"client_id\":\"tpp-a\"}", CLIENTID_CONFLICT, NULL},
		{"a claim the id is a prefix of", REQ("GET /a?client_id=tpp", "", ""),
		 "{\"client_id\":\"tpp-a\"}", CLIENTID_CONFLICT, NULL},
		{"no token, the header", REQ("GET /a", "X-Client-Id: tpp-b\r\n", ""), NULL, CLIENTID_OK,
		 "tpp-b"},
		{"no token, nothing", REQ("GET /a", "", ""), NULL, CLIENTID_MISSING, NULL},
		{"a token without the claim, the header", REQ("GET /a", "X-Client-Id: tpp-b\r\n", ""),
		 "{\"sub\":\"tpp-a\"}", CLIENTID_OK, "tpp-b"},
		{"a token without the claim, nothing", REQ("GET /a", "", ""), "{\"sub\":\"tpp-a\"}",
		 CLIENTID_MISSING, NULL},
		{"the claim a number", REQ("GET /a", "X-Client-Id: 7\r\n", ""), "{\"client_id\":7}",
		 CLIENTID_INVALID, NULL},
		{"the claim an array", REQ("GET /a", "", ""), "{\"client_id\":[\"tpp-a\"]}",
		 CLIENTID_INVALID, NULL},
		{"the claim with a space", REQ("GET /a", "", ""), "{\"client_id\":\"tpp a\"}",
		 CLIENTID_INVALID, NULL},
		{"the claim empty", REQ("GET /a", "", ""), "{\"client_id\":\"\"}", CLIENTID_INVALID, NULL},
		{"the claim of 65 bytes", REQ("GET /a", "", ""),
		 "{\"client_id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
		 CLIENTID_INVALID, NULL},
		{"the claim, a look-alike parameter", REQ("GET /a?Client_Id=tpp-a", "", ""),
		 "{\"client_id\":\"tpp-a\"}", CLIENTID_AMBIGUOUS, NULL},
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct http_msg m;
		parse(&m, cases[i].raw, token_sources, 3);
		json_error_t jerr;
		json_t *claims = cases[i].claims ? json_loads(cases[i].claims, 0, &jerr) : NULL;
		assert_true(!cases[i].claims || claims);
		char out[REGISTRY_CLIENT_ID_MAX + 1];
		const char *why = NULL;
		enum clientid_result r = clientid_extract_claims(token_sources, 3, &m, claims, out, &why);
		if (r != cases[i].want)
			fail_msg("%s: got %d (%s), want %d", cases[i].desc, r, why ? why : "",
				 cases[i].want);
		if (cases[i].id)
			assert_string_equal(out, cases[i].id);
		json_decref(claims);
		http_msg_free(&m);
	}
	assert_true(clientid_needs_token(token_sources, 3));
	assert_false(clientid_needs_token(all_sources, 3));
}

static void test_valid(void **state)
{
	(void)state;
	assert_true(registry_client_id_valid_n("a", 1));
	assert_true(registry_client_id_valid_n("!~#$%&'()*+,-./:;<=>?@[]^_`{|}", 30));
	assert_false(registry_client_id_valid_n("", 0));
	assert_false(registry_client_id_valid_n("a b", 3));
	assert_false(registry_client_id_valid_n("a\"b", 3));
	assert_false(registry_client_id_valid_n("a\\b", 3));
	assert_false(registry_client_id_valid_n("a\x7f", 2));
	assert_false(registry_client_id_valid_n("a\0b", 3));
	char id[66];
	memset(id, 'x', sizeof(id));
	assert_true(registry_client_id_valid_n(id, 64));
	assert_false(registry_client_id_valid_n(id, 65));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_only_configured_sources),
		cmocka_unit_test(test_needs_body),
		cmocka_unit_test(test_token_claims),
		cmocka_unit_test(test_valid),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
