/*
 * clients/mirror/main.c - funnel-mirror: the log, record by record, into
 * a NATS JetStream stream (the contract is mirror.h).
 *
 *   funnel-mirror [run] [options]   copy the log into the stream (default)
 *
 * A program that follows the log without a view: described to the
 * services' main (svcmain.h) by its options and its `run` (copy.c, with
 * the NATS side in stream.c and the status in http.c).
 */
#include "mirror.h"

static const char usage_text[] =
	"usage: funnel-mirror [run] [options]\n"
	"\n"
	"Copy every record of the log, in seq order and byte for byte, into a NATS\n"
	"JetStream stream: stream sequence N is record N.  Readers elsewhere use\n"
	"--source nats://HOST:PORT/STREAM (funnel tail/replay/verify, every service).\n"
	"\n"
	"Options:\n"
	"  --nats URL          NATS server(s), comma-separated (default " MIRROR_DEFAULT_NATS ")\n"
	"  --stream NAME       the stream (default " MIRROR_DEFAULT_STREAM ")\n"
	"  --subject SUBJ      its one subject (default " MIRROR_DEFAULT_SUBJECT ")\n"
	"  --replicas N        replicas of a stream created here, and checked (default 1)\n"
	"  --creds FILE        NATS credentials file (user JWT and NKey seed)\n"
	"  --window N          publishes awaiting their ack at most (default 1024)\n"
	"  --http ADDR:PORT    /healthz and /metrics (default " MIRROR_DEFAULT_HTTP ", 'off': none)\n"
	"  --publish EP --query EP   funneld endpoints (else the environment's\n"
	"                      FUNNEL_PUBLISH, FUNNEL_QUERY; else loopback 7401, 7402)\n"
	"  --key FILE --server-key FILE   this program's CURVE secret key and funneld.pub,\n"
	"                      for a funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --until-head, --once   stop once the log's head is in the stream\n"
	"  --ready-file FILE   written once the stream is checked and copying starts\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-mirror:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Exit codes: 0 ok, 1 failure (a stream that is not this log's mirror\n"
	"included), 2 usage error.\n";

int
main(int argc, char **argv)
{
	static mirror_args a = { .nats = MIRROR_DEFAULT_NATS, .stream = MIRROR_DEFAULT_STREAM,
	                         .subject = MIRROR_DEFAULT_SUBJECT, .http = MIRROR_DEFAULT_HTTP,
	                         .replicas = 1, .window = 1024 };
	svc_desc d = {
		.name = MIRROR_NAME, .prog = "funnel-mirror", .usage = usage_text, .args = &a.c,
		.ctx = &a, .own = mirror_options, .own_fn = mirror_option, .run = mirror_run,
	};
	return svc_main(&d, argc, argv);
}
