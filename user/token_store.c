/* The token store (token_store.h). A record's payload is sealed with AES-256-GCM under a DEK of
 * its own, with the handle's hash and the bank as associated data; the DEK is sealed the same
 * way under the KEK, with the handle's hash as associated data, and the row names the KEK that
 * wraps it. In a PKCS#11 token the KEK is a non-extractable AES key and the DEK goes through
 * C_Encrypt/C_Decrypt (CKM_AES_GCM, which SoftHSM2 2.6 offers; C_WrapKey would need each DEK
 * as a token object), so the KEK never leaves the token. */
#include "token_store.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <p11-kit-1/p11-kit/pkcs11.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TOKEN_SCHEMA_VERSION 2
#define TOKEN_BUSY_TIMEOUT_MS 5000
#define TOKEN_USER_MAX 255
#define TOKEN_PAYLOAD_MAX (64 * 1024)
#define TOKEN_LABEL_MAX 32 /* a PKCS#11 token label is 32 bytes, blank-padded */
#define KEY_LABEL_MAX 128
#define KEY_LEN 32
#define NONCE_LEN 12
#define TAG_LEN 16
#define WRAPPED_DEK_LEN (KEY_LEN + TAG_LEN)
#define HASH_LEN SHA256_DIGEST_LENGTH
/* The KEK label rows carry in file mode; rotation needs a token. */
#define FILE_KEK_LABEL "file"
/* Rows re-wrapped per transaction by a rotation: an interrupted one loses at most a batch of
 * work, never a record, since a row changes only together with the label it names. */
#define ROTATE_BATCH 16

/* Tests define TOKEN_STORE_ROTATE_HOOK(rows) to stop a rotation at a chosen point. */
#ifndef TOKEN_STORE_ROTATE_HOOK
#define TOKEN_STORE_ROTATE_HOOK(rows) ((void)(rows))
#endif

struct token_store {
	sqlite3 *db;
	char key_label[KEY_LABEL_MAX + 1];
	bool file_mode;
	uint8_t file_kek[KEY_LEN];
	void *module; /* dlopen handle of the PKCS#11 module */
	CK_FUNCTION_LIST_PTR p11;
	bool p11_initialized; /* by this store, so it finalizes */
	bool session_open;
	CK_SESSION_HANDLE session;
	char token_label[TOKEN_LABEL_MAX + 1];
};

/* Schema migrations, as in the registry: step N - 1 takes user_version N - 1 to N. Never edit
 * a shipped step. A revoked row keeps its metadata and loses every key and ciphertext. */
static const char *const migrations[] = {
	"CREATE TABLE tokens ("
	" handle_hash BLOB PRIMARY KEY NOT NULL CHECK (length(handle_hash) = 32),"
	" bank TEXT NOT NULL,"
	" user TEXT NOT NULL,"
	" kek_label TEXT,"
	" dek_iv BLOB,"
	" wrapped_dek BLOB,"
	" nonce BLOB,"
	" ciphertext BLOB,"
	" state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),"
	" created_at INTEGER NOT NULL,"
	" updated_at INTEGER NOT NULL,"
	" revoked_at INTEGER,"
	" CHECK (state = 'revoked' OR (kek_label IS NOT NULL AND dek_iv IS NOT NULL AND"
	"  wrapped_dek IS NOT NULL AND nonce IS NOT NULL AND ciphertext IS NOT NULL)));"
	"CREATE INDEX tokens_by_kek ON tokens (kek_label) WHERE state = 'active';",
	/* Who created and who revoked each handle (the backend's client_id at the gateway). */
	"CREATE TABLE audit ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" at INTEGER NOT NULL,"
	" actor TEXT NOT NULL,"
	" action TEXT NOT NULL CHECK (action IN ('created', 'revoked')),"
	" handle_hash BLOB NOT NULL CHECK (length(handle_hash) = 32),"
	" bank TEXT NOT NULL);",
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == TOKEN_SCHEMA_VERSION,
	       "one migration step per schema version");

__attribute__((format(printf, 4, 5))) static int set_err(char *err, size_t errlen, int status,
							  const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return status;
}

static int db_err(struct token_store *ts, char *err, size_t errlen)
{
	return set_err(err, errlen, TOKEN_ERROR, "token store database error: %s",
		       sqlite3_errmsg(ts->db));
}

/* Prepares sql and binds one parameter per letter of types: 't' a const char *, 'i' an
 * int64_t, 'b' a const void * followed by its size_t length. SQLITE_OK, or an SQLite error
 * code and *out NULL. */
static int db_vprepare(struct token_store *ts, sqlite3_stmt **out, const char *sql,
		       const char *types, va_list ap)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(ts->db, sql, -1, &st, NULL);
	for (int i = 0; rc == SQLITE_OK && types[i]; i++) {
		if (types[i] == 't') {
			rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1,
					       SQLITE_STATIC);
		} else if (types[i] == 'b') {
			const void *p = va_arg(ap, const void *);
			rc = sqlite3_bind_blob64(st, i + 1, p, va_arg(ap, size_t), SQLITE_STATIC);
		} else {
			rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
		}
	}
	if (rc != SQLITE_OK) {
		sqlite3_finalize(st);
		st = NULL;
	}
	*out = st;
	return rc;
}

static int db_prepare(struct token_store *ts, sqlite3_stmt **out, const char *sql,
		      const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	int rc = db_vprepare(ts, out, sql, types, ap);
	va_end(ap);
	return rc;
}

