/* psd2edged: the gateway daemon. Start-up order matters: the control socket appears only once
 * the listeners are bound and the registry is loaded, which is what "ready" means to operators
 * and tests. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "cert.h"
#include "cidr.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "daemon_metrics.h"
#include "dataplane.h"
#include "denyset.h"
#include "ev.h"
#include "expiry.h"
#include "jwt.h"
#include "log.h"
#include "mask.h"
#include "metrics.h"
#include "metrics_http.h"
#include "hub_service.h"
#include "policy_store.h"
#include "registry.h"
#include "reload.h"
#include "worker.h"

#define ERRLEN 512

static void usage(FILE *out)
{
	fprintf(out,
		"usage: psd2edged --config FILE           run in the foreground\n"
		"       psd2edged --check-config FILE     validate FILE and exit\n"
		"       psd2edged --detach --config FILE  remove the XDP program and pinned maps\n");
}

static void daemon_post_all(struct daemon *d, const struct worker_cmd *cmd)
{
	for (unsigned i = 0; i < d->n_workers; i++)
		worker_post(&d->workers[i], cmd);
}

/* A committed deny-list change reaches the accept check first, so that the workers refuse the
 * source from their next accept on, then the XDP maps. */
static void daemon_deny_change(struct daemon *d, const char *text, bool add)
{
	const char *why;
	struct cidr c;

	if (cidr_parse(text, &c, &why) < 0) {
		log_error("deny-list: '%s': %s", text, why);
		return;
	}
	if (add) {
		if (denyset_add(d->deny, &c) < 0)
			log_error("deny-list: out of memory: %s is not checked at accept until a "
				  "restart", text);
		dataplane_deny_add(d->dp, text);
	} else {
		denyset_del(d->deny, &c);
		dataplane_deny_del(d->dp, text);
	}
}

/* The accept check starts from the registry's deny-list. -1 when it cannot be loaded whole:
 * the daemon must not serve sources it was told to refuse. */
static int daemon_load_deny(struct daemon *d)
{
	char **cidrs = NULL;
	size_t n = 0;
	int rc = 0;

	d->deny = denyset_new();
	if (!d->deny || registry_deny_list(d->reg, &cidrs, &n) != REG_OK)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const char *why;
		struct cidr c;

		if (cidr_parse(cidrs[i], &c, &why) < 0)
			log_warn("deny-list: stored entry '%s' ignored: %s", cidrs[i], why);
		else if (denyset_add(d->deny, &c) < 0)
			rc = -1;
		free(cidrs[i]);
	}
	free(cidrs);
	return rc;
}

/* Runs on the control thread after the registry committed the change. The map is written
 * first so XDP drops the client's packets before the workers get round to closing its
 * connections. */
void daemon_on_control_event(void *arg, const struct control_event *ev)
{
	struct daemon *d = arg;
	struct worker_cmd cmd = {0};
	switch (ev->kind) {
	case CONTROL_CLIENT_BOUND:
		dataplane_client_set(d->dp, ev->slot, ev->client_id, ev->thumb, false);
		break;
	case CONTROL_CLIENT_REVOKED:
	case CONTROL_CLIENT_UNBOUND:
		if (ev->kind == CONTROL_CLIENT_REVOKED)
			dataplane_client_set(d->dp, ev->slot, ev->client_id, NULL, true);
		else
			dataplane_client_del(d->dp, ev->slot);
		cmd.kind = WORKER_CUT_CLIENT;
		snprintf(cmd.client_id, sizeof(cmd.client_id), "%s", ev->client_id);
		daemon_post_all(d, &cmd);
		break;
	case CONTROL_CERT_UNBOUND:
	case CONTROL_CERT_REVOKED: /* the client's other certificate keeps its slot live */
		cmd.kind = WORKER_CUT_CERT;
		memcpy(cmd.thumb, ev->thumb, CERT_THUMB_LEN);
		daemon_post_all(d, &cmd);
		break;
	case CONTROL_DENY_ADDED:
	case CONTROL_DENY_REMOVED:
		daemon_deny_change(d, ev->cidr, ev->kind == CONTROL_DENY_ADDED);
		break;
	case CONTROL_LIMIT_CHANGED:
		if (ev->limit) {
			struct dataplane_client_limit lim = {.pps = ev->limit->pps,
							     .bps = ev->limit->bps,
							     .burst = ev->limit->burst,
							     .burst_bytes = ev->limit->burst_bytes};
			dataplane_client_limit(d->dp, ev->slot, &lim);
		} else {
			dataplane_client_limit(d->dp, ev->slot, NULL);
		}
		break;
	case CONTROL_SRC_RATE_CHANGED:
		if (ev->src_default)
			dataplane_set_src_rate(d->dp, d->cfg.bpf.rates.src_per_sec,
					       d->cfg.bpf.rates.src_burst);
		else
			dataplane_set_src_rate(d->dp, ev->src_per_sec, ev->src_burst);
		break;
	}
}

