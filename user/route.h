/* Which route a request takes: the longest configured prefix that matches its path on a
 * segment boundary ("/accounts" takes "/accounts", "/accounts/1" and "/accounts?x", not
 * "/accountsx"; "/" takes every path).
 *
 * The path is the request's, already normalised by http.c (path.h: no dot segment, no encoded
 * '/'). Where upstream stacks read one path differently, a prefix matches the way the most
 * lenient of them reads it, so that re-spelling a path cannot move a request off the route
 * (and its quota) that the upstream will serve it from:
 *   - a percent-encoded unreserved character is that character ("/%61ccounts", RFC 3986
 *     §6.2.2.2);
 *   - letters match in either case (ASP.NET and Express route "/ACCOUNTS" to "/accounts");
 *   - a run of '/' is one '/' (nginx, Tomcat: "//accounts", "/v1//accounts").
 * config.c keeps prefixes to letters, digits, "-._~" and single '/' between segments, and
 * refuses two prefixes that differ only in case, so the most specific match is unambiguous.
 *
 * Usage: per request, on the worker's thread; reads cfg only. cfg->routes is sorted longest
 * prefix first at load (config.c), so the first route that matches is the longest. */
#ifndef PSD2EDGE_ROUTE_H
#define PSD2EDGE_ROUTE_H

#include <stddef.h>

#include "config.h"

/* The index into cfg->routes of the route of path[0..len) (it may carry its query), or -1. */
int route_match(const struct config *cfg, const char *path, size_t len);

#endif