/* Runs a statement that returns no rows: SQLITE_DONE or an SQLite error code. */
static int db_exec(struct token_store *ts, const char *sql, const char *types, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	va_start(ap, types);
	int rc = db_vprepare(ts, &st, sql, types, ap);
	va_end(ap);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_finalize(st);
	return rc;
}

static int txn_begin(struct token_store *ts, char *err, size_t errlen)
{
	if (db_exec(ts, "BEGIN IMMEDIATE", "") != SQLITE_DONE)
		return db_err(ts, err, errlen);
	return 0;
}

static int txn_commit(struct token_store *ts, char *err, size_t errlen)
{
	if (db_exec(ts, "COMMIT", "") != SQLITE_DONE)
		return db_err(ts, err, errlen);
	return 0;
}

static void txn_rollback(struct token_store *ts)
{
	if (!sqlite3_get_autocommit(ts->db))
		sqlite3_exec(ts->db, "ROLLBACK", NULL, NULL, NULL);
}

/* A blob column that must be exactly want bytes (or, with want 0, between min and max): the
 * database is read as untrusted input. */
static const uint8_t *col_blob(sqlite3_stmt *st, int col, size_t min, size_t max, size_t *len)
{
	const void *p = sqlite3_column_blob(st, col);
	size_t n = (size_t)sqlite3_column_bytes(st, col);
	if (!p || n < min || n > max)
		return NULL;
	*len = n;
	return p;
}

/* --- AES-256-GCM in OpenSSL ----------------------------------------------------------------- */

/* out receives len bytes of ciphertext followed by the tag. */
static int gcm_seal(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const void *aad,
		    size_t aadlen, const void *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, ok = c && EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
		    EVP_EncryptUpdate(c, NULL, &n, aad, (int)aadlen) == 1 &&
		    EVP_EncryptUpdate(c, out, &n, in, (int)len) == 1 &&
		    EVP_EncryptFinal_ex(c, out + n, &n) == 1 &&
		    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, out + len) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

/* in holds len bytes of ciphertext followed by the tag; -1 when the tag does not verify. */
static int gcm_open(const uint8_t key[KEY_LEN], const uint8_t nonce[NONCE_LEN], const void *aad,
		    size_t aadlen, const uint8_t *in, size_t len, uint8_t *out)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	int n, ok = c && EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, nonce) == 1 &&
		    EVP_DecryptUpdate(c, NULL, &n, aad, (int)aadlen) == 1 &&
		    EVP_DecryptUpdate(c, out, &n, in, (int)len) == 1 &&
		    EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
					(void *)(in + len)) == 1 &&
		    EVP_DecryptFinal_ex(c, out + n, &n) == 1;
	EVP_CIPHER_CTX_free(c);
	return ok ? 0 : -1;
}

/* --- the KEK: a PKCS#11 token, or a file --------------------------------------------------- */

static int p11_err(char *err, size_t errlen, const char *what, CK_RV rv)
{
	return set_err(err, errlen, TOKEN_ERROR, "PKCS#11 %s failed: CKR 0x%lx", what,
		       (unsigned long)rv);
}

/* The slot holding the token labelled label. */
static int p11_find_slot(struct token_store *ts, const char *label, CK_SLOT_ID *out, char *err,
			 size_t errlen)
{
	CK_ULONG n = 0;
	CK_RV rv = ts->p11->C_GetSlotList(CK_TRUE, NULL, &n);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_GetSlotList", rv);
	CK_SLOT_ID *slots = calloc(n ? n : 1, sizeof(*slots));
	if (!slots)
		return set_err(err, errlen, TOKEN_ERROR, "out of memory");
	rv = ts->p11->C_GetSlotList(CK_TRUE, slots, &n);
	int ret = rv == CKR_OK ? set_err(err, errlen, TOKEN_ERROR, "no PKCS#11 token labelled '%s'",
					 label)
			       : p11_err(err, errlen, "C_GetSlotList", rv);
	char padded[TOKEN_LABEL_MAX];
	memset(padded, ' ', sizeof(padded));
	memcpy(padded, label, strlen(label));
	for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
		CK_TOKEN_INFO info;
		if (ts->p11->C_GetTokenInfo(slots[i], &info) == CKR_OK &&
		    (info.flags & CKF_TOKEN_INITIALIZED) &&
		    memcmp(info.label, padded, sizeof(padded)) == 0) {
			*out = slots[i];
			ret = 0;
			break;
		}
	}
	free(slots);
	return ret;
}

