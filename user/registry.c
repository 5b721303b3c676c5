/* The registry on SQLite. The database is the truth: every mutation is one BEGIN IMMEDIATE
 * transaction that checks, writes and appends its audit row, and the in-memory index changes
 * only after COMMIT has returned. So a worker never acts on a binding that a crash could still
 * lose, and a refused or failed mutation leaves both the file and the index as they were. */
#include "registry.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cidr.h"
#include "config.h" /* RATE_* bounds */

#define REGISTRY_BUSY_TIMEOUT_MS 5000
#define INDEX_MIN_CAP 64

/* One open-addressing slot of the index (linear probing, kept at most half full). */
struct index_entry {
	bool used;
	uint8_t thumb[CERT_THUMB_LEN];
	struct registry_binding b;
};

struct registry {
	sqlite3 *db;
	/* Guards tab, cap and n against the workers' lookups. Only the control thread changes
	 * them, so that thread may also read them without the lock. */
	pthread_rwlock_t lock;
	struct index_entry *tab;
	size_t cap; /* a power of two */
	size_t n;
};

/* Schema migrations: step N - 1 takes the database from user_version N - 1 to N. All pending
 * steps run in one transaction with the version bump, so a crash leaves the old schema or the
 * new one. Never edit a shipped step; append the next. */
static const char *const migrations[] = {
	/* 1: certificates.client_id is plain text rather than a foreign key because revoked
	 * certificates stay on record after their client row is gone. */
	"CREATE TABLE clients ("
	" client_id TEXT PRIMARY KEY NOT NULL,"
	" slot INTEGER UNIQUE NOT NULL CHECK (slot >= 0),"
	" created_at INTEGER NOT NULL);"
	"CREATE TABLE certificates ("
	" thumbprint TEXT PRIMARY KEY NOT NULL CHECK (length(thumbprint) = 64),"
	" client_id TEXT NOT NULL,"
	" subject TEXT NOT NULL,"
	" issuer TEXT NOT NULL,"
	" serial TEXT NOT NULL,"
	" not_before INTEGER NOT NULL,"
	" not_after INTEGER NOT NULL,"
	" state TEXT NOT NULL CHECK (state IN ('active', 'revoked')),"
	" pem TEXT NOT NULL,"
	" bound_at INTEGER NOT NULL,"
	" revoked_at INTEGER);"
	"CREATE INDEX certificates_by_client ON certificates (client_id, state);"
	"CREATE TABLE deny ("
	" cidr TEXT PRIMARY KEY NOT NULL,"
	" added_at INTEGER NOT NULL);"
	"CREATE TABLE audit ("
	" id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" ts INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" action TEXT NOT NULL,"
	" client_id TEXT NOT NULL DEFAULT '',"
	" thumbprint TEXT NOT NULL DEFAULT '',"
	" detail TEXT NOT NULL DEFAULT '');"
	"CREATE INDEX audit_by_client ON audit (client_id, id);",
	/* 2: run-time XDP rates. A client's own policing (deleted with the client), and
	 * daemon-wide settings by key ("src_rate.per_sec", "src_rate.burst"). */
	"CREATE TABLE client_limits ("
	" client_id TEXT PRIMARY KEY NOT NULL,"
	" pps INTEGER NOT NULL CHECK (pps >= 0),"
	" bps INTEGER NOT NULL CHECK (bps >= 0),"
	" burst INTEGER NOT NULL CHECK (burst >= 1),"
	" burst_bytes INTEGER NOT NULL CHECK (burst_bytes >= 0));"
	"CREATE TABLE settings ("
	" key TEXT PRIMARY KEY NOT NULL,"
	" value INTEGER NOT NULL);",
	/* 3: an IPv4-mapped prefix (::ffff:a.b.c.d/N) was stored as written, an IPv6 prefix that
	 * no packet and no peer ever matched; it is the IPv4 prefix a.b.c.d/(N - 96) (user/cidr.h).
	 * One whose IPv4 form is already there is dropped. */
	"UPDATE OR IGNORE deny SET cidr = substr(cidr, 8, instr(cidr, '/') - 8) || '/' ||"
	" (CAST(substr(cidr, instr(cidr, '/') + 1) AS INTEGER) - 96)"
	" WHERE cidr LIKE '::ffff:%.%/%';"
	"DELETE FROM deny WHERE cidr LIKE '::ffff:%.%/%';",
	/* 4: the checkpoint of the pinned quota map (user/policy_store.c), one row per map entry.
	 * slot is the entry's index: an entry reused for another counter replaces the row of the
	 * counter it held, so the table never holds more than the map. */
	"CREATE TABLE quota_counters ("
	" name TEXT NOT NULL,"
	" client_id TEXT NOT NULL,"
	" key TEXT NOT NULL,"
	" slot INTEGER UNIQUE NOT NULL CHECK (slot >= 0),"
	" \"limit\" INTEGER NOT NULL CHECK (\"limit\" >= 0),"
	" window INTEGER NOT NULL,"
	" window_seconds INTEGER NOT NULL CHECK (window_seconds >= 0),"
	" window_start INTEGER NOT NULL,"
	" count INTEGER NOT NULL CHECK (count >= 0),"
	" sub BLOB NOT NULL,"
	" updated INTEGER NOT NULL,"
	" PRIMARY KEY (name, client_id, key));",
	/* 5: a certificate's PSD2 attributes (user/qcstatement.h): the roles of its PSD2
	 * QCStatement as PSD2_ROLE_* bits, its competent authority, its subject's
	 * organizationIdentifier. Certificates bound before are read from their PEM
	 * (psd2_backfill). */
	"ALTER TABLE certificates ADD COLUMN psd2_roles INTEGER NOT NULL DEFAULT 0"
	" CHECK (psd2_roles BETWEEN 0 AND 15);"
	"ALTER TABLE certificates ADD COLUMN org_id TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE certificates ADD COLUMN nca_name TEXT NOT NULL DEFAULT '';"
	"ALTER TABLE certificates ADD COLUMN nca_id TEXT NOT NULL DEFAULT '';",
};
_Static_assert(sizeof(migrations) / sizeof(migrations[0]) == REGISTRY_SCHEMA_VERSION,
	       "one migration step per schema version");

#define CERT_COLUMNS                                                                       \
	"thumbprint, client_id, subject, issuer, serial, not_before, not_after, state, "   \
	"bound_at, revoked_at, psd2_roles, org_id, nca_name, nca_id"
#define CERT_N_COLUMNS 14

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

static int db_err(struct registry *reg, char *err, size_t errlen)
{
	return set_err(err, errlen, REG_ERR_IO, "registry database error: %s",
		       sqlite3_errmsg(reg->db));
}

/* REG_OK when an SQLite call ended with want, else REG_ERR_IO with SQLite's message. */
static int db_check(struct registry *reg, int rc, int want, char *err, size_t errlen)
{
	return rc == want ? REG_OK : db_err(reg, err, errlen);
}

/* Prepares sql and binds one parameter per letter of types: 't' a const char *, 'i' an
 * int64_t. SQLITE_OK, or an SQLite error code and *out NULL. */
static int db_vprepare(struct registry *reg, sqlite3_stmt **out, const char *sql,
		       const char *types, va_list ap)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(reg->db, sql, -1, &st, NULL);
	for (int i = 0; rc == SQLITE_OK && types[i]; i++) {
		if (types[i] == 't')
			rc = sqlite3_bind_text(st, i + 1, va_arg(ap, const char *), -1,
					       SQLITE_STATIC);
		else
			rc = sqlite3_bind_int64(st, i + 1, va_arg(ap, int64_t));
	}
	if (rc != SQLITE_OK) {
		sqlite3_finalize(st);
		st = NULL;
	}
	*out = st;
	return rc;
}

static int db_prepare(struct registry *reg, sqlite3_stmt **out, const char *sql,
		      const char *types, ...)
{
	va_list ap;
	va_start(ap, types);
	int rc = db_vprepare(reg, out, sql, types, ap);
	va_end(ap);
	return rc;
}

/* Runs a statement that returns no rows: SQLITE_DONE or an SQLite error code. */
static int db_exec(struct registry *reg, const char *sql, const char *types, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	va_start(ap, types);
	int rc = db_vprepare(reg, &st, sql, types, ap);
	va_end(ap);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	sqlite3_finalize(st); /* keeps the step's error message on the connection */
	return rc;
}

