/* Fuzzes what hub mode reads from outside: a bank's token answer (hub_tokens_parse), the
 * callback's query (hub_query_param) and a stored record (hub_tokens_from_payload; the store
 * decrypts it, but a record is read as untrusted all the same). The first byte picks one.
 * Invariants:
 *   - a token answer is accepted only with an access token of visible ASCII, any refresh and
 *     id tokens also so, and an expiry 1 s to a year ahead; refused ones leave nothing behind
 *     and say why;
 *   - a query value found is non-empty visible ASCII that fits, and found again the same;
 *   - a record read back writes out and reads back to the same fields. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hub.h"

#define NOW 2000000000

static bool visible(const char *s)
{
	if (!s || !*s)
		return false;
	for (; *s; s++)
		if (*s <= ' ' || *s >= 0x7f)
			return false;
	return true;
}

static void token_answer(const char *data, size_t len)
{
	struct hub_tokens t;
	const char *why = NULL;
	if (hub_tokens_parse(data, len, NOW, &t, &why) < 0) {
		if (!why || t.access_token || t.refresh_token || t.id_token)
			abort();
		return;
	}
	if (why || !visible(t.access_token) || (t.refresh_token && !visible(t.refresh_token)) ||
	    (t.id_token && !visible(t.id_token)) || t.expires_at <= NOW ||
	    t.expires_at > NOW + 366 * 86400)
		abort();
	hub_tokens_free(&t);
}

static void query(const char *data, size_t len)
{
	static const char *const names[] = {"state", "code"};
	for (size_t i = 0; i < 2; i++) {
		char a[64], b[64];
		int rc = hub_query_param(data, len, names[i], a, sizeof(a));
		if (rc < -1 || rc > 1 || hub_query_param(data, len, names[i], b, sizeof(b)) != rc)
			abort();
		if (rc == 1 && (!visible(a) || strlen(a) >= sizeof(a) || strcmp(a, b) != 0))
			abort();
	}
}

static void record(const char *data, size_t len)
{
	struct hub_tokens t, again;
	struct buf out = {0};
	if (hub_tokens_from_payload(data, len, &t) < 0)
		return;
	if (hub_tokens_to_payload(&t, &out) < 0 ||
	    hub_tokens_from_payload(buf_head(&out), out.len, &again) < 0)
		abort();
	if (strcmp(t.access_token, again.access_token) != 0 ||
	    strcmp(t.client_id, again.client_id) != 0 || t.expires_at != again.expires_at ||
	    !t.refresh_token != !again.refresh_token ||
	    (t.refresh_token && strcmp(t.refresh_token, again.refresh_token) != 0))
		abort();
	hub_tokens_free(&t);
	hub_tokens_free(&again);
	buf_free(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *rest = (const char *)data + 1;
	size_t len = size - 1;
	switch (data[0] % 3) {
	case 0: token_answer(rest, len); break;
	case 1: query(rest, len); break;
	case 2: record(rest, len); break;
	}
	return 0;
}
