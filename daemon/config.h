/*
 * daemon/config.h - funneld's settings: defaults, then the config file
 * (--config, YAML: a flat mapping whose keys are the long flag names),
 * then the command line, each overriding the one before.
 */
#ifndef FUNNEL_DAEMON_CONFIG_H
#define FUNNEL_DAEMON_CONFIG_H

#include <stddef.h>

/* The largest --journal-size: the journal is written in full (zeros) when
 * it is created, so a typo must not fill the disk; 16 GiB is far past
 * what one checkpoint interval ever journals (store.h: a tail is at most
 * STORE_TAIL_MAX_BYTES before it is checkpointed). */
#define CONFIG_MAX_JOURNAL_SIZE ((size_t)16 << 30)

typedef struct config {
	char data_dir[4096];
	char ingest[256];
	char publish[256];
	char query[256];
	char ready_file[4096];
	char log_level[16];
	char access[4096];        /* "": no access file, no CURVE (loopback only) */
	char key[4096];           /* funneld's CURVE secret key file, with access */
	int insecure;             /* bind beyond loopback without access */
	int durable;              /* 1 unless no-sync */
	int pub_hwm;
	int heartbeat_ms;
	size_t map_size;          /* initial LMDB map */
	int map_size_given;       /* map_size set by the file or a flag, not the default */
	size_t max_map_size;      /* 0: unbounded */
	size_t journal_size;      /* the journal's size when created (journal.h) */
	char master_key[4096];    /* file of the master key; "": personal data not sealed */
	char personal_fields[1024];   /* comma-separated data paths sealed (vault.h) */
} config;

/* Fill c from defaults, the config file and argv, and check what can be
 * checked without touching the disk: each endpoint's form,
 * the sizes and their order, a data directory named.  Returns 0, 1 when
 * --help or --version was printed (exit 0), or -1 after printing the
 * problem to stderr (exit 2). */
int config_load(config *c, int argc, char **argv);

#endif
