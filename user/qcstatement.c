/* ETSI TS 119 495 PSD2 attributes of a certificate, decoded with OpenSSL's ASN.1 templates:
 *
 *   QCStatements ::= SEQUENCE OF QCStatement                        (RFC 3739)
 *   QCStatement ::= SEQUENCE { statementId OBJECT IDENTIFIER,
 *                              statementInfo ANY DEFINED BY statementId OPTIONAL }
 *   PSD2QcType ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName NCAName, nCAId NCAId }
 *   RolesOfPSP ::= SEQUENCE OF RoleOfPSP
 *   RoleOfPSP ::= SEQUENCE { roleOfPspOid RoleOfPspOid, roleOfPspName RoleOfPspName }
 *   NCAName, NCAId, RoleOfPspName ::= UTF8String (SIZE (1..256))
 *
 * The template decoder also takes BER (indefinite lengths, non-minimal length octets), so
 * each decoded value is encoded again and must give back the very bytes it came from: a
 * certificate's extensions are DER, and two readings of one certificate must not differ.
 * Every function leaves OpenSSL's error queue empty, as cert.c does. */
#include "qcstatement.h"

#include <openssl/asn1t.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>

#define PSD2_QC_STATEMENT_OID "0.4.0.19495.2"
#define OID_TEXT_MAX 80
#define SHOWN_MAX 32 /* bytes of a certificate's text quoted in an error */

typedef struct {
	ASN1_OBJECT *id;
	ASN1_TYPE *info;
} QC_STATEMENT;

ASN1_SEQUENCE(QC_STATEMENT) = {
	ASN1_SIMPLE(QC_STATEMENT, id, ASN1_OBJECT),
	ASN1_OPT(QC_STATEMENT, info, ASN1_ANY),
} static_ASN1_SEQUENCE_END(QC_STATEMENT)

DEFINE_STACK_OF(QC_STATEMENT)
typedef STACK_OF(QC_STATEMENT) QC_STATEMENTS;

ASN1_ITEM_TEMPLATE(QC_STATEMENTS) =
	ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SEQUENCE_OF, 0, QCStatements, QC_STATEMENT)
static_ASN1_ITEM_TEMPLATE_END(QC_STATEMENTS)

typedef struct {
	ASN1_OBJECT *oid;
	ASN1_UTF8STRING *name;
} PSD2_ROLE;

ASN1_SEQUENCE(PSD2_ROLE) = {
	ASN1_SIMPLE(PSD2_ROLE, oid, ASN1_OBJECT),
	ASN1_SIMPLE(PSD2_ROLE, name, ASN1_UTF8STRING),
} static_ASN1_SEQUENCE_END(PSD2_ROLE)

DEFINE_STACK_OF(PSD2_ROLE)

typedef struct {
	STACK_OF(PSD2_ROLE) *roles;
	ASN1_UTF8STRING *nca_name;
	ASN1_UTF8STRING *nca_id;
} PSD2_QC_TYPE;

ASN1_SEQUENCE(PSD2_QC_TYPE) = {
	ASN1_SEQUENCE_OF(PSD2_QC_TYPE, roles, PSD2_ROLE),
	ASN1_SIMPLE(PSD2_QC_TYPE, nca_name, ASN1_UTF8STRING),
	ASN1_SIMPLE(PSD2_QC_TYPE, nca_id, ASN1_UTF8STRING),
} static_ASN1_SEQUENCE_END(PSD2_QC_TYPE)

/* The role OIDs by bit: 0.4.0.19495.1.1 is PSP_AS (bit 0), and so on. */
static const char *const role_oids[PSD2_ROLE_COUNT] = {
	"0.4.0.19495.1.1", "0.4.0.19495.1.2", "0.4.0.19495.1.3", "0.4.0.19495.1.4"};

__attribute__((format(printf, 3, 4))) static int fail(char *err, size_t errlen, const char *fmt,
						       ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* OpenSSL's reason for the oldest queued error ("wrong tag", "too long", ...). */
static const char *openssl_reason(void)
{
	const char *r = ERR_reason_error_string(ERR_peek_error());
	return r ? r : "malformed";
}

/* A printable copy of certificate bytes for an error message. */
static const char *shown(const unsigned char *s, size_t len, char out[SHOWN_MAX + 4])
{
	size_t i = 0;
	for (; i < len && i < SHOWN_MAX; i++)
		out[i] = s[i] >= 0x20 && s[i] < 0x7f ? (char)s[i] : '?';
	if (len > SHOWN_MAX)
		memcpy(out + i, "...", 3), i += 3;
	out[i] = '\0';
	return out;
}

static bool has_control(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] < 0x20 || s[i] == 0x7f)
			return true;
	return false;
}

