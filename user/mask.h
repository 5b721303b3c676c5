/* Masking of personal data and secrets in log lines: log.c runs every error-log message and
 * every access-log line through mask_apply() before writing it.
 *
 * Built in (one pass, no regex, no allocation):
 * - IBAN: a country code of the ISO 13616 registry, two check digits, then exactly that
 *   country's length of letters and digits (optionally in groups of four separated by one
 *   space), passing the mod-97 check, not touching another letter or digit. Becomes the
 *   country, the check digits, "****" and the last four: DE89****3000.
 * - PAN: 13 to 19 digits (optionally separated by single spaces or dashes), the first not 0,
 *   passing the Luhn check, not touching a letter or digit. Every digit but the last four becomes '*'
 *   (separators stay): PCI DSS allows first six and last four; last four alone is less.
 *   A run of numbers that is no PAN as a whole has each of its groups tried alone.
 *   A digit run of an id that passes Luhn is masked too (about one in ten of them): cheaper
 *   than a leak.
 * - Secrets: the value of access_token, refresh_token, id_token, code, code_verifier,
 *   client_secret, client_assertion, assertion and password, written as key=value (a query)
 *   or "key":"value" (JSON, escaped or not); a "Bearer" credential of 16 characters or more;
 *   a JWT (three or more base64url segments, the first starting "eyJ"). A secret of 16
 *   characters or more becomes "[token:" + the first 8 hex digits of its SHA-256 + "]" (the
 *   same token gives the same text, so lines correlate); a shorter one becomes as many '*'.
 *
 * Configured patterns (logs.mask: POSIX extended regexes) run first, each match becoming
 * "***" (fewer stars for a shorter match); the built-ins then run on the result, so no IBAN,
 * PAN or token they detect survives a pattern's replacement.
 *
 * The result is never longer than the input (masking happens in place), and masking it again
 * changes nothing as long as no configured pattern matches masked text. */
#ifndef PSD2EDGE_MASK_H
#define PSD2EDGE_MASK_H

#include <stddef.h>

struct mask;

/* Compiles n patterns. NULL on failure: *bad is the index of the refused pattern (n when out
 * of memory) and err says why ("not a POSIX extended regex: " and regerror's text,
 * or "matches the empty string"). */
struct mask *mask_create(const char *const *patterns, size_t n, size_t *bad, char *err,
			 size_t errlen);
void mask_free(struct mask *m);

/* Masks text[0, len) in place and returns its new length (at most len). m may be NULL: the
 * built-ins only. Safe from several threads on one mask. */
size_t mask_apply(const struct mask *m, char *text, size_t len);

#endif
