/* A unit test whose precondition (root, BPF, a peer tool) is missing fails, so that `make check`
 * never counts it as passed; the fast tier (`make test-fast`, PSD2E_ALLOW_SKIP=1) skips it
 * instead, visibly. Include after <cmocka.h>. */
#ifndef PSD2EDGE_TEST_PRECONDITION_H
#define PSD2EDGE_TEST_PRECONDITION_H

#include <stdlib.h>

#define precondition_missing(why)                                                          \
	do {                                                                               \
		if (getenv("PSD2E_ALLOW_SKIP")) {                                          \
			print_message("skipped, precondition missing: %s\n", (why));        \
			skip();                                                            \
		}                                                                          \
		fail_msg("precondition missing: %s", (why));                               \
	} while (0)

#endif
