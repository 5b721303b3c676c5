/* token_store: put/get/update/revoke, records bound to their handle and bank (a ciphertext or
 * a wrapped DEK moved to another row does not decrypt), a wrong KEK refused, KEK rotation that
 * leaves payloads alone, a rotation killed (SIGKILL) at chosen rows after which every record
 * still decrypts and a second call finishes, no plaintext in the database files, and the KEK
 * file fallback. Each test runs against a SoftHSM2 token it initialises in a temporary
 * directory. The store is compiled into this file so that a rotation can stop at a given row. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <ftw.h>
#include <signal.h>
#include <sys/wait.h>

#include "precondition.h"

static size_t kill_at_row; /* a rotation SIGKILLs its own process after this many rows */

static void rotate_hook(size_t rows)
{
	if (kill_at_row && rows == kill_at_row)
		raise(SIGKILL);
}

#define TOKEN_STORE_ROTATE_HOOK(rows) rotate_hook(rows)
#include "token_store.c"

#define SOFTHSM_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define PIN "1234"
#define MARKER "PLAINTEXT-MARKER-at-7f3a"

struct fx {
	char dir[64];
	char db[128];
	char kek_file[128];
	struct token_kek_config kek;
	struct token_store *ts;
	char err[256];
};

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(p);
}

static void token_init(struct fx *f, const char *label)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd),
		 "softhsm2-util --init-token --free --label %s --pin " PIN
		 " --so-pin 5678 >/dev/null",
		 label);
	assert_int_equal(system(cmd), 0);
	(void)f;
}

/* A fresh directory with a SoftHSM2 configuration of its own and one token, "psd2e-test". */
static void fx_init(struct fx *f)
{
	memset(f, 0, sizeof(*f));
	if (access(SOFTHSM_MODULE, R_OK) != 0 || system("command -v softhsm2-util >/dev/null"))
		precondition_missing("softhsm2 (" SOFTHSM_MODULE ", softhsm2-util)");
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_token_store.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	char path[128], text[256];
	snprintf(path, sizeof(path), "%s/tokens", f->dir);
	assert_int_equal(mkdir(path, 0700), 0);
	snprintf(text, sizeof(text),
		 "directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", path);
	snprintf(path, sizeof(path), "%s/softhsm2.conf", f->dir);
	FILE *fp = fopen(path, "w");
	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
	assert_int_equal(setenv("SOFTHSM2_CONF", path, 1), 0);
	token_init(f, "psd2e-test");
	snprintf(f->db, sizeof(f->db), "%s/tokens.db", f->dir);
	f->kek = (struct token_kek_config){ .pkcs11_module = SOFTHSM_MODULE,
					    .token_label = "psd2e-test",
					    .pin = PIN,
					    .key_label = "kek-1" };
}

static void fx_open(struct fx *f)
{
	if (token_store_open(f->db, &f->kek, &f->ts, f->err, sizeof(f->err)) != 0)
		fail_msg("token_store_open: %s", f->err);
}

static void fx_close(struct fx *f)
{
	token_store_close(f->ts);
	f->ts = NULL;
}