/* Runs a query for one integer: SQLITE_ROW with *out set from the first row's first column,
 * SQLITE_DONE when there is no row, or an SQLite error code. */
static int db_int(struct registry *reg, int64_t *out, const char *sql, const char *types, ...)
{
	sqlite3_stmt *st;
	va_list ap;
	va_start(ap, types);
	int rc = db_vprepare(reg, &st, sql, types, ap);
	va_end(ap);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW)
		*out = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	return rc;
}

static void col_text(sqlite3_stmt *st, int col, char *out, size_t outlen)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	snprintf(out, outlen, "%s", s ? (const char *)s : "");
}

static int txn_begin(struct registry *reg, char *err, size_t errlen)
{
	/* IMMEDIATE takes the write lock now, so the checks read what the writes will change. */
	return db_check(reg, db_exec(reg, "BEGIN IMMEDIATE", ""), SQLITE_DONE, err, errlen);
}

static int txn_commit(struct registry *reg, char *err, size_t errlen)
{
	return db_check(reg, db_exec(reg, "COMMIT", ""), SQLITE_DONE, err, errlen);
}

/* A no-op when there is no transaction, e.g. when SQLite already rolled it back itself. */
static void txn_rollback(struct registry *reg)
{
	if (!sqlite3_get_autocommit(reg->db))
		sqlite3_exec(reg->db, "ROLLBACK", NULL, NULL, NULL);
}

/* arr grown to hold at least n + 1 elements of size bytes (arr itself when it already
 * does), or NULL with arr unchanged. */
static void *array_grow(void *arr, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return arr;
	size_t ncap = *cap ? *cap * 2 : 8;
	if (ncap > SIZE_MAX / size)
		return NULL;
	void *q = realloc(arr, ncap * size);
	if (q)
		*cap = ncap;
	return q;
}

/* --- in-memory index ------------------------------------------------------------------ */

static size_t index_home(size_t cap, const uint8_t thumb[CERT_THUMB_LEN])
{
	/* A SHA-256 output is uniformly distributed, so its first bytes are already a hash. */
	uint64_t h;
	memcpy(&h, thumb, sizeof(h));
	return (size_t)h & (cap - 1);
}

/* The entry holding thumb, or the empty entry where it would go. */
static struct index_entry *index_find(struct index_entry *tab, size_t cap,
				      const uint8_t thumb[CERT_THUMB_LEN])
{
	size_t i = index_home(cap, thumb);
	while (tab[i].used && memcmp(tab[i].thumb, thumb, CERT_THUMB_LEN) != 0)
		i = (i + 1) & (cap - 1);
	return &tab[i];
}

/* Makes room for extra more entries, so that applying a committed change cannot fail. The
 * new table is filled outside the lock: only this thread ever writes the old one. */
static int index_reserve(struct registry *reg, size_t extra)
{
	size_t cap = reg->cap ? reg->cap : INDEX_MIN_CAP;
	while ((reg->n + extra) * 2 > cap) {
		if (cap > SIZE_MAX / 4 / sizeof(struct index_entry))
			return -1;
		cap *= 2;
	}
	if (cap == reg->cap)
		return 0;
	struct index_entry *tab = calloc(cap, sizeof(*tab));
	if (!tab)
		return -1;
	for (size_t i = 0; i < reg->cap; i++)
		if (reg->tab[i].used)
			*index_find(tab, cap, reg->tab[i].thumb) = reg->tab[i];
	pthread_rwlock_wrlock(&reg->lock);
	struct index_entry *old = reg->tab;
	reg->tab = tab;
	reg->cap = cap;
	pthread_rwlock_unlock(&reg->lock);
	free(old);
	return 0;
}

/* The index_put/del/set functions need the write lock (or no other thread yet) and, for a
 * new entry, room made by index_reserve(). */
static void index_put(struct registry *reg, const uint8_t thumb[CERT_THUMB_LEN],
		      const struct registry_binding *b)
{
	struct index_entry *e = index_find(reg->tab, reg->cap, thumb);
	if (!e->used) {
		e->used = true;
		memcpy(e->thumb, thumb, CERT_THUMB_LEN);
		reg->n++;
	}
	e->b = *b;
}

static void index_del(struct registry *reg, const uint8_t thumb[CERT_THUMB_LEN])
{
	struct index_entry *tab = reg->tab;
	size_t mask = reg->cap - 1;
	size_t hole = (size_t)(index_find(tab, reg->cap, thumb) - tab);
	if (!tab[hole].used)
		return;
	/* Backward-shift deletion: an entry later in the probe run moves into the hole unless its
	 * home lies cyclically in (hole, j], which keeps every entry reachable without tombstones. */
	for (size_t j = (hole + 1) & mask; tab[j].used; j = (j + 1) & mask) {
		size_t home = index_home(reg->cap, tab[j].thumb);
		bool stays = hole < j ? (hole < home && home <= j) : (hole < home || home <= j);
		if (stays)
			continue;
		tab[hole] = tab[j];
		hole = j;
	}
	tab[hole].used = false;
	reg->n--;
}

/* Certificates name their client by id; the slot follows the client row's life. */
static void index_set_slot(struct registry *reg, const char *client_id, uint32_t slot)
{
	for (size_t i = 0; i < reg->cap; i++)
		if (reg->tab[i].used && strcmp(reg->tab[i].b.client_id, client_id) == 0)
			reg->tab[i].b.slot = slot;
}

int registry_lookup(struct registry *reg, const uint8_t thumb[CERT_THUMB_LEN],
		    struct registry_binding *out)
{
	int ret = REG_ERR_NOT_FOUND;
	pthread_rwlock_rdlock(&reg->lock);
	const struct index_entry *e = index_find(reg->tab, reg->cap, thumb);
	if (e->used) {
		*out = e->b;
		ret = REG_OK;
	}
	pthread_rwlock_unlock(&reg->lock);
	return ret;
}

static int index_load(struct registry *reg, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = db_prepare(reg, &st,
			    "SELECT c.thumbprint, c.client_id, c.state, c.not_before, c.not_after,"
			    " k.slot, c.psd2_roles, c.org_id FROM certificates AS c"
			    " LEFT JOIN clients AS k ON k.client_id = c.client_id",
			    "");
	int ret = db_check(reg, rc, SQLITE_OK, err, errlen);
	while (ret == REG_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *hex = (const char *)sqlite3_column_text(st, 0);
		uint8_t thumb[CERT_THUMB_LEN];
		struct registry_binding b = {0};
		if (!hex || cert_thumb_from_hex(hex, strlen(hex), thumb) < 0) {
			ret = set_err(err, errlen, REG_ERR_IO, "registry database holds a bad thumbprint");
			break;
		}
		col_text(st, 1, b.client_id, sizeof(b.client_id));
		const char *state = (const char *)sqlite3_column_text(st, 2);
		b.state = state && strcmp(state, "revoked") == 0 ? CERT_REVOKED : CERT_ACTIVE;
		b.not_before = sqlite3_column_int64(st, 3);
		b.not_after = sqlite3_column_int64(st, 4);
		b.slot = sqlite3_column_type(st, 5) == SQLITE_NULL ? REGISTRY_SLOT_NONE
								    : (uint32_t)sqlite3_column_int64(st, 5);
		b.psd2_roles = (uint32_t)sqlite3_column_int64(st, 6);
		col_text(st, 7, b.org_id, sizeof(b.org_id));
		if (index_reserve(reg, 1) < 0) {
			ret = set_err(err, errlen, REG_ERR_IO, "out of memory");
			break;
		}
		index_put(reg, thumb, &b);
	}
	if (ret == REG_OK)
		ret = db_check(reg, rc, SQLITE_DONE, err, errlen);
	sqlite3_finalize(st);
	return ret;
}

/* --- opening -------------------------------------------------------------------------- */

/* Creates the missing directories above path, 0750: the registry is not for every local
 * user to read. */
static int make_parent_dir(const char *path, char *err, size_t errlen)
{
	char dir[PATH_MAX];
	size_t len = strlen(path); /* the caller checked it is below PATH_MAX */
	memcpy(dir, path, len + 1);
	char *last = strrchr(dir, '/');
	if (!last || last == dir)
		return 0;
	*last = '\0';
	for (char *p = dir + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(dir, 0750) < 0 && errno != EEXIST)
			return set_err(err, errlen, -1, "%s: cannot create directory: %s", dir,
				       strerror(errno));
		if (c == '\0')
			return 0;
		*p = c;
	}
}

