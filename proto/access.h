/*
 * proto/access.h - who may do what: CURVE key files and the access file.
 *
 * Key files (`funnel keygen NAME`): NAME.key holds the Z85 text of a
 * CURVE secret key, NAME.pub the Z85 text of its public key, 40
 * characters each, surrounding whitespace ignored.  The public key of a
 * secret key file is derived from it (zmq_curve_public), so a program
 * needs only its .key and the server's .pub.
 *
 * The access file (funneld --access, funnel-metrics --access) is YAML:
 *
 *   principals:
 *     - name: web-forms                 # 1..64 of [A-Za-z0-9._-]
 *       key: "<Z85 public key>"         # CURVE public key; optional when
 *                                       # the principal has only a token
 *       publish: [lead.captured, lead.activity]   # fnmatch(3) globs
 *       read: false                     # replay, status, lead, subscribe
 *       token: "blake2b:<64 hex>"       # optional HTTP bearer token hash
 *
 * A token is the text of `funnel token NAME` (NAME.token); the file keeps
 * only BLAKE2b-256 of that text (libsodium crypto_generichash, no key),
 * in hex.  Tokens are 256 random bits, so a fast hash is enough: nothing
 * can be guessed from it.
 *
 * Refused, naming the line: an unknown key, a key given twice, a name,
 * CURVE key or token given to two principals, a malformed key, a value of
 * the wrong kind.  The table is immutable once loaded; a reload builds a
 * new one.
 */
#ifndef FUNNEL_PROTO_ACCESS_H
#define FUNNEL_PROTO_ACCESS_H

#include <stddef.h>
#include <stdint.h>

#define FA_KEY_BYTES 32
#define FA_Z85_LEN 40
#define FA_MAX_NAME 64
#define FA_MAX_PRINCIPALS 4096
#define FA_MAX_GLOBS 256
#define FA_MAX_FILE_BYTES (1u << 20)
#define FA_TOKEN_PREFIX "blake2b:"

typedef struct fa_principal {
	char name[FA_MAX_NAME + 1];
	int has_key;
	uint8_t key[FA_KEY_BYTES];          /* CURVE public key */
	char **publish;                     /* fnmatch globs of the types it may publish */
	size_t npublish;
	int read;                           /* replay, status, lead, subscribe */
	int has_token;
	uint8_t token_hash[32];             /* BLAKE2b-256 of the bearer token's text */
} fa_principal;

typedef struct fa_table {
	fa_principal *p;
	size_t n;
} fa_table;

/* Load and check an access file.  Returns a new table (free with
 * fa_destroy), or NULL with "PATH:LINE: problem" in why. */
fa_table *fa_load(const char *path, char *why, size_t whylen);
void fa_destroy(fa_table *t);

/* Lookups; NULL when absent.  fa_by_token compares hashes in constant
 * time and takes the token's text (what follows "Bearer "). */
const fa_principal *fa_by_key(const fa_table *t, const uint8_t key[FA_KEY_BYTES]);
const fa_principal *fa_by_name(const fa_table *t, const char *name);
const fa_principal *fa_by_token(const fa_table *t, const char *token, size_t len);

/* 1 when p may publish events of this type (a glob of its matches). */
int fa_may_publish(const fa_principal *p, const char *type, size_t len);

/* Read a key file (40 Z85 characters) into key.  Returns 0, or -1 with
 * the problem in why ("PATH: ..."). */
int fa_read_key_file(const char *path, uint8_t key[FA_KEY_BYTES], char *why, size_t whylen);

/* The public key of a secret key.  Returns 0 or -1. */
int fa_public_of(const uint8_t secret[FA_KEY_BYTES], uint8_t pub[FA_KEY_BYTES]);

#endif
