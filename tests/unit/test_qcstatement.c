/* qcstatement: the PSD2 roles, NCA name and id and the organizationIdentifier read from
 * certificates the tests generate (each role set, none, alongside other statements) and the
 * refusals of wrong ones (an OID and a name that disagree, unknown or repeated roles, trailing
 * bytes, BER where DER is required, wrong types, missing fields, bad strings, duplicates), each
 * naming its problem. The encodings are written by a small DER writer below, so that a row can
 * say exactly which byte is wrong. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "qcstatement.h"
#include "testpki.h"

#define TAG_UTF8 0x0c
#define TAG_PRINTABLE 0x13
#define TAG_SEQ 0x30

#define OID_PSD2 "0.4.0.19495.2"
#define OID_AS "0.4.0.19495.1.1"
#define OID_PI "0.4.0.19495.1.2"
#define OID_AI "0.4.0.19495.1.3"
#define OID_IC "0.4.0.19495.1.4"
#define OID_QC_COMPLIANCE "0.4.0.1862.1.1"
#define FCA "Financial Conduct Authority"

/* --- a DER writer: append the contents, then wrap what came since a mark into a TLV ------- */

struct der {
	unsigned char b[8192];
	size_t n;
};

static void der_put(struct der *d, const void *p, size_t len)
{
	assert_true(d->n + len <= sizeof(d->b));
	memcpy(d->b + d->n, p, len);
	d->n += len;
}

enum der_length { LEN_DER, LEN_LONG_FORM, LEN_INDEFINITE };

static void der_wrap_as(struct der *d, unsigned char tag, size_t mark, enum der_length form)
{
	size_t len = d->n - mark, h = 0;
	unsigned char hdr[4];
	hdr[h++] = tag;
	if (form == LEN_INDEFINITE) {
		hdr[h++] = 0x80;
	} else if (len < 128 && form == LEN_DER) {
		hdr[h++] = (unsigned char)len;
	} else if (len < 256) {
		hdr[h++] = 0x81; /* not minimal below 128: BER only */
		hdr[h++] = (unsigned char)len;
	} else {
		hdr[h++] = 0x82;
		hdr[h++] = (unsigned char)(len >> 8);
		hdr[h++] = (unsigned char)len;
	}
	assert_true(d->n + h + 2 <= sizeof(d->b));
	memmove(d->b + mark + h, d->b + mark, len);
	memcpy(d->b + mark, hdr, h);
	d->n += h;
	if (form == LEN_INDEFINITE)
		der_put(d, "\0\0", 2); /* end-of-contents */
}

static void der_wrap(struct der *d, unsigned char tag, size_t mark)
{
	der_wrap_as(d, tag, mark, LEN_DER);
}

static void der_oid(struct der *d, const char *dotted)
{
	ASN1_OBJECT *o = OBJ_txt2obj(dotted, 1);
	unsigned char *p = NULL;
	int n = o ? i2d_ASN1_OBJECT(o, &p) : -1;
	assert_true(n > 0);
	der_put(d, p, (size_t)n);
	OPENSSL_free(p);
	ASN1_OBJECT_free(o);
}

static void der_string(struct der *d, unsigned char tag, const char *s)
{
	size_t mark = d->n;
	der_put(d, s, strlen(s));
	der_wrap(d, tag, mark);
}

/* --- fixtures ------------------------------------------------------------------------------ */

struct role {
	const char *oid, *name;
};

