/* Start-up rebuild of the XDP maps from the registry (the durable truth): client states by
 * slot and the deny-list. Kept apart from dataplane.c so that the data plane links without the
 * registry (tests, benchmarks). */
#include <stdlib.h>

#include "dataplane.h"
#include "log.h"
#include "registry.h"

int dataplane_sync_clients(struct dataplane *dp, struct registry *reg)
{
	struct registry_client *list = NULL;
	struct dataplane_client *dc = NULL;
	char **cidrs = NULL;
	size_t n = 0, n_cidrs = 0;
	int rc = -1;

	if (!dataplane_active(dp))
		return 0;
	if (registry_list_clients(reg, &list, &n) != REG_OK) {
		log_error("xdp: cannot list the registry's clients");
		return -1;
	}
	if (registry_deny_list(reg, &cidrs, &n_cidrs) != REG_OK) {
		log_error("xdp: cannot list the registry's deny-list");
		goto out;
	}
	dc = calloc(n ? n : 1, sizeof(*dc));
	if (!dc)
		goto out;
	for (size_t i = 0; i < n; i++) {
		const struct registry_client *c = &list[i];
		const struct registry_cert *newest = NULL, *active = NULL;

		/* certificates are newest first */
		for (unsigned j = 0; j < c->n_certs; j++) {
			if (!newest)
				newest = &c->certs[j];
			if (!active && c->certs[j].state == CERT_ACTIVE)
				active = &c->certs[j];
		}
		dc[i].slot = c->slot;
		dc[i].client_id = c->client_id;
		dc[i].thumb = active ? active->info.thumb : newest ? newest->info.thumb : NULL;
		dc[i].revoked = !active && newest;
		dc[i].limit = NULL; /* per-client limits: not in the registry yet */
	}
	rc = dataplane_sync(dp, dc, n, cidrs, n_cidrs);
out:
	free(dc);
	for (size_t i = 0; i < n_cidrs; i++)
		free(cidrs[i]);
	free(cidrs);
	registry_clients_free(list, n);
	return rc;
}