/* Decodes the len bytes at der as it and requires the whole input to be its DER encoding.
 * NULL with err set ("<what>: ..."). */
static ASN1_VALUE *decode_der(const unsigned char *der, size_t len, const ASN1_ITEM *it,
			      const char *what, char *err, size_t errlen)
{
	const unsigned char *p = der;
	unsigned char *again = NULL;
	if (len > LONG_MAX) {
		fail(err, errlen, "%s: too long", what);
		return NULL;
	}
	ASN1_VALUE *v = ASN1_item_d2i(NULL, &p, (long)len, it);
	if (!v) {
		fail(err, errlen, "%s: malformed encoding (%s)", what, openssl_reason());
		return NULL;
	}
	if (p != der + len) {
		fail(err, errlen, "%s: %zu trailing bytes after the encoding", what,
		     (size_t)(der + len - p));
		goto fail;
	}
	int n = ASN1_item_i2d(v, &again, it);
	if (n < 0 || (size_t)n != len || memcmp(again, der, len) != 0) {
		fail(err, errlen, "%s: not DER (a BER form such as an indefinite or non-minimal "
				  "length)", what);
		goto fail;
	}
	OPENSSL_free(again);
	return v;
fail:
	OPENSSL_free(again);
	ASN1_item_free(v, it);
	return NULL;
}

/* A UTF8String of 1 .. PSD2_NCA_MAX_CHARS characters without control characters, copied to
 * out (PSD2_NCA_MAX_BYTES + 1 bytes). */
static int nca_text(const ASN1_UTF8STRING *s, const char *what, char *out, char *err,
		    size_t errlen)
{
	const unsigned char *data = ASN1_STRING_get0_data(s);
	int len = ASN1_STRING_length(s);
	if (ASN1_mbstring_ncopy(NULL, data, len, MBSTRING_UTF8, B_ASN1_UTF8STRING, 1,
				PSD2_NCA_MAX_CHARS) < 0)
		return fail(err, errlen, "PSD2 QCStatement: %s must be 1 to %d characters of "
					 "UTF-8 (%s)", what, PSD2_NCA_MAX_CHARS, openssl_reason());
	if (has_control(data, (size_t)len))
		return fail(err, errlen, "PSD2 QCStatement: %s holds a control character", what);
	memcpy(out, data, (size_t)len); /* at most 4 bytes a character */
	out[len] = '\0';
	return 0;
}

static int read_roles(const STACK_OF(PSD2_ROLE) *roles, uint32_t *out, char *err, size_t errlen)
{
	char oid[OID_TEXT_MAX], s[SHOWN_MAX + 4];
	*out = 0;
	for (int i = 0; i < sk_PSD2_ROLE_num(roles); i++) {
		const PSD2_ROLE *r = sk_PSD2_ROLE_value(roles, i);
		if (OBJ_obj2txt(oid, sizeof(oid), r->oid, 1) <= 0)
			return fail(err, errlen, "PSD2 QCStatement: rolesOfPSP[%d]: unreadable OID", i);
		unsigned k = 0;
		while (k < PSD2_ROLE_COUNT && strcmp(oid, role_oids[k]) != 0)
			k++;
		if (k == PSD2_ROLE_COUNT)
			return fail(err, errlen, "PSD2 QCStatement: rolesOfPSP[%d]: unknown role OID %s",
				    i, oid);
		const unsigned char *name = ASN1_STRING_get0_data(r->name);
		size_t len = (size_t)ASN1_STRING_length(r->name);
		if (psd2_role_by_name((const char *)name, len) != 1u << k)
			return fail(err, errlen, "PSD2 QCStatement: rolesOfPSP[%d]: OID %s is %s but "
						 "its name is '%s'", i, oid, psd2_role_name(k),
				    shown(name, len, s));
		if (*out & 1u << k)
			return fail(err, errlen, "PSD2 QCStatement: rolesOfPSP[%d]: %s listed twice",
				    i, psd2_role_name(k));
		*out |= 1u << k;
	}
	return 0;
}

