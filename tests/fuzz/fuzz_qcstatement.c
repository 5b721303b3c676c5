/* Fuzzes qcstatement_parse on the value of a qcStatements extension. Invariants:
 *   - OpenSSL's error queue is left empty, accepted or not;
 *   - a refusal names its problem and leaves the result empty;
 *   - an accepted value holds only known roles, an NCA name and id of 1 to 256 UTF-8
 *     characters without control characters (or neither, without a PSD2 statement), and no
 *     organizationIdentifier (the extension has none);
 *   - the same bytes read the same way twice. */
#include <openssl/err.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "qcstatement.h"

/* Characters of a UTF-8 text without control characters, -1 when it is not one. */
static int utf8_chars(const char *s)
{
	int n = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; n++) {
		size_t len = *p < 0x80 ? 1 : (*p & 0xe0) == 0xc0 ? 2 : (*p & 0xf0) == 0xe0 ? 3 : 4;
		if (*p < 0x20 || *p == 0x7f || (*p & 0xc0) == 0x80 || *p > 0xf4)
			return -1;
		for (size_t i = 1; i < len; i++)
			if ((p[i] & 0xc0) != 0x80)
				return -1;
		p += len;
	}
	return n;
}

static void check_accepted(const struct psd2_identity *id)
{
	if (id->roles & ~PSD2_ROLES_ALL || id->org_id[0])
		abort();
	bool statement = id->nca_name[0] || id->nca_id[0];
	if (!statement && id->roles)
		abort();
	if (!statement)
		return;
	int name = utf8_chars(id->nca_name), nca_id = utf8_chars(id->nca_id);
	if (name < 1 || name > PSD2_NCA_MAX_CHARS || nca_id < 1 || nca_id > PSD2_NCA_MAX_CHARS)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct psd2_identity empty;
	struct psd2_identity a, b;
	char err[256] = "", err2[256] = "";
	int rc = qcstatement_parse(data, size, &a, err, sizeof(err));
	if (ERR_peek_error() != 0)
		abort();
	if (rc < 0) {
		if (!err[0] || memcmp(&a, &empty, sizeof(a)) != 0)
			abort();
	} else if (rc == 0) {
		check_accepted(&a);
	} else {
		abort();
	}
	if (qcstatement_parse(data, size, &b, err2, sizeof(err2)) != rc ||
	    memcmp(&a, &b, sizeof(a)) != 0 || strcmp(err, err2) != 0)
		abort();
	return 0;
}
