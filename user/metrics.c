#include "metrics.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct family_def {
	const char *id;
	enum metric_type type;
	const char *json;
	const char *help;
	const char *label[METRICS_MAX_LABELS]; /* NULL after the last */
};

static const struct family_def families[METRIC_FAMILY_COUNT] = {
#define METRIC_FAMILY_DEF(id, type, json, help, ...)                                       \
	[METRIC_##id] = {#id, METRIC_##type, json, help, {__VA_ARGS__}},
	METRICS_FAMILIES(METRIC_FAMILY_DEF)
#undef METRIC_FAMILY_DEF
};

static const struct {
	enum metric_family family;
	const char *value; /* of the family's one label, NULL when it has none */
} cells[METRIC_CELL_COUNT] = {
#define METRIC_CELL_DEF(family, cell, value) [METRIC_CELL_##cell] = {METRIC_##family, value},
	METRICS_CELLS(METRIC_CELL_DEF)
#undef METRIC_CELL_DEF
};

static const uint64_t duration_bounds_us[METRICS_DURATION_BUCKETS] = {METRICS_DURATION_BOUNDS_US};
static const char *const status_classes[METRICS_STATUS_CLASSES] = {"none", "1xx", "2xx",
								    "3xx",  "4xx", "5xx"};
static const char *const decisions[2] = {"passed", "refused"};

_Thread_local struct metrics_shard *metrics_thread_shard;

/* Threads that could not get a shard of their own count here (atomically, like everyone). */
static struct metrics_shard shared_shard;

static struct {
	pthread_mutex_t lock; /* the shard list */
	struct metrics_shard *shards;
	/* Rendering thread only (metrics_routes_set before the workers start). */
	struct metrics_route routes[METRICS_MAX_ROUTES];
	unsigned n_routes;
	struct {
		metrics_source_fn *fn;
		void *arg;
	} source[METRICS_MAX_SOURCES];
	unsigned n_sources;
} state = {.lock = PTHREAD_MUTEX_INITIALIZER, .shards = &shared_shard};

struct metrics_shard *metrics_shard_attach(void)
{
	struct metrics_shard *s = aligned_alloc(_Alignof(struct metrics_shard), sizeof(*s));
	if (!s) {
		metrics_thread_shard = &shared_shard;
		return &shared_shard;
	}
	memset(s, 0, sizeof(*s));
	pthread_mutex_lock(&state.lock);
	s->next = state.shards;
	state.shards = s;
	pthread_mutex_unlock(&state.lock);
	metrics_thread_shard = s;
	return s;
}

void metrics_route_duration(unsigned route, int64_t us)
{
	uint64_t v = us > 0 ? (uint64_t)us : 0;
	unsigned b = 0;
	while (b < METRICS_DURATION_BUCKETS && v > duration_bounds_us[b])
		b++;
	struct metrics_histogram *h = &metrics_shard()->route[route].duration;
	atomic_fetch_add_explicit(&h->bucket[b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&h->sum_us, v, memory_order_relaxed);
}

void metrics_routes_set(const struct metrics_route *routes, unsigned n)
{
	if (n > METRICS_MAX_ROUTES)
		n = METRICS_MAX_ROUTES;
	if (n)
		memcpy(state.routes, routes, n * sizeof(*routes));
	state.n_routes = n;
	pthread_mutex_lock(&state.lock);
	for (struct metrics_shard *s = state.shards; s; s = s->next)
		memset(s->route, 0, sizeof(s->route));
	pthread_mutex_unlock(&state.lock);
}

int metrics_source_add(metrics_source_fn *fn, void *arg)
{
	if (state.n_sources == METRICS_MAX_SOURCES)
		return -1;
	state.source[state.n_sources].fn = fn;
	state.source[state.n_sources].arg = arg;
	state.n_sources++;
	return 0;
}

void metrics_sources_clear(void)
{
	state.n_sources = 0;
}

void metrics_family_name(enum metric_family f, char out[METRICS_NAME_MAX])
{
	snprintf(out, METRICS_NAME_MAX, "psd2edge_%s%s", families[f].id,
		 families[f].type == METRIC_COUNTER ? "_total" : "");
}

/* --- snapshot: every series with its labels and value, as of one render ----------------- */

struct histogram_sum {
	uint64_t bucket[METRICS_DURATION_BUCKETS + 1]; /* not cumulative */
	uint64_t count, sum_us;
};

struct sample {
	enum metric_family family;
	const char *label[METRICS_MAX_LABELS]; /* into mem */
	int64_t value;
	struct histogram_sum *hist; /* histograms only; into mem */
	char *mem;
};

struct snapshot {
	struct metrics_sink sink; /* first: the sink sources see is the snapshot */
	struct sample *s;
	size_t n, cap;
	bool failed; /* out of memory: the render fails */
};

static unsigned family_labels(enum metric_family f)
{
	unsigned n = 0;
	while (n < METRICS_MAX_LABELS && families[f].label[n])
		n++;
	return n;
}

/* Copies the labels (and hist) into the sample's own memory. */
static void snapshot_add(struct snapshot *snap, enum metric_family f, int64_t value,
			 const char *const *labels, const struct histogram_sum *hist)
{
	if (snap->failed || (unsigned)f >= METRIC_FAMILY_COUNT)
		return;
	if (snap->n == snap->cap) {
		size_t cap = snap->cap ? snap->cap * 2 : 256;
		struct sample *p = realloc(snap->s, cap * sizeof(*p));
		if (!p) {
			snap->failed = true;
			return;
		}
		snap->s = p;
		snap->cap = cap;
	}
	unsigned n = family_labels(f);
	size_t len = hist ? sizeof(*hist) : 0, lens[METRICS_MAX_LABELS];
	const char *text[METRICS_MAX_LABELS];
	for (unsigned i = 0; i < n; i++) {
		text[i] = labels && labels[i] ? labels[i] : "";
		len += (lens[i] = strlen(text[i])) + 1;
	}
	struct sample *s = &snap->s[snap->n];
	memset(s, 0, sizeof(*s));
	s->mem = malloc(len ? len : 1);
	if (!s->mem) {
		snap->failed = true;
		return;
	}
	char *p = s->mem;
	if (hist) {
		s->hist = memcpy(p, hist, sizeof(*hist));
		p += sizeof(*hist);
	}
	for (unsigned i = 0; i < n; i++) {
		s->label[i] = memcpy(p, text[i], lens[i] + 1);
		p += lens[i] + 1;
	}
	s->family = f;
	s->value = value;
	snap->n++;
}

/* Sources emit plain values: a histogram's series come from the routes only. */
static void snapshot_emit(struct metrics_sink *sink, enum metric_family f, int64_t value,
			  const char *const *labels)
{
	if ((unsigned)f < METRIC_FAMILY_COUNT && families[f].type != METRIC_HISTOGRAM)
		snapshot_add((struct snapshot *)sink, f, value, labels, NULL);
}

static uint64_t load(const _Atomic uint64_t *v)
{
	return atomic_load_explicit(v, memory_order_relaxed);
}

static void collect_cells(struct snapshot *snap)
{
	uint64_t sum[METRIC_CELL_COUNT] = {0};
	pthread_mutex_lock(&state.lock);
	for (const struct metrics_shard *s = state.shards; s; s = s->next)
		for (unsigned c = 0; c < METRIC_CELL_COUNT; c++)
			sum[c] += load(&s->cell[c]);
	pthread_mutex_unlock(&state.lock);
	for (unsigned c = 0; c < METRIC_CELL_COUNT; c++)
		snapshot_add(snap, cells[c].family, (int64_t)sum[c],
			     cells[c].value ? &cells[c].value : NULL, NULL);
}

/* The route's counts summed over the shards (plain numbers in the same layout). */
struct route_sum {
	uint64_t requests, responses[METRICS_STATUS_CLASSES], policy[METRICS_ROUTE_POLICIES][2];
	struct histogram_sum duration;
};

static void route_sum(unsigned r, struct route_sum *t)
{
	memset(t, 0, sizeof(*t));
	pthread_mutex_lock(&state.lock);
	for (const struct metrics_shard *s = state.shards; s; s = s->next) {
		const struct metrics_route_cells *c = &s->route[r];
		t->requests += load(&c->requests);
		for (unsigned k = 0; k < METRICS_STATUS_CLASSES; k++)
			t->responses[k] += load(&c->responses[k]);
		for (unsigned k = 0; k < METRICS_ROUTE_POLICIES; k++)
			for (unsigned d = 0; d < 2; d++)
				t->policy[k][d] += load(&c->policy[k][d]);
		for (unsigned b = 0; b <= METRICS_DURATION_BUCKETS; b++)
			t->duration.bucket[b] += load(&c->duration.bucket[b]);
		t->duration.sum_us += load(&c->duration.sum_us);
	}
	pthread_mutex_unlock(&state.lock);
	for (unsigned b = 0; b <= METRICS_DURATION_BUCKETS; b++)
		t->duration.count += t->duration.bucket[b];
}

static void collect_routes(struct snapshot *snap)
{
	for (unsigned r = 0; r < state.n_routes; r++) {
		const struct metrics_route *m = &state.routes[r];
		struct route_sum t;
		route_sum(r, &t);
		const char *const *who = METRIC_LABELS(m->prefix, m->upstream);
		snapshot_add(snap, METRIC_route_requests, (int64_t)t.requests, who, NULL);
		for (unsigned k = 0; k < METRICS_STATUS_CLASSES; k++)
			snapshot_add(snap, METRIC_route_responses, (int64_t)t.responses[k],
				     METRIC_LABELS(m->prefix, m->upstream, status_classes[k]), NULL);
		for (unsigned k = 0; k < METRICS_ROUTE_POLICIES; k++)
			for (unsigned d = 0; m->policy[k] && d < 2; d++)
				snapshot_add(snap, METRIC_route_policy_decisions,
					     (int64_t)t.policy[k][d],
					     METRIC_LABELS(m->prefix, m->upstream, m->policy[k],
							   decisions[d]),
					     NULL);
		snapshot_add(snap, METRIC_request_duration_seconds, 0, who, &t.duration);
	}
}

static void snapshot_free(struct snapshot *snap)
{
	for (size_t i = 0; i < snap->n; i++)
		free(snap->s[i].mem);
	free(snap->s);
}

/* Every series, and their order by family (stable: a family's series in the order they came).
 * -1 when out of memory (nothing to free). */
static int snapshot_take(struct snapshot *snap, size_t **order)
{
	memset(snap, 0, sizeof(*snap));
	snap->sink.emit = snapshot_emit;
	collect_cells(snap);
	collect_routes(snap);
	for (unsigned i = 0; i < state.n_sources; i++)
		state.source[i].fn(state.source[i].arg, &snap->sink);
	size_t start[METRIC_FAMILY_COUNT + 1] = {0};
	*order = snap->failed ? NULL : malloc((snap->n ? snap->n : 1) * sizeof(**order));
	if (!*order) {
		snapshot_free(snap);
		return -1;
	}
	for (size_t i = 0; i < snap->n; i++)
		start[snap->s[i].family + 1]++;
	for (unsigned f = 0; f < METRIC_FAMILY_COUNT; f++)
		start[f + 1] += start[f];
	for (size_t i = 0; i < snap->n; i++)
		(*order)[start[snap->s[i].family]++] = i;
	return 0;
}

/* Seconds from microseconds, exactly: "0.0005", "1", "2.5". */
static void format_seconds(uint64_t us, char out[32])
{
	int n = snprintf(out, 32, "%" PRIu64 ".%06" PRIu64, us / 1000000, us % 1000000);
	while (n > 0 && out[n - 1] == '0')
		out[--n] = '\0';
	if (n > 0 && out[n - 1] == '.')
		out[--n] = '\0';
}

/* --- Prometheus text format 0.0.4 --------------------------------------------------------- */

/* Label values escape backslash, double quote and line feed; help texts the first and last. */
static int append_escaped(struct buf *out, const char *s, bool quote)
{
	for (; *s; s++) {
		int rc;
		if (*s == '\\')
			rc = buf_append_str(out, "\\\\");
		else if (*s == '\n')
			rc = buf_append_str(out, "\\n");
		else if (*s == '"' && quote)
			rc = buf_append_str(out, "\\\"");
		else
			rc = buf_append(out, s, 1);
		if (rc < 0)
			return -1;
	}
	return 0;
}

/* {name="value",...} of the sample's labels that are not empty, plus le when given. */
static int append_labels(struct buf *out, const struct sample *s, const char *le)
{
	const struct family_def *f = &families[s->family];
	bool any = false;
	for (unsigned i = 0; i < METRICS_MAX_LABELS && f->label[i]; i++) {
		if (!s->label[i][0])
			continue;
		if (buf_printf(out, "%s%s=\"", any ? "," : "{", f->label[i]) < 0 ||
		    append_escaped(out, s->label[i], true) < 0 || buf_append_str(out, "\"") < 0)
			return -1;
		any = true;
	}
	if (le && buf_printf(out, "%sle=\"%s\"", any ? "," : "{", le) < 0)
		return -1;
	return any || le ? buf_append_str(out, "}") : 0;
}

static int append_histogram(struct buf *out, const char *name, const struct sample *s)
{
	const struct histogram_sum *h = s->hist;
	char le[32];
	uint64_t cumulative = 0;
	for (unsigned b = 0; b <= METRICS_DURATION_BUCKETS; b++) {
		cumulative += h->bucket[b];
		if (b < METRICS_DURATION_BUCKETS)
			format_seconds(duration_bounds_us[b], le);
		else
			snprintf(le, sizeof(le), "+Inf");
		if (buf_printf(out, "%s_bucket", name) < 0 || append_labels(out, s, le) < 0 ||
		    buf_printf(out, " %" PRIu64 "\n", cumulative) < 0)
			return -1;
	}
	format_seconds(h->sum_us, le);
	if (buf_printf(out, "%s_sum", name) < 0 || append_labels(out, s, NULL) < 0 ||
	    buf_printf(out, " %s\n%s_count", le, name) < 0 || append_labels(out, s, NULL) < 0 ||
	    buf_printf(out, " %" PRIu64 "\n", h->count) < 0)
		return -1;
	return 0;
}

static int append_family(struct buf *out, enum metric_family fam, const struct snapshot *snap,
			 const size_t *idx, size_t n)
{
	static const char *const type_names[] = {
		[METRIC_COUNTER] = "counter", [METRIC_GAUGE] = "gauge",
		[METRIC_FLAG] = "gauge",      [METRIC_INFO] = "gauge",
		[METRIC_HISTOGRAM] = "histogram",
	};
	const struct family_def *f = &families[fam];
	char name[METRICS_NAME_MAX];
	metrics_family_name(fam, name);
	if (buf_printf(out, "# HELP %s ", name) < 0 || append_escaped(out, f->help, false) < 0 ||
	    buf_printf(out, "\n# TYPE %s %s\n", name, type_names[f->type]) < 0)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct sample *s = &snap->s[idx[i]];
		if (f->type == METRIC_HISTOGRAM) {
			if (append_histogram(out, name, s) < 0)
				return -1;
			continue;
		}
		int64_t v = s->value;
		if (f->type == METRIC_INFO)
			v = 1;
		else if (f->type == METRIC_FLAG)
			v = s->value != 0;
		if (buf_append_str(out, name) < 0 || append_labels(out, s, NULL) < 0 ||
		    buf_printf(out, " %" PRId64 "\n", v) < 0)
			return -1;
	}
	return 0;
}

int metrics_render_text(struct buf *out)
{
	struct snapshot snap;
	size_t *order;
	if (snapshot_take(&snap, &order) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; rc == 0 && i < snap.n;) {
		enum metric_family f = snap.s[order[i]].family;
		size_t n = 1;
		while (i + n < snap.n && snap.s[order[i + n]].family == f)
			n++;
		rc = append_family(out, f, &snap, order + i, n);
		i += n;
	}
	free(order);
	snapshot_free(&snap);
	return rc;
}

/* --- JSON for `psd2edgectl stats` --------------------------------------------------------- */

#define JSON_KEY_MAX 1024

/* The template text t[0..len) with each {label} replaced by the sample's value. -1 when it does
 * not fit or names no label of the family (a mistake in the table: the tests render every
 * family). */
static int expand(const struct sample *s, const char *t, size_t len, char out[JSON_KEY_MAX])
{
	const struct family_def *f = &families[s->family];
	size_t o = 0;
	for (size_t i = 0; i < len;) {
		const char *piece = t + i;
		size_t plen = 1;
		if (t[i] == '{') {
			const char *close = memchr(t + i, '}', len - i);
			if (!close)
				return -1;
			size_t nlen = (size_t)(close - (t + i + 1));
			piece = NULL;
			for (unsigned k = 0; k < METRICS_MAX_LABELS && f->label[k]; k++)
				if (strlen(f->label[k]) == nlen &&
				    memcmp(f->label[k], t + i + 1, nlen) == 0)
					piece = s->label[k];
			if (!piece)
				return -1;
			plen = strlen(piece);
			i += nlen + 2;
		} else {
			i++;
		}
		if (o + plen >= JSON_KEY_MAX)
			return -1;
		memcpy(out + o, piece, plen);
		o += plen;
	}
	out[o] = '\0';
	return 0;
}

static json_t *object_child(json_t *parent, const char *key)
{
	json_t *c = json_object_get(parent, key);
	if (!c && json_object_set_new(parent, key, c = json_object()) < 0)
		return NULL;
	return json_is_object(c) ? c : NULL;
}

/* NAME[field={label},...]: the element of array NAME whose fields hold the expanded values. */
static json_t *array_element(json_t *parent, const struct sample *s, const char *seg,
			     size_t len)
{
	const char *open = memchr(seg, '[', len);
	char key[JSON_KEY_MAX], val[JSON_KEY_MAX];
	if (!open || seg[len - 1] != ']' || expand(s, seg, (size_t)(open - seg), key) < 0)
		return NULL;
	json_t *arr = json_object_get(parent, key);
	if (!arr && json_object_set_new(parent, key, arr = json_array()) < 0)
		return NULL;
	if (!json_is_array(arr))
		return NULL;
	json_t *want = json_object();
	if (!want)
		return NULL;
	const char *p = open + 1, *end = seg + len - 1;
	while (p < end) {
		const char *comma = memchr(p, ',', (size_t)(end - p)), *stop = comma ? comma : end;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		if (!eq || expand(s, eq + 1, (size_t)(stop - eq - 1), val) < 0 ||
		    (size_t)(eq - p) >= sizeof(key)) {
			json_decref(want);
			return NULL;
		}
		memcpy(key, p, (size_t)(eq - p));
		key[eq - p] = '\0';
		json_object_set_new(want, key, json_string(val));
		p = stop + 1;
	}
	size_t i;
	json_t *el;
	json_array_foreach(arr, i, el) {
		const char *k;
		json_t *v;
		bool same = json_is_object(el);
		json_object_foreach(want, k, v) {
			if (!json_equal(json_object_get(el, k), v))
				same = false;
		}
		if (same) {
			json_decref(want);
			return el;
		}
	}
	return json_array_append_new(arr, want) < 0 ? NULL : want;
}

static json_t *histogram_json(const struct histogram_sum *h)
{
	json_t *o = json_object(), *buckets = json_object();
	char le[32];
	uint64_t cumulative = 0;
	for (unsigned b = 0; b <= METRICS_DURATION_BUCKETS; b++) {
		cumulative += h->bucket[b];
		if (b < METRICS_DURATION_BUCKETS)
			format_seconds(duration_bounds_us[b], le);
		else
			snprintf(le, sizeof(le), "+Inf");
		json_object_set_new(buckets, le, json_integer((json_int_t)cumulative));
	}
	json_object_set_new(o, "count", json_integer((json_int_t)h->count));
	json_object_set_new(o, "sum", json_real((double)h->sum_us / 1e6));
	json_object_set_new(o, "buckets", buckets);
	return o;
}

/* Sets the sample's value at the end of its family's json path. -1 when out of memory or the
 * path cannot be followed. */
static int place(json_t *root, const struct sample *s)
{
	const struct family_def *f = &families[s->family];
	json_t *parent = root;
	const char *seg = f->json;
	char key[JSON_KEY_MAX];
	for (;;) {
		const char *dot = strchr(seg, '.');
		size_t len = dot ? (size_t)(dot - seg) : strlen(seg);
		if (!dot)
			break;
		parent = memchr(seg, '[', len) ? array_element(parent, s, seg, len)
						: (expand(s, seg, len, key) < 0
							   ? NULL
							   : object_child(parent, key));
		if (!parent)
			return -1;
		seg = dot + 1;
	}
	if (expand(s, seg, strlen(seg), key) < 0)
		return -1;
	json_t *v;
	switch (f->type) {
	case METRIC_INFO:
		if (!(parent = object_child(parent, key)))
			return -1;
		for (unsigned i = 0; i < METRICS_MAX_LABELS && f->label[i]; i++)
			if (s->label[i][0] &&
			    json_object_set_new(parent, f->label[i], json_string(s->label[i])) < 0)
				return -1;
		return 0;
	case METRIC_FLAG:
		v = json_boolean(s->value != 0);
		break;
	case METRIC_HISTOGRAM:
		v = histogram_json(s->hist);
		break;
	default:
		v = json_integer((json_int_t)s->value);
	}
	return json_object_set_new(parent, key, v);
}

int metrics_render_json(json_t *obj)
{
	struct snapshot snap;
	size_t *order;
	if (snapshot_take(&snap, &order) < 0)
		return -1;
	int rc = 0;
	for (size_t i = 0; i < snap.n; i++) {
		const struct sample *s = &snap.s[order[i]];
		if (families[s->family].json && place(obj, s) < 0)
			rc = -1;
	}
	free(order);
	snapshot_free(&snap);
	return rc;
}
