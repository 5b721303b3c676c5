/* The control plane: a Unix-domain socket speaking JSON lines (one request object per line,
 * one response object per line), authorised by SO_PEERCRED. Every change is committed to the
 * registry before it is acknowledged, and only then reported to the daemon through the hooks
 * (which close live connections and update the BPF maps). */
#ifndef PSD2EDGE_CONTROL_H
#define PSD2EDGE_CONTROL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cert.h"
#include "ev.h"
#include "expiry.h"
#include "registry.h"

#define CONTROL_MAX_LINE (256 * 1024)

enum control_event_kind {
	CONTROL_CLIENT_BOUND,    /* a certificate was bound (or added for rotation) */
	CONTROL_CERT_UNBOUND,    /* one certificate removed; thumb set */
	CONTROL_CLIENT_UNBOUND,  /* whole client removed */
	CONTROL_CLIENT_REVOKED,  /* every active certificate revoked: cut live connections */
	CONTROL_CERT_REVOKED,    /* one certificate revoked (thumb set), the client keeps another */
	CONTROL_DENY_ADDED,      /* cidr set */
	CONTROL_DENY_REMOVED,    /* cidr set */
	CONTROL_LIMIT_CHANGED,   /* client_id, slot; limit the new one, NULL: back to the default */
	CONTROL_SRC_RATE_CHANGED, /* src_per_sec, src_burst; or src_default: the configuration's */
};

struct control_event {
	enum control_event_kind kind;
	const char *client_id;
	uint32_t slot;
	const uint8_t *thumb; /* CERT_THUMB_LEN bytes or NULL */
	const char *cidr;
	const struct registry_limit *limit; /* CONTROL_LIMIT_CHANGED; NULL: the default */
	uint64_t src_per_sec, src_burst;    /* CONTROL_SRC_RATE_CHANGED */
	bool src_default;                   /* CONTROL_SRC_RATE_CHANGED: back to bpf.src_rate */
};

struct control_hooks {
	void *arg;
	void (*on_event)(void *arg, const struct control_event *ev);
	/* Adds daemon-wide figures ("connections", "requests", BPF counters...) to obj. */
	void (*fill_stats)(void *arg, json_t *obj);
	/* Adds what the daemon knows of the client in `slot` beyond the registry (its XDP
	 * counters) to obj, the reply of `show`. May be NULL. */
	void (*fill_client)(void *arg, uint32_t slot, json_t *obj);
	/* `reload`: reads the TLS files again (reload.h) on behalf of uid. 0 with *result (what
	 * was read, what was revoked), or -1 with err naming the file at fault: nothing changed.
	 * NULL: the command is refused. */
	int (*reload)(void *arg, uid_t uid, json_t **result, char *err, size_t errlen);
	/* `rotate-kek`: re-wraps every data key of the hub's token store under the KEK label
	 * (created in the PKCS#11 token when missing); new records use it from then on. 0, or -1
	 * with err. NULL (no hub route): the command is refused. */
	int (*rotate_kek)(void *arg, const char *label, char *err, size_t errlen);
	/* `certs`: adds the daemon's own certificates (tls.cert, the https upstreams' client
	 * certificates) that expire by l->until to l. -1 when one cannot be read. May be NULL. */
	int (*own_certs)(void *arg, struct expiry_list *l);
};

struct policy_store;
struct config_upstream;

struct control_ctx {
	struct registry *reg;
	struct cert_store *trust; /* client CA bundle + CRL: a bound certificate must chain to it
				   * (replaced by each reload) */
	struct control_hooks hooks;
	/* Quota counters and circuit breakers (quota show/reset, breaker list/reset); NULL when
	 * no route has a quota and no upstream a breaker, and those commands are refused. */
	struct policy_store *policy;
	const struct config_upstream *upstreams; /* the breakers' upstreams: the store's indexes */
	unsigned n_upstreams;
};

/* What a peer may do. Ordered: each level may do everything the ones below may. */
enum control_access {
	CONTROL_ACCESS_NONE,  /* refused at connect */
	CONTROL_ACCESS_READ,  /* the commands that change nothing: list, show, audit, deny-list,
			       * stats, quota-show, breaker-list, certs */
	CONTROL_ACCESS_WRITE, /* every command */
};

/* Handles one request line (without the newline) from a peer with the given uid and access and
 * returns the response line (malloc'd, no newline). Never fails to answer: malformed input, and
 * a command the peer's access does not cover ("permission denied: ..."), get
 * {"ok":false,"error":"..."} and leave the registry unchanged. */
char *control_handle_line(struct control_ctx *ctx, const char *line, size_t len, uid_t uid,
			  enum control_access access);

/* The groups that may use the socket besides root and the daemon's own uid, looked up once at
 * start (config_load); CONTROL_NO_GROUP when not configured. */
#define CONTROL_NO_GROUP ((gid_t)-1)
struct control_groups {
	gid_t admin;    /* control_group: CONTROL_ACCESS_WRITE */
	gid_t readonly; /* control_readonly_group: CONTROL_ACCESS_READ */
};

/* The access of a peer from its credentials as SO_PEERCRED and SO_PEERGROUPS report them (the
 * process's uid, gid and supplementary groups at connect): WRITE for uid 0, daemon_uid and
 * members of groups->admin, READ for members of groups->readonly, NONE otherwise. */
enum control_access control_peer_access(const struct control_groups *groups, uid_t daemon_uid,
					 uid_t uid, gid_t gid, const gid_t *supplementary,
					 size_t n_supplementary);

struct control_server;
/* Creates the socket at path (absolute) and serves it on loop. The directories on the way are
 * opened without following symbolic links; each must belong to root or the daemon's user and not
 * be writable by group or others (sticky directories such as /tmp excepted, but never the
 * socket's own); missing ones are created 0750 (0755 when both groups are set). The socket is
 * 0600 without groups, 0660 with the one group configured as its group, 0666 with both (the
 * mode cannot name two groups; SO_PEERCRED decides for every connection anyway). -1 with err
 * (naming the directory or file at fault) on failure. */
int control_server_start(struct ev_loop *loop, const char *path,
			 const struct control_groups *groups, struct control_ctx *ctx,
			 struct control_server **out, char *err, size_t errlen);
/* Closes the socket and every control connection, and unlinks the socket if it is still its. */
void control_server_stop(struct control_server *srv);

#endif
