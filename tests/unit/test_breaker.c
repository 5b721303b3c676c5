/* breaker: the circuit breaker state machine (user/breaker.c). Fixture rows walk every
 * transition (closed -> open by failures in a row and by the failure ratio of a window, open ->
 * half-open after the cool-down, half-open -> closed when every probe succeeded, -> open on a
 * failed probe), the probes admitted half-open, the Retry-After of a refusal, outcomes of
 * requests admitted before the breaker opened, a clock stepping back, entries holding values
 * no breaker of ours writes, and reset; then threads: many failures at once open it exactly
 * once, and a half-open breaker admits exactly its probes whoever asks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>

#include "breaker.h"

#define T0 1796342400000LL /* 2026-12-04T00:00:00Z in unix ms */
#define CLOSED PSD2_BREAKER_CLOSED
#define OPEN PSD2_BREAKER_OPEN
#define HALF PSD2_BREAKER_HALF_OPEN

enum op { END, ADMIT, OK, FAIL, PROBE_OK, PROBE_FAIL, CANCEL, RESET };

struct step {
	enum op op;
	int64_t at;             /* ms after T0 */
	enum breaker_admit want; /* ADMIT only */
	uint32_t retry;          /* ADMIT refused only */
	uint32_t state;          /* after the step */
};

#define STEPS_MAX 16

struct row {
	const char *what;
	struct config_breaker rule;
	struct psd2_breaker entry; /* before the first step */
	struct step steps[STEPS_MAX];
	uint64_t opened_total, rejected_total; /* after the last step */
};

#define PASS(t) { ADMIT, t, BREAKER_PASS, 0, CLOSED }
#define PROBE(t) { ADMIT, t, BREAKER_PROBE, 0, HALF }
#define REFUSE(t, retry, state) { ADMIT, t, BREAKER_REFUSE, retry, state }
#define DO(op, t, state) { op, t, 0, 0, state }

/* 3 failures in a row; cool-down 5 s; one probe */
static const struct config_breaker in_a_row = { true, 3, 0, 10000, 10, 5000, 1 };
/* 50 % of at least 10 requests in 10 s */
static const struct config_breaker ratio = { true, 0, 50, 10000, 10, 5000, 1 };
static const struct config_breaker three_probes = { true, 3, 0, 10000, 10, 5000, 3 };

/* Three failures from 100 ms: open at 300 ms. */
#define OPEN_AT_300 DO(FAIL, 100, CLOSED), DO(FAIL, 200, CLOSED), DO(FAIL, 300, OPEN)