static int p11_open(struct token_store *ts, const struct token_kek_config *kek, char *err,
		    size_t errlen)
{
	if (!kek->token_label || !kek->token_label[0] ||
	    strlen(kek->token_label) > TOKEN_LABEL_MAX)
		return set_err(err, errlen, TOKEN_ERROR, "token label is empty or over %d bytes",
			       TOKEN_LABEL_MAX);
	if (!kek->pin)
		return set_err(err, errlen, TOKEN_ERROR, "token '%s': no PIN", kek->token_label);
	snprintf(ts->token_label, sizeof(ts->token_label), "%s", kek->token_label);
	ts->module = dlopen(kek->pkcs11_module, RTLD_NOW | RTLD_LOCAL);
	if (!ts->module)
		return set_err(err, errlen, TOKEN_ERROR, "PKCS#11 module %s: %s",
			       kek->pkcs11_module, dlerror());
	CK_C_GetFunctionList get_list;
	*(void **)&get_list = dlsym(ts->module, "C_GetFunctionList");
	if (!get_list || get_list(&ts->p11) != CKR_OK || !ts->p11)
		return set_err(err, errlen, TOKEN_ERROR,
			       "PKCS#11 module %s: no usable C_GetFunctionList",
			       kek->pkcs11_module);
	CK_C_INITIALIZE_ARGS init = { .flags = CKF_OS_LOCKING_OK };
	CK_RV rv = ts->p11->C_Initialize(&init);
	/* Another user of the module in this process initialized it and will finalize it. */
	if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED)
		return p11_err(err, errlen, "C_Initialize", rv);
	ts->p11_initialized = rv == CKR_OK;
	CK_SLOT_ID slot = 0;
	if (p11_find_slot(ts, kek->token_label, &slot, err, errlen) < 0)
		return TOKEN_ERROR;
	rv = ts->p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
				    &ts->session);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_OpenSession", rv);
	ts->session_open = true;
	rv = ts->p11->C_Login(ts->session, CKU_USER, (CK_UTF8CHAR_PTR)kek->pin,
			      strlen(kek->pin));
	if (rv == CKR_PIN_INCORRECT)
		return set_err(err, errlen, TOKEN_ERROR, "token '%s': wrong PIN",
			       kek->token_label);
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		return p11_err(err, errlen, "C_Login", rv);
	return 0;
}

static void p11_close(struct token_store *ts)
{
	if (ts->session_open)
		ts->p11->C_CloseSession(ts->session);
	if (ts->p11_initialized)
		ts->p11->C_Finalize(NULL);
	if (ts->module)
		dlclose(ts->module);
}

/* The token's secret key labelled label; with create, a new non-extractable AES-256 key when
 * there is none. */
static int p11_find_key(struct token_store *ts, const char *label, bool create,
			CK_OBJECT_HANDLE *out, char *err, size_t errlen)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE query[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 0;
	CK_RV rv = ts->p11->C_FindObjectsInit(ts->session, query, 2);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_FindObjectsInit", rv);
	rv = ts->p11->C_FindObjects(ts->session, found, 2, &n);
	ts->p11->C_FindObjectsFinal(ts->session);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_FindObjects", rv);
	if (n > 1)
		return set_err(err, errlen, TOKEN_ERROR, "token '%s' holds several keys labelled '%s'",
			       ts->token_label, label);
	if (n == 1) {
		*out = found[0];
		return 0;
	}
	if (!create)
		return set_err(err, errlen, TOKEN_ERROR, "token '%s' holds no KEK labelled '%s'",
			       ts->token_label, label);
	CK_KEY_TYPE type = CKK_AES;
	CK_ULONG len = KEY_LEN;
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_VALUE_LEN, &len, sizeof(len) },
		{ CKA_LABEL, (void *)label, strlen(label) },
		{ CKA_TOKEN, &yes, sizeof(yes) },
		{ CKA_PRIVATE, &yes, sizeof(yes) },
		{ CKA_SENSITIVE, &yes, sizeof(yes) },
		{ CKA_EXTRACTABLE, &no, sizeof(no) },
		{ CKA_ENCRYPT, &yes, sizeof(yes) },
		{ CKA_DECRYPT, &yes, sizeof(yes) },
	};
	CK_MECHANISM gen = { CKM_AES_KEY_GEN, NULL, 0 };
	rv = ts->p11->C_GenerateKey(ts->session, &gen, tmpl, sizeof(tmpl) / sizeof(tmpl[0]), out);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_GenerateKey", rv);
	return 0;
}

/* dek sealed under the KEK labelled label (created when create), bound to the handle's hash:
 * iv receives a fresh nonce, wrapped the DEK and its tag. */
static int kek_wrap(struct token_store *ts, const char *label, bool create,
		    const uint8_t hash[HASH_LEN], const uint8_t dek[KEY_LEN],
		    uint8_t iv[NONCE_LEN], uint8_t wrapped[WRAPPED_DEK_LEN], char *err,
		    size_t errlen)
{
	if (RAND_bytes(iv, NONCE_LEN) != 1)
		return set_err(err, errlen, TOKEN_ERROR, "no random bytes for a nonce");
	if (ts->file_mode) {
		if (gcm_seal(ts->file_kek, iv, hash, HASH_LEN, dek, KEY_LEN, wrapped) < 0)
			return set_err(err, errlen, TOKEN_ERROR, "wrapping a DEK failed");
		return 0;
	}
	CK_OBJECT_HANDLE key;
	if (p11_find_key(ts, label, create, &key, err, errlen) < 0)
		return TOKEN_ERROR;
	CK_GCM_PARAMS gcm = { iv, NONCE_LEN, NONCE_LEN * 8, (CK_BYTE_PTR)hash, HASH_LEN,
			      TAG_LEN * 8 };
	CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof(gcm) };
	CK_ULONG outlen = WRAPPED_DEK_LEN;
	CK_RV rv = ts->p11->C_EncryptInit(ts->session, &mech, key);
	if (rv == CKR_OK)
		rv = ts->p11->C_Encrypt(ts->session, (CK_BYTE_PTR)dek, KEY_LEN, wrapped, &outlen);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_Encrypt of a DEK", rv);
	if (outlen != WRAPPED_DEK_LEN)
		return set_err(err, errlen, TOKEN_ERROR, "PKCS#11 wrapped a DEK into %lu bytes",
			       (unsigned long)outlen);
	return 0;
}