static void fx_free(struct fx *f)
{
	fx_close(f);
	nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void put(struct fx *f, const char *bank, const char *payload,
		char handle[TOKEN_HANDLE_LEN + 1])
{
	if (token_store_put(f->ts, "backend", bank, "user-1", payload, strlen(payload), handle, f->err,
			    sizeof(f->err)) != TOKEN_OK)
		fail_msg("token_store_put: %s", f->err);
	assert_int_equal(strlen(handle), TOKEN_HANDLE_LEN);
}

static void assert_get(struct fx *f, const char *handle, const char *payload, const char *bank)
{
	void *out;
	size_t len;
	char bank_out[TOKEN_BANK_MAX + 1];
	if (token_store_get(f->ts, handle, &out, &len, bank_out, f->err, sizeof(f->err)) !=
	    TOKEN_OK)
		fail_msg("token_store_get: %s", f->err);
	assert_int_equal(len, strlen(payload));
	assert_memory_equal(out, payload, len);
	assert_string_equal(bank_out, bank);
	free(out);
}

/* get fails with want, err naming why. */
static void assert_get_fails(struct fx *f, const char *handle, enum token_status want,
			     const char *why)
{
	void *out = (void *)1;
	size_t len = 1;
	char bank_out[TOKEN_BANK_MAX + 1];
	f->err[0] = '\0';
	assert_int_equal(token_store_get(f->ts, handle, &out, &len, bank_out, f->err,
					 sizeof(f->err)),
			 want);
	assert_null(out);
	assert_int_equal(len, 0);
	if (!strstr(f->err, why))
		fail_msg("error '%s' does not say '%s'", f->err, why);
}

/* Runs sql on the database with ?1 and ?2 the hashes of handles a and b (either may be NULL):
 * the first column of its first row, or the rows it changed. */
static int sql_run(struct fx *f, const char *sql, const char *a, const char *b)
{
	sqlite3 *db;
	sqlite3_stmt *st;
	uint8_t ha[HASH_LEN], hb[HASH_LEN];
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	if (a) {
		assert_true(handle_hash(a, ha));
		sqlite3_bind_blob(st, 1, ha, HASH_LEN, SQLITE_STATIC);
	}
	if (b) {
		assert_true(handle_hash(b, hb));
		sqlite3_bind_blob(st, 2, hb, HASH_LEN, SQLITE_STATIC);
	}
	int rc = sqlite3_step(st);
	int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : sqlite3_changes(db);
	assert_true(rc == SQLITE_ROW || rc == SQLITE_DONE);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

static int count_under(struct fx *f, const char *label)
{
	char sql[128];
	snprintf(sql, sizeof(sql), "SELECT count(*) FROM tokens WHERE kek_label = '%s'", label);
	return sql_run(f, sql, NULL, NULL);
}

/* Whether needle occurs in the file at path (absent: no). */
static bool file_holds(const char *path, const char *needle)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return false;
	static char buf[4 << 20];
	size_t n = fread(buf, 1, sizeof(buf), fp);
	fclose(fp);
	return memmem(buf, n, needle, strlen(needle)) != NULL;
}

/* Neither the database's files nor `sqlite3 tokens.db .dump` hold needle. */
static void assert_no_plaintext(struct fx *f, const char *needle)
{
	static const char *const suffixes[] = { "", "-wal", "-shm" };
	for (size_t i = 0; i < 3; i++) {
		char path[160];
		snprintf(path, sizeof(path), "%s%s", f->db, suffixes[i]);
		if (file_holds(path, needle))
			fail_msg("%s holds '%s'", path, needle);
	}
	char cmd[512], dump[160];
	snprintf(dump, sizeof(dump), "%s/dump.sql", f->dir);
	snprintf(cmd, sizeof(cmd), "sqlite3 %s .dump > %s", f->db, dump);
	if (system(cmd) != 0)
		precondition_missing("sqlite3 (the command-line shell)");
	assert_true(file_holds(dump, "INSERT INTO tokens"));
	if (file_holds(dump, needle))
		fail_msg("sqlite3 .dump holds '%s'", needle);
}

static void test_put_get_update_revoke(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	fx_open(&f);
	char h1[TOKEN_HANDLE_LEN + 1], h2[TOKEN_HANDLE_LEN + 1];
	put(&f, "bank-a", MARKER "-access-1", h1);
	put(&f, "bank-b", MARKER "-access-2", h2);
	assert_string_not_equal(h1, h2);
	assert_get(&f, h1, MARKER "-access-1", "bank-a");
	assert_get(&f, h2, MARKER "-access-2", "bank-b");

	assert_int_equal(token_store_update(f.ts, h1, MARKER "-refreshed", strlen(MARKER "-refreshed"), f.err,
					    sizeof(f.err)),
			 TOKEN_OK);
	assert_get(&f, h1, MARKER "-refreshed", "bank-a");
	assert_int_equal(token_store_revoke(f.ts, "backend", h2, f.err, sizeof(f.err)), TOKEN_OK);
	assert_get_fails(&f, h2, TOKEN_REVOKED, "revoked");
	assert_int_equal(token_store_revoke(f.ts, "backend", h2, f.err, sizeof(f.err)), TOKEN_REVOKED);
	assert_int_equal(token_store_update(f.ts, h2, "x", 1, f.err, sizeof(f.err)),
			 TOKEN_REVOKED);
	assert_int_equal(sql_run(&f,
				 "SELECT count(*) FROM tokens WHERE handle_hash = ?1 AND"
				 " ciphertext IS NULL AND wrapped_dek IS NULL",
				 h2, NULL),
			 1);

	/* Unknown and malformed handles, bad arguments. */
	assert_get_fails(&f, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", TOKEN_NOT_FOUND,
			 "no such handle");
	assert_get_fails(&f, "short", TOKEN_NOT_FOUND, "not a handle");
	assert_get_fails(&f, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+", TOKEN_NOT_FOUND,
			 "not a handle");
	assert_int_equal(token_store_update(f.ts, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
					    "x", 1, f.err, sizeof(f.err)),
			 TOKEN_NOT_FOUND);
	char h3[TOKEN_HANDLE_LEN + 1];
	assert_int_equal(token_store_put(f.ts, "backend", "", "u", "x", 1, h3, f.err, sizeof(f.err)),
			 TOKEN_ERROR);
	assert_int_equal(token_store_put(f.ts, "backend", "b", "u", "x", TOKEN_PAYLOAD_MAX + 1, h3, f.err,
					 sizeof(f.err)),
			 TOKEN_ERROR);

	/* Durable across a reopen; the files never hold a payload or a handle. */
	fx_close(&f);
	fx_open(&f);
	assert_get(&f, h1, MARKER "-refreshed", "bank-a");
	assert_no_plaintext(&f, MARKER);
	assert_no_plaintext(&f, h1);
	assert_no_plaintext(&f, h2);
	fx_free(&f);
}

/* Tampering with a row of handle a (b another record of the same bank), and what get says. */
static const struct {
	const char *what;
	const char *sql;
	const char *why;
} tamper_rows[] = {
	{ "payload moved from another row",
	  "UPDATE tokens SET nonce = (SELECT nonce FROM tokens WHERE handle_hash = ?2),"
	  " ciphertext = (SELECT ciphertext FROM tokens WHERE handle_hash = ?2)"
	  " WHERE handle_hash = ?1",
	  "payload does not decrypt" },
	{ "payload and its wrapped DEK moved from another row",
	  "UPDATE tokens SET (kek_label, dek_iv, wrapped_dek, nonce, ciphertext) ="
	  " (SELECT kek_label, dek_iv, wrapped_dek, nonce, ciphertext FROM tokens"
	  "  WHERE handle_hash = ?2) WHERE handle_hash = ?1",
	  "DEK does not unwrap" },
	{ "bank changed", "UPDATE tokens SET bank = 'bank-z' WHERE handle_hash = ?1",
	  "payload does not decrypt" },
	{ "ciphertext bit flipped",
	  "UPDATE tokens SET ciphertext = x'00' || substr(ciphertext, 2) WHERE handle_hash = ?1",
	  "payload does not decrypt" },
	{ "ciphertext shorter than a tag",
	  "UPDATE tokens SET ciphertext = x'0011' WHERE handle_hash = ?1", "malformed record" },
	{ "ciphertext over the bound",
	  "UPDATE tokens SET ciphertext = zeroblob(65536 + 17) WHERE handle_hash = ?1",
	  "malformed record" },
	{ "wrapped DEK one byte long",
	  "UPDATE tokens SET wrapped_dek = zeroblob(49) WHERE handle_hash = ?1",
	  "malformed record" },
	{ "nonce missing", "UPDATE tokens SET nonce = x'' WHERE handle_hash = ?1",
	  "malformed record" },
	{ "KEK label unknown to the token",
	  "UPDATE tokens SET kek_label = 'kek-9' WHERE handle_hash = ?1", "no KEK labelled" },
};

static void test_tampered_rows(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	fx_open(&f);
	for (size_t i = 0; i < sizeof(tamper_rows) / sizeof(tamper_rows[0]); i++) {
		char a[TOKEN_HANDLE_LEN + 1], b[TOKEN_HANDLE_LEN + 1];
		print_message("%s\n", tamper_rows[i].what);
		put(&f, "bank-a", MARKER "-a", a);
		put(&f, "bank-a", MARKER "-b", b);
		assert_int_equal(sql_run(&f, tamper_rows[i].sql, a, b), 1);
		assert_get_fails(&f, a, TOKEN_ERROR, tamper_rows[i].why);
		assert_get(&f, b, MARKER "-b", "bank-a");
	}
	fx_free(&f);
}

static void test_wrong_kek(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	fx_open(&f);
	char h[TOKEN_HANDLE_LEN + 1];
	put(&f, "bank-a", MARKER, h);
	fx_close(&f);

	/* Another token holds another key of the same label. */
	token_init(&f, "psd2e-other");
	f.kek.token_label = "psd2e-other";
	fx_open(&f);
	assert_get_fails(&f, h, TOKEN_ERROR, "DEK does not unwrap under KEK 'kek-1'");
	fx_close(&f);

	struct token_store *ts = NULL;
	f.kek.pin = "9999";
	assert_int_equal(token_store_open(f.db, &f.kek, &ts, f.err, sizeof(f.err)), -1);
	assert_non_null(strstr(f.err, "wrong PIN"));
	f.kek.pin = PIN;
	f.kek.token_label = "no-such-token";
	assert_int_equal(token_store_open(f.db, &f.kek, &ts, f.err, sizeof(f.err)), -1);
	assert_non_null(strstr(f.err, "no PKCS#11 token labelled 'no-such-token'"));
	assert_null(ts);

	f.kek.token_label = "psd2e-test";
	fx_open(&f);
	assert_get(&f, h, MARKER, "bank-a");
	fx_free(&f);
}

/* The nonce and ciphertext of every row, concatenated in handle-hash order. */
static char *payload_columns(struct fx *f)
{
	sqlite3 *db;
	char *out = NULL;
	assert_int_equal(sqlite3_open(f->db, &db), SQLITE_OK);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db,
					    "SELECT group_concat(hex(nonce) || hex(ciphertext), ',')"
					    " FROM (SELECT * FROM tokens ORDER BY handle_hash)",
					    -1, &st, NULL),
			 SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	out = strdup((const char *)sqlite3_column_text(st, 0));
	sqlite3_finalize(st);
	sqlite3_close(db);
	return out;
}