/* The data plane's rates: bpf.src_rate and bpf.client_rate, with the source rate last set by
 * `psd2edgectl limit src` (stored in the registry) winning over the configuration's. */
static void daemon_dataplane_limits(struct daemon *d, struct dataplane_limits *lim)
{
	const struct config_rates *r = &d->cfg.bpf.rates;
	struct registry_src_rate src;

	dataplane_limits_default(lim);
	lim->src_per_sec = r->src_per_sec;
	lim->src_burst = r->src_burst;
	lim->src_v4_prefix = r->src_v4_prefix;
	lim->src_v6_prefix = r->src_v6_prefix;
	lim->client = (struct dataplane_client_limit){.pps = r->client.pps,
						      .bps = r->client.bps,
						      .burst = r->client.burst,
						      .burst_bytes = r->client.burst_bytes};
	int rc = registry_src_rate_get(d->reg, &src);
	if (rc == REG_OK) {
		log_info("bpf: source rate %llu/s burst %llu (set at run time, stored in the "
			 "registry)", (unsigned long long)src.per_sec, (unsigned long long)src.burst);
		lim->src_per_sec = src.per_sec;
		lim->src_burst = src.burst;
	} else if (rc != REG_ERR_NOT_FOUND) {
		log_warn("bpf: cannot read the stored source rate: using bpf.src_rate");
	}
}

static void daemon_fill_client(void *arg, uint32_t slot, json_t *obj)
{
	struct daemon *d = arg;
	dataplane_fill_client(d->dp, slot, obj);
}

/* The same series as GET /metrics (metrics.h). */
static void daemon_fill_stats(void *arg, json_t *obj)
{
	(void)arg;
	if (metrics_render_json(obj) < 0)
		log_warn("stats: out of memory: some figures are missing");
}

static int daemon_wait_workers(struct daemon *d)
{
	struct timespec deadline;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += d->cfg.limits.drain_timeout_ms / 1000;
	deadline.tv_nsec += (long)(d->cfg.limits.drain_timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	int late = 0;
	for (unsigned i = 0; i < d->n_workers; i++)
		if (pthread_timedjoin_np(d->workers[i].thread, NULL, &deadline) != 0)
			late++;
	return late;
}

/* SIGHUP reloads the TLS material (reload.h; the log says what happened), any other signal
 * drains. */
static void daemon_on_signal(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)mask;
	struct daemon *d = arg;
	struct signalfd_siginfo si;
	char err[ERRLEN];
	if (read(fd, &si, sizeof(si)) != sizeof(si))
		return;
	if (si.ssi_signo == SIGHUP) {
		daemon_reload(d, "SIGHUP", (uid_t)si.ssi_uid, NULL, err, sizeof(err));
		return;
	}
	log_info("signal %u: draining", si.ssi_signo);
	ev_stop(loop);
}

/* The certificates the daemon presents, as loaded (the last reload's): tls.cert and each https
 * upstream's cert. */
static int daemon_own_certs(void *arg, struct expiry_list *l)
{
	struct daemon *d = arg;
	if (expiry_add(l, EXPIRY_SERVER, "", SSL_CTX_get0_certificate(d->server_ctx)) < 0)
		return -1;
	for (unsigned i = 0; i < d->cfg.n_upstreams; i++) {
		X509 *x = d->upstreams[i].ctx ? SSL_CTX_get0_certificate(d->upstreams[i].ctx) : NULL;
		if (x && expiry_add(l, EXPIRY_UPSTREAM, d->cfg.upstreams[i].name, x) < 0)
			return -1;
	}
	return 0;
}