static int kek_unwrap(struct token_store *ts, const char *label, const uint8_t hash[HASH_LEN],
		      const uint8_t iv[NONCE_LEN], const uint8_t wrapped[WRAPPED_DEK_LEN],
		      uint8_t dek[KEY_LEN], char *err, size_t errlen)
{
	if (ts->file_mode) {
		if (strcmp(label, FILE_KEK_LABEL) != 0)
			return set_err(err, errlen, TOKEN_ERROR,
				       "the record's DEK is wrapped under KEK '%s', not the KEK file",
				       label);
		if (gcm_open(ts->file_kek, iv, hash, HASH_LEN, wrapped, KEY_LEN, dek) < 0)
			return set_err(err, errlen, TOKEN_ERROR,
				       "the record's DEK does not unwrap under the KEK file: another "
				       "key, or the record was altered");
		return 0;
	}
	CK_OBJECT_HANDLE key;
	if (p11_find_key(ts, label, false, &key, err, errlen) < 0)
		return TOKEN_ERROR;
	CK_GCM_PARAMS gcm = { (CK_BYTE_PTR)iv, NONCE_LEN, NONCE_LEN * 8, (CK_BYTE_PTR)hash,
			      HASH_LEN, TAG_LEN * 8 };
	CK_MECHANISM mech = { CKM_AES_GCM, &gcm, sizeof(gcm) };
	uint8_t out[WRAPPED_DEK_LEN];
	CK_ULONG outlen = sizeof(out);
	CK_RV rv = ts->p11->C_DecryptInit(ts->session, &mech, key);
	if (rv != CKR_OK)
		return p11_err(err, errlen, "C_DecryptInit", rv);
	rv = ts->p11->C_Decrypt(ts->session, (CK_BYTE_PTR)wrapped, WRAPPED_DEK_LEN, out, &outlen);
	int ret = 0;
	/* SoftHSM2 answers a tag that does not verify with CKR_GENERAL_ERROR. */
	if (rv == CKR_ENCRYPTED_DATA_INVALID || rv == CKR_GENERAL_ERROR)
		ret = set_err(err, errlen, TOKEN_ERROR,
			      "the record's DEK does not unwrap under KEK '%s': another key, or "
			      "the record was altered (CKR 0x%lx)",
			      label, (unsigned long)rv);
	else if (rv != CKR_OK)
		ret = p11_err(err, errlen, "C_Decrypt of a DEK", rv);
	else if (outlen != KEY_LEN)
		ret = set_err(err, errlen, TOKEN_ERROR, "PKCS#11 unwrapped a DEK of %lu bytes",
			      (unsigned long)outlen);
	else
		memcpy(dek, out, KEY_LEN);
	OPENSSL_cleanse(out, sizeof(out));
	return ret;
}