static int db_configure(struct registry *reg, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int ret = -1;
	if (sqlite3_busy_timeout(reg->db, REGISTRY_BUSY_TIMEOUT_MS) != SQLITE_OK ||
	    db_prepare(reg, &st, "PRAGMA journal_mode = WAL", "") != SQLITE_OK ||
	    sqlite3_step(st) != SQLITE_ROW) {
		db_err(reg, err, errlen);
		goto out;
	}
	/* SQLite falls back silently to another journal mode where WAL is impossible. */
	const char *mode = (const char *)sqlite3_column_text(st, 0);
	if (!mode || strcmp(mode, "wal") != 0) {
		set_err(err, errlen, -1, "registry database cannot use WAL mode (got %s)",
			mode ? mode : "nothing");
		goto out;
	}
	/* FULL syncs the WAL on every commit: an acknowledged change survives power loss. */
	if (db_exec(reg, "PRAGMA synchronous = FULL", "") != SQLITE_DONE) {
		db_err(reg, err, errlen);
		goto out;
	}
	ret = 0;
out:
	sqlite3_finalize(st);
	return ret;
}

static int audit_add(struct registry *reg, uid_t uid, const char *action, const char *client_id,
		     const char *thumb_hex, const char *detail, char *err, size_t errlen);

/* Schema 5 stores a certificate's PSD2 attributes, which those bound before have only in their
 * PEM. One whose attributes do not read (bound before bind checked them) keeps none, so that
 * a route requiring roles refuses it, and an audit row says why. */
static int psd2_backfill(struct registry *reg, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = db_prepare(reg, &st, "SELECT thumbprint, client_id, pem FROM certificates", "");
	int ret = db_check(reg, rc, SQLITE_OK, err, errlen);
	while (ret == REG_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *hex = (const char *)sqlite3_column_text(st, 0);
		const char *client_id = (const char *)sqlite3_column_text(st, 1);
		const char *pem = (const char *)sqlite3_column_text(st, 2);
		struct psd2_identity id;
		char why[256] = "", detail[256];
		X509 *x = NULL;
		if (!hex || !client_id || !pem) {
			ret = set_err(err, errlen, REG_ERR_IO,
				      "registry database holds a bad certificate row");
		} else if (cert_from_pem(pem, strlen(pem), &x, why, sizeof(why)) == 0 &&
			   qcstatement_read(x, &id, why, sizeof(why)) == 0) {
			rc = db_exec(reg,
				     "UPDATE certificates SET psd2_roles = ?, org_id = ?, nca_name = ?,"
				     " nca_id = ? WHERE thumbprint = ?",
				     "itttt", (int64_t)id.roles, id.org_id, id.nca_name, id.nca_id, hex);
			ret = db_check(reg, rc, SQLITE_DONE, err, errlen);
		} else {
			snprintf(detail, sizeof(detail), "PSD2 attributes unreadable, none kept: %s", why);
			ret = audit_add(reg, getuid(), "migrate", client_id, hex, detail, err, errlen);
		}
		X509_free(x);
	}
	if (ret == REG_OK)
		ret = db_check(reg, rc, SQLITE_DONE, err, errlen);
	sqlite3_finalize(st);
	return ret;
}

static int migrate(struct registry *reg, char *err, size_t errlen)
{
	int64_t version = 0;
	int ret = txn_begin(reg, err, errlen);
	if (ret != REG_OK)
		return ret;
	if (db_int(reg, &version, "PRAGMA user_version", "") != SQLITE_ROW) {
		ret = db_err(reg, err, errlen);
		goto out;
	}
	if (version < 0 || version > REGISTRY_SCHEMA_VERSION) {
		ret = set_err(err, errlen, REG_ERR_IO,
			      "registry database has schema version %lld; this build knows up to %d",
			      (long long)version, REGISTRY_SCHEMA_VERSION);
		goto out;
	}
	for (int64_t v = version + 1; v <= REGISTRY_SCHEMA_VERSION; v++) {
		char bump[48];
		snprintf(bump, sizeof(bump), "PRAGMA user_version = %lld", (long long)v);
		if (sqlite3_exec(reg->db, migrations[v - 1], NULL, NULL, NULL) != SQLITE_OK ||
		    sqlite3_exec(reg->db, bump, NULL, NULL, NULL) != SQLITE_OK) {
			ret = db_err(reg, err, errlen);
			goto out;
		}
	}
	if (version < 5 && (ret = psd2_backfill(reg, err, errlen)) != REG_OK)
		goto out;
	ret = txn_commit(reg, err, errlen);
out:
	if (ret != REG_OK)
		txn_rollback(reg);
	return ret;
}