static const struct row rows[] = {
	{ "closed -> open after 3 failures in a row; refused until the cool-down ends; one probe "
	  "closes it", in_a_row, {},
	  { PASS(0), OPEN_AT_300, REFUSE(301, 5, OPEN), REFUSE(4300, 1, OPEN),
	    REFUSE(5299, 1, OPEN), PROBE(5300), DO(PROBE_OK, 5400, CLOSED), PASS(5401) },
	  1, 3 },
	{ "a success between failures starts the count again", in_a_row, {},
	  { DO(FAIL, 0, CLOSED), DO(FAIL, 1, CLOSED), DO(OK, 2, CLOSED), DO(FAIL, 3, CLOSED),
	    DO(FAIL, 4, CLOSED), PASS(5), DO(FAIL, 6, OPEN) },
	  1, 0 },
	{ "half-open: others are refused with 1 s while the probe is out", in_a_row, {},
	  { OPEN_AT_300, PROBE(5300), REFUSE(5301, 1, HALF), REFUSE(9000, 1, HALF),
	    DO(PROBE_OK, 9001, CLOSED) },
	  1, 2 },
	{ "a failed probe opens it again, the cool-down counted from the failure", in_a_row, {},
	  { OPEN_AT_300, PROBE(5300), DO(PROBE_FAIL, 6000, OPEN), REFUSE(6001, 5, OPEN),
	    REFUSE(10999, 1, OPEN), PROBE(11000), DO(PROBE_OK, 11001, CLOSED) },
	  2, 2 },
	{ "three probes: exactly three admitted, all must succeed", three_probes, {},
	  { OPEN_AT_300, PROBE(5300), PROBE(5301), PROBE(5302), REFUSE(5303, 1, HALF),
	    DO(PROBE_OK, 5400, HALF), REFUSE(5401, 1, HALF), DO(PROBE_OK, 5402, HALF),
	    REFUSE(5403, 1, HALF), DO(PROBE_OK, 5404, CLOSED), PASS(5405) },
	  1, 3 },
	{ "three probes: the last one fails", three_probes, {},
	  { OPEN_AT_300, PROBE(5300), PROBE(5301), PROBE(5302), DO(PROBE_OK, 5400, HALF),
	    DO(PROBE_OK, 5401, HALF), DO(PROBE_FAIL, 5402, OPEN), REFUSE(5403, 5, OPEN) },
	  2, 1 },
	{ "a cancelled probe is given back", in_a_row, {},
	  { OPEN_AT_300, PROBE(5300), REFUSE(5301, 1, HALF), DO(CANCEL, 5302, HALF), PROBE(5303),
	    DO(PROBE_OK, 5304, CLOSED) },
	  1, 1 },
	{ "outcomes of requests admitted before it opened change nothing (no second open, the "
	  "cool-down is not reset, the probe alone decides)", in_a_row, {},
	  { PASS(0), PASS(1), PASS(2), PASS(3), OPEN_AT_300, DO(FAIL, 1000, OPEN),
	    DO(OK, 1100, OPEN), REFUSE(5299, 1, OPEN), PROBE(5300), DO(FAIL, 5301, HALF),
	    DO(OK, 5302, HALF), DO(PROBE_OK, 5303, CLOSED) },
	  1, 1 },
	{ "a probe reported with none out (an earlier half-open period) changes nothing", in_a_row,
	  {},
	  { OPEN_AT_300, PROBE(5300), DO(CANCEL, 5301, HALF), DO(PROBE_OK, 5302, HALF),
	    DO(PROBE_FAIL, 5303, HALF), PROBE(5304), DO(PROBE_OK, 5305, CLOSED) },
	  1, 0 },
	{ "a probe that comes back after a reset counts like any request", in_a_row, {},
	  { OPEN_AT_300, PROBE(5300), DO(RESET, 5301, CLOSED), DO(PROBE_FAIL, 5302, CLOSED),
	    DO(FAIL, 5303, CLOSED), DO(FAIL, 5304, OPEN) },
	  2, 0 },
	{ "ratio: 5 failures of 10 requests in the window open it", ratio, {},
	  { DO(OK, 0, CLOSED), DO(OK, 1, CLOSED), DO(OK, 2, CLOSED), DO(OK, 3, CLOSED),
	    DO(OK, 4, CLOSED), DO(FAIL, 5, CLOSED), DO(FAIL, 6, CLOSED), DO(FAIL, 7, CLOSED),
	    DO(FAIL, 8, CLOSED), DO(FAIL, 9, OPEN) },
	  1, 0 },
	{ "ratio: fewer than min_requests never open it, even all failed", ratio, {},
	  { DO(FAIL, 0, CLOSED), DO(FAIL, 1, CLOSED), DO(FAIL, 2, CLOSED), DO(FAIL, 3, CLOSED),
	    DO(FAIL, 4, CLOSED), DO(FAIL, 5, CLOSED), DO(FAIL, 6, CLOSED), DO(FAIL, 7, CLOSED),
	    DO(FAIL, 8, CLOSED), DO(FAIL, 9, OPEN) },
	  1, 0 },
	{ "ratio: the window restarts when it expires, forgetting its failures",
	  { true, 0, 50, 1000, 4, 5000, 1 }, {},
	  { DO(FAIL, 0, CLOSED), DO(FAIL, 500, CLOSED), DO(FAIL, 999, CLOSED),
	    DO(FAIL, 1000, CLOSED), DO(FAIL, 1100, CLOSED), DO(OK, 1200, CLOSED),
	    DO(OK, 1300, CLOSED), DO(FAIL, 1400, OPEN) },
	  1, 0 },
	{ "ratio: reached on a success does not open it; the next failure does",
	  { true, 0, 50, 10000, 4, 5000, 1 }, {},
	  { DO(FAIL, 0, CLOSED), DO(FAIL, 1, CLOSED), DO(OK, 2, CLOSED), DO(OK, 3, CLOSED),
	    DO(FAIL, 4, OPEN) },
	  1, 0 },
	{ "in a row or ratio, whichever first", { true, 3, 50, 10000, 4, 5000, 1 }, {},
	  { DO(OK, 0, CLOSED), DO(FAIL, 1, CLOSED), DO(OK, 2, CLOSED), DO(FAIL, 3, OPEN) },
	  1, 0 },
	{ "retry_after rounds up", { true, 1, 0, 10000, 10, 1500, 1 }, {},
	  { DO(FAIL, 0, OPEN), REFUSE(1, 2, OPEN), REFUSE(499, 2, OPEN), REFUSE(500, 1, OPEN),
	    REFUSE(1499, 1, OPEN), PROBE(1500) },
	  1, 4 },
	{ "reset: closed, counts cleared, totals kept", in_a_row, {},
	  { OPEN_AT_300, REFUSE(400, 5, OPEN), DO(RESET, 500, CLOSED), PASS(501),
	    DO(FAIL, 502, CLOSED), DO(FAIL, 503, CLOSED), DO(FAIL, 504, OPEN) },
	  2, 1 },
	{ "the clock steps back an hour while open: the cool-down restarts, it does not last the "
	  "hour too", in_a_row, {},
	  { OPEN_AT_300, REFUSE(-3600000, 5, OPEN), REFUSE(-3595001, 1, OPEN), PROBE(-3595000) },
	  1, 2 },
	{ "opened_at_ms at the beginning of time: the cool-down is long over", in_a_row,
	  { .state = OPEN, .opened_at_ms = INT64_MIN }, { PROBE(0), DO(PROBE_OK, 1, CLOSED) }, 0, 0 },
	{ "an unknown state from the map is taken as closed", in_a_row,
	  { .state = 7, .opened_at_ms = T0, .probes_in_flight = 9 },
	  { PASS(0), OPEN_AT_300 }, 1, 0 },
	{ "failures in a row at UINT32_MAX do not wrap", in_a_row,
	  { .consecutive_failures = UINT32_MAX }, { DO(FAIL, 0, OPEN) }, 1, 0 },
	{ "probes in flight at UINT32_MAX (a dead process's) are forgotten at the next half-open",
	  in_a_row, { .state = OPEN, .opened_at_ms = T0, .probes_in_flight = UINT32_MAX },
	  { PROBE(5000), REFUSE(5001, 1, HALF), DO(PROBE_OK, 5002, CLOSED) }, 0, 1 },
	{ "probes 0 is taken as 1", { true, 1, 0, 10000, 10, 1000, 0 }, {},
	  { DO(FAIL, 0, OPEN), PROBE(1000), REFUSE(1001, 1, HALF), DO(PROBE_OK, 1002, CLOSED) },
	  1, 1 },
};

