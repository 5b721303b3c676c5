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

enum client_id_source_kind { CID_SOURCE_FORM, CID_SOURCE_QUERY, CID_SOURCE_HEADER };
enum bpf_mode { BPF_MODE_OFF, BPF_MODE_NATIVE, BPF_MODE_GENERIC };

struct client_id_source {
	enum client_id_source_kind kind;
	char name[CONFIG_SOURCE_NAME_MAX + 1]; /* field, parameter or header name (headers lowercased) */
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

struct config {
	char *dir; /* directory of the config file */

	struct config_addr listen[CONFIG_MAX_LISTEN];
	unsigned n_listen;

	struct {
		char *cert, *key, *client_ca, *crl; /* absolute paths; crl may be NULL */
	} tls;

	struct {
		char *url;
		bool https;
		char host[256];     /* host as written in the URL (for SNI / Host / verification) */
		uint16_t port;
		char *base_path;    /* path prefix from the URL, "" when none */
		struct config_addr addr; /* resolved at load */
		char *ca, *cert, *key;   /* https only; absolute paths */
	} upstream;

	struct client_id_source client_id[CONFIG_MAX_CLIENT_ID_SOURCES];
	unsigned n_client_id;

	char *registry;       /* path of the SQLite database */
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

	unsigned workers;  /* optional "workers"; 0 = one per online CPU */
	char *access_log;  /* optional "access_log" path; NULL = stderr */
	char *log_level;   /* optional "log_level": debug|info|warn|error; default info */
};

/* Loads and validates FILE. On failure returns -1 and writes "<key path>: <problem>" into err,
 * e.g. "upstream.ca: file not found", "listen[1]: invalid address", "client_id[0]: unknown source
 * kind 'jwt'". The first wrong key wins. cfg is zeroed on entry and owns its strings. */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);
void config_free(struct config *cfg);

#endif
