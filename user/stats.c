#include "stats.h"

struct stats g_stats;

void stats_fill(json_t *obj)
{
#define STATS_SET(name)                                                                  \
	json_object_set_new(obj, #name,                                                  \
			    json_integer((json_int_t)atomic_load_explicit(&g_stats.name,     \
									  memory_order_relaxed)));
	STATS_COUNTERS(STATS_SET)
#undef STATS_SET
}