/* What a row changes in an otherwise well-formed encoding. */
enum mutation {
	MUT_NONE,
	MUT_NO_QC,              /* no qcStatements extension at all */
	MUT_OTHER_STATEMENTS,   /* QcCompliance before and after the PSD2 statement */
	MUT_ONLY_OTHER,         /* QcCompliance alone */
	MUT_TRAILING,           /* a byte after the QCStatements */
	MUT_INDEFINITE,         /* the QCStatements in BER indefinite length */
	MUT_LONG_LENGTH,        /* the PSD2QcType with a non-minimal length */
	MUT_TRUNCATED,          /* the last bytes cut off */
	MUT_NO_INFO,            /* the PSD2 statement without statementInfo */
	MUT_INFO_NOT_SEQ,       /* statementInfo a UTF8String */
	MUT_EXTRA_IN_STATEMENT, /* a third element in the QCStatement */
	MUT_NCA_PRINTABLE,      /* nCAName a PrintableString */
	MUT_NO_NCA_ID,          /* PSD2QcType without nCAId */
	MUT_TWO_PSD2,           /* the PSD2 statement twice */
	MUT_TWO_EXTENSIONS,     /* the qcStatements extension twice */
};

struct qc_case {
	const char *what;
	enum mutation mut;
	struct role roles[6]; /* up to the first with a NULL oid */
	const char *nca_name, *nca_id;
	unsigned nca_name_repeat; /* > 0: nca_name repeated this many times */
	const char *org_id[2];    /* subject organizationIdentifier(s), NULL: none */
	/* expected */
	int rc;
	uint32_t roles_want;
	const char *err; /* a part of the message, for rc -1 */
};

#define ROLE_AS {OID_AS, "PSP_AS"}
#define ROLE_PI {OID_PI, "PSP_PI"}
#define ROLE_AI {OID_AI, "PSP_AI"}
#define ROLE_IC {OID_IC, "PSP_IC"}
#define ORG(x) {x, NULL}

