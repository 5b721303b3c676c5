/* What an eIDAS PSD2 certificate (QWAC or QSealC, ETSI TS 119 495) says about its holder: the
 * PSD2 roles and the competent authority in the id-etsi-psd2-qcStatement (0.4.0.19495.2) of the
 * qcStatements extension (1.3.6.1.5.5.7.1.3), and the subject's organizationIdentifier
 * (2.5.4.97, e.g. "PSDGB-FCA-123456").
 *
 * The role helpers below are inline so that the configuration (routes[].require_roles) and the
 * request path can name roles without linking the parser. */
#ifndef PSD2EDGE_QCSTATEMENT_H
#define PSD2EDGE_QCSTATEMENT_H

#include <openssl/x509.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The roles as a bit set, in the order of their OIDs 0.4.0.19495.1.1 .. 4. */
#define PSD2_ROLE_AS 0x1u /* PSP_AS: account servicing (a bank) */
#define PSD2_ROLE_PI 0x2u /* PSP_PI: payment initiation */
#define PSD2_ROLE_AI 0x4u /* PSP_AI: account information */
#define PSD2_ROLE_IC 0x8u /* PSP_IC: issuing of card-based payment instruments */
#define PSD2_ROLE_COUNT 4
#define PSD2_ROLES_ALL 0xfu
#define PSD2_ROLES_TEXT_MAX sizeof("PSP_AS,PSP_PI,PSP_AI,PSP_IC") /* with the NUL */

#define PSD2_ORG_ID_MAX 128  /* bytes of the organizationIdentifier kept (longer is refused) */
#define PSD2_NCA_MAX_CHARS 256 /* NCAName and NCAId: UTF8String (SIZE (1..256)) */
#define PSD2_NCA_MAX_BYTES (4 * PSD2_NCA_MAX_CHARS)

/* The name of role bit i (0 .. PSD2_ROLE_COUNT - 1) as the QCStatement spells it. */
static inline const char *psd2_role_name(unsigned i)
{
	switch (i) {
	case 0: return "PSP_AS";
	case 1: return "PSP_PI";
	case 2: return "PSP_AI";
	case 3: return "PSP_IC";
	default: return NULL;
	}
}

/* The bit of the role named by the len bytes at s, 0 when it names none. */
static inline uint32_t psd2_role_by_name(const char *s, size_t len)
{
	for (unsigned i = 0; i < PSD2_ROLE_COUNT; i++) {
		const char *name = psd2_role_name(i);
		if (strlen(name) == len && memcmp(name, s, len) == 0)
			return 1u << i;
	}
	return 0;
}

/* "PSP_PI,PSP_AI": the names of the set bits, in bit order; "" for none. */
static inline void psd2_roles_format(uint32_t roles, char out[PSD2_ROLES_TEXT_MAX])
{
	size_t n = 0;
	out[0] = '\0';
	for (unsigned i = 0; i < PSD2_ROLE_COUNT; i++)
		if (roles & (1u << i))
			n += (size_t)snprintf(out + n, PSD2_ROLES_TEXT_MAX - n, "%s%s", n ? "," : "",
					      psd2_role_name(i));
}

/* Every field empty (roles 0) when the certificate carries none of it. */
struct psd2_identity {
	uint32_t roles;                       /* PSD2_ROLE_* */
	char org_id[PSD2_ORG_ID_MAX + 1];     /* subject organizationIdentifier, UTF-8 */
	char nca_name[PSD2_NCA_MAX_BYTES + 1]; /* competent authority, e.g. "Financial Conduct Authority" */
	char nca_id[PSD2_NCA_MAX_BYTES + 1];  /* e.g. "GB-FCA" */
};

/* Reads the PSD2 QCStatement and the organizationIdentifier of x into *out. A certificate
 * without them is fine (0, fields empty). -1 with the problem in err when they are present but
 * wrong: an encoding that is not DER or has trailing bytes, a second qcStatements extension,
 * PSD2 statement or organizationIdentifier, an unknown role OID, a role whose OID and name
 * disagree, a role listed twice, an NCA name or id that is empty, too long or not UTF-8. */
int qcstatement_read(X509 *x, struct psd2_identity *out, char *err, size_t errlen);

/* The same for the DER value of a qcStatements extension alone (out->org_id is left empty):
 * what qcstatement_read does with the extension, and what the fuzzer drives. */
int qcstatement_parse(const unsigned char *der, size_t len, struct psd2_identity *out,
		      char *err, size_t errlen);

#endif
