/* Hub mode's service: the one place the gateway talks OAuth to banks and touches the token
 * store (hub.h holds the protocol pieces it runs, token_store.h the store). Workers hand it
 * jobs (start a consent, take a callback, give a handle's access token, revoke a handle) and
 * go on serving other sessions; it answers each through the job's done callback, called on
 * one of its threads.
 *
 * One thread per bank (per upstream of a hub route), on purpose: a bank that is slow or down
 * delays only its own jobs, and a handle's jobs run in order, so two requests with the same
 * handle never refresh its token twice (the second finds the fresh one). A call to a bank
 * blocks its thread, bounded by that upstream's connect, TLS and response timeouts. The token
 * store's connection and the pending consents are shared under one lock, never held across a
 * bank call. */
#ifndef PSD2EDGE_HUB_SERVICE_H
#define PSD2EDGE_HUB_SERVICE_H

#include <openssl/ssl.h>

#include "buf.h"
#include "config.h"
#include "hub.h"
#include "policy.h"
#include "token_store.h"

enum hub_job_kind {
	HUB_JOB_CONSENT,  /* user -> 201 {authorization_url, state, expires_in} */
	HUB_JOB_CALLBACK, /* state, code -> the code exchanged at the bank -> 201 {handle, ...} */
	HUB_JOB_TOKEN,    /* handle -> bearer (refreshed when due), status 0 */
	HUB_JOB_REVOKE,   /* handle -> 204 */
	HUB_JOB_SET_TLS,  /* a reload's upstream contexts (hub_service_set_tls) */
};

struct hub_job {
	enum hub_job_kind kind;
	unsigned route;                        /* a hub route of the configuration */
	char client_id[HUB_CLIENT_ID_MAX + 1]; /* the backend's, proven */
	char user[HUB_USER_MAX + 1];           /* CONSENT */
	char handle[TOKEN_HANDLE_LEN + 1];     /* TOKEN, REVOKE */
	char *state, *code;                    /* CALLBACK */
	SSL_CTX *upstream_ctx[CONFIG_MAX_UPSTREAMS]; /* SET_TLS: one reference each */

	/* The answer. status 0 (TOKEN only): forward with bearer; otherwise the response. */
	int status;
	const char *error;       /* its "error" member */
	char description[256];   /* its "error_description" */
	struct buf body;         /* a 201's JSON body */
	char *bearer;            /* TOKEN: "Bearer <the bank's access token>" */
	bool bank_called;        /* the bank was called: bank_result tells how that went */
	enum exchange_result bank_result;

	/* The way back: done runs on the hub thread; owner is the waiting session's business
	 * (its worker's thread only; the hub never reads it). */
	void (*done)(struct hub_job *job, void *arg);
	void *done_arg;
	void *owner;
	struct hub_job *next;
};

struct hub_job *hub_job_new(enum hub_job_kind kind, unsigned route, const char *client_id);
/* Wipes what it holds of tokens and codes. */
void hub_job_free(struct hub_job *job);

struct hub_service;

/* Opens the token store, loads each hub route's id_token keys and starts the thread. ctx and
 * host_header: per configured upstream, as the workers use them (the service takes its own
 * references). NULL *out and no thread when no route is a hub route. */
int hub_service_start(const struct config *cfg, SSL_CTX *const ctx[],
		      const char *const host_header[], struct hub_service **out, char *err,
		      size_t errlen);
/* Queues job; its done callback runs once it is answered. */
void hub_service_submit(struct hub_service *h, struct hub_job *job);
/* Re-wraps the store's data keys under the KEK label (token_store_rotate_kek); the banks'
 * lanes wait for the store meanwhile. */
int hub_service_rotate_kek(struct hub_service *h, const char *label, char *err, size_t errlen);
/* A reload's upstream contexts (the TPP's QWAC, the banks' CAs): the service takes a reference
 * to each and uses them for its next bank calls. */
void hub_service_set_tls(struct hub_service *h, SSL_CTX *const ctx[]);
/* Finishes the job in progress, frees the queued ones unanswered, joins the thread, closes the
 * store. */
void hub_service_stop(struct hub_service *h);

#endif
