/* State shared by the main thread (control plane, signals) and the workers. Everything here is
 * set up before the workers start and read-only afterwards, except through the registry and the
 * deny set (their own locking), the stats atomics and each worker's command queue; the TLS
 * material, which the workers never read here, is the main thread's. */
#ifndef PSD2EDGE_DAEMON_H
#define PSD2EDGE_DAEMON_H

#include <openssl/ssl.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "cert.h"
#include "config.h"
#include "exchange.h"
#include "registry.h"

struct worker;
struct dataplane;
struct denyset;
struct policy_store;
struct hub_service;
struct control_ctx;
struct control_event;

/* What every worker shares about one configured upstream. */
struct daemon_upstream {
	SSL_CTX *ctx;          /* NULL for an http upstream */
	char host_header[300]; /* Host sent upstream: host[:port] */
};

struct daemon {
	struct config cfg;
	struct registry *reg;
	/* The TLS material (reload.h): replaced on the main thread by each reload, which hands
	 * the workers their own references. */
	struct cert_store *trust;
	SSL_CTX *server_ctx; /* owns its handshake fast path */
	struct daemon_upstream upstreams[CONFIG_MAX_UPSTREAMS]; /* as cfg.upstreams */
	struct policy_store *policy; /* quota and breaker state; NULL without bpf.pin_dir */
	struct route_table routes;   /* per-route policies and counters */
	struct hub_service *hub;     /* hub routes' token work; NULL without one */
	struct dataplane *dp;
	struct denyset *deny; /* the deny-list, checked at every accept (own locking) */
	struct worker *workers;
	unsigned n_workers;
	struct control_ctx *control; /* NULL until the control socket serves */
	atomic_bool draining;
};

/* Applies a committed registry change to the XDP maps and the workers' sessions (main thread):
 * the control plane's changes, and the revocations of a reload. */
void daemon_on_control_event(void *arg, const struct control_event *ev);

#endif
