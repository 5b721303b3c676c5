/* control_handle_line on arbitrary bytes: the answer must always be one JSON object line with
 * a boolean "ok". The registry lives on tmpfs (/dev/shm) and is created once; the trust store
 * is a throwaway self-signed CA, so bind requests reach verification and are refused there
 * (no fuzz input can carry a certificate signed by a key created at start-up). */
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"

static struct control_ctx ctx;
static char dir[64];

static void on_event(void *arg, const struct control_event *ev)
{
	(void)arg;
	/* Touch every field so that ASan sees a bad pointer. */
	volatile size_t n = 0;
	if (ev->client_id)
		n += strlen(ev->client_id);
	if (ev->cidr)
		n += strlen(ev->cidr);
	if (ev->thumb)
		n += ev->thumb[0] + ev->thumb[CERT_THUMB_LEN - 1];
	(void)n;
}

static void fill_stats(void *arg, json_t *obj)
{
	(void)arg;
	json_object_set_new(obj, "connections", json_integer(0));
}

static void cleanup(void)
{
	registry_close(ctx.reg);
	cert_store_free(ctx.trust);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "fuzz_control: cannot remove %s\n", dir);
}

static void write_ca(const char *path)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
				   (const unsigned char *)"fuzz CA", -1, -1, 0);
	X509_set_issuer_name(x, X509_get_subject_name(x));
	X509_set_pubkey(x, k);
	X509_sign(x, k, EVP_sha256());
	FILE *f = fopen(path, "w");
	if (!f || PEM_write_X509(f, x) != 1)
		abort();
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(k);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	snprintf(dir, sizeof(dir), "/dev/shm/fuzz_control.XXXXXX");
	if (!mkdtemp(dir)) {
		snprintf(dir, sizeof(dir), "/tmp/fuzz_control.XXXXXX");
		if (!mkdtemp(dir))
			abort();
	}
	char path[128], ca[128], err[256] = "";
	snprintf(path, sizeof(path), "%s/registry.db", dir);
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	write_ca(ca);
	if (registry_open(path, &ctx.reg, err, sizeof(err)) < 0 ||
	    cert_store_load(ca, NULL, &ctx.trust, err, sizeof(err)) < 0) {
		fprintf(stderr, "fuzz_control: %s\n", err);
		abort();
	}
	ctx.hooks.on_event = on_event;
	ctx.hooks.fill_stats = fill_stats;
	atexit(cleanup);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > CONTROL_MAX_LINE)
		return 0;
	char *resp = control_handle_line(&ctx, (const char *)data, size, 0, CONTROL_ACCESS_WRITE);
	if (!resp)
		abort();
	if (strchr(resp, '\n'))
		abort();
	json_t *r = json_loads(resp, 0, NULL);
	if (!json_is_object(r) || !json_is_boolean(json_object_get(r, "ok")))
		abort();
	json_t *err = json_object_get(r, "error");
	if (json_is_false(json_object_get(r, "ok")) != json_is_string(err))
		abort();
	json_decref(r);
	free(resp);
	return 0;
}
