/*
 * daemon/journal.c - the write-ahead journal (journal.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "funnel/record.h"
#include "envfile.h"
#include "journal.h"

#define JOURNAL_MAGIC 0x4c4e4a46u   /* "FJNL" read as a little-endian u32 */
#define SUM_BYTES 16

struct journal {
	int fd;
	int durable;
	size_t size;
	size_t half;              /* region 1 starts here: size / 2 */
	uint64_t lap;
	int region;               /* the current lap's: 0 [0, half), 1 [half, size) */
	size_t base;              /* where its region starts */
	size_t limit;             /* where the lap must end: its region's end (the
	                           * file's for a format-1 lap, which may span both) */
	int spans;                /* the current lap is a format-1 one (journal_lap_spans) */
	size_t off;               /* where the next entry goes */
	uint8_t *buf;             /* one entry, built for its pwrite */
	size_t cap;
	char path[PATH_MAX];
	/* The flush of what was written (journal_write), done here
	 * (journal_wait) or by the flusher thread (journal_flush_start),
	 * started at the first such start.  Under lock: asked (a flush
	 * handed over, not done), failed (the errno of the first failed
	 * flush; it sticks), quit.  unflushed is the writer's alone. */
	int unflushed;            /* written since the last flush started */
	int started;              /* the flusher thread runs */
	pthread_t flusher;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int asked, quit, failed;
};

/* The header as it is laid out on disk (JOURNAL_HEADER_BYTES). */
struct entry_head {
	uint32_t magic;
	uint32_t format;
	uint64_t lap;
	uint64_t first_seq;
	uint32_t count;
	uint32_t zero;
	uint64_t len;
	uint8_t sum[SUM_BYTES];
};
_Static_assert(sizeof(struct entry_head) == JOURNAL_HEADER_BYTES, "journal header layout");

/*
 * The entry's checksum: BLAKE2b-128 of its header (these 16 bytes
 * zeroed), then of each record's length and its last FUNNEL_HASH_BYTES,
 * the record's own hash of the rest of it (record.h).  A record's other
 * bytes are vouched for by that hash, which journal_scan() checks, so
 * the writer hashes 36 bytes a record here, not the whole record again.
 * Records shorter than a hash are refused by journal_write().
 */
static void
entry_sum(const struct entry_head *h, const uint8_t *payload, size_t len, uint8_t out[SUM_BYTES])
{
	crypto_generichash_state st;
	struct entry_head z = *h;
	uint8_t buf[512];
	size_t n = 0;

	memset(z.sum, 0, sizeof z.sum);
	crypto_generichash_init(&st, NULL, 0, SUM_BYTES);
	crypto_generichash_update(&st, (const uint8_t *)&z, sizeof z);
	for (size_t p = 0; p + 4 <= len;) {
		uint32_t rl;
		memcpy(&rl, payload + p, 4);
		if (rl < FUNNEL_HASH_BYTES || len - p - 4 < rl)
			break;   /* the scan refuses such an entry anyway */
		if (n + 4 + FUNNEL_HASH_BYTES > sizeof buf) {
			crypto_generichash_update(&st, buf, n);
			n = 0;
		}
		memcpy(buf + n, payload + p, 4);
		memcpy(buf + n + 4, payload + p + 4 + rl - FUNNEL_HASH_BYTES, FUNNEL_HASH_BYTES);
		n += 4 + FUNNEL_HASH_BYTES;
		p += 4 + rl;
	}
	crypto_generichash_update(&st, buf, n);
	crypto_generichash_final(&st, out, SUM_BYTES);
}

static int
full_write(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

int
journal_clear_rest(journal *j)
{
	static const uint8_t zeros[64 * 1024];
	if (j->off >= j->limit)
		return 0;
	/* the file holds written zeros from its creation: an overwrite,
	 * which needs no space; a file system's zero range (no data
	 * written) where it has one */
	if (fallocate(j->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t)j->off,
	              (off_t)(j->limit - j->off)) == 0)
		return 0;
	for (size_t off = j->off; off < j->limit; off += sizeof zeros) {
		size_t n = j->limit - off < sizeof zeros ? j->limit - off : sizeof zeros;
		int rc = full_write(j->fd, zeros, n, (off_t)off);
		if (rc != 0)
			return rc;
	}
	return 0;
}

