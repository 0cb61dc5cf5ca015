/*
 * clients/cli/keygen.c - `funnel keygen NAME` (a CURVE key pair from
 * libzmq) and `funnel token NAME` (an HTTP bearer token from libsodium),
 * written into the current directory.  Neither talks to funneld.
 *
 * Every file is created with O_EXCL (an existing key is never
 * overwritten) and O_NOFOLLOW; the secret ones with mode 0600.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>
#include <zmq.h>

#include "access.h"
#include "cli.h"

static const char keygen_help[] =
	"usage: funnel keygen NAME\n"
	"\n"
	"Write a CURVE key pair into the current directory: NAME.key, the secret\n"
	"key (mode 0600; give it to the program with --key), and NAME.pub, the\n"
	"public key (for the access file's 'key:', or --server-key for funneld's).\n"
	"Both are 40 Z85 characters and a newline.  An existing file is never\n"
	"overwritten.  NAME is 1..64 of A-Z a-z 0-9 . _ - (not starting with '.').\n";

static const char token_help[] =
	"usage: funnel token NAME\n"
	"\n"
	"Write a new HTTP bearer token (256 random bits, 64 hex characters) into\n"
	"NAME.token (mode 0600) and print the line for the access file:\n"
	"  token: \"blake2b:<hash>\"\n"
	"The access file keeps only the hash.  Send the token as\n"
	"'Authorization: Bearer <token>'.\n";

static int
name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > FA_MAX_NAME || s[0] == '.')
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

/* Create path with O_EXCL and mode, write text.  0, or -1 after a message. */
static int
write_new(const struct cli *g, const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		cli_error(g, "cannot create %s: %s%s", path, strerror(errno),
		          errno == EEXIST ? " (an existing key is never overwritten)" : "");
		return -1;
	}
	size_t len = strlen(text);
	ssize_t n = write(fd, text, len);
	if (n != (ssize_t)len || fsync(fd) != 0 || close(fd) != 0) {
		cli_error(g, "cannot write %s: %s", path, strerror(errno));
		unlink(path);
		return -1;
	}
	return 0;
}

/* The options of keygen and token: --help, then NAME. */
static int
parse_name(struct cli *g, int argc, char **argv, const char *help, const char **name)
{
	static const struct option opts[] = {
		CLI_GLOBAL_OPTIONS,
		{ NULL, 0, NULL, 0 }
	};
	int c;
	g->no_keys = 1;
	cli_getopt_begin();
	while ((c = cli_getopt(g, argc, argv, opts)) != -1) {
		if (c == OPT_HELP) {
			fputs(help, stdout);
			return CLI_EXIT_OK;
		}
		return CLI_EXIT_USAGE;
	}
	if (optind + 1 != argc)
		return cli_usage(g, "wants exactly one NAME");
	if (!name_ok(argv[optind]))
		return cli_usage(g, "NAME '%s': 1..64 of A-Z a-z 0-9 . _ -, not starting with '.'",
		                 argv[optind]);
	*name = argv[optind];
	return -1;
}

int
cmd_keygen(struct cli *g, int argc, char **argv)
{
	const char *name = NULL;
	char pub[FA_Z85_LEN + 1], sec[FA_Z85_LEN + 1];
	char pub_path[128], sec_path[128], line[64];
	int rc = parse_name(g, argc, argv, keygen_help, &name);
	if (rc >= 0)
		return rc;
	if (zmq_curve_keypair(pub, sec) != 0) {
		cli_error(g, "cannot make a CURVE key pair: %s (libzmq built without CURVE?)",
		          zmq_strerror(errno));
		return CLI_EXIT_FAIL;
	}
	snprintf(sec_path, sizeof sec_path, "%s.key", name);
	snprintf(pub_path, sizeof pub_path, "%s.pub", name);
	snprintf(line, sizeof line, "%s\n", sec);
	rc = write_new(g, sec_path, line, 0600);
	sodium_memzero(sec, sizeof sec);
	sodium_memzero(line, sizeof line);
	if (rc != 0)
		return CLI_EXIT_FAIL;
	snprintf(line, sizeof line, "%s\n", pub);
	if (write_new(g, pub_path, line, 0644) != 0) {
		unlink(sec_path);
		return CLI_EXIT_FAIL;
	}
	printf("wrote %s (secret, mode 0600) and %s\n"
	       "access file entry:\n"
	       "  - name: %s\n"
	       "    key: \"%s\"\n", sec_path, pub_path, name, pub);
	return CLI_EXIT_OK;
}

int
cmd_token(struct cli *g, int argc, char **argv)
{
	const char *name = NULL;
	uint8_t raw[32], h[32];
	char tok[2 * sizeof raw + 2], hex[2 * sizeof h + 1], path[128];
	int rc = parse_name(g, argc, argv, token_help, &name);
	if (rc >= 0)
		return rc;
	if (sodium_init() < 0) {
		cli_error(g, "cannot initialise libsodium");
		return CLI_EXIT_FAIL;
	}
	randombytes_buf(raw, sizeof raw);
	sodium_bin2hex(tok, sizeof tok, raw, sizeof raw);
	crypto_generichash(h, sizeof h, (const unsigned char *)tok, strlen(tok), NULL, 0);
	sodium_bin2hex(hex, sizeof hex, h, sizeof h);
	strcat(tok, "\n");
	snprintf(path, sizeof path, "%s.token", name);
	rc = write_new(g, path, tok, 0600);
	sodium_memzero(tok, sizeof tok);
	sodium_memzero(raw, sizeof raw);
	if (rc != 0)
		return CLI_EXIT_FAIL;
	printf("wrote %s (secret, mode 0600)\n"
	       "access file line for principal '%s':\n"
	       "    token: \"" FA_TOKEN_PREFIX "%s\"\n", path, name, hex);
	return CLI_EXIT_OK;
}
