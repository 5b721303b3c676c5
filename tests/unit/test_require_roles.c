/* The require_roles route policy: a fixture table of the roles a route requires, the roles of
 * the client's certificate, and the verdict: through, or 403 forbidden naming what is missing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "policy.h"
#include "qcstatement.h"

#define AS PSD2_ROLE_AS
#define PI PSD2_ROLE_PI
#define AI PSD2_ROLE_AI
#define IC PSD2_ROLE_IC

static const struct {
	uint32_t required, held;
	const char *refused; /* the description of the 403, NULL: through */
} cases[] = {
	{PI, PI, NULL},
	{PI, PI | AI, NULL},
	{AI, PSD2_ROLES_ALL, NULL},
	{PI | AI, AI | PI | IC, NULL},
	{PI, AI, "the certificate's PSD2 roles lack PSP_PI"},
	{AI, PI, "the certificate's PSD2 roles lack PSP_AI"},
	{PI, 0, "the certificate's PSD2 roles lack PSP_PI"},
	{PI | AI, AI, "the certificate's PSD2 roles lack PSP_PI"},
	{PI | AI, 0, "the certificate's PSD2 roles lack PSP_PI,PSP_AI"},
	{PSD2_ROLES_ALL, PI, "the certificate's PSD2 roles lack PSP_AS,PSP_AI,PSP_IC"},
	{IC, AS | PI | AI, "the certificate's PSD2 roles lack PSP_IC"},
};

static void test_cases(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct policy *p = policy_require_roles_new(cases[i].required);
		assert_non_null(p);
		struct policy_request pr = {.client_id = "tpp", .psd2_roles = cases[i].held};
		uint64_t token = 0;
		enum policy_verdict v = p->ops->on_request(p, &pr, &token);
		if (!cases[i].refused) {
			if (v != POLICY_NEXT)
				fail_msg("case %zu: refused: %s", i, pr.description);
		} else {
			if (v != POLICY_REFUSE)
				fail_msg("case %zu: let through, want '%s'", i, cases[i].refused);
			assert_int_equal(pr.status, 403);
			assert_string_equal(pr.error, "forbidden");
			assert_string_equal(pr.description, cases[i].refused);
			assert_int_equal(pr.retry_after, 0);
			assert_string_equal(pr.reason, "psd2_role_missing");
		}
		p->ops->free(p);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(test_cases)};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