static void test_fixtures(void **state)
{
	int failures = 0;

	(void)state;
	for (size_t r = 0; r < sizeof(rows) / sizeof(rows[0]); r++) {
		const struct config_breaker *rule = &rows[r].rule;
		struct psd2_breaker b = rows[r].entry;

		for (int i = 0; i < STEPS_MAX && rows[r].steps[i].op != END; i++) {
			const struct step *s = &rows[r].steps[i];
			enum breaker_admit got = BREAKER_PASS;
			uint32_t retry = 0;

			switch (s->op) {
			case ADMIT:
				got = breaker_admit(&b, rule, T0 + s->at, &retry);
				break;
			case OK:
			case FAIL:
				breaker_record(&b, rule, false, s->op == FAIL, T0 + s->at);
				break;
			case PROBE_OK:
			case PROBE_FAIL:
				breaker_record(&b, rule, true, s->op == PROBE_FAIL, T0 + s->at);
				break;
			case CANCEL:
				breaker_cancel_probe(&b);
				break;
			case RESET:
				breaker_reset(&b);
				break;
			case END:
				break;
			}
			if (got != s->want || retry != s->retry || b.state != s->state || b.lock)
				failures++, print_error("%s: step %d (op %d at %lld): verdict %d retry %u "
					"state %s lock %u; want %d retry %u state %s\n", rows[r].what, i,
					s->op, (long long)s->at, got, retry, breaker_state_name(b.state),
					b.lock, s->want, s->retry, breaker_state_name(s->state));
		}
		if (b.opened_total != rows[r].opened_total || b.rejected_total != rows[r].rejected_total)
			failures++, print_error("%s: opened_total %llu rejected_total %llu; want %llu "
				"%llu\n", rows[r].what, (unsigned long long)b.opened_total,
				(unsigned long long)b.rejected_total,
				(unsigned long long)rows[r].opened_total,
				(unsigned long long)rows[r].rejected_total);
	}
	assert_int_equal(failures, 0);
}

/* What bpftool shows: the time it opened while open, 0 once closed; the name and totals kept
 * across a reset. */
static void test_fields(void **state)
{
	struct psd2_breaker b = { .name = "accounts" };
	uint32_t retry;

	(void)state;
	for (int i = 0; i < 3; i++)
		breaker_record(&b, &in_a_row, false, true, T0 + i);
	assert_int_equal(b.state, OPEN);
	assert_int_equal(b.opened_at_ms, T0 + 2);
	assert_int_equal(b.consecutive_failures, 3);
	assert_int_equal(breaker_admit(&b, &in_a_row, T0 + 3, &retry), BREAKER_REFUSE);
	breaker_reset(&b);
	assert_string_equal(b.name, "accounts");
	assert_int_equal(b.state, CLOSED);
	assert_int_equal(b.opened_at_ms, 0);
	assert_int_equal(b.consecutive_failures, 0);
	assert_int_equal(b.window_requests, 0);
	assert_int_equal(b.opened_total, 1);
	assert_int_equal(b.rejected_total, 1);
}