static const struct qc_case cases[] = {
	/* accepted */
	{"no QCStatement, no organizationIdentifier", MUT_NO_QC, {{0}}, NULL, NULL, 0, {0}, 0, 0,
	 NULL},
	{"organizationIdentifier only", MUT_NO_QC, {{0}}, NULL, NULL, 0, ORG("PSDGB-FCA-123456"), 0,
	 0, NULL},
	{"PSP_AS", MUT_NONE, {ROLE_AS}, FCA, "GB-FCA", 0, ORG("PSDGB-FCA-123456"), 0,
	 PSD2_ROLE_AS, NULL},
	{"PSP_PI", MUT_NONE, {ROLE_PI}, FCA, "GB-FCA", 0, ORG("PSDGB-FCA-123456"), 0,
	 PSD2_ROLE_PI, NULL},
	{"PSP_AI", MUT_NONE, {ROLE_AI}, "BaFin", "DE-BAFIN", 0, ORG("PSDDE-BAFIN-987654"), 0,
	 PSD2_ROLE_AI, NULL},
	{"PSP_IC", MUT_NONE, {ROLE_IC}, FCA, "GB-FCA", 0, {0}, 0, PSD2_ROLE_IC, NULL},
	{"PSP_PI and PSP_AI", MUT_NONE, {ROLE_PI, ROLE_AI}, FCA, "GB-FCA", 0, {0}, 0,
	 PSD2_ROLE_PI | PSD2_ROLE_AI, NULL},
	{"all four, in another order", MUT_NONE, {ROLE_IC, ROLE_AI, ROLE_AS, ROLE_PI}, FCA,
	 "GB-FCA", 0, {0}, 0, PSD2_ROLES_ALL, NULL},
	{"no role listed", MUT_NONE, {{0}}, FCA, "GB-FCA", 0, {0}, 0, 0, NULL},
	{"among other statements", MUT_OTHER_STATEMENTS, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, 0,
	 PSD2_ROLE_AI, NULL},
	{"other statements only", MUT_ONLY_OTHER, {{0}}, NULL, NULL, 0, {0}, 0, 0, NULL},
	{"nCAName of 256 two-byte characters", MUT_NONE, {ROLE_AI}, "\xc3\xa9", "GB-FCA", 256, {0},
	 0, PSD2_ROLE_AI, NULL},
	/* refused, each naming its problem */
	{"OID and name disagree", MUT_NONE, {{OID_AI, "PSP_PI"}}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "rolesOfPSP[0]: OID 0.4.0.19495.1.3 is PSP_AI but its name is 'PSP_PI'"},
	{"name in lower case", MUT_NONE, {ROLE_PI, {OID_AI, "psp_ai"}}, FCA, "GB-FCA", 0, {0}, -1,
	 0, "rolesOfPSP[1]: OID 0.4.0.19495.1.3 is PSP_AI but its name is 'psp_ai'"},
	{"unknown role OID", MUT_NONE, {ROLE_AI, {"0.4.0.19495.1.5", "PSP_XX"}}, FCA, "GB-FCA", 0,
	 {0}, -1, 0, "rolesOfPSP[1]: unknown role OID 0.4.0.19495.1.5"},
	{"role repeated", MUT_NONE, {ROLE_AI, ROLE_PI, ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "rolesOfPSP[2]: PSP_AI listed twice"},
	{"trailing byte", MUT_TRAILING, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "qcStatements: 1 trailing bytes after the encoding"},
	{"indefinite length", MUT_INDEFINITE, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "qcStatements: not DER"},
	{"non-minimal length", MUT_LONG_LENGTH, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "PSD2 QCStatement: not DER"},
	{"truncated", MUT_TRUNCATED, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "qcStatements: malformed encoding"},
	{"statementInfo missing", MUT_NO_INFO, {{0}}, NULL, NULL, 0, {0}, -1, 0,
	 "PSD2 QCStatement: statementInfo missing"},
	{"statementInfo not a SEQUENCE", MUT_INFO_NOT_SEQ, {{0}}, NULL, NULL, 0, {0}, -1, 0,
	 "PSD2 QCStatement: statementInfo is not a SEQUENCE"},
	{"a third element in the statement", MUT_EXTRA_IN_STATEMENT, {ROLE_AI}, FCA, "GB-FCA", 0,
	 {0}, -1, 0, "qcStatements: malformed encoding"},
	{"nCAName not a UTF8String", MUT_NCA_PRINTABLE, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "PSD2 QCStatement: malformed encoding (wrong tag)"},
	{"nCAId missing", MUT_NO_NCA_ID, {ROLE_AI}, FCA, NULL, 0, {0}, -1, 0,
	 "PSD2 QCStatement: malformed encoding"},
	{"nCAName empty", MUT_NONE, {ROLE_AI}, "", "GB-FCA", 0, {0}, -1, 0,
	 "nCAName must be 1 to 256 characters of UTF-8"},
	{"nCAName of 257 characters", MUT_NONE, {ROLE_AI}, "x", "GB-FCA", 257, {0}, -1, 0,
	 "nCAName must be 1 to 256 characters of UTF-8"},
	{"nCAId not UTF-8", MUT_NONE, {ROLE_AI}, FCA, "GB-\xff", 0, {0}, -1, 0,
	 "nCAId must be 1 to 256 characters of UTF-8"},
	{"nCAId with a control character", MUT_NONE, {ROLE_AI}, FCA, "GB-\nFCA", 0, {0}, -1, 0,
	 "nCAId holds a control character"},
	{"role name with a control byte", MUT_NONE, {{OID_AI, "PSP_A\x01"}}, FCA, "GB-FCA", 0, {0}, -1,
	 0, "its name is 'PSP_A?'"},
	{"PSD2 statement twice", MUT_TWO_PSD2, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1, 0,
	 "qcStatements: more than one PSD2 QCStatement"},
	{"qcStatements extension twice", MUT_TWO_EXTENSIONS, {ROLE_AI}, FCA, "GB-FCA", 0, {0}, -1,
	 0, "more than one qcStatements extension"},
	{"organizationIdentifier twice", MUT_NONE, {ROLE_AI}, FCA, "GB-FCA", 0,
	 {"PSDGB-FCA-1", "PSDGB-FCA-2"}, -1, 0, "subject: more than one organizationIdentifier"},
	{"organizationIdentifier with a control character", MUT_NO_QC, {{0}}, NULL, NULL, 0,
	 ORG("PSDGB-FCA-\t1"), -1, 0, "subject organizationIdentifier: holds a control character"},
};

/* The PSD2QcType of row c. */
static void encode_psd2_type(struct der *d, const struct qc_case *c)
{
	size_t mark = d->n, roles = d->n;
	for (const struct role *r = c->roles; r->oid; r++) {
		size_t one = d->n;
		der_oid(d, r->oid);
		der_string(d, TAG_UTF8, r->name);
		der_wrap(d, TAG_SEQ, one);
	}
	der_wrap(d, TAG_SEQ, roles);
	size_t name = d->n;
	for (unsigned i = 0; i < (c->nca_name_repeat ? c->nca_name_repeat : 1); i++)
		der_put(d, c->nca_name, strlen(c->nca_name));
	der_wrap(d, c->mut == MUT_NCA_PRINTABLE ? TAG_PRINTABLE : TAG_UTF8, name);
	if (c->mut != MUT_NO_NCA_ID)
		der_string(d, TAG_UTF8, c->nca_id);
	der_wrap_as(d, TAG_SEQ, mark, c->mut == MUT_LONG_LENGTH ? LEN_LONG_FORM : LEN_DER);
}

static void encode_statement(struct der *d, const char *oid)
{
	size_t mark = d->n;
	der_oid(d, oid);
	der_wrap(d, TAG_SEQ, mark);
}

/* The qcStatements extension value of row c. */
static void encode_statements(struct der *d, const struct qc_case *c)
{
	size_t mark = d->n;
	if (c->mut == MUT_OTHER_STATEMENTS || c->mut == MUT_ONLY_OTHER)
		encode_statement(d, OID_QC_COMPLIANCE);
	for (int copy = 0; c->mut != MUT_ONLY_OTHER && copy < (c->mut == MUT_TWO_PSD2 ? 2 : 1);
	     copy++) {
		size_t st = d->n;
		der_oid(d, OID_PSD2);
		if (c->mut == MUT_INFO_NOT_SEQ)
			der_string(d, TAG_UTF8, "PSP_AI");
		else if (c->mut != MUT_NO_INFO)
			encode_psd2_type(d, c);
		if (c->mut == MUT_EXTRA_IN_STATEMENT)
			der_string(d, TAG_UTF8, "extra");
		der_wrap(d, TAG_SEQ, st);
	}
	if (c->mut == MUT_OTHER_STATEMENTS)
		encode_statement(d, OID_QC_COMPLIANCE);
	der_wrap_as(d, TAG_SEQ, mark, c->mut == MUT_INDEFINITE ? LEN_INDEFINITE : LEN_DER);
	if (c->mut == MUT_TRAILING)
		der_put(d, "", 1);
	if (c->mut == MUT_TRUNCATED)
		d->n -= 3;
}

struct fx {
	struct testpki pki;
	long serial;
};

static int setup(void **state)
{
	static struct fx f;
	if (testpki_init(&f.pki) < 0)
		return -1;
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	testpki_free(&f->pki);
	return 0;
}

/* A leaf of the test CA carrying what row c describes. */
static X509 *case_cert(struct fx *f, const struct qc_case *c, struct der *d)
{
	X509 *x = testpki_leaf("tpp", f->pki.leaf_key, f->pki.ca, f->pki.ca_key, ++f->serial);
	assert_non_null(x);
	for (int i = 0; i < 2 && c->org_id[i]; i++)
		assert_int_equal(testpki_add_subject(x, f->pki.ca_key, NID_organizationIdentifier,
						     c->org_id[i]),
				 0);
	d->n = 0;
	if (c->mut == MUT_NO_QC)
		return x;
	encode_statements(d, c);
	for (int i = 0; i < (c->mut == MUT_TWO_EXTENSIONS ? 2 : 1); i++)
		assert_int_equal(testpki_add_der_ext(x, f->pki.ca_key, NID_qcStatements, d->b, d->n),
				 0);
	return x;
}

static void expect_identity(const struct qc_case *c, const struct psd2_identity *id,
			    bool with_org)
{
	assert_int_equal(id->roles, c->roles_want);
	assert_string_equal(id->org_id, with_org && c->org_id[0] ? c->org_id[0] : "");
	if (c->mut == MUT_NO_QC || c->mut == MUT_ONLY_OTHER) {
		assert_string_equal(id->nca_name, "");
		assert_string_equal(id->nca_id, "");
		return;
	}
	char want[PSD2_NCA_MAX_BYTES + 1] = "";
	for (unsigned i = 0; i < (c->nca_name_repeat ? c->nca_name_repeat : 1); i++)
		strcat(want, c->nca_name);
	assert_string_equal(id->nca_name, want);
	assert_string_equal(id->nca_id, c->nca_id);
}

static void expect_refused(const struct qc_case *c, int rc, const char *err,
			   const struct psd2_identity *id)
{
	if (rc != -1 || !strstr(err, c->err))
		fail_msg("%s: rc %d, error '%s', want -1 and '%s'", c->what, rc, err, c->err);
	static const struct psd2_identity empty;
	assert_memory_equal(id, &empty, sizeof(empty)); /* nothing half-read */
}

static void test_cases(void **state)
{
	struct fx *f = *state;
	static struct der d;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct qc_case *c = &cases[i];
		print_message("%s\n", c->what);
		X509 *x = case_cert(f, c, &d);
		struct psd2_identity id;
		char err[256] = "";
		memset(&id, 0xa5, sizeof(id));
		int rc = qcstatement_read(x, &id, err, sizeof(err));
		assert_int_equal(ERR_peek_error(), 0);
		if (c->rc == 0) {
			if (rc != 0)
				fail_msg("%s: refused: %s", c->what, err);
			expect_identity(c, &id, true);
		} else {
			expect_refused(c, rc, err, &id);
		}
		/* The extension's value alone reads the same (without the subject's part). */
		if (c->mut != MUT_NO_QC && c->mut != MUT_TWO_EXTENSIONS && !c->org_id[1]) {
			err[0] = '\0';
			rc = qcstatement_parse(d.b, d.n, &id, err, sizeof(err));
			assert_int_equal(ERR_peek_error(), 0);
			if (c->rc == 0) {
				assert_int_equal(rc, 0);
				expect_identity(c, &id, false);
			} else {
				expect_refused(c, rc, err, &id);
			}
		}
		X509_free(x);
	}
}

