/* The daemon's configuration: one JSON file (see README "Configuration"). Relative paths
 * are resolved against the file's directory; every value is validated at load. */
#ifndef PSD2EDGE_CONFIG_H
#define PSD2EDGE_CONFIG_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifndef CONFIG_MAX_LISTEN
#define CONFIG_MAX_LISTEN 16
#endif
#define CONFIG_MAX_CLIENT_ID_SOURCES 8
#define CONFIG_SOURCE_NAME_MAX 64
#define CONFIG_MAX_DROP_HEADERS 64
#define CONFIG_HEADER_NAME_MAX 64
#define CONFIG_MAX_LOG_MASKS 32

/* CID_SOURCE_JWT: a claim of the request's verified bearer token (needs the "jwt" object). */
enum client_id_source_kind { CID_SOURCE_FORM, CID_SOURCE_QUERY, CID_SOURCE_HEADER, CID_SOURCE_JWT };
enum bpf_mode { BPF_MODE_OFF, BPF_MODE_NATIVE, BPF_MODE_GENERIC };

struct client_id_source {
	enum client_id_source_kind kind;
	char name[CONFIG_SOURCE_NAME_MAX + 1]; /* field, parameter, header (lowercased) or claim name */
};

struct config_addr {
	struct sockaddr_storage addr;
	socklen_t addrlen;
	char text[80]; /* as written, e.g. "0.0.0.0:8443" or "[::]:8443" */
};

/* Bounds of every rate and burst of the XDP data plane, shared by the configuration and the
 * run-time limits stored in the registry (psd2edgectl limit). */
#define RATE_PPS_MAX 1000000000ULL          /* packets or new connections per second */
#define RATE_BPS_MAX 1000000000000ULL       /* bytes per second (8 Tbit/s) */
#define RATE_BURST_MAX 1000000000ULL        /* packets or connections */
#define RATE_BURST_BYTES_MIN 1514ULL        /* one full Ethernet frame */
#define RATE_BURST_BYTES_MAX 1000000000000ULL

/* Per-client policing (struct dataplane_client_limit's shape); 0 means unlimited. bps counts
 * bytes of whole frames per second (as tc); burst_bytes 0 means burst * 1514. */
struct config_client_rate {
	uint64_t pps, bps, burst, burst_bytes;
};

/* The data plane's rates (struct dataplane_limits's shape; psd2edged converts). */
struct config_rates {
	uint64_t src_per_sec;  /* new connections per source and second; 0 = off; default 50 */
	uint64_t src_burst;    /* >= 1; default 100 */
	uint8_t src_v4_prefix; /* sources sharing one bucket; default /32 */
	uint8_t src_v6_prefix; /* default /64 */
	struct config_client_rate client; /* default of every bound client; default unlimited */
};

#define CONFIG_EXPIRY_WARNING_DAYS 30 /* tls.expiry_warning_days by default */

#define CONFIG_MAX_UPSTREAMS 32 /* <= PSD2_MAX_BREAKERS */
#define CONFIG_MAX_ROUTES 128
#define CONFIG_NAME_MAX 63        /* upstream and quota names: [A-Za-z0-9_.-] */
#define CONFIG_ROUTE_PREFIX_MAX 255
#define CONFIG_QUOTA_KEY_MAX 128  /* longest request key value a quota counts by */
#define CONFIG_POOL_SIZE_DEFAULT 32
#define CONFIG_METRICS_LISTEN "127.0.0.1:9464"

/* Circuit breaker of one upstream ("circuit_breaker"); absent = never opens. */
struct config_breaker {
	bool enabled;
	uint32_t consecutive_failures; /* opens after this many failures in a row; 0 = not this way */
	uint32_t failure_ratio_pct;    /* or when failures/requests in the window reach this; 0 = off */
	uint32_t window_ms;            /* the ratio's window; default 10000 */
	uint32_t min_requests;         /* the ratio is judged from this many requests on; default 10 */
	uint32_t cooldown_ms;          /* open -> half-open; default 5000 */
	uint32_t probes;               /* admitted half-open; all must succeed to close; default 1 */
};

struct config_upstream {
	char name[CONFIG_NAME_MAX + 1];
	char *url;
	bool https;
	char host[256];          /* host as written in the URL (for SNI / Host / verification) */
	uint16_t port;
	char *base_path;         /* path prefix from the URL, "" when none */
	struct config_addr addr; /* resolved at load */
	char *ca, *cert, *key;   /* https only; absolute paths */
	uint32_t connect_timeout_ms;  /* TCP connect, 504 beyond; default limits.upstream_connect_timeout_ms */
	uint32_t tls_timeout_ms;      /* TLS handshake, 504 beyond; default = connect_timeout_ms */
	uint32_t response_timeout_ms; /* response head wait, 504 beyond; default limits.upstream_timeout_ms */
	uint32_t pool_size;           /* idle keep-alive connections kept per worker */
	struct config_breaker breaker;
};