static void test_recover(void **state)
{
	struct psd2_breaker b = { .state = HALF, .opened_at_ms = T0, .probes_in_flight = 1,
				  .lock = 1 };
	uint32_t retry;

	(void)state;
	breaker_recover(&b); /* the process that held the lock and sent the probe is gone */
	assert_int_equal(b.lock, 0);
	assert_int_equal(breaker_admit(&b, &in_a_row, T0 + 6000, &retry), BREAKER_PROBE);
}

static void test_state_names(void **state)
{
	(void)state;
	assert_string_equal(breaker_state_name(CLOSED), "closed");
	assert_string_equal(breaker_state_name(OPEN), "open");
	assert_string_equal(breaker_state_name(HALF), "half-open");
	assert_string_equal(breaker_state_name(99), "unknown");
}

/* --- threads on one entry ------------------------------------------------------------------ */

#define THREADS 8
#define CALLS 1000000 /* per thread: enough that an unlocked update is likely to be lost */

static struct shared {
	struct psd2_breaker b;
	const struct config_breaker *rule;
	pthread_barrier_t start;
	uint64_t probes[THREADS], refused[THREADS];
} sh;

static void *fail_all(void *arg)
{
	pthread_barrier_wait(&sh.start);
	for (int i = 0; i < CALLS; i++)
		breaker_record(&sh.b, sh.rule, false, true, T0 + i);
	(void)arg;
	return NULL;
}

static void *record_all(void *arg)
{
	pthread_barrier_wait(&sh.start);
	for (int i = 0; i < CALLS; i++)
		breaker_record(&sh.b, sh.rule, false, i % 2, T0 + i);
	(void)arg;
	return NULL;
}

static void *admit_all(void *arg)
{
	int me = (int)(intptr_t)arg;

	pthread_barrier_wait(&sh.start);
	for (int i = 0; i < CALLS; i++) {
		uint32_t retry;

		switch (breaker_admit(&sh.b, sh.rule, T0 + 10000 + i, &retry)) {
		case BREAKER_PROBE:
			sh.probes[me]++;
			break;
		case BREAKER_REFUSE:
			sh.refused[me]++;
			break;
		case BREAKER_PASS:
			break;
		}
	}
	return NULL;
}

static void run_threads(void *(*fn)(void *))
{
	pthread_t th[THREADS];

	assert_int_equal(pthread_barrier_init(&sh.start, NULL, THREADS), 0);
	for (intptr_t i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, fn, (void *)i), 0);
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	pthread_barrier_destroy(&sh.start);
}

/* Requests in flight on every worker fail together: the breaker opens once, and the failures
 * that arrive after it opened neither open it again nor move its cool-down. */
static void test_concurrent_failures_open_once(void **state)
{
	(void)state;
	sh = (struct shared){ .rule = &in_a_row };
	run_threads(fail_all);
	assert_int_equal(sh.b.state, OPEN);
	assert_int_equal(sh.b.opened_total, 1);
	/* at the third failure, whichever thread reported it: every thread's third call is at
	 * T0 + 2 */
	assert_true(sh.b.opened_at_ms <= T0 + 2);
	assert_int_equal(sh.b.lock, 0);
}

/* Every outcome counts, whichever worker reports it (a breaker that never opens). */
static void test_concurrent_records_lose_nothing(void **state)
{
	static const struct config_breaker never = { true, 0, 0, UINT32_MAX, 10, 5000, 1 };

	(void)state;
	sh = (struct shared){ .rule = &never };
	run_threads(record_all);
	assert_int_equal(sh.b.state, CLOSED);
	assert_int_equal(sh.b.window_requests, THREADS * CALLS);
	assert_int_equal(sh.b.window_failures, THREADS * CALLS / 2);
	assert_int_equal(sh.b.lock, 0);
}

/* Half-open, every worker asking at once: exactly `probes` go through. */
static void test_concurrent_admits_take_exactly_the_probes(void **state)
{
	uint64_t probes = 0, refused = 0;

	(void)state;
	sh = (struct shared){ .rule = &three_probes, .b = { .state = OPEN, .opened_at_ms = T0 } };
	run_threads(admit_all);
	for (int i = 0; i < THREADS; i++)
		probes += sh.probes[i], refused += sh.refused[i];
	assert_int_equal(probes, 3);
	assert_int_equal(refused, THREADS * CALLS - 3);
	assert_int_equal(sh.b.rejected_total, refused);
	assert_int_equal(sh.b.state, HALF);
	assert_int_equal(sh.b.probes_in_flight, 3);
	assert_int_equal(sh.b.lock, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fixtures),
		cmocka_unit_test(test_fields),
		cmocka_unit_test(test_recover),
		cmocka_unit_test(test_state_names),
		cmocka_unit_test(test_concurrent_failures_open_once),
		cmocka_unit_test(test_concurrent_records_lose_nothing),
		cmocka_unit_test(test_concurrent_admits_take_exactly_the_probes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