static struct registry *registry_alloc(void)
{
	struct registry *reg = calloc(1, sizeof(*reg));
	pthread_rwlockattr_t attr;
	if (!reg || pthread_rwlockattr_init(&attr) != 0) {
		free(reg);
		return NULL;
	}
	/* glibc's default lets a steady stream of worker lookups starve the control thread. */
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	int rc = pthread_rwlock_init(&reg->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	if (rc != 0) {
		free(reg);
		return NULL;
	}
	return reg;
}

int registry_open(const char *path, struct registry **out, char *err, size_t errlen)
{
	struct registry *reg = NULL;
	int ret = -1;

	*out = NULL;
	if (!path || !path[0] || strnlen(path, PATH_MAX) >= PATH_MAX) {
		set_err(err, errlen, -1, "registry path is empty or too long");
		goto out;
	}
	if (make_parent_dir(path, err, errlen) < 0)
		goto out;
	reg = registry_alloc();
	if (!reg) {
		set_err(err, errlen, -1, "out of memory");
		goto out;
	}
	if (sqlite3_open_v2(path, &reg->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
	    SQLITE_OK) {
		set_err(err, errlen, -1, "%s: %s", path,
			reg->db ? sqlite3_errmsg(reg->db) : "out of memory");
		goto out;
	}
	if (db_configure(reg, err, errlen) < 0 || migrate(reg, err, errlen) != REG_OK)
		goto out;
	/* The index always has a table, so a lookup never has to check for one. */
	if (index_reserve(reg, 0) < 0) {
		set_err(err, errlen, -1, "out of memory");
		goto out;
	}
	if (index_load(reg, err, errlen) != REG_OK)
		goto out;
	*out = reg;
	reg = NULL;
	ret = 0;
out:
	registry_close(reg);
	return ret;
}

void registry_close(struct registry *reg)
{
	if (!reg)
		return;
	sqlite3_close_v2(reg->db);
	free(reg->tab);
	pthread_rwlock_destroy(&reg->lock);
	free(reg);
}

static int check_client_id(const char *client_id, char *err, size_t errlen)
{
	if (registry_client_id_valid(client_id))
		return REG_OK;
	return set_err(err, errlen, REG_ERR_INVALID,
		       "invalid client_id: 1 to %d printable ASCII characters without space, "
		       "'\"' or '\\'",
		       REGISTRY_CLIENT_ID_MAX);
}

/* --- queries inside a mutation's transaction ------------------------------------------ */

static int client_slot(struct registry *reg, const char *client_id, int64_t *slot, char *err,
		       size_t errlen)
{
	int rc = db_int(reg, slot, "SELECT slot FROM clients WHERE client_id = ?", "t", client_id);
	if (rc == SQLITE_DONE)
		return set_err(err, errlen, REG_ERR_NOT_FOUND, "no client %s", client_id);
	return db_check(reg, rc, SQLITE_ROW, err, errlen);
}

/* The smallest free slot: slots index the BPF clients map, which must stay dense. */
static int slot_alloc(struct registry *reg, int64_t *slot, char *err, size_t errlen)
{
	int rc = db_int(reg, slot,
			"SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM clients WHERE slot = 0) THEN 0"
			" ELSE (SELECT MIN(slot) + 1 FROM clients AS c WHERE NOT EXISTS"
			" (SELECT 1 FROM clients AS d WHERE d.slot = c.slot + 1)) END",
			"");
	if (rc != SQLITE_ROW)
		return db_err(reg, err, errlen);
	if (*slot > REGISTRY_SLOT_MAX)
		return set_err(err, errlen, REG_ERR_LIMIT, "no free client slot: all %d are in use",
			       REGISTRY_SLOT_MAX + 1);
	return REG_OK;
}

/* Owner and state of a stored certificate: REG_OK, REG_ERR_NOT_FOUND (err untouched) or
 * REG_ERR_IO. */
static int cert_owner(struct registry *reg, const char *hex,
		      char owner[REGISTRY_CLIENT_ID_MAX + 1], enum cert_state *state, char *err,
		      size_t errlen)
{
	sqlite3_stmt *st;
	int rc = db_prepare(reg, &st, "SELECT client_id, state FROM certificates WHERE thumbprint = ?",
			    "t", hex);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		col_text(st, 0, owner, REGISTRY_CLIENT_ID_MAX + 1);
		const char *s = (const char *)sqlite3_column_text(st, 1);
		*state = s && strcmp(s, "revoked") == 0 ? CERT_REVOKED : CERT_ACTIVE;
	}
	sqlite3_finalize(st);
	if (rc == SQLITE_DONE)
		return REG_ERR_NOT_FOUND;
	return db_check(reg, rc, SQLITE_ROW, err, errlen);
}

/* The thumbprints of the client's active certificates. */
static int active_thumbs(struct registry *reg, const char *client_id,
			 uint8_t out[REGISTRY_MAX_ACTIVE_CERTS][CERT_THUMB_LEN], size_t *n,
			 char *err, size_t errlen)
{
	sqlite3_stmt *st;
	int rc = db_prepare(reg, &st,
			    "SELECT thumbprint FROM certificates WHERE client_id = ?"
			    " AND state = 'active'",
			    "t", client_id);
	int ret = db_check(reg, rc, SQLITE_OK, err, errlen);
	*n = 0;
	while (ret == REG_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *hex = (const char *)sqlite3_column_text(st, 0);
		if (*n == REGISTRY_MAX_ACTIVE_CERTS || !hex ||
		    cert_thumb_from_hex(hex, strlen(hex), out[*n]) < 0)
			ret = set_err(err, errlen, REG_ERR_IO,
				      "registry database is inconsistent: bad active certificates "
				      "for client %s",
				      client_id);
		else
			(*n)++;
	}
	if (ret == REG_OK)
		ret = db_check(reg, rc, SQLITE_DONE, err, errlen);
	sqlite3_finalize(st);
	return ret;
}

/* Whether revoked certificates of an earlier or current client with this id are on record:
 * only then does a change of the client's slot need a pass over the whole index. */
static int has_revoked(struct registry *reg, const char *client_id, bool *out, char *err,
		       size_t errlen)
{
	int64_t any = 0;
	int rc = db_int(reg, &any,
			"SELECT EXISTS (SELECT 1 FROM certificates WHERE client_id = ?"
			" AND state = 'revoked')",
			"t", client_id);
	*out = any != 0;
	return db_check(reg, rc, SQLITE_ROW, err, errlen);
}

static int audit_add(struct registry *reg, uid_t uid, const char *action, const char *client_id,
		     const char *thumb_hex, const char *detail, char *err, size_t errlen)
{
	int rc = db_exec(reg,
			 "INSERT INTO audit (ts, uid, action, client_id, thumbprint, detail)"
			 " VALUES (?, ?, ?, ?, ?, ?)",
			 "iitttt", (int64_t)time(NULL), (int64_t)uid, action, client_id, thumb_hex,
			 detail);
	return db_check(reg, rc, SQLITE_DONE, err, errlen);
}

/* --- mutations -------------------------------------------------------------------------- */

int registry_audit_record(struct registry *reg, uid_t uid, const char *action,
			  const char *client_id, const char *detail, char *err, size_t errlen)
{
	size_t action_max = sizeof(((struct registry_audit_entry *)0)->action) - 1;
	if (!action || !action[0] || strlen(action) > action_max)
		return set_err(err, errlen, REG_ERR_INVALID, "invalid audit action");
	if (client_id[0]) {
		int rc = check_client_id(client_id, err, errlen);
		if (rc != REG_OK)
			return rc;
	}
	/* One statement: SQLite commits it on its own, durably (synchronous=FULL). */
	return audit_add(reg, uid, action, client_id, "", detail, err, errlen);
}

int registry_bind(struct registry *reg, const char *client_id, const struct cert_info *ci,
		  const char *pem, bool rotate, uid_t uid, uint32_t *slot, char *err, size_t errlen)
{
	char hex[CERT_THUMB_HEX_LEN + 1], owner[REGISTRY_CLIENT_ID_MAX + 1], detail[256];
	uint8_t active[REGISTRY_MAX_ACTIVE_CERTS][CERT_THUMB_LEN];
	size_t n_active = 0;
	enum cert_state state;
	int64_t cslot = 0, now = time(NULL);
	bool created = false, history = false;

	int rc = check_client_id(client_id, err, errlen);
	if (rc != REG_OK)
		return rc;
	if (!ci || !pem || strnlen(pem, CERT_MAX_PEM_BYTES + 1) > CERT_MAX_PEM_BYTES)
		return set_err(err, errlen, REG_ERR_INVALID, "certificate missing or too large");
	cert_thumb_to_hex(ci->thumb, hex);
	if ((rc = txn_begin(reg, err, errlen)) != REG_OK)
		return rc;

	rc = cert_owner(reg, hex, owner, &state, err, errlen);
	if (rc == REG_OK) {
		if (state == CERT_REVOKED)
			rc = set_err(err, errlen, REG_ERR_REVOKED,
				     "certificate %s was revoked; revocation is final", hex);
		else if (strcmp(owner, client_id) != 0)
			rc = set_err(err, errlen, REG_ERR_CONFLICT,
				     "certificate is bound to client %s", owner);
		else
			rc = set_err(err, errlen, REG_ERR_CONFLICT,
				     "certificate is already bound to client %s", client_id);
		goto out;
	}
	if (rc != REG_ERR_NOT_FOUND)
		goto out;

	rc = client_slot(reg, client_id, &cslot, err, errlen);
	if (rc == REG_ERR_NOT_FOUND) {
		created = true;
		rc = has_revoked(reg, client_id, &history, err, errlen);
		if (rc == REG_OK)
			rc = slot_alloc(reg, &cslot, err, errlen);
		if (rc == REG_OK)
			rc = db_check(reg,
				      db_exec(reg,
					      "INSERT INTO clients (client_id, slot, created_at)"
					      " VALUES (?, ?, ?)",
					      "tii", client_id, cslot, now),
				      SQLITE_DONE, err, errlen);
	}
	if (rc != REG_OK)
		goto out;

	if ((rc = active_thumbs(reg, client_id, active, &n_active, err, errlen)) != REG_OK)
		goto out;
	if (n_active > 0 && !rotate) {
		rc = set_err(err, errlen, REG_ERR_NEED_ROTATE,
			     "client %s already has an active certificate; bind with rotate to add "
			     "a second",
			     client_id);
		goto out;
	}
	if (n_active >= REGISTRY_MAX_ACTIVE_CERTS) {
		rc = set_err(err, errlen, REG_ERR_LIMIT,
			     "client %s already has %d active certificates; unbind one first",
			     client_id, REGISTRY_MAX_ACTIVE_CERTS);
		goto out;
	}

	rc = db_check(reg,
		      db_exec(reg,
			      "INSERT INTO certificates (" CERT_COLUMNS ", pem)"
			      " VALUES (?, ?, ?, ?, ?, ?, ?, 'active', ?, NULL, ?, ?, ?, ?, ?)",
			      "tttttiiiitttt", hex, client_id, ci->subject, ci->issuer, ci->serial,
			      ci->not_before, ci->not_after, now, (int64_t)ci->psd2.roles,
			      ci->psd2.org_id, ci->psd2.nca_name, ci->psd2.nca_id, pem),
		      SQLITE_DONE, err, errlen);
	if (rc != REG_OK)
		goto out;
	snprintf(detail, sizeof(detail), "serial %.79s, subject %.150s", ci->serial, ci->subject);
	rc = audit_add(reg, uid, n_active ? "rotate" : "bind", client_id, hex, detail, err, errlen);
	if (rc != REG_OK)
		goto out;
	if (index_reserve(reg, 1) < 0) {
		rc = set_err(err, errlen, REG_ERR_IO, "out of memory");
		goto out;
	}
	if ((rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;

	struct registry_binding b = {.slot = (uint32_t)cslot,
				     .state = CERT_ACTIVE,
				     .not_before = ci->not_before,
				     .not_after = ci->not_after,
				     .psd2_roles = ci->psd2.roles};
	memcpy(b.client_id, client_id, strlen(client_id) + 1);
	memcpy(b.org_id, ci->psd2.org_id, sizeof(b.org_id));
	pthread_rwlock_wrlock(&reg->lock);
	index_put(reg, ci->thumb, &b);
	if (created && history)
		index_set_slot(reg, client_id, (uint32_t)cslot);
	pthread_rwlock_unlock(&reg->lock);
	if (slot)
		*slot = (uint32_t)cslot;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_unbind_client(struct registry *reg, const char *client_id, uid_t uid, uint32_t *slot,
			   char *err, size_t errlen)
{
	uint8_t active[REGISTRY_MAX_ACTIVE_CERTS][CERT_THUMB_LEN];
	size_t n_active = 0;
	int64_t cslot = 0;
	char detail[96];
	bool history = false;

	int rc = check_client_id(client_id, err, errlen);
	if (rc != REG_OK || (rc = txn_begin(reg, err, errlen)) != REG_OK)
		return rc;
	if ((rc = client_slot(reg, client_id, &cslot, err, errlen)) != REG_OK ||
	    (rc = active_thumbs(reg, client_id, active, &n_active, err, errlen)) != REG_OK ||
	    (rc = has_revoked(reg, client_id, &history, err, errlen)) != REG_OK)
		goto out;
	/* Revoked rows stay: revocation is final, and they are the client's history. */
	rc = db_check(reg,
		      db_exec(reg,
			      "DELETE FROM certificates WHERE client_id = ? AND state = 'active'",
			      "t", client_id),
		      SQLITE_DONE, err, errlen);
	if (rc == REG_OK)
		rc = db_check(reg, db_exec(reg, "DELETE FROM client_limits WHERE client_id = ?",
					   "t", client_id),
			      SQLITE_DONE, err, errlen);
	if (rc == REG_OK)
		rc = db_check(reg, db_exec(reg, "DELETE FROM clients WHERE client_id = ?", "t",
					   client_id),
			      SQLITE_DONE, err, errlen);
	if (rc != REG_OK)
		goto out;
	snprintf(detail, sizeof(detail), "removed %zu active certificate(s), freed slot %lld",
		 n_active, (long long)cslot);
	if ((rc = audit_add(reg, uid, "unbind", client_id, "", detail, err, errlen)) != REG_OK ||
	    (rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;

	pthread_rwlock_wrlock(&reg->lock);
	for (size_t i = 0; i < n_active; i++)
		index_del(reg, active[i]);
	if (history)
		index_set_slot(reg, client_id, REGISTRY_SLOT_NONE);
	pthread_rwlock_unlock(&reg->lock);
	if (slot)
		*slot = (uint32_t)cslot;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_unbind_cert(struct registry *reg, const char *client_id,
			 const uint8_t thumb[CERT_THUMB_LEN], uid_t uid, uint32_t *slot, char *err,
			 size_t errlen)
{
	char hex[CERT_THUMB_HEX_LEN + 1], owner[REGISTRY_CLIENT_ID_MAX + 1];
	enum cert_state state;
	int64_t cslot = 0;

	int rc = check_client_id(client_id, err, errlen);
	if (rc != REG_OK || (rc = txn_begin(reg, err, errlen)) != REG_OK)
		return rc;
	cert_thumb_to_hex(thumb, hex);
	if ((rc = client_slot(reg, client_id, &cslot, err, errlen)) != REG_OK)
		goto out;
	rc = cert_owner(reg, hex, owner, &state, err, errlen);
	if (rc == REG_ERR_NOT_FOUND || (rc == REG_OK && strcmp(owner, client_id) != 0)) {
		rc = set_err(err, errlen, REG_ERR_NOT_FOUND,
			     "certificate %s is not bound to client %s", hex, client_id);
		goto out;
	}
	if (rc != REG_OK)
		goto out;
	if (state == CERT_REVOKED) {
		rc = set_err(err, errlen, REG_ERR_REVOKED,
			     "certificate %s is revoked; revoked certificates stay on record", hex);
		goto out;
	}
	rc = db_check(reg, db_exec(reg, "DELETE FROM certificates WHERE thumbprint = ?", "t", hex),
		      SQLITE_DONE, err, errlen);
	if (rc != REG_OK ||
	    (rc = audit_add(reg, uid, "unbind-cert", client_id, hex, "", err, errlen)) != REG_OK ||
	    (rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;

	pthread_rwlock_wrlock(&reg->lock);
	index_del(reg, thumb);
	pthread_rwlock_unlock(&reg->lock);
	if (slot)
		*slot = (uint32_t)cslot;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_revoke(struct registry *reg, const char *client_id, uid_t uid, uint32_t *slot,
		    char *err, size_t errlen)
{
	uint8_t active[REGISTRY_MAX_ACTIVE_CERTS][CERT_THUMB_LEN];
	char hex[CERT_THUMB_HEX_LEN + 1];
	size_t n_active = 0;
	int64_t cslot = 0;

	int rc = check_client_id(client_id, err, errlen);
	if (rc != REG_OK || (rc = txn_begin(reg, err, errlen)) != REG_OK)
		return rc;
	if ((rc = client_slot(reg, client_id, &cslot, err, errlen)) != REG_OK ||
	    (rc = active_thumbs(reg, client_id, active, &n_active, err, errlen)) != REG_OK)
		goto out;
	if (n_active == 0) {
		rc = set_err(err, errlen, REG_ERR_NOT_FOUND, "client %s has no active certificate",
			     client_id);
		goto out;
	}
	rc = db_check(reg,
		      db_exec(reg,
			      "UPDATE certificates SET state = 'revoked', revoked_at = ?"
			      " WHERE client_id = ? AND state = 'active'",
			      "it", (int64_t)time(NULL), client_id),
		      SQLITE_DONE, err, errlen);
	/* One audit row per certificate, so each thumbprint's fate can be looked up. */
	for (size_t i = 0; rc == REG_OK && i < n_active; i++) {
		cert_thumb_to_hex(active[i], hex);
		rc = audit_add(reg, uid, "revoke", client_id, hex, "", err, errlen);
	}
	if (rc != REG_OK || (rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;

	pthread_rwlock_wrlock(&reg->lock);
	for (size_t i = 0; i < n_active; i++) {
		struct index_entry *e = index_find(reg->tab, reg->cap, active[i]);
		if (e->used)
			e->b.state = CERT_REVOKED;
	}
	pthread_rwlock_unlock(&reg->lock);
	if (slot)
		*slot = (uint32_t)cslot;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_revoke_cert(struct registry *reg, const uint8_t thumb[CERT_THUMB_LEN], uid_t uid,
			 const char *detail, char client_id[REGISTRY_CLIENT_ID_MAX + 1],
			 uint32_t *slot, size_t *n_active_left, char *err, size_t errlen)
{
	uint8_t active[REGISTRY_MAX_ACTIVE_CERTS][CERT_THUMB_LEN];
	char hex[CERT_THUMB_HEX_LEN + 1];
	enum cert_state state;
	size_t n_active = 0;
	int64_t cslot = 0;

	cert_thumb_to_hex(thumb, hex);
	int rc = txn_begin(reg, err, errlen);
	if (rc != REG_OK)
		return rc;
	rc = cert_owner(reg, hex, client_id, &state, err, errlen);
	if (rc == REG_ERR_NOT_FOUND || (rc == REG_OK && state != CERT_ACTIVE)) {
		rc = set_err(err, errlen, REG_ERR_NOT_FOUND, "certificate %s is not actively bound",
			     hex);
		goto out;
	}
	if (rc != REG_OK || (rc = client_slot(reg, client_id, &cslot, err, errlen)) != REG_OK)
		goto out;
	rc = db_check(reg,
		      db_exec(reg,
			      "UPDATE certificates SET state = 'revoked', revoked_at = ?"
			      " WHERE thumbprint = ?",
			      "it", (int64_t)time(NULL), hex),
		      SQLITE_DONE, err, errlen);
	if (rc != REG_OK ||
	    (rc = audit_add(reg, uid, "revoke", client_id, hex, detail, err, errlen)) != REG_OK ||
	    (rc = active_thumbs(reg, client_id, active, &n_active, err, errlen)) != REG_OK ||
	    (rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;

	pthread_rwlock_wrlock(&reg->lock);
	struct index_entry *e = index_find(reg->tab, reg->cap, thumb);
	if (e->used)
		e->b.state = CERT_REVOKED;
	pthread_rwlock_unlock(&reg->lock);
	if (slot)
		*slot = (uint32_t)cslot;
	if (n_active_left)
		*n_active_left = n_active;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

/* --- run-time rates -------------------------------------------------------------------- */

static int limit_check(const struct registry_limit *l, char *err, size_t errlen)
{
	if (l->pps > RATE_PPS_MAX)
		return set_err(err, errlen, REG_ERR_INVALID, "pps must be at most %llu", RATE_PPS_MAX);
	if (l->bps > RATE_BPS_MAX)
		return set_err(err, errlen, REG_ERR_INVALID, "bps must be at most %llu", RATE_BPS_MAX);
	if (l->burst < 1 || l->burst > RATE_BURST_MAX)
		return set_err(err, errlen, REG_ERR_INVALID, "burst must be between 1 and %llu",
			       RATE_BURST_MAX);
	if (l->burst_bytes &&
	    (l->burst_bytes < RATE_BURST_BYTES_MIN || l->burst_bytes > RATE_BURST_BYTES_MAX))
		return set_err(err, errlen, REG_ERR_INVALID,
			       "burst_bytes must be 0 (burst * %llu) or between %llu and %llu",
			       RATE_BURST_BYTES_MIN, RATE_BURST_BYTES_MIN, RATE_BURST_BYTES_MAX);
	return REG_OK;
}

/* The client's limit: REG_OK, REG_ERR_NOT_FOUND when it has none, or REG_ERR_IO. */
static int limit_load(struct registry *reg, const char *client_id, struct registry_limit *out)
{
	sqlite3_stmt *st;
	int rc = db_prepare(reg, &st,
			    "SELECT pps, bps, burst, burst_bytes FROM client_limits"
			    " WHERE client_id = ?",
			    "t", client_id);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		out->pps = (uint64_t)sqlite3_column_int64(st, 0);
		out->bps = (uint64_t)sqlite3_column_int64(st, 1);
		out->burst = (uint64_t)sqlite3_column_int64(st, 2);
		out->burst_bytes = (uint64_t)sqlite3_column_int64(st, 3);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? REG_OK : rc == SQLITE_DONE ? REG_ERR_NOT_FOUND : REG_ERR_IO;
}

int registry_limit_set(struct registry *reg, const char *client_id, const struct registry_limit *lim,
		       uid_t uid, uint32_t *slot, char *err, size_t errlen)
{
	char detail[160];
	int64_t cslot = 0;

	int rc = check_client_id(client_id, err, errlen);
	if (rc != REG_OK)
		return rc;
	if (!lim)
		return set_err(err, errlen, REG_ERR_INVALID, "limit missing");
	if ((rc = limit_check(lim, err, errlen)) != REG_OK ||
	    (rc = txn_begin(reg, err, errlen)) != REG_OK)
		return rc;
	if ((rc = client_slot(reg, client_id, &cslot, err, errlen)) != REG_OK)
		goto out;
	rc = db_check(reg,
		      db_exec(reg,
			      "INSERT OR REPLACE INTO client_limits"
			      " (client_id, pps, bps, burst, burst_bytes) VALUES (?, ?, ?, ?, ?)",
			      "tiiii", client_id, (int64_t)lim->pps, (int64_t)lim->bps,
			      (int64_t)lim->burst, (int64_t)lim->burst_bytes),
		      SQLITE_DONE, err, errlen);
	if (rc != REG_OK)
		goto out;
	snprintf(detail, sizeof(detail), "pps %llu, bps %llu, burst %llu, burst_bytes %llu",
		 (unsigned long long)lim->pps, (unsigned long long)lim->bps,
		 (unsigned long long)lim->burst, (unsigned long long)lim->burst_bytes);
	if ((rc = audit_add(reg, uid, "limit-set", client_id, "", detail, err, errlen)) != REG_OK ||
	    (rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;
	if (slot)
		*slot = (uint32_t)cslot;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_limit_del(struct registry *reg, const char *client_id, uid_t uid, uint32_t *slot,
		       char *err, size_t errlen)
{
	struct registry_limit old;
	int64_t cslot = 0;

	int rc = check_client_id(client_id, err, errlen);
	if (rc != REG_OK || (rc = txn_begin(reg, err, errlen)) != REG_OK)
		return rc;
	if ((rc = client_slot(reg, client_id, &cslot, err, errlen)) != REG_OK)
		goto out;
	rc = limit_load(reg, client_id, &old);
	if (rc == REG_ERR_NOT_FOUND)
		rc = set_err(err, errlen, REG_ERR_NOT_FOUND, "client %s has no limit of its own",
			     client_id);
	else if (rc != REG_OK)
		rc = db_err(reg, err, errlen);
	if (rc != REG_OK)
		goto out;
	rc = db_check(reg, db_exec(reg, "DELETE FROM client_limits WHERE client_id = ?", "t",
				   client_id),
		      SQLITE_DONE, err, errlen);
	if (rc != REG_OK ||
	    (rc = audit_add(reg, uid, "limit-del", client_id, "", "back to the default", err,
			    errlen)) != REG_OK ||
	    (rc = txn_commit(reg, err, errlen)) != REG_OK)
		goto out;
	if (slot)
		*slot = (uint32_t)cslot;
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_limit_get(struct registry *reg, const char *client_id, struct registry_limit *out)
{
	if (!registry_client_id_valid(client_id))
		return REG_ERR_INVALID;
	return limit_load(reg, client_id, out);
}

int registry_src_rate_set(struct registry *reg, const struct registry_src_rate *rate, uid_t uid,
			  char *err, size_t errlen)
{
	char detail[96];
	if (!rate)
		return set_err(err, errlen, REG_ERR_INVALID, "rate missing");
	if (rate->per_sec > RATE_PPS_MAX)
		return set_err(err, errlen, REG_ERR_INVALID, "per_sec must be at most %llu",
			       RATE_PPS_MAX);
	if (rate->burst < 1 || rate->burst > RATE_BURST_MAX)
		return set_err(err, errlen, REG_ERR_INVALID, "burst must be between 1 and %llu",
			       RATE_BURST_MAX);
	int rc = txn_begin(reg, err, errlen);
	if (rc != REG_OK)
		return rc;
	static const char sql[] = "INSERT OR REPLACE INTO settings (key, value) VALUES (?, ?)";
	rc = db_check(reg, db_exec(reg, sql, "ti", "src_rate.per_sec", (int64_t)rate->per_sec),
		      SQLITE_DONE, err, errlen);
	if (rc == REG_OK)
		rc = db_check(reg, db_exec(reg, sql, "ti", "src_rate.burst", (int64_t)rate->burst),
			      SQLITE_DONE, err, errlen);
	if (rc != REG_OK)
		goto out;
	snprintf(detail, sizeof(detail), "per_sec %llu, burst %llu",
		 (unsigned long long)rate->per_sec, (unsigned long long)rate->burst);
	if ((rc = audit_add(reg, uid, "src-rate-set", "", "", detail, err, errlen)) == REG_OK)
		rc = txn_commit(reg, err, errlen);
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_src_rate_del(struct registry *reg, uid_t uid, char *err, size_t errlen)
{
	struct registry_src_rate old;
	int rc = txn_begin(reg, err, errlen);
	if (rc != REG_OK)
		return rc;
	rc = registry_src_rate_get(reg, &old);
	if (rc == REG_ERR_NOT_FOUND)
		rc = set_err(err, errlen, REG_ERR_NOT_FOUND,
			     "no source rate was set at run time: the configuration's applies");
	else if (rc != REG_OK)
		rc = db_err(reg, err, errlen);
	if (rc == REG_OK)
		rc = db_check(reg,
			      db_exec(reg,
				      "DELETE FROM settings"
				      " WHERE key IN ('src_rate.per_sec', 'src_rate.burst')",
				      ""),
			      SQLITE_DONE, err, errlen);
	if (rc == REG_OK &&
	    (rc = audit_add(reg, uid, "src-rate-del", "", "", "back to the configuration", err,
			    errlen)) == REG_OK)
		rc = txn_commit(reg, err, errlen);
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_src_rate_get(struct registry *reg, struct registry_src_rate *out)
{
	int64_t per_sec = 0, burst = 0;
	int a = db_int(reg, &per_sec, "SELECT value FROM settings WHERE key = 'src_rate.per_sec'", "");
	int b = db_int(reg, &burst, "SELECT value FROM settings WHERE key = 'src_rate.burst'", "");
	if ((a != SQLITE_ROW && a != SQLITE_DONE) || (b != SQLITE_ROW && b != SQLITE_DONE))
		return REG_ERR_IO;
	/* Both are written in one transaction: one without the other is not a setting. */
	if (a != SQLITE_ROW || b != SQLITE_ROW || per_sec < 0 || burst < 1)
		return REG_ERR_NOT_FOUND;
	out->per_sec = (uint64_t)per_sec;
	out->burst = (uint64_t)burst;
	return REG_OK;
}

/* --- listings ------------------------------------------------------------------------- */

static int cert_from_row(sqlite3_stmt *st, struct registry_cert *c)
{
	const char *hex = (const char *)sqlite3_column_text(st, 0);
	if (!hex || cert_thumb_from_hex(hex, strlen(hex), c->info.thumb) < 0)
		return -1;
	col_text(st, 1, c->client_id, sizeof(c->client_id));
	col_text(st, 2, c->info.subject, sizeof(c->info.subject));
	col_text(st, 3, c->info.issuer, sizeof(c->info.issuer));
	col_text(st, 4, c->info.serial, sizeof(c->info.serial));
	c->info.not_before = sqlite3_column_int64(st, 5);
	c->info.not_after = sqlite3_column_int64(st, 6);
	const char *state = (const char *)sqlite3_column_text(st, 7);
	c->state = state && strcmp(state, "revoked") == 0 ? CERT_REVOKED : CERT_ACTIVE;
	c->bound_at = sqlite3_column_int64(st, 8);
	c->revoked_at = sqlite3_column_int64(st, 9); /* NULL reads as 0 */
	c->info.psd2.roles = (uint32_t)sqlite3_column_int64(st, 10);
	col_text(st, 11, c->info.psd2.org_id, sizeof(c->info.psd2.org_id));
	col_text(st, 12, c->info.psd2.nca_name, sizeof(c->info.psd2.nca_name));
	col_text(st, 13, c->info.psd2.nca_id, sizeof(c->info.psd2.nca_id));
	return 0;
}

static int client_load(struct registry *reg, const char *client_id, struct registry_client *out)
{
	sqlite3_stmt *st = NULL;
	size_t cap = 0;
	int ret = REG_ERR_IO, rc;

	memset(out, 0, sizeof(*out));
	if (db_prepare(reg, &st, "SELECT slot, created_at FROM clients WHERE client_id = ?", "t",
		       client_id) != SQLITE_OK)
		goto out;
	rc = sqlite3_step(st);
	if (rc != SQLITE_ROW) {
		ret = rc == SQLITE_DONE ? REG_ERR_NOT_FOUND : REG_ERR_IO;
		goto out;
	}
	memcpy(out->client_id, client_id, strlen(client_id) + 1);
	out->slot = (uint32_t)sqlite3_column_int64(st, 0);
	out->created_at = sqlite3_column_int64(st, 1);
	sqlite3_finalize(st);
	st = NULL;
	rc = limit_load(reg, client_id, &out->limit);
	if (rc != REG_OK && rc != REG_ERR_NOT_FOUND)
		goto out;
	out->has_limit = rc == REG_OK;
	/* rowid breaks ties between certificates bound within the same second. */
	if (db_prepare(reg, &st,
		       "SELECT " CERT_COLUMNS " FROM certificates WHERE client_id = ?"
		       " ORDER BY bound_at DESC, rowid DESC",
		       "t", client_id) != SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct registry_cert *certs =
			array_grow(out->certs, &cap, out->n_certs, sizeof(*out->certs));
		if (!certs)
			goto out;
		out->certs = certs;
		if (cert_from_row(st, &out->certs[out->n_certs]) < 0)
			goto out;
		out->n_certs++;
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	sqlite3_finalize(st);
	if (ret != REG_OK)
		registry_client_free(out);
	return ret;
}

int registry_get_client(struct registry *reg, const char *client_id, struct registry_client *out)
{
	memset(out, 0, sizeof(*out));
	if (!registry_client_id_valid(client_id))
		return REG_ERR_INVALID;
	return client_load(reg, client_id, out);
}

void registry_client_free(struct registry_client *c)
{
	free(c->certs);
	c->certs = NULL;
	c->n_certs = 0;
}

int registry_list_clients(struct registry *reg, struct registry_client **out, size_t *n)
{
	struct registry_client *list = NULL;
	sqlite3_stmt *st = NULL;
	size_t cap = 0, count = 0;
	int ret = REG_ERR_IO, rc;

	if (db_prepare(reg, &st, "SELECT client_id FROM clients ORDER BY client_id", "") !=
	    SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *id = (const char *)sqlite3_column_text(st, 0);
		struct registry_client *grown = array_grow(list, &cap, count, sizeof(*list));
		if (!grown)
			goto out;
		list = grown;
		if (!id || client_load(reg, id, &list[count]) != REG_OK)
			goto out;
		count++;
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	sqlite3_finalize(st);
	if (ret != REG_OK) {
		registry_clients_free(list, count);
		list = NULL;
		count = 0;
	}
	*out = list;
	*n = count;
	return ret;
}

void registry_clients_free(struct registry_client *list, size_t n)
{
	for (size_t i = 0; list && i < n; i++)
		registry_client_free(&list[i]);
	free(list);
}

int registry_audit(struct registry *reg, const char *client_id, size_t limit,
		   struct registry_audit_entry **out, size_t *n)
{
	struct registry_audit_entry *list = NULL;
	sqlite3_stmt *st = NULL;
	size_t cap = 0, count = 0;
	int ret = REG_ERR_IO, rc;
	/* SQLite limits are signed; anything larger means "all". */
	int64_t lim = limit > INT64_MAX ? INT64_MAX : (int64_t)limit;

	if (client_id && !registry_client_id_valid(client_id)) {
		ret = REG_ERR_INVALID;
		goto out;
	}
	rc = client_id ? db_prepare(reg, &st,
				    "SELECT id, ts, uid, action, client_id, thumbprint, detail"
				    " FROM audit WHERE client_id = ? ORDER BY id DESC LIMIT ?",
				    "ti", client_id, lim)
		       : db_prepare(reg, &st,
				    "SELECT id, ts, uid, action, client_id, thumbprint, detail"
				    " FROM audit ORDER BY id DESC LIMIT ?",
				    "i", lim);
	if (rc != SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct registry_audit_entry *grown = array_grow(list, &cap, count, sizeof(*list));
		if (!grown)
			goto out;
		list = grown;
		struct registry_audit_entry *e = &list[count++];
		e->id = sqlite3_column_int64(st, 0);
		e->ts = sqlite3_column_int64(st, 1);
		e->uid = (uid_t)sqlite3_column_int64(st, 2);
		col_text(st, 3, e->action, sizeof(e->action));
		col_text(st, 4, e->client_id, sizeof(e->client_id));
		col_text(st, 5, e->thumb_hex, sizeof(e->thumb_hex));
		col_text(st, 6, e->detail, sizeof(e->detail));
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	sqlite3_finalize(st);
	if (ret != REG_OK) {
		free(list);
		list = NULL;
		count = 0;
	}
	*out = list;
	*n = count;
	return ret;
}

int registry_foreach_active_cert(struct registry *reg, registry_cert_fn *fn, void *arg)
{
	sqlite3_stmt *st = NULL;
	int ret = REG_ERR_IO, rc;

	if (db_prepare(reg, &st,
		       "SELECT " CERT_COLUMNS ", pem FROM certificates WHERE state = 'active'"
		       " ORDER BY client_id, bound_at",
		       "") != SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct registry_cert c = {0};
		const char *pem = (const char *)sqlite3_column_text(st, CERT_N_COLUMNS);
		if (cert_from_row(st, &c) < 0 || !pem)
			goto out;
		fn(arg, &c, pem);
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	sqlite3_finalize(st);
	return ret;
}

/* Revoked certificates count while their client is there (as registry_list_clients shows
 * them); those of a client unbound since stay on record only. */
int registry_counts(struct registry *reg, struct registry_counts *out)
{
	static const char *const sql[] = {
		"SELECT COUNT(*) FROM clients",
		"SELECT COUNT(*) FROM certificates WHERE state = 'active'",
		("SELECT COUNT(*) FROM certificates JOIN clients USING (client_id)"
		 " WHERE certificates.state = 'revoked'"),
		"SELECT COUNT(*) FROM deny",
	};
	int64_t *field[] = {&out->clients, &out->certs_active, &out->certs_revoked,
			    &out->deny_entries};
	for (size_t i = 0; i < sizeof(sql) / sizeof(sql[0]); i++)
		if (db_int(reg, field[i], sql[i], "") != SQLITE_ROW)
			return REG_ERR_IO;
	return REG_OK;
}

/* --- deny-list ------------------------------------------------------------------------ */

static int deny_change(struct registry *reg, const char *in, bool add, uid_t uid, char *err,
		       size_t errlen)
{
	char cidr[CIDR_TEXT_MAX + 1];
	const char *why;
	int64_t one;

	if (cidr_canonical(in, cidr, sizeof(cidr), &why) < 0)
		return set_err(err, errlen, REG_ERR_INVALID, "invalid CIDR: %s", why);
	int rc = txn_begin(reg, err, errlen);
	if (rc != REG_OK)
		return rc;
	int q = db_int(reg, &one, "SELECT 1 FROM deny WHERE cidr = ?", "t", cidr);
	if (q != SQLITE_ROW && q != SQLITE_DONE) {
		rc = db_err(reg, err, errlen);
		goto out;
	}
	if (add && q == SQLITE_ROW) {
		rc = set_err(err, errlen, REG_ERR_CONFLICT, "%s is already denied", cidr);
		goto out;
	}
	if (!add && q == SQLITE_DONE) {
		rc = set_err(err, errlen, REG_ERR_NOT_FOUND, "%s is not in the deny-list", cidr);
		goto out;
	}
	q = add ? db_exec(reg, "INSERT INTO deny (cidr, added_at) VALUES (?, ?)", "ti", cidr,
			  (int64_t)time(NULL))
		: db_exec(reg, "DELETE FROM deny WHERE cidr = ?", "t", cidr);
	if ((rc = db_check(reg, q, SQLITE_DONE, err, errlen)) != REG_OK ||
	    (rc = audit_add(reg, uid, add ? "deny-add" : "deny-del", "", "", cidr, err,
			    errlen)) != REG_OK)
		goto out;
	rc = txn_commit(reg, err, errlen);
out:
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

int registry_deny_add(struct registry *reg, const char *cidr, uid_t uid, char *err, size_t errlen)
{
	return deny_change(reg, cidr, true, uid, err, errlen);
}

int registry_deny_del(struct registry *reg, const char *cidr, uid_t uid, char *err, size_t errlen)
{
	return deny_change(reg, cidr, false, uid, err, errlen);
}

int registry_deny_list(struct registry *reg, char ***out, size_t *n)
{
	char **list = NULL;
	sqlite3_stmt *st = NULL;
	size_t cap = 0, count = 0;
	int ret = REG_ERR_IO, rc;

	if (db_prepare(reg, &st, "SELECT cidr FROM deny ORDER BY cidr", "") != SQLITE_OK)
		goto out;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		const char *cidr = (const char *)sqlite3_column_text(st, 0);
		char **grown = array_grow(list, &cap, count, sizeof(*list));
		if (!grown)
			goto out;
		list = grown;
		if (!cidr || !(list[count] = strdup(cidr)))
			goto out;
		count++;
	}
	if (rc == SQLITE_DONE)
		ret = REG_OK;
out:
	sqlite3_finalize(st);
	if (ret != REG_OK) {
		while (count > 0)
			free(list[--count]);
		free(list);
		list = NULL;
	}
	*out = list;
	*n = count;
	return ret;
}

/* --- quota counters ------------------------------------------------------------------- */

#define QUOTA_COLUMNS                                                                      \
	"name, client_id, key, slot, \"limit\", window, window_seconds, window_start, count, " \
	"sub, updated"

static int quota_bind(sqlite3_stmt *st, const struct registry_quota *row)
{
	const struct psd2_quota *q = &row->q;
	int rc = sqlite3_bind_text(st, 1, q->name, -1, SQLITE_STATIC);

	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 2, q->client_id, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_text(st, 3, q->key, -1, SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 4, row->slot);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 5, (int64_t)q->limit);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 6, q->window);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 7, q->window_seconds);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 8, q->window_start);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 9, (int64_t)q->count);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_blob(st, 10, q->sub, sizeof(q->sub), SQLITE_STATIC);
	if (rc == SQLITE_OK)
		rc = sqlite3_bind_int64(st, 11, q->updated);
	return rc;
}

int registry_quota_save(struct registry *reg, const struct registry_quota *rows, size_t n,
			char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = txn_begin(reg, err, errlen);

	if (rc != REG_OK)
		return rc;
	/* REPLACE drops every row in the way: the slot's previous counter and this counter's
	 * row under another slot. */
	rc = db_check(reg,
		      sqlite3_prepare_v2(reg->db,
					 "INSERT OR REPLACE INTO quota_counters (" QUOTA_COLUMNS
					 ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
					 -1, &st, NULL),
		      SQLITE_OK, err, errlen);
	for (size_t i = 0; rc == REG_OK && i < n; i++) {
		rc = db_check(reg, quota_bind(st, &rows[i]), SQLITE_OK, err, errlen);
		if (rc == REG_OK)
			rc = db_check(reg, sqlite3_step(st), SQLITE_DONE, err, errlen);
		sqlite3_reset(st);
	}
	sqlite3_finalize(st);
	if (rc == REG_OK)
		rc = txn_commit(reg, err, errlen);
	if (rc != REG_OK)
		txn_rollback(reg);
	return rc;
}

/* A text column into a fixed field: false when it does not fit whole (a truncated identity
 * would merge two counters). */
static bool col_text_fits(sqlite3_stmt *st, int col, char *out, size_t outlen)
{
	const unsigned char *s = sqlite3_column_text(st, col);
	int len = sqlite3_column_bytes(st, col);

	if (!s || len < 0 || (size_t)len >= outlen || strlen((const char *)s) != (size_t)len)
		return false;
	memcpy(out, s, (size_t)len + 1);
	return true;
}

static bool quota_from_row(sqlite3_stmt *st, struct registry_quota *row)
{
	struct psd2_quota *q = &row->q;
	int64_t slot = sqlite3_column_int64(st, 3);

	memset(row, 0, sizeof(*row));
	if (!col_text_fits(st, 0, q->name, sizeof(q->name)) || !q->name[0] ||
	    !col_text_fits(st, 1, q->client_id, sizeof(q->client_id)) ||
	    !col_text_fits(st, 2, q->key, sizeof(q->key)) || slot < 0 || slot > UINT32_MAX ||
	    sqlite3_column_bytes(st, 9) != (int)sizeof(q->sub))
		return false;
	row->slot = (uint32_t)slot;
	q->limit = (uint64_t)sqlite3_column_int64(st, 4);
	q->window = (uint32_t)sqlite3_column_int64(st, 5);
	q->window_seconds = (uint32_t)sqlite3_column_int64(st, 6);
	q->window_start = sqlite3_column_int64(st, 7);
	q->count = (uint64_t)sqlite3_column_int64(st, 8);
	memcpy(q->sub, sqlite3_column_blob(st, 9), sizeof(q->sub));
	q->updated = sqlite3_column_int64(st, 10);
	return true;
}

int registry_quota_load(struct registry *reg, registry_quota_fn *fn, void *arg)
{
	sqlite3_stmt *st = NULL;
	int rc;

	if (db_prepare(reg, &st, "SELECT " QUOTA_COLUMNS " FROM quota_counters ORDER BY slot", "") !=
	    SQLITE_OK)
		return REG_ERR_IO;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct registry_quota row;

		if (quota_from_row(st, &row))
			fn(arg, &row);
	}
	sqlite3_finalize(st);
	return rc == SQLITE_DONE ? REG_OK : REG_ERR_IO;
}