/* The roles' names in both directions, as configuration, header and listings use them. */
static void test_role_names(void **state)
{
	(void)state;
	static const struct {
		uint32_t roles;
		const char *text;
	} formats[] = {
		{0, ""},
		{PSD2_ROLE_AS, "PSP_AS"},
		{PSD2_ROLE_PI, "PSP_PI"},
		{PSD2_ROLE_AI, "PSP_AI"},
		{PSD2_ROLE_IC, "PSP_IC"},
		{PSD2_ROLE_PI | PSD2_ROLE_AI, "PSP_PI,PSP_AI"},
		{PSD2_ROLE_IC | PSD2_ROLE_AS, "PSP_AS,PSP_IC"},
		{PSD2_ROLES_ALL, "PSP_AS,PSP_PI,PSP_AI,PSP_IC"},
	};
	char text[PSD2_ROLES_TEXT_MAX];
	for (size_t i = 0; i < sizeof(formats) / sizeof(formats[0]); i++) {
		psd2_roles_format(formats[i].roles, text);
		assert_string_equal(text, formats[i].text);
	}
	static const struct {
		const char *name;
		uint32_t bit;
	} names[] = {
		{"PSP_AS", PSD2_ROLE_AS}, {"PSP_PI", PSD2_ROLE_PI}, {"PSP_AI", PSD2_ROLE_AI},
		{"PSP_IC", PSD2_ROLE_IC}, {"psp_ai", 0},            {"PSP_AI ", 0},
		{"PSP_A", 0},             {"", 0},                  {"PSP_XX", 0},
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		assert_int_equal(psd2_role_by_name(names[i].name, strlen(names[i].name)),
				 names[i].bit);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cases),
		cmocka_unit_test(test_role_names),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
