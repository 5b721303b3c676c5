/* The daemon's TLS material, and reloading it without a restart (SIGHUP, `psd2edgectl reload`):
 * the server certificate and key, the client CA bundle and CRL, every https upstream's CA
 * bundle, certificate and key, and the JWK set of the jwt object, read again from the
 * configured paths (the configuration file itself is not read again). Everything here runs on
 * the main thread, where the signals and the control socket are served.
 *
 * A reload goes in three steps:
 *  1. every file is loaded and checked (cert_store_load, tls_server_ctx_new,
 *     tls_upstream_ctx_new, and last jwt_keys_reload, which swaps the keys in once they load);
 *     one that fails keeps the whole current set and nothing changes;
 *  2. every bound certificate is verified against the new trust store (tls_fastpath_enable);
 *     one whose chain no longer verifies (revoked by the new CRL, its CA gone) is revoked in the
 *     registry, audited with the reload's origin, and, like `psd2edgectl revoke`, revoked in the
 *     XDP clients map with its live connections cut; a certificate outside its own validity is
 *     refused by the registry anyway and left as it is;
 *  3. each worker is handed references to the new contexts and switches on its own thread: new
 *     handshakes and upstream connections use them, established ones keep theirs (every SSL
 *     holds a reference to its context, which lives until the last one goes).
 * The start-up runs steps 1 and 2 before the XDP maps are built from the registry. */
#ifndef PSD2EDGE_RELOAD_H
#define PSD2EDGE_RELOAD_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

struct daemon;

/* Start-up: loads the TLS material of d->cfg into d (trust, server_ctx, upstreams[].ctx).
 * -1 with err naming the file at fault. */
int daemon_tls_open(struct daemon *d, char *err, size_t errlen);
/* Start-up, once the registry is open: step 2 for d->server_ctx (its fast path), revocations
 * reaching the registry only. -1 with err when the registry cannot be read. */
int daemon_tls_reverify(struct daemon *d, char *err, size_t errlen);
/* A reload once the daemon serves. origin names it in the log ("reload (SIGHUP) done: ...",
 * "reload (SIGHUP) refused, nothing changed: ...") and the audit trail, uid is the audit rows'
 * uid. With result non-NULL, *result is {"reloaded": [key paths], "revoked": [{"client_id",
 * "thumbprint", "reason"}]} (NULL when out of memory). -1 with err naming the file at fault
 * when nothing changed. */
int daemon_reload(struct daemon *d, const char *origin, uid_t uid, json_t **result, char *err,
		  size_t errlen);
/* The daemon's references (the workers release theirs). */
void daemon_tls_close(struct daemon *d);

#endif