#define EVERY_DAY_MS (24 * 3600 * 1000)

/* One warning a day for each certificate within tls.expiry_warning_days of its end. */
static int64_t daemon_expiry_warn(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	(void)loop;
	(void)t;
	struct daemon *d = arg;
	int64_t now = (int64_t)time(NULL);
	struct expiry_list l;
	expiry_list_init(&l, now, d->cfg.tls.expiry_warning_days);
	if (expiry_add_bound(&l, d->reg) < 0 || daemon_own_certs(d, &l) < 0)
		log_warn("certificate expiry: some certificates could not be read");
	expiry_list_sort(&l);
	expiry_log(&l, now);
	expiry_list_free(&l);
	return EVERY_DAY_MS;
}

static int daemon_reload_hook(void *arg, uid_t uid, json_t **result, char *err, size_t errlen)
{
	return daemon_reload(arg, "psd2edgectl reload", uid, result, err, errlen);
}

static void daemon_on_link_event(struct ev_loop *loop, int fd, int mask, void *arg)
{
	(void)loop;
	(void)fd;
	(void)mask;
	dataplane_link_ready(arg);
}

#define EVERY_SECOND_MS 1000

/* The clients map's counters, and the quota checkpoint: a power cut loses at most the
 * requests counted in the last second. */
static int daemon_rotate_kek_hook(void *arg, const char *label, char *err, size_t errlen)
{
	struct daemon *d = arg;
	return hub_service_rotate_kek(d->hub, label, err, errlen);
}

static int64_t daemon_on_second(struct ev_loop *loop, struct ev_timer *t, void *arg)
{
	struct daemon *d = arg;
	(void)loop;
	(void)t;
	dataplane_client_counters_refresh(d->dp);
	if (d->policy)
		policy_store_checkpoint(d->policy);
	return EVERY_SECOND_MS;
}

static enum log_level parse_log_level(const char *s)
{
	if (!s || strcmp(s, "info") == 0)
		return LOG_INFO;
	if (strcmp(s, "debug") == 0)
		return LOG_DEBUG;
	if (strcmp(s, "warn") == 0)
		return LOG_WARN;
	return LOG_ERROR;
}

static void upstream_host_header(const struct config_upstream *u, char *out, size_t len)
{
	bool v6 = strchr(u->host, ':') != NULL;
	bool default_port = u->port == (u->https ? 443 : 80);
	snprintf(out, len, "%s%s%s", v6 ? "[" : "", u->host, v6 ? "]" : "");
	if (!default_port) {
		size_t n = strlen(out);
		snprintf(out + n, len - n, ":%u", u->port);
	}
}

static void daemon_upstream_hosts(struct daemon *d)
{
	for (unsigned i = 0; i < d->cfg.n_upstreams; i++)
		upstream_host_header(&d->cfg.upstreams[i], d->upstreams[i].host_header,
				     sizeof(d->upstreams[i].host_header));
}

/* Quota counters and breakers live in pinned maps; without either, nothing is opened. */
static bool daemon_needs_policy_store(const struct config *cfg)
{
	for (unsigned i = 0; i < cfg->n_routes; i++)
		if (cfg->routes[i].quota.limit)
			return true;
	for (unsigned i = 0; i < cfg->n_upstreams; i++)
		if (cfg->upstreams[i].breaker.enabled)
			return true;
	return false;
}