enum config_ratelimit_headers {
	RATELIMIT_HEADERS_DRAFT, /* RateLimit-Policy + RateLimit (IETF draft); the default */
	RATELIMIT_HEADERS_X,     /* X-RateLimit-Limit / -Remaining / -Reset */
	RATELIMIT_HEADERS_NONE,
};

/* "quota" of a route; limit 0 = none. Routes whose quotas have the same name share counters. */
struct config_quota {
	uint64_t limit;          /* requests per window, 1 .. 1e9 */
	uint32_t window;         /* enum psd2_quota_window (include/psd2edge_abi.h) */
	uint32_t window_seconds; /* 60, 3600, 86400, or "rolling_seconds" (60 .. 31 days) */
	bool per_key;            /* counted per client_id and the value of key, not per client_id */
	struct client_id_source key; /* "header:x-account-id", "query:..." or "form:..." */
	char name[CONFIG_NAME_MAX + 1]; /* default: the route's prefix */
	enum config_ratelimit_headers headers;
};

/* "spike_arrest" of a route (GCRA per client_id, include/psd2edge_gcra.h); rate 0 = none. */
struct config_spike_arrest {
	uint64_t rate;      /* requests per period, 1 .. 1e6 */
	uint32_t period_ms; /* "per": "second" (1000) or "minute" (60000) */
	uint64_t burst;     /* requests that may come back to back, >= 1; default 1 */
};

/* JWS algorithms the "jwt" object may allow, as bits of config_jwt.algorithms. */
enum config_jwt_alg { CONFIG_JWT_PS256, CONFIG_JWT_ES256, CONFIG_JWT_RS256, CONFIG_JWT_N_ALGS };
#define CONFIG_JWT_DEFAULT_ALGS (1u << CONFIG_JWT_PS256 | 1u << CONFIG_JWT_ES256)
#define CONFIG_JWT_LEEWAY_MAX 300

/* The one list of their names ("alg" of a JWS header and of a JWK). */
static inline const char *config_jwt_alg_name(enum config_jwt_alg a)
{
	static const char *const names[CONFIG_JWT_N_ALGS] = {"PS256", "ES256", "RS256"};
	return names[a];
}

/* The top-level "jwt" object: how bearer tokens are verified (jwt.h). jwks NULL = no object. */
struct config_jwt {
	char *jwks;          /* absolute path of the JWK set file */
	char *issuer;        /* "iss" must equal it; NULL = not checked */
	char *audience;      /* "aud" (a string or an array) must hold it */
	uint32_t algorithms; /* bits of enum config_jwt_alg; default CONFIG_JWT_DEFAULT_ALGS */
	uint32_t leeway_s;   /* clock skew tolerated on exp and nbf; default 30 */
	bool require_cnf;    /* tokens must be bound to the TLS client certificate (RFC 8705 §3);
			      * default true */
};

#define CONFIG_HUB_REFRESH_MARGIN_S 60

/* "hub" of a route (hub mode, hub.h): the route's upstream is a bank that the gateway holds
 * OAuth tokens at on behalf of the TPP's backend, presenting the upstream's cert (the TPP's
 * QWAC) and trusting its ca. authorization_endpoint NULL = not a hub route. */
struct config_hub {
	char *authorization_endpoint; /* https URL the user's browser is sent to */
	char *token_endpoint;         /* path on the route's upstream, e.g. "/token" */
	char *client_id;              /* the TPP's client_id at the bank */
	char *redirect_uri;           /* as registered at the bank */
	char *scopes;                 /* "scopes" joined by spaces */
	uint32_t refresh_margin_s;    /* refresh an access token this long before it expires */
	/* The id_token's verification: jwks (the bank's keys) and issuer from the object,
	 * audience = client_id, default algorithms and leeway, no cnf. */
	struct config_jwt id_token;
};

struct config_route {
	char prefix[CONFIG_ROUTE_PREFIX_MAX + 1]; /* normalised, starts with '/', no trailing '/' but "/" */
	unsigned upstream;                        /* index into upstreams */
	bool verify_jwt;                          /* a valid bearer token is required (config.jwt) */
	uint32_t require_roles; /* PSD2_ROLE_* (qcstatement.h) the certificate must all have; 0: none */
	struct config_quota quota;
	struct config_spike_arrest spike_arrest;
	struct config_hub hub;
};

