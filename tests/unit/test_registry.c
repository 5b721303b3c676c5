/* registry: schema, binding rules, slots, rollback on failure, persistence across reopen and
 * across kill -9, audit, listings, deny-list, and lookups from threads during mutations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <ftw.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cert.h"
#include "qcstatement.h"
#include "registry.h"
#include "testpki.h"

#define UID 1000

struct fx {
	char dir[64];
	char path[128]; /* under two directories that do not exist yet */
	struct registry *reg;
	struct testpki pki;
	long serial;
};

struct tcert {
	struct cert_info ci;
	char *pem;
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void reg_open(struct fx *f)
{
	char err[256] = "";
	if (registry_open(f->path, &f->reg, err, sizeof(err)) != 0)
		fail_msg("registry_open: %s", err);
}

static void reg_reopen(struct fx *f)
{
	registry_close(f->reg);
	f->reg = NULL;
	reg_open(f);
}

static int setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	if (!f || testpki_init(&f->pki) < 0)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_registry.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->path, sizeof(f->path), "%s/var/psd2edge/registry.db", f->dir);
	char err[256];
	if (registry_open(f->path, &f->reg, err, sizeof(err)) != 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fx *f = *state;
	registry_close(f->reg);
	nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
	testpki_free(&f->pki);
	free(f);
	return 0;
}

static void cert_new(struct fx *f, struct tcert *c)
{
	X509 *x = testpki_leaf("tpp", f->pki.leaf_key, f->pki.ca, f->pki.ca_key, ++f->serial);
	assert_non_null(x);
	assert_int_equal(cert_get_info(x, &c->ci), 0);
	c->pem = testpki_pem(x);
	assert_non_null(c->pem);
	X509_free(x);
}

static void certs_free(struct tcert *c, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(c[i].pem);
}

static int bind(struct fx *f, const char *id, const struct tcert *c, bool rotate, uint32_t *slot,
		char *err)
{
	err[0] = '\0';
	return registry_bind(f->reg, id, &c->ci, c->pem, rotate, UID, slot, err, 256);
}

/* The status, and a message containing want. */
static void expect(int got, int want_status, const char *err, const char *want)
{
	if (got != want_status)
		fail_msg("status %d, want %d (%s)", got, want_status, err);
	if (want && !strstr(err, want))
		fail_msg("error '%s' does not mention '%s'", err, want);
}

static void expect_binding(struct fx *f, const struct tcert *c, const char *id, uint32_t slot,
			   enum cert_state state)
{
	struct registry_binding b;
	assert_int_equal(registry_lookup(f->reg, c->ci.thumb, &b), REG_OK);
	assert_string_equal(b.client_id, id);
	assert_int_equal(b.slot, slot);
	assert_int_equal(b.state, state);
	assert_int_equal(b.not_before, c->ci.not_before);
	assert_int_equal(b.not_after, c->ci.not_after);
}

static void expect_unbound(struct fx *f, const struct tcert *c)
{
	struct registry_binding b;
	assert_int_equal(registry_lookup(f->reg, c->ci.thumb, &b), REG_ERR_NOT_FOUND);
}

static size_t audit_count(struct fx *f)
{
	struct registry_audit_entry *e;
	size_t n;
	assert_int_equal(registry_audit(f->reg, NULL, SIZE_MAX, &e, &n), REG_OK);
	free(e);
	return n;
}

static sqlite3 *side_db(struct fx *f)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
	sqlite3_busy_timeout(db, 5000);
	return db;
}

static void side_exec(struct fx *f, const char *sql)
{
	sqlite3 *db = side_db(f);
	char *msg = NULL;
	if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
		fail_msg("%s: %s", sql, msg);
	sqlite3_close(db);
}

static void side_text(struct fx *f, const char *sql, char *out, size_t outlen)
{
	sqlite3 *db = side_db(f);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
}

static void test_open_schema(void **state)
{
	struct fx *f = *state;
	char s[128], err[256];
	struct stat sb;

	char parent[128];
	snprintf(parent, sizeof(parent), "%s/var/psd2edge", f->dir);
	assert_int_equal(stat(parent, &sb), 0);
	assert_int_equal(sb.st_mode & 07777, 0750);

	side_text(f, "PRAGMA user_version", s, sizeof(s));
	assert_int_equal(atoi(s), REGISTRY_SCHEMA_VERSION);
	side_text(f, "PRAGMA journal_mode", s, sizeof(s));
	assert_string_equal(s, "wal");
	side_text(f,
		  "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master"
		  " WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name)",
		  s, sizeof(s));
	assert_string_equal(s, "audit,certificates,client_limits,clients,deny,quota_counters,"
			       "settings");

	/* Reopening an up-to-date database changes nothing. */
	reg_reopen(f);
	side_text(f, "PRAGMA user_version", s, sizeof(s));
	assert_int_equal(atoi(s), REGISTRY_SCHEMA_VERSION);

	/* A database from a newer build is refused, not downgraded. */
	registry_close(f->reg);
	f->reg = NULL;
	side_exec(f, "PRAGMA user_version = 99");
	struct registry *r = (struct registry *)1;
	assert_int_equal(registry_open(f->path, &r, err, sizeof(err)), -1);
	assert_null(r);
	assert_non_null(strstr(err, "schema version 99"));
	snprintf(s, sizeof(s), "PRAGMA user_version = %d", REGISTRY_SCHEMA_VERSION);
	side_exec(f, s);
	reg_open(f);

	/* The directory cannot be created under a regular file. */
	char bad[160];
	snprintf(bad, sizeof(bad), "%s/registry.db/sub/x.db", parent);
	assert_int_equal(registry_open(bad, &r, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "cannot create directory"));
	assert_int_equal(registry_open("", &r, err, sizeof(err)), -1);
}

static void test_client_id_valid(void **state)
{
	(void)state;
	char max[REGISTRY_CLIENT_ID_MAX + 2];
	memset(max, 'a', sizeof(max));
	max[REGISTRY_CLIENT_ID_MAX] = '\0';
	assert_true(registry_client_id_valid(max));
	assert_true(registry_client_id_valid("a"));
	assert_true(registry_client_id_valid("PSDDE-BAFIN-123456_x.y~!#$%&'()*+,-/:;<=>?@[]^`{|}"));
	max[REGISTRY_CLIENT_ID_MAX] = 'a';
	max[REGISTRY_CLIENT_ID_MAX + 1] = '\0';
	assert_false(registry_client_id_valid(max));
	assert_false(registry_client_id_valid(NULL));
	assert_false(registry_client_id_valid(""));
	assert_false(registry_client_id_valid("a b"));
	assert_false(registry_client_id_valid("a\"b"));
	assert_false(registry_client_id_valid("a\\b"));
	assert_false(registry_client_id_valid("a\tb"));
	assert_false(registry_client_id_valid("a\x7f"));
	assert_false(registry_client_id_valid("caf\xc3\xa9"));
}

