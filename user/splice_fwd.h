/* Body forwarding between two sockets through a pipe with splice(2): the bytes never enter
 * userspace. Usable when the source is plain TCP or has kTLS RX (the kernel decrypts) and
 * the destination is plain TCP or has kTLS TX (the kernel encrypts); see ktls.h. Headers
 * still go through the HTTP parser; only a body of known length (Content-Length, or one
 * chunk's payload) is spliced.
 *
 * USAGE CONTRACT for the connection layer
 *  - Both fds non-blocking. Before splicing a body, hand the bytes the HTTP parser already
 *    read past the headers to the destination yourself and subtract them from the length.
 *  - splice_fwd_init(&f, len, in_is_ktls) once per connection pair (creates the pipe);
 *    splice_fwd_reset(&f, len) for the next body; splice_fwd_close(&f) at the end.
 *  - Call splice_fwd_run(&f, in_fd, out_fd, budget) whenever in_fd is readable or out_fd
 *    writable, and act on the result:
 *      SPLICE_FWD_DONE        all len bytes delivered to out_fd (pipe empty).
 *      SPLICE_FWD_WANT_READ   in_fd has nothing now: wait for EPOLLIN on in_fd.
 *      SPLICE_FWD_WANT_WRITE  out_fd is full: wait for EPOLLOUT on out_fd (stop watching
 *                             in_fd meanwhile: the pipe already holds data).
 *      SPLICE_FWD_YIELD       budget bytes moved in this call: call again after serving
 *                             other connections (fairness between 64 MiB bodies).
 *      SPLICE_FWD_EOF         in_fd reached end of stream before len bytes (pipe empty).
 *      SPLICE_FWD_CONTROL     in_fd has kTLS RX and the next record is not application data
 *                             (alert, KeyUpdate, ...): call ktls_recv() on in_fd; it returns
 *                             0 (close_notify: treat as EOF), -1 (close; KTLS_EKEYUPDATE
 *                             cleanly) or data (at most f.remaining bytes belong to this
 *                             body): write it to out_fd yourself, call
 *                             splice_fwd_note_outside(&f, n), then call run again.
 *      SPLICE_FWD_ERROR       errno says why (EPIPE/ECONNRESET from out_fd, EIO, ...).
 *    f.moved counts bytes delivered, f.remaining bytes not yet taken from in_fd, f.in_pipe
 *    bytes taken but not yet delivered.
 *  - A kTLS destination fills records itself; no MSG_MORE corking is used, so nothing is
 *    held back when the source stalls.
 */
#ifndef PSD2EDGE_SPLICE_FWD_H
#define PSD2EDGE_SPLICE_FWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SPLICE_FWD_PIPE_SIZE (1u << 20) /* requested pipe capacity (F_SETPIPE_SZ) */
#define SPLICE_FWD_BUDGET (4u << 20)    /* a reasonable per-call budget */

enum splice_fwd_result {
	SPLICE_FWD_DONE,
	SPLICE_FWD_WANT_READ,
	SPLICE_FWD_WANT_WRITE,
	SPLICE_FWD_YIELD,
	SPLICE_FWD_EOF,
	SPLICE_FWD_CONTROL,
	SPLICE_FWD_ERROR,
};

struct splice_fwd {
	int pipe_rd, pipe_wr;
	size_t pipe_size;   /* capacity actually granted */
	size_t in_pipe;     /* taken from in_fd, not yet delivered */
	uint64_t remaining; /* still to take from in_fd */
	uint64_t moved;     /* delivered to out_fd */
	bool in_ktls;       /* in_fd has kTLS RX: EINVAL from splice means a control record */
};

/* 0, or -1 with errno (pipe creation). */
int splice_fwd_init(struct splice_fwd *f, uint64_t len, bool in_ktls);
/* Starts the next body on the same pipe; the pipe must be empty (after DONE). */
void splice_fwd_reset(struct splice_fwd *f, uint64_t len, bool in_ktls);
/* budget: bytes to deliver before SPLICE_FWD_YIELD (0: no limit). */
enum splice_fwd_result splice_fwd_run(struct splice_fwd *f, int in_fd, int out_fd,
				      uint64_t budget);
/* Accounts n body bytes the caller moved itself (after SPLICE_FWD_CONTROL). */
void splice_fwd_note_outside(struct splice_fwd *f, uint64_t n);
void splice_fwd_close(struct splice_fwd *f);
const char *splice_fwd_result_name(enum splice_fwd_result r);

#endif