/* "token_store" (hub mode, token_store.h): where the bank tokens are kept and the KEK that
 * wraps their data keys. path NULL = no object (refused when a route has a hub). */
struct config_token_store {
	char *path;          /* SQLite database */
	char *pkcs11_module; /* NULL with kek_file */
	char *token_label;
	char *pin;           /* read from pin_file */
	char *key_label;
	char *kek_file;      /* the explicit fallback instead of PKCS#11 */
};

#define CONFIG_TOKEN_STORE_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define CONFIG_TOKEN_STORE_KEY_LABEL "psd2edge-kek"

struct config {
	char *dir; /* directory of the config file */

	struct config_addr listen[CONFIG_MAX_LISTEN];
	unsigned n_listen;

	struct {
		char *cert, *key, *client_ca, *crl; /* absolute paths; crl may be NULL */
		uint32_t expiry_warning_days; /* daily warning horizon; 0 = off */
	} tls;

	/* "upstreams" by name, plus the legacy "upstream" as the one named "default". */
	struct config_upstream upstreams[CONFIG_MAX_UPSTREAMS];
	unsigned n_upstreams;
	/* "routes", longest prefix first; without "routes", one route "/" to "default". */
	struct config_route routes[CONFIG_MAX_ROUTES];
	unsigned n_routes;

	struct client_id_source client_id[CONFIG_MAX_CLIENT_ID_SOURCES];
	unsigned n_client_id;

	struct config_jwt jwt;

	char *registry;       /* path of the SQLite database */
	struct config_token_store token_store;
	char *control_socket; /* path of the Unix socket */
	char *control_group;  /* optional: its members may use every control command */
	gid_t control_gid;    /* (gid_t)-1 when not set */
	char *control_readonly_group; /* optional: its members may use the read-only ones */
	gid_t control_readonly_gid;   /* (gid_t)-1 when not set */

	struct {
		char *pin_dir;
		char *interface; /* NULL when mode is off and none was given */
		enum bpf_mode mode;
		struct config_rates rates; /* "src_rate" and "client_rate"; always set */
	} bpf;

	/* Optional "limits" object; all have defaults. */
	struct {
		uint32_t max_header_bytes;   /* 431 beyond; default 16384 */
		uint32_t max_uri_bytes;      /* request target, 414 beyond; default 8192, <= max_header_bytes */
		uint64_t max_body_bytes;     /* 413 beyond; default 10 MiB */
		uint32_t max_form_bytes;     /* urlencoded bodies buffered for form:client_id; default 65536 */
		uint32_t header_timeout_ms;  /* slowloris cut-off for a request head; default 10000 */
		uint32_t idle_timeout_ms;    /* keep-alive idle; default 60000 */
		uint32_t upstream_connect_timeout_ms; /* default 5000 */
		uint32_t upstream_timeout_ms;         /* response head wait, 504 beyond; default 30000 */
		uint32_t drain_timeout_ms;   /* SIGTERM grace; default 10000 */
		uint32_t max_connections;    /* per worker; default 10000 */
		uint32_t min_body_rate;      /* request body bytes/s, 408 below; 0 = off; default 1024 */
		uint32_t body_rate_window_ms; /* the rate is measured over this; default 10000 */
	} limits;

	/* Optional "http" object: what a request may be and what of it is forwarded. */
	struct {
		uint64_t methods; /* HTTP_METHOD_BIT set (http.h); default HTTP_DEFAULT_METHODS */
		const char **drop_headers; /* client headers never forwarded, lower case */
		unsigned n_drop_headers;
	} http;

	/* Optional "metrics" object: the Prometheus endpoint (metrics_http.h). */
	struct {
		bool enabled;              /* false with "listen": "off" */
		struct config_addr listen; /* default CONFIG_METRICS_LISTEN */
	} metrics;

	unsigned workers;  /* optional "workers"; 0 = one per online CPU */
	char *access_log;  /* optional "access_log" path; NULL = stderr */
	char *log_level;   /* optional "log_level": debug|info|warn|error; default info */

	/* Optional "logs" object: "mask", POSIX extended regexes whose matches both logs hide
	 * (mask.h), checked at load; the daemon compiles them once at start. */
	struct {
		char **mask;
		size_t n_mask;
	} logs;
};

/* Loads and validates FILE. On failure returns -1 and writes "<key path>: <problem>" into err,
 * e.g. "upstream.ca: file not found", "listen[1]: invalid address", "client_id[0]: unknown source
 * kind 'jwt'". The first wrong key wins. cfg is zeroed on entry and owns its strings. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

#endif