static void test_bind_rules(void **state)
{
	struct fx *f = *state;
	struct tcert c[5];
	char err[256];
	uint32_t slot = 99;
	for (size_t i = 0; i < 5; i++)
		cert_new(f, &c[i]);

	expect(bind(f, "tpp1", &c[0], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 0);
	expect_binding(f, &c[0], "tpp1", 0, CERT_ACTIVE);
	size_t audits = audit_count(f);

	/* Every refusal below leaves the database, the audit trail and the index alone. */
	expect(bind(f, "tpp1", &c[0], false, &slot, err), REG_ERR_CONFLICT, err, "already bound");
	expect(bind(f, "tpp1", &c[0], true, &slot, err), REG_ERR_CONFLICT, err, "already bound");
	expect(bind(f, "tpp2", &c[0], false, &slot, err), REG_ERR_CONFLICT, err,
	       "bound to client tpp1");
	expect(bind(f, "tpp1", &c[1], false, &slot, err), REG_ERR_NEED_ROTATE, err, "rotate");
	expect(bind(f, "bad id", &c[1], false, &slot, err), REG_ERR_INVALID, err, "client_id");
	assert_int_equal(registry_bind(f->reg, "tpp1", &c[1].ci, NULL, false, UID, &slot, err, 256),
			 REG_ERR_INVALID);
	assert_int_equal(audit_count(f), audits);
	expect_unbound(f, &c[1]);
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, "tpp2", &cl), REG_ERR_NOT_FOUND);

	/* Rotation: a second active certificate, never a third. */
	expect(bind(f, "tpp1", &c[1], true, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 0);
	expect_binding(f, &c[1], "tpp1", 0, CERT_ACTIVE);
	expect(bind(f, "tpp1", &c[2], true, &slot, err), REG_ERR_LIMIT, err, "2 active");
	expect_unbound(f, &c[2]);

	/* Revocation is final for those certificates, whoever asks. */
	assert_int_equal(registry_revoke(f->reg, "tpp1", UID, &slot, err, sizeof(err)), REG_OK);
	expect_binding(f, &c[0], "tpp1", 0, CERT_REVOKED);
	expect_binding(f, &c[1], "tpp1", 0, CERT_REVOKED);
	expect(bind(f, "tpp1", &c[0], false, &slot, err), REG_ERR_REVOKED, err, "revoked");
	expect(bind(f, "tpp2", &c[1], true, &slot, err), REG_ERR_REVOKED, err, "revoked");

	/* With no active certificate left a plain bind is allowed again. */
	expect(bind(f, "tpp1", &c[2], false, &slot, err), REG_OK, err, NULL);
	expect_binding(f, &c[2], "tpp1", 0, CERT_ACTIVE);

	/* Rotate for a client without an active certificate is a plain bind. */
	expect(bind(f, "tpp2", &c[3], true, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	struct registry_audit_entry *e;
	size_t n;
	assert_int_equal(registry_audit(f->reg, "tpp2", 1, &e, &n), REG_OK);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].action, "bind");
	free(e);

	assert_int_equal(registry_get_client(f->reg, "tpp1", &cl), REG_OK);
	assert_int_equal(cl.n_certs, 3);
	registry_client_free(&cl);
	certs_free(c, 5);
}