static int
full_read(int fd, void *buf, size_t len, off_t off)
{
	uint8_t *p = buf;
	while (len > 0) {
		ssize_t n = pread(fd, p, len, off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errno;
		if (n == 0)
			return ENODATA;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

/* Create dir/journal: zeros written aside, flushed, renamed in. */
static int
create_file(journal *j, const char *dir, size_t size, char *why, size_t whylen)
{
	char tmp[PATH_MAX];
	static const uint8_t zeros[1 << 16];
	int rc = 0;

	if (snprintf(tmp, sizeof tmp, "%s.new", j->path) >= (int)sizeof tmp) {
		snprintf(why, whylen, "cannot create the journal in %s: path too long", dir);
		return -1;
	}
	if (unlink(tmp) != 0 && errno != ENOENT) {
		snprintf(why, whylen, "cannot remove the unfinished %s: %s", tmp, strerror(errno));
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(why, whylen, "cannot create %s: %s", tmp, strerror(errno));
		return -1;
	}
	for (size_t off = 0; off < size && rc == 0; off += sizeof zeros) {
		size_t n = size - off < sizeof zeros ? size - off : sizeof zeros;
		rc = full_write(fd, zeros, n, (off_t)off);
	}
	if (rc == 0 && j->durable && fdatasync(fd) != 0)
		rc = errno;
	close(fd);
	if (rc != 0) {
		snprintf(why, whylen, "cannot write %s: %s", tmp, strerror(rc));
		unlink(tmp);
		return -1;
	}
	if (rename(tmp, j->path) != 0) {
		snprintf(why, whylen, "cannot rename %s into place: %s", tmp, strerror(errno));
		return -1;
	}
	if (j->durable && fp_dir_sync(dir) != 0) {
		snprintf(why, whylen, "cannot flush the directory %s: %s", dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* Make region r the current lap's, empty. */
static void
set_region(journal *j, int r)
{
	j->region = r;
	j->base = r ? j->half : 0;
	j->limit = r ? j->size : j->half;
	j->off = j->base;
	j->spans = 0;
}

journal *
journal_open(const char *dir, size_t size, int durable, char *why, size_t whylen)
{
	journal *j = calloc(1, sizeof *j);
	struct stat st;

	if (j == NULL) {
		snprintf(why, whylen, "out of memory opening the journal");
		return NULL;
	}
	j->fd = -1;
	j->durable = durable;
	pthread_mutex_init(&j->lock, NULL);
	pthread_cond_init(&j->cond, NULL);
	if (size < JOURNAL_MIN_SIZE)
		size = JOURNAL_MIN_SIZE;
	if (snprintf(j->path, sizeof j->path, "%s/%s", dir, JOURNAL_FILE) >= (int)sizeof j->path) {
		snprintf(why, whylen, "cannot open the journal in %s: path too long", dir);
		goto fail;
	}
	if (stat(j->path, &st) != 0) {
		if (errno != ENOENT) {
			snprintf(why, whylen, "cannot stat %s: %s", j->path, strerror(errno));
			goto fail;
		}
		if (create_file(j, dir, size, why, whylen) != 0)
			goto fail;
	}
	if ((j->fd = open(j->path, O_RDWR | O_CLOEXEC)) < 0 || fstat(j->fd, &st) != 0) {
		snprintf(why, whylen, "cannot open %s: %s", j->path, strerror(errno));
		goto fail;
	}
	if ((size_t)st.st_size < JOURNAL_MIN_SIZE) {
		snprintf(why, whylen, "%s is %lld bytes, less than a journal's %zu: not a journal funneld "
		         "wrote; move it away only if the log's last events may be lost",
		         j->path, (long long)st.st_size, JOURNAL_MIN_SIZE);
		goto fail;
	}
	j->size = (size_t)st.st_size;
	j->half = j->size / 2;
	set_region(j, 1);   /* no lap yet: the first new lap goes to region 0 */
	return j;
fail:
	journal_close(j);
	return NULL;
}

void
journal_close(journal *j)
{
	if (j == NULL)
		return;
	journal_wait(j);
	if (j->started) {
		pthread_mutex_lock(&j->lock);
		j->quit = 1;
		pthread_cond_broadcast(&j->cond);
		pthread_mutex_unlock(&j->lock);
		pthread_join(j->flusher, NULL);
	}
	if (j->fd >= 0)
		close(j->fd);
	pthread_cond_destroy(&j->cond);
	pthread_mutex_destroy(&j->lock);
	free(j->buf);
	free(j);
}

const char *
journal_path(const journal *j)
{
	return j->path;
}

size_t
journal_size(const journal *j)
{
	return j->size;
}

uint64_t
journal_lap(const journal *j)
{
	return j->lap;
}

size_t
journal_used(const journal *j)
{
	return j->off - j->base;
}

size_t
journal_lap_room(const journal *j)
{
	return j->limit - j->base;
}

int
journal_lap_spans(const journal *j)
{
	return j->spans;
}

void
journal_new_lap(journal *j, uint64_t lap)
{
	journal_wait(j);   /* no write into the new lap while a flush runs; a failure sticks */
	set_region(j, j->spans ? 0 : !j->region);
	j->lap = lap;
}

static size_t
entry_bytes(size_t count, size_t bytes)
{
	return JOURNAL_HEADER_BYTES + 4 * count + bytes;
}

int
journal_fits(const journal *j, size_t count, size_t bytes)
{
	return j->off <= j->limit && entry_bytes(count, bytes) <= j->limit - j->off;
}

static int
reserve(journal *j, size_t n)
{
	if (n <= j->cap)
		return 0;
	size_t cap = j->cap ? j->cap : 1 << 16;
	while (cap < n)
		cap *= 2;
	uint8_t *b = realloc(j->buf, cap);
	if (b == NULL)
		return ENOMEM;
	j->buf = b;
	j->cap = cap;
	return 0;
}

/* Read the header at off.  0, ENODATA past the file's end, or the
 * errno of the read. */
static int
read_head(journal *j, size_t off, struct entry_head *h)
{
	if (j->size - off < JOURNAL_HEADER_BYTES)
		return ENODATA;
	return full_read(j->fd, h, sizeof *h, (off_t)off);
}

/* Is h a header as funneld writes them, of an entry whose bytes fit in
 * the room after it?  (Its lap and seqs are the caller's to check.) */
static int
head_ok(const struct entry_head *h, size_t room)
{
	return h->magic == JOURNAL_MAGIC &&
	       (h->format == JOURNAL_FORMAT || h->format == JOURNAL_FORMAT_V1) && h->zero == 0 &&
	       h->count != 0 && h->len <= room && h->len >= 4 * (uint64_t)h->count;
}

/* The lap whose first entry's header is at region r's start: its number,
 * or 0 when none starts there (zeros, a torn header, an entry of a lap
 * begun elsewhere).  EPROTO (as -1) when the header is a journal's of a
 * format this funneld does not write, which it must not overwrite. */
static int
peek_lap(journal *j, int r, uint64_t *lap, uint32_t *format)
{
	struct entry_head h;
	size_t start = r ? j->half : 0;
	*lap = 0;
	int rc = read_head(j, start, &h);
	if (rc == ENODATA)
		return 0;
	if (rc != 0)
		return rc;
	if (h.magic != JOURNAL_MAGIC)
		return 0;
	if (h.format != JOURNAL_FORMAT && h.format != JOURNAL_FORMAT_V1)
		return EPROTO;   /* not a torn append (a header is written whole) */
	if (h.format == JOURNAL_FORMAT_V1 && r == 1)
		return 0;        /* inside a format-1 lap, which starts at 0 */
	if (head_ok(&h, j->size - start - JOURNAL_HEADER_BYTES) && h.first_seq == h.lap &&
	    h.lap != 0) {
		*lap = h.lap;
		*format = h.format;
	}
	return 0;
}

/* Scan the lap `lap` from off to limit, calling fn for each whole entry
 * of it in order (see the top); *off, *next: where it ends and the seq
 * after its last record.  Returns 0, fn's value, or an errno. */
static int
scan_lap(journal *j, uint64_t lap, size_t *offp, size_t limit, uint64_t *nextp, uint64_t known,
         journal_fn fn, void *ctx)
{
	const uint8_t **recs = NULL;
	uint32_t *lens = NULL;
	size_t nrecs_cap = 0, off = *offp;
	uint64_t next = lap;
	int rc = 0;

	for (;;) {
		struct entry_head h;
		uint8_t sum[SUM_BYTES];
		if (limit - off < JOURNAL_HEADER_BYTES || (rc = read_head(j, off, &h)) != 0)
			break;
		if (!head_ok(&h, limit - off - JOURNAL_HEADER_BYTES) || h.lap != lap ||
		    h.first_seq != next)
			break;
		if (h.first_seq + h.count - 1 <= known) {
			/* the log holds these records: taken on the header (it was
			 * flushed whole before the checkpoint that holds them) */
			next = h.first_seq + h.count;
			off += sizeof h + h.len;
			continue;
		}
		if ((rc = reserve(j, h.len)) != 0 || (rc = full_read(j->fd, j->buf, h.len,
		                                                     (off_t)(off + sizeof h))) != 0)
			break;
		entry_sum(&h, j->buf, h.len, sum);
		if (sodium_memcmp(sum, h.sum, SUM_BYTES) != 0)
			break;
		/* the records: u32 length, bytes; exactly count of them */
		if (h.count > nrecs_cap) {
			const uint8_t **r = realloc(recs, h.count * sizeof *recs);
			uint32_t *l = r ? realloc(lens, h.count * sizeof *lens) : NULL;
			if (r != NULL)
				recs = r;
			if (l == NULL) {
				rc = ENOMEM;
				break;
			}
			lens = l;
			nrecs_cap = h.count;
		}
		size_t p = 0;
		uint32_t i;
		for (i = 0; i < h.count; i++) {
			uint32_t n;
			if (h.len - p < 4)
				break;
			memcpy(&n, j->buf + p, 4);
			p += 4;
			if (n < FUNNEL_HASH_BYTES || h.len - p < n ||
			    !funnel_record_hash_ok(j->buf + p, n))
				break;
			recs[i] = j->buf + p;
			lens[i] = n;
			p += n;
		}
		if (i < h.count || p != h.len)
			break;   /* a whole entry that does not parse: funneld never wrote it */
		if ((rc = fn(ctx, h.first_seq, h.count, recs, lens)) != 0)
			break;
		next = h.first_seq + h.count;
		off += sizeof h + h.len;
	}
	free(recs);
	free(lens);
	*offp = off;
	*nextp = next;
	return rc == ENODATA ? 0 : rc;   /* the file ends: the lap too */
}

int
journal_scan(journal *j, uint64_t known, journal_fn fn, void *ctx, uint64_t *lap, uint64_t *end)
{
	uint64_t laps[2], nexts[2] = { 0, 0 };
	uint32_t formats[2] = { 0, 0 };
	size_t offs[2] = { 0, 0 }, limits[2] = { 0, 0 };
	int rc;

	*lap = *end = 0;
	if ((rc = peek_lap(j, 0, &laps[0], &formats[0])) != 0 ||
	    (rc = peek_lap(j, 1, &laps[1], &formats[1])) != 0) {
		errno = rc;
		return -1;
	}
	/* the older lap first (the one before the last checkpoint, needed
	 * while that checkpoint's meta page may not be on disk), then the
	 * newer, which the writer continues */
	int newer = laps[1] > laps[0], older = !newer;
	set_region(j, 1);   /* none: the first new lap goes to region 0 */
	j->lap = 0;
	for (int k = 0; k < 2; k++) {
		int r = k == 0 ? older : newer;
		if (laps[r] == 0)
			continue;
		offs[r] = r ? j->half : 0;
		limits[r] = formats[r] == JOURNAL_FORMAT_V1 ? j->size : r ? j->size : j->half;
		rc = scan_lap(j, laps[r], &offs[r], limits[r], &nexts[r], known, fn, ctx);
		if (rc != 0)
			break;
	}
	if (rc == 0 && laps[newer] != 0) {
		/* the newer lap is the current one, unless it holds no whole
		 * entry and does not start where the older ends (a header that
		 * only looks like a lap's first: the older lap, whose records
		 * the caller may hold only in memory, must not be the one the
		 * next lap overwrites) */
		int cur = newer;
		if (laps[older] != 0 && offs[newer] == (newer ? j->half : 0) &&
		    laps[newer] != nexts[older])
			cur = older;
		set_region(j, cur);
		j->limit = limits[cur];
		j->spans = formats[cur] == JOURNAL_FORMAT_V1;
		j->off = offs[cur];
		j->lap = laps[cur];
		*lap = laps[cur];
		*end = nexts[cur];
	}
	if (rc > 0) {
		errno = rc;
		rc = -1;
	}
	return rc;
}

/* The flusher thread: one fdatasync per flush handed over. */
static void *
flusher_main(void *arg)
{
	journal *j = arg;
	sigset_t set;

	sigfillset(&set);   /* signals belong to the main thread */
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	pthread_mutex_lock(&j->lock);
	for (;;) {
		while (!j->asked && !j->quit)
			pthread_cond_wait(&j->cond, &j->lock);
		if (!j->asked)
			break;
		pthread_mutex_unlock(&j->lock);
		int rc = fdatasync(j->fd) != 0 ? errno : 0;
		pthread_mutex_lock(&j->lock);
		if (rc != 0 && j->failed == 0)
			j->failed = rc;
		__atomic_store_n(&j->asked, 0, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&j->cond);
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

int
journal_wait(journal *j)
{
	int rc;
	pthread_mutex_lock(&j->lock);
	while (j->asked)
		pthread_cond_wait(&j->cond, &j->lock);
	if (j->unflushed && j->failed == 0) {
		/* written, its flush not handed over: do it here */
		j->unflushed = 0;
		pthread_mutex_unlock(&j->lock);
		rc = fdatasync(j->fd) != 0 ? errno : 0;
		pthread_mutex_lock(&j->lock);
		if (rc != 0 && j->failed == 0)
			j->failed = rc;
	}
	j->unflushed = 0;
	rc = j->failed;
	pthread_mutex_unlock(&j->lock);
	return rc;
}

int
journal_flushing(journal *j)
{
	return __atomic_load_n(&j->asked, __ATOMIC_ACQUIRE);
}

void
journal_flush_start(journal *j)
{
	if (!j->unflushed)
		return;
	if (!j->started) {
		if (pthread_create(&j->flusher, NULL, flusher_main, j) != 0)
			return;   /* no thread: journal_wait flushes */
		j->started = 1;
	}
	pthread_mutex_lock(&j->lock);
	j->unflushed = 0;
	__atomic_store_n(&j->asked, 1, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&j->cond);
	pthread_mutex_unlock(&j->lock);
}

int
journal_write(journal *j, uint64_t first_seq, size_t count, const void *recs,
              const size_t *ends)
{
	size_t bytes = count ? ends[count - 1] : 0;
	size_t total = entry_bytes(count, bytes);
	struct entry_head h = { .magic = JOURNAL_MAGIC, .format = JOURNAL_FORMAT, .lap = j->lap,
	                        .first_seq = first_seq, .count = (uint32_t)count, .zero = 0,
	                        .len = total - JOURNAL_HEADER_BYTES };
	int rc;

	if (count == 0)
		return 0;
	if ((rc = journal_wait(j)) != 0)   /* one flush at a time; a failed one sticks */
		return rc;
	if ((rc = reserve(j, total)) != 0)
		return rc;
	uint8_t *p = j->buf + JOURNAL_HEADER_BYTES;
	size_t start = 0;
	for (size_t i = 0; i < count; i++) {
		uint32_t n = (uint32_t)(ends[i] - start);
		if (n < FUNNEL_HASH_BYTES)
			return EINVAL;   /* not a record (record.h) */
		memcpy(p, &n, 4);
		memcpy(p + 4, (const uint8_t *)recs + start, n);
		p += 4 + n;
		start = ends[i];
	}
	entry_sum(&h, j->buf + JOURNAL_HEADER_BYTES, h.len, h.sum);
	memcpy(j->buf, &h, sizeof h);
	if ((rc = full_write(j->fd, j->buf, total, (off_t)j->off)) != 0) {
		pthread_mutex_lock(&j->lock);
		j->failed = rc;   /* a write of unknown fate: nothing after it is durable */
		pthread_mutex_unlock(&j->lock);
		return rc;
	}
	j->unflushed = j->durable;
	j->off += total;
	return 0;
}
