/*
 * clients/gateway/main.c - funnel-gateway: web forms and apps publish
 * leads over HTTP (http.c), as the forms section of the rules file says
 * (forms.c).
 *
 *   funnel-gateway [run] [options]      serve (default)
 *   funnel-gateway check [FILE]         validate the forms section
 *
 * A program without a view: described to the services' main (svcmain.h)
 * by its options, the access file it reads first, its forms section for
 * `check` and its `run` (run.c).  The rules file is recorded in the log
 * before the first lead.captured made with it (http.c).
 */
#include "gateway.h"
#include "svcmain.h"

static const char usage_text[] =
	"usage: funnel-gateway [COMMAND] [options]\n"
	"\n"
	"Commands:\n"
	"  run                 serve POST /forms/{id}, /forms/{id}.js, /v1/events, /metrics,\n"
	"                      /healthz (the default)\n"
	"  check [FILE]        validate the forms section of a rules file (default: --rules)\n"
	"\n"
	"Options:\n"
	"  --http ADDR:PORT    where to serve (default " GW_DEFAULT_HTTP "; port 0 picks one)\n"
	"  --rules FILE        the shared rules file with the forms section (default funnel.yaml)\n"
	"  --ingest EP --query EP   funneld endpoints (default loopback 7400, 7402)\n"
	"  --key FILE --server-key FILE   the gateway's CURVE secret key and funneld.pub, for a\n"
	"                      funneld with --access (else FUNNEL_KEY, FUNNEL_SERVER_KEY)\n"
	"  --access FILE       the access file: POST /v1/events wants a bearer token of it, from\n"
	"                      any address, and sends only the types its principal may publish\n"
	"  --lead-key FILE     the secret of the lead ids, 64 hex digits; created when missing\n"
	"                      (default " GW_DEFAULT_KEY_FILE "; keep it: a new key, new lead ids)\n"
	"  --threads N         server threads (default 4); a post waiting for funneld\n"
	"                      holds none\n"
	"  --timeout-ms N      wait for funneld's ack at most this long, then 503 (default 3000)\n"
	"  --rate-limit N      form posts per minute per client address, 0: none (default 60)\n"
	"  --rate-burst N      posts an address may send at once (default 20)\n"
	"  --trusted-proxy ADDR[/BITS][,...]  a reverse proxy in front (repeatable): from its\n"
	"                      connections the client is the last X-Forwarded-For hop that is\n"
	"                      not a trusted proxy (rate limit, loopback check)\n"
	"  --ready-file FILE   written once serving: http=ADDR:PORT\n"
	"  --log-level LEVEL   debug, info, warn, error (default info)\n"
	"  --config FILE       the settings file (sections endpoints: and funnel-gateway:;\n"
	"                      env FUNNEL_CONFIG); flags win over it\n"
	"\n"
	"Long options are spelled in full (--rule for --rules is refused).\n"
	"Exit codes: 0 ok, 1 failure, 2 usage error.\n";

int
main(int argc, char **argv)
{
	static gw_args a = { .c = { .rules = "funnel.yaml" },
	                     .h = { .addr = GW_DEFAULT_HTTP, .threads = 4, .timeout_ms = 3000,
	                            .rate_per_minute = 60, .rate_burst = 20 },
	                     .key_file = GW_DEFAULT_KEY_FILE };
	svc_desc d = {
		.name = GW_NAME, .prog = "funnel-gateway", .usage = usage_text, .args = &a.c,
		.ctx = &a, .own = gw_options, .own_fn = gw_option, .prepare = gw_prepare,
		.rules_load = gw_check_load, .rules_destroy = gw_check_destroy, .rules_ok = gw_check_ok,
		.run = gw_run,
	};
	return svc_main(&d, argc, argv);
}