#define ROTATE_RECORDS 40

static void put_many(struct fx *f, char (*handles)[TOKEN_HANDLE_LEN + 1], size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char payload[64];
		snprintf(payload, sizeof(payload), MARKER "-%zu", i);
		put(f, "bank-a", payload, handles[i]);
	}
}

/* Records from..n - 1 of put_many. */
static void assert_all_decrypt(struct fx *f, char (*handles)[TOKEN_HANDLE_LEN + 1], size_t from,
			       size_t n)
{
	for (size_t i = from; i < n; i++) {
		char payload[64];
		snprintf(payload, sizeof(payload), MARKER "-%zu", i);
		assert_get(f, handles[i], payload, "bank-a");
	}
}

static void test_rotation(void **state)
{
	(void)state;
	struct fx f;
	char handles[ROTATE_RECORDS][TOKEN_HANDLE_LEN + 1];
	fx_init(&f);
	fx_open(&f);
	put_many(&f, handles, ROTATE_RECORDS);
	assert_int_equal(token_store_revoke(f.ts, "backend", handles[0], f.err, sizeof(f.err)), TOKEN_OK);
	char *before = payload_columns(&f);

	if (token_store_rotate_kek(f.ts, "kek-2", f.err, sizeof(f.err)) != 0)
		fail_msg("rotate: %s", f.err);
	assert_int_equal(count_under(&f, "kek-2"), ROTATE_RECORDS - 1);
	assert_int_equal(count_under(&f, "kek-1"), 0);
	char *after = payload_columns(&f);
	assert_string_equal(before, after); /* payloads untouched */
	free(before);
	free(after);
	assert_get_fails(&f, handles[0], TOKEN_REVOKED, "revoked");
	assert_all_decrypt(&f, handles, 1, ROTATE_RECORDS);
	char h[TOKEN_HANDLE_LEN + 1];
	put(&f, "bank-b", MARKER, h);
	assert_int_equal(count_under(&f, "kek-2"), ROTATE_RECORDS);

	/* Both KEKs stay in the token, neither readable out of it; rotating back works. */
	CK_OBJECT_HANDLE old, cur;
	assert_int_equal(p11_find_key(f.ts, "kek-1", false, &old, f.err, sizeof(f.err)), 0);
	assert_int_equal(p11_find_key(f.ts, "kek-2", false, &cur, f.err, sizeof(f.err)), 0);
	uint8_t value[KEY_LEN];
	CK_ATTRIBUTE attr = { CKA_VALUE, value, sizeof(value) };
	assert_int_equal(f.ts->p11->C_GetAttributeValue(f.ts->session, cur, &attr, 1),
			 CKR_ATTRIBUTE_SENSITIVE);
	assert_int_equal(token_store_rotate_kek(f.ts, "kek-2", f.err, sizeof(f.err)), 0);
	assert_int_equal(token_store_rotate_kek(f.ts, "kek-1", f.err, sizeof(f.err)), 0);
	assert_int_equal(count_under(&f, "kek-1"), ROTATE_RECORDS);
	assert_get(&f, h, MARKER, "bank-b");
	assert_int_equal(token_store_rotate_kek(f.ts, "", f.err, sizeof(f.err)), -1);
	fx_free(&f);
}

