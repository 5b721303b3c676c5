/* psd2edgectl's side of the control socket: connect, send one JSON line, read one JSON line,
 * all within a deadline. No OpenSSL, no daemon modules: only buf. */
#ifndef PSD2EDGE_CTL_CLIENT_H
#define PSD2EDGE_CTL_CLIENT_H

#include <stddef.h>

#define CTL_DEFAULT_SOCKET "/run/psd2edge/control.sock"
#define CTL_SOCKET_ENV "PSD2EDGE_SOCKET"
#define CTL_DEFAULT_TIMEOUT_MS 30000
#define CTL_MAX_RESPONSE (64u * 1024 * 1024)

enum ctl_status {
	CTL_OK = 0,
	CTL_ERR_CONNECT = -1, /* no socket, nobody listening, permission denied */
	CTL_ERR_IO = -2,      /* the connection broke or the daemon closed it before answering */
	CTL_ERR_TIMEOUT = -3, /* no complete answer before the deadline */
};

/* Sends line (no newline; one is added) to the daemon at path and stores its one-line answer
 * (malloc'd, NUL-terminated, newline stripped) in *resp. On failure err says why. */
int ctl_request(const char *path, const char *line, size_t len, int timeout_ms, char **resp,
		char *err, size_t errlen);

#endif
