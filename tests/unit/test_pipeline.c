/* The request pipeline's identity stage against a real registry: every verdict, including the
 * ones integration tests cannot reach easily (a certificate expiring on a live connection, a
 * claimed id that is a prefix of the bound one). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "pipeline.h"
#include "registry.h"
#include "testpki.h"

struct fixture {
	struct testpki pki;
	char dir[64];
	struct registry *reg;
	struct config cfg;
	uint8_t good[CERT_THUMB_LEN], revoked[CERT_THUMB_LEN], unbound[CERT_THUMB_LEN];
	int64_t good_not_after;
};

static void bind_cert(struct fixture *f, const char *client_id, X509 *x, uint8_t thumb[CERT_THUMB_LEN])
{
	struct cert_info ci;
	char err[256];
	assert_int_equal(cert_get_info(x, &ci), 0);
	char *pem = testpki_pem(x);
	assert_int_equal(registry_bind(f->reg, client_id, &ci, pem, false, 0, NULL, err, sizeof(err)),
			 REG_OK);
	free(pem);
	memcpy(thumb, ci.thumb, CERT_THUMB_LEN);
	if (x == f->pki.good)
		f->good_not_after = ci.not_after;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	assert_int_equal(testpki_init(&f->pki), 0);
	snprintf(f->dir, sizeof(f->dir), "/tmp/psd2e-pipeline.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char path[128], err[256];
	snprintf(path, sizeof(path), "%s/registry.db", f->dir);
	assert_int_equal(registry_open(path, &f->reg, err, sizeof(err)), 0);
	bind_cert(f, "tpp-good", f->pki.good, f->good);
	bind_cert(f, "tpp-rev", f->pki.revoked, f->revoked);
	assert_int_equal(registry_revoke(f->reg, "tpp-rev", 0, NULL, err, sizeof(err)), REG_OK);
	assert_int_equal(cert_thumbprint(f->pki.foreign, f->unbound), 0);
	f->cfg.client_id[0] = (struct client_id_source){CID_SOURCE_QUERY, "client_id"};
	f->cfg.client_id[1] = (struct client_id_source){CID_SOURCE_HEADER, "x-client-id"};
	f->cfg.n_client_id = 2;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];
	registry_close(f->reg);
	testpki_free(&f->pki);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

enum which_cert { USE_GOOD, USE_REVOKED, USE_UNBOUND, USE_NONE };

static const struct pipeline_case {
	const char *desc;
	const char *request;
	enum which_cert cert;
	int64_t clock_offset; /* seconds past the good certificate's not_after; 0 = now */
	enum stage_result want;
	const char *reason;
} cases[] = {
	{"bound certificate, its own id in the query",
	 "GET /a?client_id=tpp-good HTTP/1.1\r\nHost: gw\r\n\r\n", USE_GOOD, 0, STAGE_NEXT, "bound"},
	{"bound certificate, its own id in the header",
	 "GET /a HTTP/1.1\r\nHost: gw\r\nX-Client-Id: tpp-good\r\n\r\n", USE_GOOD, 0, STAGE_NEXT,
	 "bound"},
	{"query and header agree",
	 "GET /a?client_id=tpp-good HTTP/1.1\r\nHost: gw\r\nX-Client-Id: tpp-good\r\n\r\n", USE_GOOD,
	 0, STAGE_NEXT, "bound"},
	{"another client's id", "GET /a?client_id=tpp-rev HTTP/1.1\r\nHost: gw\r\n\r\n", USE_GOOD, 0,
	 STAGE_REJECT, "client_mismatch"},
	{"a prefix of the bound id", "GET /a?client_id=tpp-goo HTTP/1.1\r\nHost: gw\r\n\r\n", USE_GOOD,
	 0, STAGE_REJECT, "client_mismatch"},
	{"the bound id with a suffix", "GET /a?client_id=tpp-goodx HTTP/1.1\r\nHost: gw\r\n\r\n",
	 USE_GOOD, 0, STAGE_REJECT, "client_mismatch"},
	{"no client_id anywhere", "GET /a HTTP/1.1\r\nHost: gw\r\n\r\n", USE_GOOD, 0, STAGE_REJECT,
	 "client_id_missing"},
	{"query and header disagree",
	 "GET /a?client_id=tpp-good HTTP/1.1\r\nHost: gw\r\nX-Client-Id: tpp-rev\r\n\r\n", USE_GOOD, 0,
	 STAGE_REJECT, "client_id_conflict"},
	{"a client_id with a space", "GET /a?client_id=tpp+good HTTP/1.1\r\nHost: gw\r\n\r\n",
	 USE_GOOD, 0, STAGE_REJECT, "client_id_invalid"},
	{"revoked certificate, its own id", "GET /a?client_id=tpp-rev HTTP/1.1\r\nHost: gw\r\n\r\n",
	 USE_REVOKED, 0, STAGE_REJECT, "cert_revoked"},
	{"unbound certificate", "GET /a?client_id=tpp-good HTTP/1.1\r\nHost: gw\r\n\r\n",
	 USE_UNBOUND, 0, STAGE_REJECT, "cert_unbound"},
	{"no certificate at all", "GET /a?client_id=tpp-good HTTP/1.1\r\nHost: gw\r\n\r\n", USE_NONE,
	 0, STAGE_REJECT, "cert_unbound"},
	{"bound certificate that expired on a live connection",
	 "GET /a?client_id=tpp-good HTTP/1.1\r\nHost: gw\r\n\r\n", USE_GOOD, 1, STAGE_REJECT,
	 "cert_expired"},
};

static void test_identity_verdicts(void **state)
{
	struct fixture *f = *state;
	const struct http_limits lim = {.max_header_bytes = 8192, .max_body_bytes = 1 << 20};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct pipeline_case *c = &cases[i];
		struct http_msg req;
		http_msg_init(&req, HTTP_REQUEST, &lim);
		size_t len = strlen(c->request);
		assert_int_equal(http_msg_feed(&req, c->request, len, NULL, NULL), len);
		assert_int_equal(req.state, HTTP_MSG_DONE);
		const uint8_t *thumb = c->cert == USE_GOOD      ? f->good
				       : c->cert == USE_REVOKED ? f->revoked
				       : c->cert == USE_UNBOUND ? f->unbound
								 : NULL;
		struct request_ctx rc = {
			.cfg = &f->cfg,
			.reg = f->reg,
			.req = &req,
			.thumb = thumb,
			.now = c->clock_offset ? f->good_not_after + c->clock_offset : time(NULL),
		};
		enum stage_result r = pipeline_run(&rc);
		if (r != c->want || strcmp(rc.reason, c->reason) != 0)
			fail_msg("%s: got %s/%s, want %s/%s", c->desc,
				 r == STAGE_NEXT ? "next" : "reject", rc.reason,
				 c->want == STAGE_NEXT ? "next" : "reject", c->reason);
		if (r == STAGE_REJECT) {
			assert_int_equal(rc.status, 401);
			assert_string_equal(rc.error, "invalid_client");
			assert_non_null(rc.description);
		} else {
			assert_string_equal(rc.binding.client_id, "tpp-good");
			assert_string_equal(rc.client_id, "tpp-good");
		}
		http_msg_free(&req);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_identity_verdicts, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