static int kek_file_load(struct token_store *ts, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return set_err(err, errlen, TOKEN_ERROR, "KEK file %s: %s", path, strerror(errno));
	struct stat st;
	int ret = TOKEN_ERROR;
	if (fstat(fd, &st) < 0) {
		set_err(err, errlen, ret, "KEK file %s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
		set_err(err, errlen, ret,
			"KEK file %s: must be a regular file readable by its owner only (mode 0600)",
			path);
	} else if (st.st_size != KEY_LEN || read(fd, ts->file_kek, KEY_LEN) != KEY_LEN) {
		set_err(err, errlen, ret, "KEK file %s: must hold exactly %d bytes", path, KEY_LEN);
	} else {
		ts->file_mode = true;
		ret = 0;
	}
	close(fd);
	return ret;
}

/* --- the database ---------------------------------------------------------------------------- */

static int db_open(struct token_store *ts, const char *path, char *err, size_t errlen)
{
	if (sqlite3_open_v2(path, &ts->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK)
		return set_err(err, errlen, TOKEN_ERROR, "%s: %s", path,
			       ts->db ? sqlite3_errmsg(ts->db) : "out of memory");
	sqlite3_stmt *st = NULL;
	int ret = TOKEN_ERROR;
	if (sqlite3_busy_timeout(ts->db, TOKEN_BUSY_TIMEOUT_MS) != SQLITE_OK ||
	    db_prepare(ts, &st, "PRAGMA journal_mode = WAL", "") != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		db_err(ts, err, errlen);
		goto out;
	}
	const char *mode = (const char *)sqlite3_column_text(st, 0);
	if (!mode || strcmp(mode, "wal") != 0) {
		set_err(err, errlen, ret, "%s: cannot use WAL mode (got %s)", path,
			mode ? mode : "nothing");
		goto out;
	}
	/* FULL: an acknowledged token survives power loss. secure_delete: a revoked or replaced
	 * payload's bytes are overwritten in the file, not left in a free page. */
	if (db_exec(ts, "PRAGMA synchronous = FULL", "") != SQLITE_DONE ||
	    db_exec(ts, "PRAGMA secure_delete = ON", "") != SQLITE_ROW) {
		db_err(ts, err, errlen);
		goto out;
	}
	sqlite3_finalize(st);
	st = NULL;
	if (txn_begin(ts, err, errlen) < 0)
		goto out;
	if (db_prepare(ts, &st, "PRAGMA user_version", "") != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		db_err(ts, err, errlen);
		goto out;
	}
	int64_t version = sqlite3_column_int64(st, 0);
	if (version < 0 || version > TOKEN_SCHEMA_VERSION) {
		set_err(err, errlen, ret, "%s: schema version %lld; this build knows up to %d", path,
			(long long)version, TOKEN_SCHEMA_VERSION);
		goto out;
	}
	for (int64_t v = version + 1; v <= TOKEN_SCHEMA_VERSION; v++) {
		char bump[48];
		snprintf(bump, sizeof(bump), "PRAGMA user_version = %lld", (long long)v);
		if (sqlite3_exec(ts->db, migrations[v - 1], NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(ts->db, bump, NULL, NULL, NULL) != SQLITE_OK) {
			db_err(ts, err, errlen);
			goto out;
		}
	}
	ret = txn_commit(ts, err, errlen);
out:
	sqlite3_finalize(st);
	txn_rollback(ts);
	return ret;
}

int token_store_open(const char *path, const struct token_kek_config *kek,
		     struct token_store **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!path || !path[0])
		return set_err(err, errlen, -1, "token store path is empty");
	bool have_file = kek->kek_file && kek->kek_file[0];
	bool have_module = kek->pkcs11_module && kek->pkcs11_module[0];
	if (have_file == have_module)
		return set_err(err, errlen, -1,
			       "the KEK is either in a PKCS#11 module or in a KEK file: set one");
	const char *label = have_file ? FILE_KEK_LABEL : kek->key_label;
	if (!label || !label[0] || strlen(label) > KEY_LABEL_MAX)
		return set_err(err, errlen, -1, "KEK label is empty or over %d bytes",
			       KEY_LABEL_MAX);
	struct token_store *ts = calloc(1, sizeof(*ts));
	if (!ts)
		return set_err(err, errlen, -1, "out of memory");
	snprintf(ts->key_label, sizeof(ts->key_label), "%s", label);
	CK_OBJECT_HANDLE key;
	int ret = -1;
	if (have_file ? kek_file_load(ts, kek->kek_file, err, errlen)
		      : p11_open(ts, kek, err, errlen))
		goto out;
	/* The current KEK exists from the start, so a put never fails for the want of it. */
	if (!have_file && p11_find_key(ts, ts->key_label, true, &key, err, errlen) < 0)
		goto out;
	if (db_open(ts, path, err, errlen) < 0)
		goto out;
	*out = ts;
	ts = NULL;
	ret = 0;
out:
	token_store_close(ts);
	return ret;
}

void token_store_close(struct token_store *ts)
{
	if (!ts)
		return;
	sqlite3_close(ts->db);
	if (!ts->file_mode)
		p11_close(ts);
	OPENSSL_cleanse(ts->file_kek, sizeof(ts->file_kek));
	free(ts);
}

/* --- records --------------------------------------------------------------------------------- */

/* The handle's hash, when handle is one (43 base64url characters). */
static bool handle_hash(const char *handle, uint8_t hash[HASH_LEN])
{
	if (!handle || strnlen(handle, TOKEN_HANDLE_LEN + 1) != TOKEN_HANDLE_LEN ||
	    strspn(handle, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") !=
		    TOKEN_HANDLE_LEN)
		return false;
	SHA256((const unsigned char *)handle, TOKEN_HANDLE_LEN, hash);
	return true;
}

/* A record's ciphertext, DEK and wrapping, all fresh; the DEK is wiped once used. */
struct sealed {
	uint8_t nonce[NONCE_LEN];
	uint8_t dek_iv[NONCE_LEN];
	uint8_t wrapped_dek[WRAPPED_DEK_LEN];
	uint8_t *ciphertext; /* len + TAG_LEN bytes */
	size_t ciphertext_len;
};

static int seal_payload(struct token_store *ts, const uint8_t hash[HASH_LEN], const char *bank,
			const void *payload, size_t len, struct sealed *s, char *err,
			size_t errlen)
{
	uint8_t dek[KEY_LEN];
	uint8_t aad[HASH_LEN + TOKEN_BANK_MAX];
	size_t banklen = strlen(bank);
	memcpy(aad, hash, HASH_LEN);
	memcpy(aad + HASH_LEN, bank, banklen);
	s->ciphertext_len = len + TAG_LEN;
	s->ciphertext = malloc(s->ciphertext_len);
	int ret = TOKEN_ERROR;
	if (!s->ciphertext)
		set_err(err, errlen, ret, "out of memory");
	else if (RAND_bytes(dek, KEY_LEN) != 1 || RAND_bytes(s->nonce, NONCE_LEN) != 1)
		set_err(err, errlen, ret, "no random bytes for a DEK");
	else if (gcm_seal(dek, s->nonce, aad, HASH_LEN + banklen, payload, len, s->ciphertext) < 0)
		set_err(err, errlen, ret, "sealing a payload failed");
	else
		ret = kek_wrap(ts, ts->key_label, false, hash, dek, s->dek_iv, s->wrapped_dek, err,
			       errlen);
	OPENSSL_cleanse(dek, sizeof(dek));
	return ret;
}

static bool payload_fits(const char *what, size_t len, char *err, size_t errlen)
{
	if (len <= TOKEN_PAYLOAD_MAX)
		return true;
	set_err(err, errlen, 0, "%s: a payload of %zu bytes is over %d", what, len,
		TOKEN_PAYLOAD_MAX);
	return false;
}

static enum token_status audit_add(struct token_store *ts, int64_t now, const char *actor,
				   const char *action, const uint8_t hash[HASH_LEN],
				   const char *bank, char *err, size_t errlen)
{
	int rc = db_exec(ts,
			 "INSERT INTO audit (at, actor, action, handle_hash, bank) VALUES (?, ?, ?, ?,"
			 " ?)", "ittbt", now, actor, action, hash, (size_t)HASH_LEN, bank);
	return rc == SQLITE_DONE ? TOKEN_OK : db_err(ts, err, errlen);
}

enum token_status token_store_put(struct token_store *ts, const char *actor, const char *bank,
				  const char *user, const void *payload, size_t len,
				  char handle_out[TOKEN_HANDLE_LEN + 1], char *err, size_t errlen)
{
	if (!bank || !bank[0] || strnlen(bank, TOKEN_BANK_MAX + 1) > TOKEN_BANK_MAX)
		return set_err(err, errlen, TOKEN_ERROR, "bank is empty or over %d bytes",
			       TOKEN_BANK_MAX);
	if (!user || !user[0] || strnlen(user, TOKEN_USER_MAX + 1) > TOKEN_USER_MAX)
		return set_err(err, errlen, TOKEN_ERROR, "user is empty or over %d bytes",
			       TOKEN_USER_MAX);
	if (!payload_fits("put", len, err, errlen))
		return TOKEN_ERROR;
	uint8_t raw[32], hash[HASH_LEN];
	char b64[45]; /* 32 bytes: 43 characters and one '=' */
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return set_err(err, errlen, TOKEN_ERROR, "no random bytes for a handle");
	EVP_EncodeBlock((unsigned char *)b64, raw, sizeof(raw));
	OPENSSL_cleanse(raw, sizeof(raw));
	for (char *p = b64; *p; p++)
		*p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
	b64[TOKEN_HANDLE_LEN] = '\0';
	handle_hash(b64, hash);

	struct sealed s = { 0 };
	int ret = seal_payload(ts, hash, bank, payload, len, &s, err, errlen);
	int64_t now = time(NULL);
	if (ret == TOKEN_OK && txn_begin(ts, err, errlen) < 0)
		ret = TOKEN_ERROR;
	if (ret == TOKEN_OK) {
		int rc = db_exec(ts,
				 "INSERT INTO tokens (handle_hash, bank, user, kek_label, dek_iv,"
				 " wrapped_dek, nonce, ciphertext, state, created_at, updated_at)"
				 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', ?, ?)",
				 "btttbbbbii", hash, (size_t)HASH_LEN, bank, user, ts->key_label,
				 s.dek_iv, (size_t)NONCE_LEN, s.wrapped_dek,
				 (size_t)WRAPPED_DEK_LEN, s.nonce, (size_t)NONCE_LEN, s.ciphertext,
				 s.ciphertext_len, now, now);
		ret = rc == SQLITE_DONE ? audit_add(ts, now, actor, "created", hash, bank, err, errlen)
					: db_err(ts, err, errlen);
		if (ret == TOKEN_OK && txn_commit(ts, err, errlen) < 0)
			ret = TOKEN_ERROR;
		txn_rollback(ts);
	}
	free(s.ciphertext);
	if (ret == TOKEN_OK)
		memcpy(handle_out, b64, TOKEN_HANDLE_LEN + 1);
	OPENSSL_cleanse(b64, sizeof(b64));
	return ret;
}

/* The state of the row of hash: TOKEN_OK (active), TOKEN_REVOKED, TOKEN_NOT_FOUND, or
 * TOKEN_ERROR; with st_out, the statement on its row, its columns those of sql's SELECT. */
static enum token_status row_find(struct token_store *ts, const uint8_t hash[HASH_LEN],
				  const char *sql, sqlite3_stmt **st_out, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = db_prepare(ts, &st, sql, "b", hash, (size_t)HASH_LEN);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	enum token_status ret;
	if (rc == SQLITE_DONE) {
		ret = TOKEN_NOT_FOUND;
	} else if (rc != SQLITE_ROW) {
		ret = db_err(ts, err, errlen);
	} else {
		const unsigned char *state = sqlite3_column_text(st, 0);
		ret = state && strcmp((const char *)state, "active") == 0 ? TOKEN_OK
									   : TOKEN_REVOKED;
	}
	if (ret == TOKEN_OK && st_out) {
		*st_out = st;
		return ret;
	}
	sqlite3_finalize(st);
	if (ret == TOKEN_NOT_FOUND)
		set_err(err, errlen, 0, "no such handle");
	else if (ret == TOKEN_REVOKED)
		set_err(err, errlen, 0, "the handle is revoked");
	return ret;
}

enum token_status token_store_get(struct token_store *ts, const char *handle, void **payload_out,
				  size_t *len_out, char bank_out[TOKEN_BANK_MAX + 1], char *err,
				  size_t errlen)
{
	uint8_t hash[HASH_LEN];
	*payload_out = NULL;
	*len_out = 0;
	if (!handle_hash(handle, hash))
		return set_err(err, errlen, TOKEN_NOT_FOUND, "not a handle");
	sqlite3_stmt *st = NULL;
	enum token_status ret = row_find(
		ts, hash,
		"SELECT state, bank, kek_label, dek_iv, wrapped_dek, nonce, ciphertext FROM tokens"
		" WHERE handle_hash = ?",
		&st, err, errlen);
	if (ret != TOKEN_OK)
		return ret;
	const char *bank = (const char *)sqlite3_column_text(st, 1);
	const char *label = (const char *)sqlite3_column_text(st, 2);
	size_t n, ctlen = 0;
	const uint8_t *dek_iv = col_blob(st, 3, NONCE_LEN, NONCE_LEN, &n);
	const uint8_t *wrapped = col_blob(st, 4, WRAPPED_DEK_LEN, WRAPPED_DEK_LEN, &n);
	const uint8_t *nonce = col_blob(st, 5, NONCE_LEN, NONCE_LEN, &n);
	const uint8_t *ct = col_blob(st, 6, TAG_LEN, TOKEN_PAYLOAD_MAX + TAG_LEN, &ctlen);
	uint8_t dek[KEY_LEN];
	uint8_t aad[HASH_LEN + TOKEN_BANK_MAX];
	uint8_t *plain = NULL;
	ret = TOKEN_ERROR;
	if (!bank || !bank[0] || strlen(bank) > TOKEN_BANK_MAX || !label ||
	    strlen(label) > KEY_LABEL_MAX || !dek_iv || !wrapped || !nonce || !ct) {
		set_err(err, errlen, ret, "the token store holds a malformed record");
		goto out;
	}
	if (kek_unwrap(ts, label, hash, dek_iv, wrapped, dek, err, errlen) < 0)
		goto out;
	size_t len = ctlen - TAG_LEN;
	memcpy(aad, hash, HASH_LEN);
	memcpy(aad + HASH_LEN, bank, strlen(bank));
	plain = malloc(len ? len : 1);
	if (!plain) {
		set_err(err, errlen, ret, "out of memory");
	} else if (gcm_open(dek, nonce, aad, HASH_LEN + strlen(bank), ct, len, plain) < 0) {
		set_err(err, errlen, ret,
			"the record's payload does not decrypt: it was altered or moved from "
			"another record");
	} else {
		snprintf(bank_out, TOKEN_BANK_MAX + 1, "%s", bank);
		*payload_out = plain;
		*len_out = len;
		plain = NULL;
		ret = TOKEN_OK;
	}
	OPENSSL_cleanse(dek, sizeof(dek));
out:
	free(plain);
	sqlite3_finalize(st);
	return ret;
}

enum token_status token_store_update(struct token_store *ts, const char *handle,
				     const void *payload, size_t len, char *err, size_t errlen)
{
	uint8_t hash[HASH_LEN];
	if (!handle_hash(handle, hash))
		return set_err(err, errlen, TOKEN_NOT_FOUND, "not a handle");
	if (!payload_fits("update", len, err, errlen))
		return TOKEN_ERROR;
	if (txn_begin(ts, err, errlen) < 0)
		return TOKEN_ERROR;
	sqlite3_stmt *st = NULL;
	struct sealed s = { 0 };
	char bank[TOKEN_BANK_MAX + 1] = "";
	enum token_status ret = row_find(ts, hash,
					 "SELECT state, bank FROM tokens WHERE handle_hash = ?",
					 &st, err, errlen);
	if (ret == TOKEN_OK) {
		const char *b = (const char *)sqlite3_column_text(st, 1);
		if (!b || !b[0] || strlen(b) > TOKEN_BANK_MAX)
			ret = set_err(err, errlen, TOKEN_ERROR,
				      "the token store holds a malformed record");
		else
			snprintf(bank, sizeof(bank), "%s", b);
		sqlite3_finalize(st);
	}
	if (ret == TOKEN_OK)
		ret = seal_payload(ts, hash, bank, payload, len, &s, err, errlen);
	if (ret == TOKEN_OK) {
		int rc = db_exec(ts,
				 "UPDATE tokens SET kek_label = ?, dek_iv = ?, wrapped_dek = ?,"
				 " nonce = ?, ciphertext = ?, updated_at = ?"
				 " WHERE handle_hash = ? AND state = 'active'",
				 "tbbbbib", ts->key_label, s.dek_iv, (size_t)NONCE_LEN,
				 s.wrapped_dek, (size_t)WRAPPED_DEK_LEN, s.nonce, (size_t)NONCE_LEN,
				 s.ciphertext, s.ciphertext_len, (int64_t)time(NULL), hash,
				 (size_t)HASH_LEN);
		ret = rc == SQLITE_DONE ? TOKEN_OK : db_err(ts, err, errlen);
	}
	if (ret == TOKEN_OK && txn_commit(ts, err, errlen) < 0)
		ret = TOKEN_ERROR;
	txn_rollback(ts);
	free(s.ciphertext);
	return ret;
}

enum token_status token_store_revoke(struct token_store *ts, const char *actor,
				     const char *handle, char *err, size_t errlen)
{
	uint8_t hash[HASH_LEN];
	if (!handle_hash(handle, hash))
		return set_err(err, errlen, TOKEN_NOT_FOUND, "not a handle");
	if (txn_begin(ts, err, errlen) < 0)
		return TOKEN_ERROR;
	sqlite3_stmt *st = NULL;
	enum token_status ret = row_find(ts, hash,
					 "SELECT state, bank FROM tokens WHERE handle_hash = ?", &st,
					 err, errlen);
	if (ret == TOKEN_OK) {
		char bank[TOKEN_BANK_MAX + 1];
		snprintf(bank, sizeof(bank), "%s", (const char *)sqlite3_column_text(st, 1));
		sqlite3_finalize(st);
		st = NULL;
		int64_t now = time(NULL);
		int rc = db_exec(ts,
				 "UPDATE tokens SET state = 'revoked', kek_label = NULL, dek_iv = NULL,"
				 " wrapped_dek = NULL, nonce = NULL, ciphertext = NULL,"
				 " updated_at = ?, revoked_at = ? WHERE handle_hash = ?",
				 "iib", now, now, hash, (size_t)HASH_LEN);
		ret = rc == SQLITE_DONE ? audit_add(ts, now, actor, "revoked", hash, bank, err, errlen)
					: db_err(ts, err, errlen);
	}
	sqlite3_finalize(st);
	if (ret == TOKEN_OK && txn_commit(ts, err, errlen) < 0)
		ret = TOKEN_ERROR;
	txn_rollback(ts);
	return ret;
}

/* A row a rotation re-wraps, read before any of them changes: SQLite leaves undefined what a
 * SELECT still running sees of rows its own connection updates. */
struct rewrap_row {
	uint8_t hash[HASH_LEN];
	char label[KEY_LABEL_MAX + 1];
	uint8_t dek_iv[NONCE_LEN];
	uint8_t wrapped[WRAPPED_DEK_LEN];
};

static int rotate_read(struct token_store *ts, const char *new_label, struct rewrap_row *rows,
		       size_t *n, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int ret = 0;
	int rc = db_prepare(ts, &st,
			    "SELECT handle_hash, kek_label, dek_iv, wrapped_dek FROM tokens"
			    " WHERE state = 'active' AND kek_label <> ? LIMIT ?",
			    "ti", new_label, (int64_t)ROTATE_BATCH);
	*n = 0;
	while (rc == SQLITE_OK && *n < ROTATE_BATCH && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		size_t len;
		struct rewrap_row *r = &rows[*n];
		const uint8_t *hash = col_blob(st, 0, HASH_LEN, HASH_LEN, &len);
		const char *label = (const char *)sqlite3_column_text(st, 1);
		const uint8_t *dek_iv = col_blob(st, 2, NONCE_LEN, NONCE_LEN, &len);
		const uint8_t *wrapped = col_blob(st, 3, WRAPPED_DEK_LEN, WRAPPED_DEK_LEN, &len);
		if (!hash || !label || strlen(label) > KEY_LABEL_MAX || !dek_iv || !wrapped) {
			ret = set_err(err, errlen, -1, "the token store holds a malformed record");
			break;
		}
		memcpy(r->hash, hash, HASH_LEN);
		snprintf(r->label, sizeof(r->label), "%s", label);
		memcpy(r->dek_iv, dek_iv, NONCE_LEN);
		memcpy(r->wrapped, wrapped, WRAPPED_DEK_LEN);
		++*n;
		rc = SQLITE_OK;
	}
	if (ret == 0 && rc != SQLITE_OK && rc != SQLITE_DONE)
		ret = db_err(ts, err, errlen);
	sqlite3_finalize(st);
	return ret;
}

/* Re-wraps up to ROTATE_BATCH rows not yet under new_label in one transaction; *done counts
 * them, 0 when none is left. A row changes only together with the KEK label it names. */
static int rotate_batch(struct token_store *ts, const char *new_label, size_t *done,
			size_t *total, char *err, size_t errlen)
{
	struct rewrap_row rows[ROTATE_BATCH];
	size_t n;
	*done = 0;
	if (txn_begin(ts, err, errlen) < 0)
		return -1;
	int ret = rotate_read(ts, new_label, rows, &n, err, errlen);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		struct rewrap_row *r = &rows[i];
		uint8_t dek[KEY_LEN], iv[NONCE_LEN], rewrapped[WRAPPED_DEK_LEN];
		if (kek_unwrap(ts, r->label, r->hash, r->dek_iv, r->wrapped, dek, err, errlen) < 0 ||
		    kek_wrap(ts, new_label, false, r->hash, dek, iv, rewrapped, err, errlen) < 0)
			ret = -1;
		else if (db_exec(ts,
				 "UPDATE tokens SET kek_label = ?, dek_iv = ?, wrapped_dek = ?"
				 " WHERE handle_hash = ?",
				 "tbbb", new_label, iv, (size_t)NONCE_LEN, rewrapped,
				 (size_t)WRAPPED_DEK_LEN, r->hash, (size_t)HASH_LEN) != SQLITE_DONE)
			ret = db_err(ts, err, errlen);
		OPENSSL_cleanse(dek, sizeof(dek));
		if (ret == 0) {
			++*done;
			TOKEN_STORE_ROTATE_HOOK(*total + *done);
		}
	}
	if (ret == 0 && txn_commit(ts, err, errlen) < 0)
		ret = -1;
	txn_rollback(ts);
	if (ret == 0)
		*total += *done;
	return ret;
}

int token_store_rotate_kek(struct token_store *ts, const char *new_key_label, char *err,
			   size_t errlen)
{
	if (ts->file_mode)
		return set_err(err, errlen, -1,
			       "KEK rotation needs a PKCS#11 token; a KEK file is only a fallback");
	if (!new_key_label || !new_key_label[0] || strlen(new_key_label) > KEY_LABEL_MAX)
		return set_err(err, errlen, -1, "KEK label is empty or over %d bytes",
			       KEY_LABEL_MAX);
	CK_OBJECT_HANDLE key;
	if (p11_find_key(ts, new_key_label, true, &key, err, errlen) < 0)
		return -1;
	size_t done, total = 0;
	do {
		if (rotate_batch(ts, new_key_label, &done, &total, err, errlen) < 0)
			return -1;
	} while (done > 0);
	/* New records follow the rotation; the old KEK stays in the token. */
	snprintf(ts->key_label, sizeof(ts->key_label), "%s", new_key_label);
	return 0;
}