static int daemon_run(struct daemon *d)
{
	char err[ERRLEN];
	int rc = 1;
	struct ev_loop *loop = NULL;
	struct control_server *ctl = NULL;
	struct metrics_http *metrics = NULL;
	int sfd = -1;
	unsigned started = 0;
	struct mask *log_mask = NULL;

	log_set_level(parse_log_level(d->cfg.log_level));
	if (log_open_access(d->cfg.access_log) < 0) {
		log_error("access_log: %s", strerror(errno));
		return 1;
	}
	if (daemon_tls_open(d, err, sizeof(err)) < 0) {
		log_error("%s", err);
		return 1;
	}
	daemon_upstream_hosts(d);
	size_t bad_mask;
	log_mask = mask_create((const char *const *)d->cfg.logs.mask, d->cfg.logs.n_mask,
			       &bad_mask, err, sizeof(err));
	if (!log_mask) {
		log_error("logs.mask[%zu]: %s", bad_mask, err);
		goto out;
	}
	log_set_mask(log_mask);
	if (registry_open(d->cfg.registry, &d->reg, err, sizeof(err)) < 0) {
		log_error("registry: %s", err);
		goto out;
	}
	/* Before the XDP maps are built from the registry, so that they hold its revocations. */
	if (daemon_tls_reverify(d, err, sizeof(err)) < 0) {
		log_error("tls: %s", err);
		goto out;
	}
	if (daemon_load_deny(d) < 0) {
		log_error("registry: cannot load the deny-list");
		goto out;
	}
	if (daemon_needs_policy_store(&d->cfg) &&
	    policy_store_open(&d->cfg, d->reg, &d->policy, err, sizeof(err)) < 0) {
		log_error("%s", err);
		goto out;
	}
	struct dataplane_limits lim;
	daemon_dataplane_limits(d, &lim);
	if (dataplane_open_limits(&d->cfg, &lim, &d->dp, err, sizeof(err)) < 0) {
		log_error("bpf: %s", err);
		goto out;
	}
	if (dataplane_sync_clients(d->dp, d->reg) < 0)
		log_warn("bpf: the maps could not be fully rebuilt from the registry");

	if (route_table_init(&d->routes, &d->cfg, d->policy, err, sizeof(err)) < 0) {
		log_error("%s", err);
		goto out;
	}
	SSL_CTX *up_ctx[CONFIG_MAX_UPSTREAMS];
	const char *up_host[CONFIG_MAX_UPSTREAMS];
	for (unsigned i = 0; i < d->cfg.n_upstreams; i++) {
		up_ctx[i] = d->upstreams[i].ctx;
		up_host[i] = d->upstreams[i].host_header;
	}
	if (hub_service_start(&d->cfg, up_ctx, up_host, &d->hub, err, sizeof(err)) < 0) {
		log_error("%s", err);
		goto out;
	}
	d->n_workers = d->cfg.workers ? d->cfg.workers : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
	if (d->n_workers < 1)
		d->n_workers = 1;
	d->workers = calloc(d->n_workers, sizeof(*d->workers));
	if (!d->workers)
		goto out;
	for (unsigned i = 0; i < d->n_workers; i++) {
		if (worker_init(&d->workers[i], d, i, err, sizeof(err)) < 0) {
			log_error("%s", err);
			goto out;
		}
	}

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	/* Blocked before any thread exists so only the signalfd ever sees them. */
	pthread_sigmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	loop = ev_loop_new(1024);
	if (sfd < 0 || !loop || ev_set(loop, sfd, EV_READ, daemon_on_signal, d) < 0) {
		log_error("signals: %s", strerror(errno));
		goto out;
	}
	int link_fd = dataplane_link_fd(d->dp);
	if (link_fd >= 0 && ev_set(loop, link_fd, EV_READ, daemon_on_link_event, d->dp) < 0)
		log_warn("bpf: interface notifications unavailable: %s", strerror(errno));
	if ((dataplane_active(d->dp) || d->policy) &&
	    !ev_timer_add(loop, EVERY_SECOND_MS, daemon_on_second, d))
		log_warn("bpf: no timer for the clients map's counters and the quota checkpoint: %s",
			 strerror(errno));
	for (; started < d->n_workers; started++) {
		if (worker_start(&d->workers[started]) < 0) {
			log_error("cannot start worker %u", started);
			goto out;
		}
	}

	if (daemon_metrics_start(d) < 0) {
		log_error("metrics: no room for the daemon's sources");
		goto out;
	}
	if (d->cfg.metrics.enabled &&
	    metrics_http_start(loop, &d->cfg.metrics.listen, &metrics, err, sizeof(err)) < 0) {
		log_error("metrics.listen: %s", err);
		goto out;
	}
	struct control_ctx cctx = {
		.reg = d->reg,
		.trust = d->trust,
		.hooks = {.arg = d, .on_event = daemon_on_control_event, .fill_stats = daemon_fill_stats,
			  .fill_client = daemon_fill_client, .reload = daemon_reload_hook,
			  .own_certs = daemon_own_certs,
			  .rotate_kek = d->hub ? daemon_rotate_kek_hook : NULL},
		.policy = d->policy,
		.upstreams = d->cfg.upstreams,
		.n_upstreams = d->cfg.n_upstreams,
	};
	struct control_groups groups = {.admin = d->cfg.control_gid,
					.readonly = d->cfg.control_readonly_gid};
	if (control_server_start(loop, d->cfg.control_socket, &groups, &cctx, &ctl, err,
				 sizeof(err)) < 0) {
		log_error("control_socket: %s", err);
		goto out;
	}
	d->control = &cctx;
	/* The first warnings come before "ready", the next ones a day apart. */
	if (d->cfg.tls.expiry_warning_days &&
	    !ev_timer_add(loop, daemon_expiry_warn(loop, NULL, d), daemon_expiry_warn, d))
		log_warn("tls.expiry_warning_days: no timer for the daily warning: %s",
			 strerror(errno));
	log_info("ready: %u workers, %u listeners, xdp %s, control socket %s, metrics %s",
		 d->n_workers, d->cfg.n_listen, dataplane_mode(d->dp), d->cfg.control_socket,
		 d->cfg.metrics.enabled ? d->cfg.metrics.listen.text : "off");

	ev_run(loop);
	rc = 0;

out:
	if (ctl)
		control_server_stop(ctl); /* no changes during the drain */
	metrics_http_stop(metrics);
	metrics_sources_clear(); /* their state goes below */
	d->control = NULL;
	if (started) {
		atomic_store(&d->draining, true);
		struct worker_cmd drain = {.kind = WORKER_DRAIN};
		for (unsigned i = 0; i < started; i++)
			worker_post(&d->workers[i], &drain);
		if (daemon_wait_workers(d) > 0) {
			/* In-flight requests outlived the drain timeout: exit without them. */
			log_warn("drain timeout: exiting with requests in flight");
			if (d->policy)
				policy_store_checkpoint(d->policy);
			_exit(rc);
		}
		log_info("drained");
	}
	hub_service_stop(d->hub); /* its last answers wait in the workers' queues */
	for (unsigned i = 0; d->workers && i < d->n_workers; i++)
		if (d->workers[i].loop)
			worker_free(&d->workers[i]);
	free(d->workers);
	route_table_free(&d->routes);
	denyset_free(d->deny);
	if (loop)
		ev_loop_free(loop);
	if (sfd >= 0)
		close(sfd);
	/* The program and pinned maps stay: enforcement has no gap across a restart. */
	dataplane_close(d->dp, false);
	policy_store_close(d->policy); /* the last checkpoint */
	registry_close(d->reg);
	daemon_tls_close(d);
	log_set_mask(NULL);
	mask_free(log_mask);
	return rc;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"config", required_argument, NULL, 'c'},
		{"check-config", required_argument, NULL, 'k'},
		{"detach", no_argument, NULL, 'd'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	const char *config_path = NULL, *check_path = NULL;
	bool detach = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			config_path = optarg;
			break;
		case 'k':
			check_path = optarg;
			break;
		case 'd':
			detach = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc || (!config_path && !check_path)) {
		usage(stderr);
		return 2;
	}

	static struct daemon d;
	char err[ERRLEN];
	const char *path = check_path ? check_path : config_path;
	if (config_load(path, &d.cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "psd2edged: %s\n", err);
		return 1;
	}
	if (check_path) {
		/* config_load sees a JWK set; its keys are read as the start reads them. */
		struct jwt_verifier *jwt = NULL;
		if (d.cfg.jwt.jwks && !(jwt = jwt_verifier_new(&d.cfg.jwt, err, sizeof(err)))) {
			fprintf(stderr, "psd2edged: %s\n", err);
			config_free(&d.cfg);
			return 1;
		}
		jwt_verifier_free(jwt);
		printf("%s: ok\n", check_path);
		config_free(&d.cfg);
		return 0;
	}
	if (detach) {
		int rc = dataplane_detach(&d.cfg, err, sizeof(err));
		if (rc < 0)
			fprintf(stderr, "psd2edged: --detach: %s\n", err);
		config_free(&d.cfg);
		return rc < 0 ? 1 : 0;
	}
	int rc = daemon_run(&d);
	config_free(&d.cfg);
	return rc;
}