/* The row after which the rotating process is killed, its batch not yet committed: the first,
 * a batch's last, the first of the second batch (the first committed), the last ones. */
static const size_t kill_rows[] = { 1, ROTATE_BATCH, ROTATE_BATCH + 1, ROTATE_RECORDS - 1,
				    ROTATE_RECORDS };

static void test_rotation_killed(void **state)
{
	(void)state;
	for (size_t k = 0; k < sizeof(kill_rows) / sizeof(kill_rows[0]); k++) {
		struct fx f;
		char handles[ROTATE_RECORDS][TOKEN_HANDLE_LEN + 1];
		print_message("killed after row %zu\n", kill_rows[k]);
		fx_init(&f);
		fx_open(&f);
		put_many(&f, handles, ROTATE_RECORDS);
		fx_close(&f);

		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* No cmocka assertion here: a failure would resume the tests in the child. */
			kill_at_row = kill_rows[k];
			if (token_store_open(f.db, &f.kek, &f.ts, f.err, sizeof(f.err)) == 0)
				token_store_rotate_kek(f.ts, "kek-2", f.err, sizeof(f.err));
			fprintf(stderr, "rotation not killed: %s\n", f.err);
			_exit(3);
		}
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		assert_int_equal(WTERMSIG(status), SIGKILL);

		/* Committed batches name kek-2, the rest kek-1; every record decrypts. */
		int rotated = (int)((kill_rows[k] - 1) / ROTATE_BATCH * ROTATE_BATCH);
		assert_int_equal(count_under(&f, "kek-2"), rotated);
		assert_int_equal(count_under(&f, "kek-1"), ROTATE_RECORDS - rotated);
		fx_open(&f);
		assert_all_decrypt(&f, handles, 0, ROTATE_RECORDS);
		if (token_store_rotate_kek(f.ts, "kek-2", f.err, sizeof(f.err)) != 0)
			fail_msg("second rotate: %s", f.err);
		assert_int_equal(count_under(&f, "kek-2"), ROTATE_RECORDS);
		assert_all_decrypt(&f, handles, 0, ROTATE_RECORDS);
		fx_free(&f);
	}
}