static void test_slots(void **state)
{
	struct fx *f = *state;
	struct tcert c[5];
	char err[256], id[16];
	uint32_t slot;
	for (size_t i = 0; i < 5; i++)
		cert_new(f, &c[i]);
	for (uint32_t i = 0; i < 3; i++) {
		snprintf(id, sizeof(id), "c%u", i);
		expect(bind(f, id, &c[i], false, &slot, err), REG_OK, err, NULL);
		assert_int_equal(slot, i);
	}
	assert_int_equal(registry_unbind_client(f->reg, "c1", UID, &slot, err, sizeof(err)), REG_OK);
	assert_int_equal(slot, 1);
	/* The smallest free slot is reused first. */
	expect(bind(f, "c3", &c[3], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	expect(bind(f, "c4", &c[4], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 3);
	certs_free(c, 5);
}

static void test_slot_limit(void **state)
{
	struct fx *f = *state;
	struct tcert c[2];
	char err[256];
	uint32_t slot;
	cert_new(f, &c[0]);
	cert_new(f, &c[1]);
	side_exec(f, "WITH RECURSIVE s(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM s WHERE n < 65535)"
		     " INSERT INTO clients (client_id, slot, created_at)"
		     " SELECT 'filler' || n, n, 0 FROM s");
	expect(bind(f, "one-too-many", &c[0], false, &slot, err), REG_ERR_LIMIT, err,
	       "no free client slot");
	expect_unbound(f, &c[0]);
	side_exec(f, "DELETE FROM clients WHERE slot = 4242");
	expect(bind(f, "fits", &c[1], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 4242);
	certs_free(c, 2);
}

/* A failure after some writes (here the audit insert, made to fail by a trigger) rolls the
 * whole mutation back and leaves the index as it was. */
static void test_failure_rolls_back(void **state)
{
	struct fx *f = *state;
	struct tcert c[2];
	char err[256];
	uint32_t slot;
	cert_new(f, &c[0]);
	cert_new(f, &c[1]);
	expect(bind(f, "tpp1", &c[0], false, &slot, err), REG_OK, err, NULL);
	side_exec(f, "CREATE TRIGGER no_audit BEFORE INSERT ON audit"
		     " BEGIN SELECT RAISE(ABORT, 'injected failure'); END");

	expect(bind(f, "tpp2", &c[1], false, &slot, err), REG_ERR_IO, err, "injected failure");
	expect_unbound(f, &c[1]);
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, "tpp2", &cl), REG_ERR_NOT_FOUND);

	assert_int_equal(registry_revoke(f->reg, "tpp1", UID, &slot, err, sizeof(err)),
			 REG_ERR_IO);
	expect_binding(f, &c[0], "tpp1", 0, CERT_ACTIVE);
	assert_int_equal(registry_unbind_client(f->reg, "tpp1", UID, &slot, err, sizeof(err)),
			 REG_ERR_IO);
	assert_int_equal(registry_unbind_cert(f->reg, "tpp1", c[0].ci.thumb, UID, &slot, err,
					      sizeof(err)),
			 REG_ERR_IO);
	expect_binding(f, &c[0], "tpp1", 0, CERT_ACTIVE);
	assert_int_equal(registry_deny_add(f->reg, "10.0.0.0/8", UID, err, sizeof(err)),
			 REG_ERR_IO);

	side_exec(f, "DROP TRIGGER no_audit");
	reg_reopen(f);
	expect_binding(f, &c[0], "tpp1", 0, CERT_ACTIVE);
	expect_unbound(f, &c[1]);
	char **d;
	size_t n;
	assert_int_equal(registry_deny_list(f->reg, &d, &n), REG_OK);
	assert_int_equal(n, 0);
	free(d);
	/* And the registry still works. */
	expect(bind(f, "tpp2", &c[1], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	certs_free(c, 2);
}

static void test_unbind_client(void **state)
{
	struct fx *f = *state;
	struct tcert c[4];
	char err[256];
	uint32_t slot;
	for (size_t i = 0; i < 4; i++)
		cert_new(f, &c[i]);
	expect(bind(f, "other", &c[3], false, &slot, err), REG_OK, err, NULL);
	expect(bind(f, "tpp1", &c[0], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	assert_int_equal(registry_revoke(f->reg, "tpp1", UID, NULL, err, sizeof(err)), REG_OK);
	expect(bind(f, "tpp1", &c[1], false, &slot, err), REG_OK, err, NULL);

	assert_int_equal(registry_unbind_client(f->reg, "tpp1", UID, &slot, err, sizeof(err)),
			 REG_OK);
	assert_int_equal(slot, 1);
	expect_unbound(f, &c[1]);
	/* The revoked certificate stays on record, without a slot. */
	expect_binding(f, &c[0], "tpp1", REGISTRY_SLOT_NONE, CERT_REVOKED);
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, "tpp1", &cl), REG_ERR_NOT_FOUND);
	expect(registry_unbind_client(f->reg, "tpp1", UID, &slot, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "no client tpp1");
	expect(registry_unbind_client(f->reg, "x y", UID, &slot, err, sizeof(err)), REG_ERR_INVALID,
	       err, "client_id");

	/* The same after a restart. */
	reg_reopen(f);
	expect_unbound(f, &c[1]);
	expect_binding(f, &c[0], "tpp1", REGISTRY_SLOT_NONE, CERT_REVOKED);
	expect_binding(f, &c[3], "other", 0, CERT_ACTIVE);

	/* Enrolled again: a fresh binding works; the unbound certificate can be bound again, the
	 * revoked one cannot, and the history shows up under the new client. */
	expect(bind(f, "tpp1", &c[1], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	expect(bind(f, "tpp1", &c[0], true, &slot, err), REG_ERR_REVOKED, err, NULL);
	expect_binding(f, &c[0], "tpp1", 1, CERT_REVOKED);
	assert_int_equal(registry_get_client(f->reg, "tpp1", &cl), REG_OK);
	assert_int_equal(cl.n_certs, 2);
	assert_memory_equal(cl.certs[0].info.thumb, c[1].ci.thumb, CERT_THUMB_LEN);
	assert_int_equal(cl.certs[1].state, CERT_REVOKED);
	registry_client_free(&cl);
	reg_reopen(f);
	expect_binding(f, &c[0], "tpp1", 1, CERT_REVOKED);
	certs_free(c, 4);
}

static void test_unbind_cert(void **state)
{
	struct fx *f = *state;
	struct tcert c[4];
	char err[256];
	uint32_t slot = 99;
	for (size_t i = 0; i < 4; i++)
		cert_new(f, &c[i]);
	expect(bind(f, "tpp1", &c[0], false, &slot, err), REG_OK, err, NULL);
	expect(bind(f, "tpp1", &c[1], true, &slot, err), REG_OK, err, NULL);
	expect(bind(f, "tpp2", &c[2], false, &slot, err), REG_OK, err, NULL);

	expect(registry_unbind_cert(f->reg, "tpp1", c[2].ci.thumb, UID, &slot, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "not bound to client tpp1");
	expect(registry_unbind_cert(f->reg, "tpp1", c[3].ci.thumb, UID, &slot, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "not bound to client tpp1");
	expect(registry_unbind_cert(f->reg, "nobody", c[0].ci.thumb, UID, &slot, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "no client nobody");
	expect_binding(f, &c[2], "tpp2", 1, CERT_ACTIVE);

	expect(registry_unbind_cert(f->reg, "tpp1", c[0].ci.thumb, UID, &slot, err, sizeof(err)),
	       REG_OK, err, NULL);
	assert_int_equal(slot, 0);
	expect_unbound(f, &c[0]);
	expect_binding(f, &c[1], "tpp1", 0, CERT_ACTIVE);
	/* Back to one active certificate: a new one needs rotate again. */
	expect(bind(f, "tpp1", &c[3], false, &slot, err), REG_ERR_NEED_ROTATE, err, NULL);

	/* The client stays, with no certificate, until it is unbound itself. */
	expect(registry_unbind_cert(f->reg, "tpp1", c[1].ci.thumb, UID, &slot, err, sizeof(err)),
	       REG_OK, err, NULL);
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, "tpp1", &cl), REG_OK);
	assert_int_equal(cl.n_certs, 0);
	assert_int_equal(cl.slot, 0);
	registry_client_free(&cl);

	/* Revoked certificates cannot be unbound: that would make them bindable again. */
	assert_int_equal(registry_revoke(f->reg, "tpp2", UID, NULL, err, sizeof(err)), REG_OK);
	expect(registry_unbind_cert(f->reg, "tpp2", c[2].ci.thumb, UID, &slot, err, sizeof(err)),
	       REG_ERR_REVOKED, err, "revoked");
	expect_binding(f, &c[2], "tpp2", 1, CERT_REVOKED);
	certs_free(c, 4);
}

static void test_revoke_errors(void **state)
{
	struct fx *f = *state;
	struct tcert c;
	char err[256];
	uint32_t slot = 99;
	cert_new(f, &c);
	expect(registry_revoke(f->reg, "nobody", UID, &slot, err, sizeof(err)), REG_ERR_NOT_FOUND,
	       err, "no client nobody");
	expect(bind(f, "tpp1", &c, false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(registry_revoke(f->reg, "tpp1", UID, &slot, err, sizeof(err)), REG_OK);
	expect(registry_revoke(f->reg, "tpp1", UID, &slot, err, sizeof(err)), REG_ERR_NOT_FOUND,
	       err, "no active certificate");
	expect(registry_revoke(f->reg, "", UID, &slot, err, sizeof(err)), REG_ERR_INVALID, err,
	       NULL);
	certs_free(&c, 1);
}

/* Active certificates arrive ordered by client_id. */
struct pem_seen {
	size_t n;
	const struct tcert *want[2];
};

static void on_active(void *arg, const struct registry_cert *c, const char *pem)
{
	struct pem_seen *s = arg;
	assert_true(s->n < 2);
	const struct tcert *w = s->want[s->n++];
	assert_int_equal(c->state, CERT_ACTIVE);
	assert_memory_equal(c->info.thumb, w->ci.thumb, CERT_THUMB_LEN);
	assert_string_equal(pem, w->pem);
}

static void check_listing(struct fx *f, const struct tcert *c)
{
	struct registry_client *list;
	size_t n;
	assert_int_equal(registry_list_clients(f->reg, &list, &n), REG_OK);
	assert_int_equal(n, 2);
	assert_string_equal(list[0].client_id, "alpha");
	assert_int_equal(list[0].slot, 1);
	assert_true(list[0].created_at > 0);
	assert_int_equal(list[0].n_certs, 2);
	/* Newest first. */
	const struct registry_cert *rc = &list[0].certs[0];
	assert_memory_equal(rc->info.thumb, c[2].ci.thumb, CERT_THUMB_LEN);
	assert_string_equal(rc->info.subject, c[2].ci.subject);
	assert_string_equal(rc->info.issuer, c[2].ci.issuer);
	assert_string_equal(rc->info.serial, c[2].ci.serial);
	assert_int_equal(rc->info.not_before, c[2].ci.not_before);
	assert_int_equal(rc->info.not_after, c[2].ci.not_after);
	assert_string_equal(rc->client_id, "alpha");
	assert_int_equal(rc->state, CERT_ACTIVE);
	assert_true(rc->bound_at > 0);
	assert_int_equal(rc->revoked_at, 0);
	assert_memory_equal(list[0].certs[1].info.thumb, c[1].ci.thumb, CERT_THUMB_LEN);
	assert_int_equal(list[0].certs[1].state, CERT_REVOKED);
	assert_true(list[0].certs[1].revoked_at >= list[0].certs[1].bound_at);
	assert_string_equal(list[1].client_id, "zeta");
	assert_int_equal(list[1].slot, 0);
	assert_int_equal(list[1].n_certs, 1);
	registry_clients_free(list, n);

	struct registry_client one;
	assert_int_equal(registry_get_client(f->reg, "zeta", &one), REG_OK);
	assert_int_equal(one.n_certs, 1);
	assert_memory_equal(one.certs[0].info.thumb, c[0].ci.thumb, CERT_THUMB_LEN);
	registry_client_free(&one);

	struct pem_seen seen = {0, {&c[2], &c[0]}};
	assert_int_equal(registry_foreach_active_cert(f->reg, on_active, &seen), REG_OK);
	assert_int_equal(seen.n, 2);

	expect_binding(f, &c[0], "zeta", 0, CERT_ACTIVE);
	expect_binding(f, &c[1], "alpha", 1, CERT_REVOKED);
	expect_binding(f, &c[2], "alpha", 1, CERT_ACTIVE);
}

static void test_listings_and_persistence(void **state)
{
	struct fx *f = *state;
	struct tcert c[3];
	char err[256];
	uint32_t slot;
	for (size_t i = 0; i < 3; i++)
		cert_new(f, &c[i]);
	expect(bind(f, "zeta", &c[0], false, &slot, err), REG_OK, err, NULL);
	expect(bind(f, "alpha", &c[1], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(registry_revoke(f->reg, "alpha", 0, NULL, err, sizeof(err)), REG_OK);
	expect(bind(f, "alpha", &c[2], false, &slot, err), REG_OK, err, NULL);
	check_listing(f, c);
	reg_reopen(f);
	check_listing(f, c);
	certs_free(c, 3);
}

static void test_audit(void **state)
{
	struct fx *f = *state;
	struct tcert c[2];
	char err[256], hex0[CERT_THUMB_HEX_LEN + 1], hex1[CERT_THUMB_HEX_LEN + 1];
	uint32_t slot;
	cert_new(f, &c[0]);
	cert_new(f, &c[1]);
	cert_thumb_to_hex(c[0].ci.thumb, hex0);
	cert_thumb_to_hex(c[1].ci.thumb, hex1);
	assert_int_equal(registry_bind(f->reg, "tpp1", &c[0].ci, c[0].pem, false, 1001, &slot, err,
				       sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_bind(f->reg, "tpp1", &c[1].ci, c[1].pem, true, 1002, &slot, err,
				       sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_deny_add(f->reg, "192.0.2.1", 0, err, sizeof(err)), REG_OK);
	assert_int_equal(registry_unbind_cert(f->reg, "tpp1", c[0].ci.thumb, 1003, NULL, err,
					      sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_revoke(f->reg, "tpp1", 1004, NULL, err, sizeof(err)), REG_OK);
	assert_int_equal(registry_unbind_client(f->reg, "tpp1", 1005, NULL, err, sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_deny_del(f->reg, "192.0.2.1/32", 0, err, sizeof(err)), REG_OK);
	reg_reopen(f);

	struct registry_audit_entry *e;
	size_t n;
	assert_int_equal(registry_audit(f->reg, NULL, 100, &e, &n), REG_OK);
	assert_int_equal(n, 7);
	static const char *const actions[] = {"deny-del", "unbind", "revoke", "unbind-cert",
					      "deny-add", "rotate", "bind"};
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(e[i].action, actions[i]);
		assert_true(e[i].ts > 0);
		if (i > 0)
			assert_true(e[i].id < e[i - 1].id);
	}
	assert_int_equal(e[6].uid, 1001);
	assert_string_equal(e[6].client_id, "tpp1");
	assert_string_equal(e[6].thumb_hex, hex0);
	assert_non_null(strstr(e[6].detail, c[0].ci.serial));
	assert_int_equal(e[5].uid, 1002);
	assert_string_equal(e[5].thumb_hex, hex1);
	assert_string_equal(e[4].client_id, "");
	assert_string_equal(e[4].detail, "192.0.2.1/32");
	assert_int_equal(e[3].uid, 1003);
	assert_string_equal(e[3].thumb_hex, hex0);
	assert_int_equal(e[2].uid, 1004);
	assert_string_equal(e[2].thumb_hex, hex1);
	assert_int_equal(e[1].uid, 1005);
	assert_string_equal(e[1].thumb_hex, "");
	assert_non_null(strstr(e[1].detail, "slot 0"));
	free(e);

	assert_int_equal(registry_audit(f->reg, "tpp1", 2, &e, &n), REG_OK);
	assert_int_equal(n, 2);
	assert_string_equal(e[0].action, "unbind");
	assert_string_equal(e[1].action, "revoke");
	free(e);
	assert_int_equal(registry_audit(f->reg, "nobody", 10, &e, &n), REG_OK);
	assert_int_equal(n, 0);
	free(e);
	assert_int_equal(registry_audit(f->reg, "bad id", 10, &e, &n), REG_ERR_INVALID);
	certs_free(c, 2);
}

static void test_deny(void **state)
{
	struct fx *f = *state;
	char err[256];
	assert_int_equal(registry_deny_add(f->reg, "10.9.8.7/8", UID, err, sizeof(err)), REG_OK);
	expect(registry_deny_add(f->reg, "10.0.0.0/8", UID, err, sizeof(err)), REG_ERR_CONFLICT, err,
	       "10.0.0.0/8 is already denied");
	assert_int_equal(registry_deny_add(f->reg, "2001:db8::5/32", UID, err, sizeof(err)), REG_OK);
	assert_int_equal(registry_deny_add(f->reg, "198.51.100.7", UID, err, sizeof(err)), REG_OK);
	expect(registry_deny_add(f->reg, "10.0.0.0/40", UID, err, sizeof(err)), REG_ERR_INVALID, err,
	       "invalid CIDR");
	expect(registry_deny_del(f->reg, "192.168.0.0/16", UID, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "not in the deny-list");
	expect(registry_deny_del(f->reg, "junk", UID, err, sizeof(err)), REG_ERR_INVALID, err, NULL);
	/* The IPv4-mapped form is the IPv4 prefix it stands for; fewer than 96 bits are refused. */
	assert_int_equal(registry_deny_add(f->reg, "::ffff:203.0.113.7/120", UID, err, sizeof(err)),
			 REG_OK);
	expect(registry_deny_add(f->reg, "203.0.113.0/24", UID, err, sizeof(err)), REG_ERR_CONFLICT,
	       err, "203.0.113.0/24 is already denied");
	expect(registry_deny_add(f->reg, "::ffff:203.0.113.7/95", UID, err, sizeof(err)),
	       REG_ERR_INVALID, err, "needs N of 96 or more");
	struct registry_audit_entry *e;
	size_t ne;
	assert_int_equal(registry_audit(f->reg, NULL, 1, &e, &ne), REG_OK);
	assert_int_equal(ne, 1);
	assert_string_equal(e[0].action, "deny-add");
	assert_string_equal(e[0].detail, "203.0.113.0/24");
	free(e);
	reg_reopen(f);

	char **list;
	size_t n;
	assert_int_equal(registry_deny_list(f->reg, &list, &n), REG_OK);
	assert_int_equal(n, 4);
	assert_string_equal(list[0], "10.0.0.0/8");
	assert_string_equal(list[1], "198.51.100.7/32");
	assert_string_equal(list[2], "2001:db8::/32");
	assert_string_equal(list[3], "203.0.113.0/24");
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);

	/* Deleting takes any spelling of the same network, the mapped one too. */
	assert_int_equal(registry_deny_del(f->reg, "10.255.255.255/8", UID, err, sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_deny_del(f->reg, "2001:0db8::/32", UID, err, sizeof(err)), REG_OK);
	assert_int_equal(registry_deny_del(f->reg, "::ffff:cb00:7100/120", UID, err, sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_deny_list(f->reg, &list, &n), REG_OK);
	assert_int_equal(n, 1);
	assert_string_equal(list[0], "198.51.100.7/32");
	free(list[0]);
	free(list);
}

/* --- lookups from threads while the control thread mutates -------------------------- */

#define STABLE_CERTS 32
#define CHURN_CERTS 200

struct churn {
	struct registry *reg;
	struct cert_info stable[STABLE_CERTS];
	struct cert_info churn[CHURN_CERTS];
	atomic_bool stop;
	atomic_long lookups;
	atomic_int failures;
};

static void fake_info(struct cert_info *ci, unsigned i)
{
	memset(ci, 0, sizeof(*ci));
	assert_int_equal(RAND_bytes(ci->thumb, CERT_THUMB_LEN), 1);
	snprintf(ci->subject, sizeof(ci->subject), "CN=fake %u", i);
	snprintf(ci->issuer, sizeof(ci->issuer), "CN=fake CA");
	snprintf(ci->serial, sizeof(ci->serial), "%X", i + 1);
	ci->not_before = 1700000000;
	ci->not_after = 1700000000 + i;
}

static void *lookup_worker(void *arg)
{
	struct churn *ch = arg;
	struct registry_binding b;
	char id[32];
	for (unsigned round = 0; !atomic_load(&ch->stop); round++) {
		/* Bound before the threads started and never changed: always found, intact. */
		unsigned s = round % STABLE_CERTS;
		snprintf(id, sizeof(id), "stable%u", s);
		if (registry_lookup(ch->reg, ch->stable[s].thumb, &b) != REG_OK ||
		    strcmp(b.client_id, id) != 0 || b.state != CERT_ACTIVE ||
		    b.not_after != ch->stable[s].not_after)
			atomic_fetch_add(&ch->failures, 1);
		/* Bound, revoked and unbound meanwhile: absent, or present and consistent. */
		unsigned c = round % CHURN_CERTS;
		snprintf(id, sizeof(id), "churn%u", c);
		if (registry_lookup(ch->reg, ch->churn[c].thumb, &b) == REG_OK &&
		    (strcmp(b.client_id, id) != 0 || b.not_after != ch->churn[c].not_after))
			atomic_fetch_add(&ch->failures, 1);
		atomic_fetch_add(&ch->lookups, 1);
	}
	return NULL;
}

static void test_concurrent_lookups(void **state)
{
	struct fx *f = *state;
	struct churn *ch = calloc(1, sizeof(*ch));
	char err[256], id[32];
	pthread_t th[2];
	assert_non_null(ch);
	ch->reg = f->reg;
	for (unsigned i = 0; i < STABLE_CERTS; i++) {
		fake_info(&ch->stable[i], i);
		snprintf(id, sizeof(id), "stable%u", i);
		assert_int_equal(registry_bind(f->reg, id, &ch->stable[i], "pem", false, UID, NULL,
					       err, sizeof(err)),
				 REG_OK);
	}
	for (unsigned i = 0; i < CHURN_CERTS; i++)
		fake_info(&ch->churn[i], 1000 + i);
	for (size_t i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, lookup_worker, ch), 0);

	/* Grows the index through several doublings (each a table swap under the readers), then
	 * revokes and removes. */
	for (unsigned i = 0; i < CHURN_CERTS; i++) {
		snprintf(id, sizeof(id), "churn%u", i);
		assert_int_equal(registry_bind(f->reg, id, &ch->churn[i], "pem", false, UID, NULL,
					       err, sizeof(err)),
				 REG_OK);
	}
	for (unsigned i = 0; i < CHURN_CERTS; i += 3) {
		snprintf(id, sizeof(id), "churn%u", i);
		assert_int_equal(registry_revoke(f->reg, id, UID, NULL, err, sizeof(err)), REG_OK);
	}
	for (unsigned i = 1; i < CHURN_CERTS; i += 3) {
		snprintf(id, sizeof(id), "churn%u", i);
		assert_int_equal(registry_unbind_client(f->reg, id, UID, NULL, err, sizeof(err)),
				 REG_OK);
	}
	atomic_store(&ch->stop, true);
	for (size_t i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(atomic_load(&ch->failures), 0);
	assert_true(atomic_load(&ch->lookups) > 1000);

	/* The final index agrees with a rebuild from the database. */
	for (int pass = 0; pass < 2; pass++) {
		for (unsigned i = 0; i < CHURN_CERTS; i++) {
			struct registry_binding b;
			int rc = registry_lookup(f->reg, ch->churn[i].thumb, &b);
			if (i % 3 == 1) {
				assert_int_equal(rc, REG_ERR_NOT_FOUND);
				continue;
			}
			assert_int_equal(rc, REG_OK);
			assert_int_equal(b.state, i % 3 == 0 ? CERT_REVOKED : CERT_ACTIVE);
		}
		reg_reopen(f);
		ch->reg = f->reg;
	}
	free(ch);
}

/* --- durability across kill -9 ------------------------------------------------------ */

#define DURABLE_MIN_ACKS 40

/* The child: binds until killed, reporting each acknowledged bind as "client_id thumb\n". */
static void durable_child(struct fx *f, int wfd)
{
	struct registry *reg;
	char err[256], line[128], id[32], hex[CERT_THUMB_HEX_LEN + 1];
	if (registry_open(f->path, &reg, err, sizeof(err)) != 0)
		_exit(2);
	for (long i = 0;; i++) {
		X509 *x = testpki_leaf("durable", f->pki.leaf_key, f->pki.ca, f->pki.ca_key,
				       100000 + i);
		struct cert_info ci;
		char *pem = x ? testpki_pem(x) : NULL;
		if (!pem || cert_get_info(x, &ci) < 0)
			_exit(3);
		snprintf(id, sizeof(id), "durable%ld", i);
		if (registry_bind(reg, id, &ci, pem, false, UID, NULL, err, sizeof(err)) != REG_OK)
			_exit(4);
		cert_thumb_to_hex(ci.thumb, hex);
		int n = snprintf(line, sizeof(line), "%s %s\n", id, hex);
		/* Below PIPE_BUF, so each line arrives whole or not at all. */
		if (write(wfd, line, (size_t)n) != n)
			_exit(5);
		free(pem);
		X509_free(x);
	}
}

static void test_durability_kill9(void **state)
{
	struct fx *f = *state;
	int fds[2];
	registry_close(f->reg);
	f->reg = NULL;
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		durable_child(f, fds[1]);
	}
	close(fds[1]);

	/* Read acknowledgements until enough have arrived, then kill at an arbitrary point of
	 * the child's next transaction, and drain whatever it acknowledged before dying. */
	size_t cap = 1 << 16, len = 0, lines = 0;
	char *acks = malloc(cap);
	assert_non_null(acks);
	bool killed = false;
	for (;;) {
		if (!killed && lines >= DURABLE_MIN_ACKS) {
			unsigned jitter;
			assert_int_equal(RAND_bytes((unsigned char *)&jitter, sizeof(jitter)), 1);
			usleep(jitter % 3000);
			assert_int_equal(kill(pid, SIGKILL), 0);
			killed = true;
		}
		assert_true(len < cap - 1);
		ssize_t n = read(fds[0], acks + len, cap - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n >= 0);
		if (n == 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			lines += acks[len + (size_t)i] == '\n';
		len += (size_t)n;
	}
	acks[len] = '\0';
	close(fds[0]);
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
		fail_msg("child did not die by SIGKILL (status 0x%x)", status);
	assert_true(lines >= DURABLE_MIN_ACKS);

	reg_open(f);
	size_t checked = 0;
	for (char *save, *line = strtok_r(acks, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save)) {
		char *sp = strchr(line, ' ');
		assert_non_null(sp);
		*sp = '\0';
		uint8_t thumb[CERT_THUMB_LEN];
		assert_int_equal(cert_thumb_from_hex(sp + 1, strlen(sp + 1), thumb), 0);
		struct registry_binding b;
		if (registry_lookup(f->reg, thumb, &b) != REG_OK)
			fail_msg("acknowledged binding of %s lost", line);
		assert_string_equal(b.client_id, line);
		assert_int_equal(b.state, CERT_ACTIVE);
		struct registry_client cl;
		assert_int_equal(registry_get_client(f->reg, line, &cl), REG_OK);
		assert_int_equal(cl.n_certs, 1);
		registry_client_free(&cl);
		checked++;
	}
	assert_int_equal(checked, lines);
	free(acks);

	char s[64];
	side_text(f, "PRAGMA integrity_check", s, sizeof(s));
	assert_string_equal(s, "ok");
	/* Each bind also wrote its audit row in the same transaction. */
	side_text(f,
		  "SELECT count(*) = (SELECT count(*) FROM audit WHERE action = 'bind')"
		  " FROM certificates",
		  s, sizeof(s));
	assert_string_equal(s, "1");
}

/* --- run-time rates --------------------------------------------------------------------------- */

static void expect_limit(struct fx *f, const char *id, const struct registry_limit *want)
{
	struct registry_limit got;
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, id, &cl), REG_OK);
	if (!want) {
		assert_int_equal(registry_limit_get(f->reg, id, &got), REG_ERR_NOT_FOUND);
		assert_false(cl.has_limit);
		registry_client_free(&cl);
		return;
	}
	assert_int_equal(registry_limit_get(f->reg, id, &got), REG_OK);
	assert_memory_equal(&got, want, sizeof(got));
	assert_true(cl.has_limit);
	assert_memory_equal(&cl.limit, want, sizeof(cl.limit));
	registry_client_free(&cl);
}

static void test_limits(void **state)
{
	struct fx *f = *state;
	struct tcert c[2];
	char err[256];
	uint32_t slot = 99;
	for (size_t i = 0; i < 2; i++)
		cert_new(f, &c[i]);
	expect(bind(f, "tpp0", &c[0], false, &slot, err), REG_OK, err, NULL);
	expect(bind(f, "tpp1", &c[1], false, &slot, err), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	expect_limit(f, "tpp1", NULL);
	size_t n_audit = audit_count(f);

	/* Refusals change nothing and write no audit row. */
	struct registry_limit lim = {.pps = 100, .bps = 1000000, .burst = 10, .burst_bytes = 0};
	expect(registry_limit_set(f->reg, "nobody", &lim, UID, &slot, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "no client nobody");
	expect(registry_limit_set(f->reg, "bad id", &lim, UID, &slot, err, sizeof(err)),
	       REG_ERR_INVALID, err, "client_id");
	struct {
		struct registry_limit l;
		const char *msg;
	} bad[] = {
		{{.pps = 1000000001ULL, .burst = 1}, "pps must be at most 1000000000"},
		{{.bps = 1000000000001ULL, .burst = 1}, "bps must be at most 1000000000000"},
		{{.pps = 1, .burst = 0}, "burst must be between 1 and 1000000000"},
		{{.burst = 1000000001ULL}, "burst must be between 1 and"},
		{{.burst = 1, .burst_bytes = 1513}, "burst_bytes must be 0 (burst * 1514) or between"},
		{{.burst = 1, .burst_bytes = 1000000000001ULL}, "burst_bytes must be 0"},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(registry_limit_set(f->reg, "tpp1", &bad[i].l, UID, &slot, err, sizeof(err)),
		       REG_ERR_INVALID, err, bad[i].msg);
	expect(registry_limit_del(f->reg, "tpp1", UID, &slot, err, sizeof(err)), REG_ERR_NOT_FOUND,
	       err, "no limit");
	expect(registry_limit_del(f->reg, "nobody", UID, &slot, err, sizeof(err)),
	       REG_ERR_NOT_FOUND, err, "no client nobody");
	assert_int_equal(audit_count(f), n_audit);
	expect_limit(f, "tpp1", NULL);

	/* Set, replace, survive a restart; only the one client is affected. */
	slot = 99;
	expect(registry_limit_set(f->reg, "tpp1", &lim, UID, &slot, err, sizeof(err)), REG_OK, err,
	       NULL);
	assert_int_equal(slot, 1);
	expect_limit(f, "tpp1", &lim);
	expect_limit(f, "tpp0", NULL);
	struct registry_limit lim2 = {.pps = 0, .bps = 5000, .burst = 1, .burst_bytes = 1514};
	expect(registry_limit_set(f->reg, "tpp1", &lim2, UID, NULL, err, sizeof(err)), REG_OK, err,
	       NULL);
	expect_limit(f, "tpp1", &lim2);
	reg_reopen(f);
	expect_limit(f, "tpp1", &lim2);

	struct registry_client *list;
	size_t n;
	assert_int_equal(registry_list_clients(f->reg, &list, &n), REG_OK);
	assert_int_equal(n, 2);
	assert_false(list[0].has_limit);
	assert_true(list[1].has_limit);
	assert_memory_equal(&list[1].limit, &lim2, sizeof(lim2));
	registry_clients_free(list, n);

	struct registry_audit_entry *e;
	assert_int_equal(registry_audit(f->reg, "tpp1", 1, &e, &n), REG_OK);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].action, "limit-set");
	assert_string_equal(e[0].detail, "pps 0, bps 5000, burst 1, burst_bytes 1514");
	assert_int_equal(e[0].uid, UID);
	free(e);

	/* Revoking keeps the limit (the client stays); deleting returns to the default. */
	assert_int_equal(registry_revoke(f->reg, "tpp1", UID, NULL, err, sizeof(err)), REG_OK);
	expect_limit(f, "tpp1", &lim2);
	slot = 99;
	expect(registry_limit_del(f->reg, "tpp1", UID, &slot, err, sizeof(err)), REG_OK, err, NULL);
	assert_int_equal(slot, 1);
	expect_limit(f, "tpp1", NULL);
	assert_int_equal(registry_audit(f->reg, "tpp1", 1, &e, &n), REG_OK);
	assert_string_equal(e[0].action, "limit-del");
	free(e);

	/* Unbinding the client deletes its limit: enrolled again, it starts from the default. */
	expect(registry_limit_set(f->reg, "tpp0", &lim, UID, NULL, err, sizeof(err)), REG_OK, err,
	       NULL);
	assert_int_equal(registry_unbind_client(f->reg, "tpp0", UID, NULL, err, sizeof(err)),
			 REG_OK);
	assert_int_equal(registry_limit_get(f->reg, "tpp0", &lim2), REG_ERR_NOT_FOUND);
	char cnt[16];
	side_text(f, "SELECT count(*) FROM client_limits WHERE client_id = 'tpp0'", cnt,
		  sizeof(cnt));
	assert_string_equal(cnt, "0");
	expect(registry_unbind_cert(f->reg, "tpp1", c[1].ci.thumb, UID, NULL, err, sizeof(err)),
	       REG_ERR_REVOKED, err, NULL);
	struct tcert c2;
	cert_new(f, &c2);
	expect(bind(f, "tpp0", &c2, false, &slot, err), REG_OK, err, NULL);
	expect_limit(f, "tpp0", NULL);
	certs_free(&c2, 1);
	certs_free(c, 2);
}

static void test_src_rate(void **state)
{
	struct fx *f = *state;
	struct registry_src_rate r = {0}, want = {.per_sec = 20, .burst = 5};
	char err[256];
	assert_int_equal(registry_src_rate_get(f->reg, &r), REG_ERR_NOT_FOUND);
	size_t n_audit = audit_count(f);
	struct registry_src_rate bad[] = {{.per_sec = 1, .burst = 0},
					  {.per_sec = 1000000001ULL, .burst = 1},
					  {.per_sec = 1, .burst = 1000000001ULL}};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect(registry_src_rate_set(f->reg, &bad[i], UID, err, sizeof(err)),
		       REG_ERR_INVALID, err, "must be");
	assert_int_equal(audit_count(f), n_audit);
	assert_int_equal(registry_src_rate_get(f->reg, &r), REG_ERR_NOT_FOUND);

	expect(registry_src_rate_set(f->reg, &want, UID, err, sizeof(err)), REG_OK, err, NULL);
	assert_int_equal(registry_src_rate_get(f->reg, &r), REG_OK);
	assert_memory_equal(&r, &want, sizeof(r));
	want = (struct registry_src_rate){.per_sec = 0, .burst = 1};
	expect(registry_src_rate_set(f->reg, &want, UID, err, sizeof(err)), REG_OK, err, NULL);
	reg_reopen(f);
	assert_int_equal(registry_src_rate_get(f->reg, &r), REG_OK);
	assert_memory_equal(&r, &want, sizeof(r));

	struct registry_audit_entry *e;
	size_t n;
	assert_int_equal(registry_audit(f->reg, NULL, 1, &e, &n), REG_OK);
	assert_string_equal(e[0].action, "src-rate-set");
	assert_string_equal(e[0].client_id, "");
	assert_string_equal(e[0].detail, "per_sec 0, burst 1");
	free(e);

	/* Forgotten: the configuration's applies again. */
	expect(registry_src_rate_del(f->reg, UID, err, sizeof(err)), REG_OK, err, NULL);
	assert_int_equal(registry_src_rate_get(f->reg, &r), REG_ERR_NOT_FOUND);
	n_audit = audit_count(f);
	expect(registry_src_rate_del(f->reg, UID, err, sizeof(err)), REG_ERR_NOT_FOUND, err,
	       "no source rate");
	assert_int_equal(audit_count(f), n_audit);
	reg_reopen(f);
	assert_int_equal(registry_src_rate_get(f->reg, &r), REG_ERR_NOT_FOUND);
	assert_int_equal(registry_audit(f->reg, NULL, 1, &e, &n), REG_OK);
	assert_string_equal(e[0].action, "src-rate-del");
	free(e);
}

struct quota_rows {
	struct registry_quota row[8];
	size_t n;
};

static void quota_collect(void *arg, const struct registry_quota *row)
{
	struct quota_rows *got = arg;
	assert_true(got->n < sizeof(got->row) / sizeof(got->row[0]));
	got->row[got->n++] = *row;
}

static void quota_load(struct fx *f, struct quota_rows *got)
{
	got->n = 0;
	assert_int_equal(registry_quota_load(f->reg, quota_collect, got), REG_OK);
}

static struct registry_quota quota_row(uint32_t slot, const char *name, const char *client_id,
				       const char *key, uint64_t count)
{
	struct registry_quota r = {.slot = slot};
	snprintf(r.q.name, sizeof(r.q.name), "%s", name);
	snprintf(r.q.client_id, sizeof(r.q.client_id), "%s", client_id);
	snprintf(r.q.key, sizeof(r.q.key), "%s", key);
	r.q.limit = 4;
	r.q.window = PSD2_QUOTA_ROLLING;
	r.q.window_seconds = 3600;
	r.q.window_start = 1700000000;
	r.q.count = count;
	for (unsigned i = 0; i <= PSD2_QUOTA_SUBWINDOWS; i++)
		r.q.sub[i] = i * 1000003u;
	r.q.updated = 1700000123;
	return r;
}

/* The checkpoint mirrors the map: a row per slot, every field back as saved (lock aside), an
 * entry reused for another counter replaces its row, a failed save changes nothing. */
static void test_quota_checkpoint(void **state)
{
	struct fx *f = *state;
	struct quota_rows got;
	char err[256] = "";

	quota_load(f, &got);
	assert_int_equal(got.n, 0);
	struct registry_quota rows[] = {
		quota_row(0, "ais", "tpp-1", "", 3),
		quota_row(5, "ais", "tpp-1", "DE89370400440532013000", 1),
	};
	rows[0].q.lock = 1;
	expect(registry_quota_save(f->reg, rows, 2, err, sizeof(err)), REG_OK, err, NULL);
	reg_reopen(f);
	quota_load(f, &got);
	assert_int_equal(got.n, 2);
	rows[0].q.lock = 0;
	assert_memory_equal(&got.row[0], &rows[0], sizeof(rows[0]));
	assert_memory_equal(&got.row[1], &rows[1], sizeof(rows[1]));

	/* Slot 0 now holds another counter; the keyed counter moved to slot 7. */
	struct registry_quota moved[] = {
		quota_row(0, "pis", "tpp-2", "", 9),
		quota_row(7, "ais", "tpp-1", "DE89370400440532013000", 2),
	};
	expect(registry_quota_save(f->reg, moved, 2, err, sizeof(err)), REG_OK, err, NULL);
	quota_load(f, &got);
	assert_int_equal(got.n, 2);
	assert_memory_equal(&got.row[0], &moved[0], sizeof(moved[0]));
	assert_memory_equal(&got.row[1], &moved[1], sizeof(moved[1]));

	/* A row the database refuses (a count beyond INT64_MAX) rolls back the whole save. */
	struct registry_quota bad[] = {
		quota_row(1, "ais", "tpp-3", "", 1),
		quota_row(2, "ais", "tpp-4", "", UINT64_MAX),
	};
	expect(registry_quota_save(f->reg, bad, 2, err, sizeof(err)), REG_ERR_IO, err,
	       "constraint");
	quota_load(f, &got);
	assert_int_equal(got.n, 2);

	/* A row whose name does not fit the map's field is not loaded truncated. */
	side_exec(f, "INSERT INTO quota_counters VALUES ('" /* 64 bytes */
		     "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',"
		     " 'tpp-5', '', 3, 4, 1, 60, 0, 1, zeroblob(68), 0)");
	quota_load(f, &got);
	assert_int_equal(got.n, 2);
}

/* The schema as build 1 created it (never edit: it is what is on disk out there). */
static const char schema_v1[] =
	"CREATE TABLE clients ("
	" client_id TEXT PRIMARY KEY NOT NULL,"
	" slot INTEGER UNIQUE NOT NULL CHECK (slot >= 0),"
	" created_at INTEGER NOT NULL);"
	"CREATE TABLE certificates ("
	" thumbprint TEXT PRIMARY KEY NOT NULL CHECK (length(thumbprint) = 64),"
	" client_id TEXT NOT NULL, subject TEXT NOT NULL, issuer TEXT NOT NULL,"
	" serial TEXT NOT NULL, not_before INTEGER NOT NULL, not_after INTEGER NOT NULL,"
	" state TEXT NOT NULL CHECK (state IN ('active', 'revoked')), pem TEXT NOT NULL,"
	" bound_at INTEGER NOT NULL, revoked_at INTEGER);"
	"CREATE INDEX certificates_by_client ON certificates (client_id, state);"
	"CREATE TABLE deny (cidr TEXT PRIMARY KEY NOT NULL, added_at INTEGER NOT NULL);"
	"CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, ts INTEGER NOT NULL,"
	" uid INTEGER NOT NULL, action TEXT NOT NULL, client_id TEXT NOT NULL DEFAULT '',"
	" thumbprint TEXT NOT NULL DEFAULT '', detail TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX audit_by_client ON audit (client_id, id);"
	"PRAGMA user_version = 1;";

static void test_migrate_v1(void **state)
{
	struct fx *f = *state;
	struct tcert c;
	char sql[8192], hex[CERT_THUMB_HEX_LEN + 1], s[128], err[256];
	uint32_t slot;

	/* A version-1 database with one client, its certificate, a deny entry and audit rows. */
	registry_close(f->reg);
	f->reg = NULL;
	assert_int_equal(unlink(f->path), 0);
	cert_new(f, &c);
	cert_thumb_to_hex(c.ci.thumb, hex);
	side_exec(f, schema_v1);
	snprintf(sql, sizeof(sql),
		 "BEGIN;"
		 "INSERT INTO clients VALUES ('old-tpp', 3, 1700000000);"
		 "INSERT INTO certificates VALUES ('%s', 'old-tpp', 'CN=tpp', 'CN=ca', '01',"
		 " %lld, %lld, 'active', '%s', 1700000000, NULL);"
		 "INSERT INTO deny VALUES ('10.0.0.0/8', 1700000000);"
		 /* IPv4-mapped, as builds before schema 3 stored them: one of them already
		  * there in IPv4 form */
		 "INSERT INTO deny VALUES ('::ffff:192.0.2.0/120', 1700000000);"
		 "INSERT INTO deny VALUES ('::ffff:198.51.100.7/128', 1700000000);"
		 "INSERT INTO deny VALUES ('::ffff:10.0.0.0/104', 1700000000);"
		 "INSERT INTO deny VALUES ('::fffe:0:0/95', 1700000000);"
		 "INSERT INTO audit (ts, uid, action, client_id) VALUES (1700000000, 0, 'bind',"
		 " 'old-tpp');"
		 "COMMIT;",
		 hex, (long long)c.ci.not_before, (long long)c.ci.not_after, c.pem);
	side_exec(f, sql);
	side_text(f, "PRAGMA user_version", s, sizeof(s));
	assert_string_equal(s, "1");

	reg_open(f);
	side_text(f, "PRAGMA user_version", s, sizeof(s));
	assert_int_equal(atoi(s), REGISTRY_SCHEMA_VERSION);
	side_text(f,
		  "SELECT group_concat(name, ',') FROM (SELECT name FROM sqlite_master"
		  " WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name)",
		  s, sizeof(s));
	assert_string_equal(s, "audit,certificates,client_limits,clients,deny,quota_counters,"
			       "settings");

	/* Everything kept: the binding (in the index too), the deny-list (its IPv4-mapped
	 * prefixes as the IPv4 ones they stand for), the audit trail. */
	expect_binding(f, &c, "old-tpp", 3, CERT_ACTIVE);
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, "old-tpp", &cl), REG_OK);
	assert_int_equal(cl.slot, 3);
	assert_int_equal(cl.created_at, 1700000000);
	assert_int_equal(cl.n_certs, 1);
	assert_false(cl.has_limit);
	registry_client_free(&cl);
	char **cidrs;
	size_t n;
	assert_int_equal(registry_deny_list(f->reg, &cidrs, &n), REG_OK);
	static const char *const want_cidrs[] = {"10.0.0.0/8", "192.0.2.0/24", "198.51.100.7/32",
						 "::fffe:0:0/95"};
	assert_int_equal(n, sizeof(want_cidrs) / sizeof(want_cidrs[0]));
	for (size_t i = 0; i < n; i++) {
		assert_string_equal(cidrs[i], want_cidrs[i]);
		free(cidrs[i]);
	}
	free(cidrs);
	assert_int_equal(audit_count(f), 1);

	/* The new tables work, and the next open changes nothing. */
	struct registry_limit lim = {.pps = 10, .burst = 2};
	expect(registry_limit_set(f->reg, "old-tpp", &lim, UID, &slot, err, sizeof(err)), REG_OK,
	       err, NULL);
	assert_int_equal(slot, 3);
	reg_reopen(f);
	expect_limit(f, "old-tpp", &lim);
	side_text(f, "PRAGMA user_version", s, sizeof(s));
	assert_int_equal(atoi(s), REGISTRY_SCHEMA_VERSION);
	certs_free(&c, 1);
}

/* The qcStatements extension of a PSP_AI and PSP_PI certificate of the FCA, DER (from
 * `openssl asn1parse -genconf`). */
static const unsigned char qc_pi_ai[] = {
	0x30, 0x59, 0x30, 0x57, 0x06, 0x06, 0x04, 0x00, 0x81, 0x98, 0x27, 0x02, 0x30, 0x4d, 0x30,
	0x26, 0x30, 0x11, 0x06, 0x07, 0x04, 0x00, 0x81, 0x98, 0x27, 0x01, 0x03, 0x0c, 0x06, 0x50,
	0x53, 0x50, 0x5f, 0x41, 0x49, 0x30, 0x11, 0x06, 0x07, 0x04, 0x00, 0x81, 0x98, 0x27, 0x01,
	0x02, 0x0c, 0x06, 0x50, 0x53, 0x50, 0x5f, 0x50, 0x49, 0x0c, 0x1b, 0x46, 0x69, 0x6e, 0x61,
	0x6e, 0x63, 0x69, 0x61, 0x6c, 0x20, 0x43, 0x6f, 0x6e, 0x64, 0x75, 0x63, 0x74, 0x20, 0x41,
	0x75, 0x74, 0x68, 0x6f, 0x72, 0x69, 0x74, 0x79, 0x0c, 0x06, 0x47, 0x42, 0x2d, 0x46, 0x43,
	0x41};

/* A certificate with the PSD2 attributes of qc (len bytes; a byte more makes it malformed),
 * read as bind reads them. */
static void cert_new_psd2(struct fx *f, struct tcert *c, size_t len)
{
	X509 *x = testpki_leaf("tpp", f->pki.leaf_key, f->pki.ca, f->pki.ca_key, ++f->serial);
	unsigned char der[sizeof(qc_pi_ai) + 1] = {0};
	char err[256] = "";
	assert_non_null(x);
	memcpy(der, qc_pi_ai, sizeof(qc_pi_ai));
	assert_int_equal(testpki_add_subject(x, f->pki.ca_key, NID_organizationIdentifier,
					     "PSDGB-FCA-123456"),
			 0);
	assert_int_equal(testpki_add_der_ext(x, f->pki.ca_key, NID_qcStatements, der, len), 0);
	assert_int_equal(cert_get_info(x, &c->ci), 0);
	assert_int_equal(qcstatement_read(x, &c->ci.psd2, err, sizeof(err)),
			 len == sizeof(qc_pi_ai) ? 0 : -1);
	c->pem = testpki_pem(x);
	assert_non_null(c->pem);
	X509_free(x);
}

static void expect_psd2(struct fx *f, const struct tcert *c, const char *client_id,
			uint32_t roles, const char *org_id, const char *nca_name)
{
	struct registry_binding b;
	assert_int_equal(registry_lookup(f->reg, c->ci.thumb, &b), REG_OK);
	assert_int_equal(b.psd2_roles, roles);
	assert_string_equal(b.org_id, org_id);
	struct registry_client cl;
	assert_int_equal(registry_get_client(f->reg, client_id, &cl), REG_OK);
	assert_int_equal(cl.n_certs, 1);
	const struct psd2_identity *p = &cl.certs[0].info.psd2;
	assert_int_equal(p->roles, roles);
	assert_string_equal(p->org_id, org_id);
	assert_string_equal(p->nca_name, nca_name);
	assert_string_equal(p->nca_id, nca_name[0] ? "GB-FCA" : "");
	registry_client_free(&cl);
}

/* A binding carries its certificate's PSD2 roles and organizationIdentifier, in the index and
 * in the listings, across a reopen. */
static void test_bind_psd2(void **state)
{
	struct fx *f = *state;
	struct tcert c[2];
	char err[256];
	cert_new_psd2(f, &c[0], sizeof(qc_pi_ai));
	cert_new(f, &c[1]);
	expect(bind(f, "tpp-pi-ai", &c[0], false, NULL, err), REG_OK, err, NULL);
	expect(bind(f, "tpp-plain", &c[1], false, NULL, err), REG_OK, err, NULL);
	for (int pass = 0; pass < 2; pass++) {
		expect_psd2(f, &c[0], "tpp-pi-ai", PSD2_ROLE_PI | PSD2_ROLE_AI, "PSDGB-FCA-123456",
			    "Financial Conduct Authority");
		expect_psd2(f, &c[1], "tpp-plain", 0, "", "");
		reg_reopen(f);
	}
	certs_free(c, 2);
}

/* Certificates bound before schema 5 get their PSD2 attributes from their stored PEM; one
 * whose attributes do not read keeps none, with an audit row saying why. */
static void test_migrate_psd2(void **state)
{
	struct fx *f = *state;
	struct tcert c[3];
	char sql[16384], hex[3][CERT_THUMB_HEX_LEN + 1];

	registry_close(f->reg);
	f->reg = NULL;
	assert_int_equal(unlink(f->path), 0);
	cert_new_psd2(f, &c[0], sizeof(qc_pi_ai));
	cert_new_psd2(f, &c[1], sizeof(qc_pi_ai) + 1); /* a trailing byte */
	cert_new(f, &c[2]);
	side_exec(f, schema_v1);
	for (int i = 0; i < 3; i++) {
		cert_thumb_to_hex(c[i].ci.thumb, hex[i]);
		snprintf(sql, sizeof(sql),
			 "INSERT INTO clients VALUES ('old-%d', %d, 1700000000);"
			 "INSERT INTO certificates VALUES ('%s', 'old-%d', 'CN=tpp', 'CN=ca', '01',"
			 " %lld, %lld, 'active', '%s', 1700000000, NULL);",
			 i, i, hex[i], i, (long long)c[i].ci.not_before, (long long)c[i].ci.not_after,
			 c[i].pem);
		side_exec(f, sql);
	}

	reg_open(f);
	expect_psd2(f, &c[0], "old-0", PSD2_ROLE_PI | PSD2_ROLE_AI, "PSDGB-FCA-123456",
		    "Financial Conduct Authority");
	expect_psd2(f, &c[1], "old-1", 0, "", "");
	expect_psd2(f, &c[2], "old-2", 0, "", "");
	struct registry_audit_entry *e;
	size_t n;
	assert_int_equal(registry_audit(f->reg, "old-1", 10, &e, &n), REG_OK);
	assert_int_equal(n, 1);
	assert_string_equal(e[0].action, "migrate");
	assert_string_equal(e[0].thumb_hex, hex[1]);
	assert_non_null(strstr(e[0].detail, "PSD2 attributes unreadable, none kept: qcStatements: "
					    "1 trailing bytes"));
	free(e);
	assert_int_equal(audit_count(f), 1);
	reg_reopen(f); /* nothing more to do */
	expect_psd2(f, &c[0], "old-0", PSD2_ROLE_PI | PSD2_ROLE_AI, "PSDGB-FCA-123456",
		    "Financial Conduct Authority");
	assert_int_equal(audit_count(f), 1);
	certs_free(c, 3);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
	const struct CMUnitTest tests[] = {
		T(test_open_schema),
		cmocka_unit_test(test_client_id_valid),
		T(test_bind_rules),
		T(test_slots),
		T(test_slot_limit),
		T(test_failure_rolls_back),
		T(test_unbind_client),
		T(test_unbind_cert),
		T(test_revoke_errors),
		T(test_listings_and_persistence),
		T(test_audit),
		T(test_deny),
		T(test_limits),
		T(test_src_rate),
		T(test_quota_checkpoint),
		T(test_migrate_v1),
		T(test_bind_psd2),
		T(test_migrate_psd2),
		T(test_concurrent_lookups),
		T(test_durability_kill9),
	};
#undef T
	return cmocka_run_group_tests(tests, NULL, NULL);
}
