/* Normalisation of a request path before it is forwarded under an upstream's path prefix.
 *
 * The gateway and the application behind it must read the same path: whatever the gateway
 * forwards has no dot segment left to resolve (RFC 3986 §5.2.4, with percent-encoded dots read
 * as dots), so an application that resolves them, decodes them, or strips path parameters
 * first cannot be led above the prefix. What different stacks read differently is refused:
 * a path that climbs above its root, '\' raw or encoded, an encoded '/', ';' path parameters
 * (Tomcat and Spring drop "/..;/"'s ";" and then see ".."), an encoded '%' (a second decoding
 * would see a new escape, "%252e" -> "%2e" -> "."), encoded NUL and control characters, and
 * percent-encoded bytes that are not UTF-8 (overlong forms such as %c0%ae decode to '.' in
 * lenient decoders).
 *
 * Pure and bounded: one pass over the input, no allocation; it knows nothing of where a prefix
 * comes from. */
#ifndef PSD2EDGE_PATH_H
#define PSD2EDGE_PATH_H

#include <stddef.h>
#include <sys/types.h>

/* Normalises path[0..len) (it starts with '/'; no query) into out, which has room for len
 * bytes and may be path itself: the result is never longer than the input. Percent-encoded
 * dots are decoded, other escapes are kept as written. Returns the length written (>= 1, the
 * result starts with '/'), or -1 with *why set to a static reason for a 400. */
ssize_t path_normalize(const char *path, size_t len, char *out, const char **why);

#endif