static void write_kek_file(const char *path, mode_t mode, size_t len)
{
	uint8_t key[KEY_LEN + 1];
	assert_int_equal(RAND_bytes(key, sizeof(key)), 1);
	unlink(path);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, key, len), (ssize_t)len);
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static void test_kek_file(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	snprintf(f.kek_file, sizeof(f.kek_file), "%s/kek.bin", f.dir);
	write_kek_file(f.kek_file, 0600, KEY_LEN);
	struct token_kek_config file_kek = { .kek_file = f.kek_file };
	f.kek = file_kek;
	fx_open(&f);
	char h[TOKEN_HANDLE_LEN + 1];
	put(&f, "bank-a", MARKER, h);
	assert_get(&f, h, MARKER, "bank-a");
	assert_int_equal(count_under(&f, FILE_KEK_LABEL), 1);
	assert_int_equal(token_store_rotate_kek(f.ts, "kek-2", f.err, sizeof(f.err)), -1);
	assert_non_null(strstr(f.err, "needs a PKCS#11 token"));
	fx_close(&f);
	assert_no_plaintext(&f, MARKER);

	/* Refusals: a file others may read, a short file, both KEKs or none set. */
	struct token_store *ts = NULL;
	assert_int_equal(chmod(f.kek_file, 0640), 0);
	assert_int_equal(token_store_open(f.db, &f.kek, &ts, f.err, sizeof(f.err)), -1);
	assert_non_null(strstr(f.err, "mode 0600"));
	write_kek_file(f.kek_file, 0600, KEY_LEN - 1);
	assert_int_equal(token_store_open(f.db, &f.kek, &ts, f.err, sizeof(f.err)), -1);
	assert_non_null(strstr(f.err, "exactly 32 bytes"));
	struct token_kek_config both = { .kek_file = f.kek_file, .pkcs11_module = SOFTHSM_MODULE };
	assert_int_equal(token_store_open(f.db, &both, &ts, f.err, sizeof(f.err)), -1);
	struct token_kek_config none = { 0 };
	assert_int_equal(token_store_open(f.db, &none, &ts, f.err, sizeof(f.err)), -1);
	assert_null(ts);

	/* Another key in the file: the record does not decrypt. */
	write_kek_file(f.kek_file, 0600, KEY_LEN);
	fx_open(&f);
	assert_get_fails(&f, h, TOKEN_ERROR, "does not unwrap under the KEK file");
	fx_free(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_update_revoke),
		cmocka_unit_test(test_tampered_rows),
		cmocka_unit_test(test_wrong_kek),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_rotation_killed),
		cmocka_unit_test(test_kek_file),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
