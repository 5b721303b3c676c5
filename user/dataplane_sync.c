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
	struct dataplane_client_limit *lims = NULL;
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
	lims = calloc(n ? n : 1, sizeof(*lims));
	if (!dc || !lims)
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
		lims[i] = (struct dataplane_client_limit){c->limit.pps, c->limit.bps, c->limit.burst,
							  c->limit.burst_bytes};
		dc[i].limit = c->has_limit ? &lims[i] : NULL;
	}
	rc = dataplane_sync(dp, dc, n, cidrs, n_cidrs);
	/* dataplane_sync keeps a slot's limit when the client is unchanged; a client without one of
	 * its own gets the default of this start's configuration (bpf.client_rate may have changed). */
	for (size_t i = 0; i < n; i++)
		if (!dc[i].limit && dataplane_client_limit(dp, dc[i].slot, NULL))
			rc = -1;
out:
	free(lims);
	free(dc);
	for (size_t i = 0; i < n_cidrs; i++)
		free(cidrs[i]);
	free(cidrs);
	registry_clients_free(list, n);
	return rc;
}