/* The statementInfo of the PSD2 statement: a PSD2QcType. */
static int read_psd2_type(const ASN1_TYPE *info, struct psd2_identity *out, char *err,
			  size_t errlen)
{
	if (!info)
		return fail(err, errlen, "PSD2 QCStatement: statementInfo missing");
	if (info->type != V_ASN1_SEQUENCE)
		return fail(err, errlen, "PSD2 QCStatement: statementInfo is not a SEQUENCE");
	/* An ANY holding a SEQUENCE keeps its whole encoding, tag and length included. */
	const ASN1_STRING *seq = info->value.sequence;
	PSD2_QC_TYPE *t = (PSD2_QC_TYPE *)decode_der(ASN1_STRING_get0_data(seq),
						     (size_t)ASN1_STRING_length(seq),
						     ASN1_ITEM_rptr(PSD2_QC_TYPE),
						     "PSD2 QCStatement", err, errlen);
	if (!t)
		return -1;
	int rc = read_roles(t->roles, &out->roles, err, errlen);
	if (rc == 0)
		rc = nca_text(t->nca_name, "nCAName", out->nca_name, err, errlen);
	if (rc == 0)
		rc = nca_text(t->nca_id, "nCAId", out->nca_id, err, errlen);
	ASN1_item_free((ASN1_VALUE *)t, ASN1_ITEM_rptr(PSD2_QC_TYPE));
	return rc;
}

static int parse_statements(const unsigned char *der, size_t len, struct psd2_identity *out,
			    char *err, size_t errlen)
{
	char oid[OID_TEXT_MAX];
	bool seen = false;
	QC_STATEMENTS *sts = (QC_STATEMENTS *)decode_der(der, len, ASN1_ITEM_rptr(QC_STATEMENTS),
							 "qcStatements", err, errlen);
	if (!sts)
		return -1;
	int rc = 0;
	for (int i = 0; rc == 0 && i < sk_QC_STATEMENT_num(sts); i++) {
		const QC_STATEMENT *st = sk_QC_STATEMENT_value(sts, i);
		/* Other statements (QcCompliance, QcType, PDS, ...) are not PSD2's concern. */
		if (OBJ_obj2txt(oid, sizeof(oid), st->id, 1) <= 0 ||
		    strcmp(oid, PSD2_QC_STATEMENT_OID) != 0)
			continue;
		if (seen)
			rc = fail(err, errlen, "qcStatements: more than one PSD2 QCStatement");
		else
			rc = read_psd2_type(st->info, out, err, errlen);
		seen = true;
	}
	ASN1_item_free((ASN1_VALUE *)sts, ASN1_ITEM_rptr(QC_STATEMENTS));
	return rc;
}

int qcstatement_parse(const unsigned char *der, size_t len, struct psd2_identity *out,
		      char *err, size_t errlen)
{
	memset(out, 0, sizeof(*out));
	int rc = parse_statements(der, len, out, err, errlen);
	if (rc < 0)
		memset(out, 0, sizeof(*out)); /* nothing half-read */
	ERR_clear_error();
	return rc;
}

static int read_org_id(X509 *x, char out[PSD2_ORG_ID_MAX + 1], char *err, size_t errlen)
{
	const X509_NAME *subject = X509_get_subject_name(x);
	unsigned char *utf8 = NULL;
	int i = X509_NAME_get_index_by_NID(subject, NID_organizationIdentifier, -1);
	if (i < 0)
		return 0;
	if (X509_NAME_get_index_by_NID(subject, NID_organizationIdentifier, i) >= 0)
		return fail(err, errlen, "subject: more than one organizationIdentifier");
	const ASN1_STRING *v = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
	int len = ASN1_STRING_to_UTF8(&utf8, v);
	int rc = 0;
	if (len < 0)
		rc = fail(err, errlen, "subject organizationIdentifier: not a valid string (%s)",
			  openssl_reason());
	else if (len == 0 || len > PSD2_ORG_ID_MAX)
		rc = fail(err, errlen, "subject organizationIdentifier: must be 1 to %d bytes",
			  PSD2_ORG_ID_MAX);
	else if (has_control(utf8, (size_t)len))
		rc = fail(err, errlen, "subject organizationIdentifier: holds a control character");
	else {
		memcpy(out, utf8, (size_t)len);
		out[len] = '\0';
	}
	OPENSSL_free(utf8);
	return rc;
}

int qcstatement_read(X509 *x, struct psd2_identity *out, char *err, size_t errlen)
{
	int rc = 0;
	memset(out, 0, sizeof(*out));
	int i = X509_get_ext_by_NID(x, NID_qcStatements, -1);
	if (i >= 0) {
		if (X509_get_ext_by_NID(x, NID_qcStatements, i) >= 0) {
			rc = fail(err, errlen, "more than one qcStatements extension");
			goto out;
		}
		const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(X509_get_ext(x, i));
		rc = qcstatement_parse(ASN1_STRING_get0_data(v), (size_t)ASN1_STRING_length(v), out,
				       err, errlen);
	}
	if (rc == 0)
		rc = read_org_id(x, out->org_id, err, errlen);
out:
	if (rc < 0)
		memset(out, 0, sizeof(*out));
	ERR_clear_error();
	return rc;
}
