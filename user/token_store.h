/* Hub mode's token store: the bank tokens the gateway holds for a TPP backend, behind opaque
 * session handles. SQLite like the registry; each record's payload (the bank's access and
 * refresh tokens, their expiry) is encrypted with AES-256-GCM under its own data key (DEK),
 * and the DEK is stored wrapped by a key-encryption key (KEK) held in a PKCS#11 token
 * (SoftHSM2 by default; a KEK file only as an explicit fallback). The associated data binds a
 * record to its handle, so a ciphertext moved to another row does not decrypt.
 *
 * Handles: 256 random bits, base64url (43 characters), given to the backend once; the store
 * keeps only their SHA-256. Threads: one connection per store; callers serialise (the hub runs
 * its token work on one thread). */
#ifndef PSD2EDGE_TOKEN_STORE_H
#define PSD2EDGE_TOKEN_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOKEN_HANDLE_LEN 43
#define TOKEN_BANK_MAX 63

struct token_store;

/* Where the KEK lives: a PKCS#11 module, slot token label, PIN and key label; or a file of 32
 * random bytes (fallback, only when set explicitly). */
struct token_kek_config {
	const char *pkcs11_module; /* e.g. /usr/lib/softhsm/libsofthsm2.so */
	const char *token_label;
	const char *pin;
	const char *key_label; /* the current KEK; created when missing */
	const char *kek_file;  /* instead of PKCS#11 */
};

enum token_status {
	TOKEN_OK = 0,
	TOKEN_NOT_FOUND = 1, /* no such handle */
	TOKEN_REVOKED = 2,
	TOKEN_ERROR = -1,    /* err says why */
};

int token_store_open(const char *path, const struct token_kek_config *kek,
		     struct token_store **out, char *err, size_t errlen);
void token_store_close(struct token_store *ts);

/* A new record for (bank, user) holding payload; handle_out receives the new handle. actor
 * (who asked: the backend's client_id) goes into the audit table with the handle's hash. */
enum token_status token_store_put(struct token_store *ts, const char *actor, const char *bank,
				  const char *user, const void *payload, size_t len,
				  char handle_out[TOKEN_HANDLE_LEN + 1], char *err, size_t errlen);
/* The record's payload (malloc'd, *payload_out) and bank. */
enum token_status token_store_get(struct token_store *ts, const char *handle, void **payload_out,
				  size_t *len_out, char bank_out[TOKEN_BANK_MAX + 1], char *err,
				  size_t errlen);
/* Replaces the payload (a refresh), under a fresh DEK. */
enum token_status token_store_update(struct token_store *ts, const char *handle,
				     const void *payload, size_t len, char *err, size_t errlen);
/* Final: the record's payload is destroyed; later gets answer TOKEN_REVOKED. Audited with
 * actor, in the same transaction. */
enum token_status token_store_revoke(struct token_store *ts, const char *actor,
				     const char *handle, char *err, size_t errlen);
/* Re-wraps every DEK under the KEK named new_key_label (created when missing) without
 * decrypting a payload; interrupted at any point (kill -9), every record still decrypts and a
 * second call finishes the job. Each row names the KEK that wraps it, and the old KEK is kept
 * in the token (never destroyed here): the configuration's key_label should name the new one
 * afterwards, and the old key may go once no row names it. A KEK file cannot be rotated. */
int token_store_rotate_kek(struct token_store *ts, const char *new_key_label, char *err,
			   size_t errlen);

#endif
