/*
 * funnel/error.h - the one error enum of funnel, shared by the wire
 * protocol, the daemon, the client library and the CLI.
 *
 * Contract:
 *  - 0 (FUNNEL_OK) is success; every failure is a stable positive code.
 *  - Codes 1..63 travel on the wire in error replies ("code" field) and
 *    never change meaning; PROTOCOL.md lists them.  Codes 64 and up are
 *    raised only inside the client library (timeouts, transport errors)
 *    and never appear on the wire.
 *  - funnel_strerror() and funnel_errname() never return NULL and the
 *    strings they return are static: never free them.
 */
#ifndef FUNNEL_ERROR_H
#define FUNNEL_ERROR_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum funnel_err {
	FUNNEL_OK = 0,
	/* --- wire codes: stable, see proto/PROTOCOL.md "Error codes" --- */
	FUNNEL_EMALFORMED = 1,     /* not msgpack, or not the shape asked for */
	FUNNEL_EMISSING = 2,       /* a required field is absent */
	FUNNEL_ETYPE = 3,          /* a field has the wrong msgpack type */
	FUNNEL_EVALUE = 4,         /* a field's value is not allowed (empty, negative, unknown field) */
	FUNNEL_ETOOBIG = 5,        /* an event or request is over a documented limit */
	FUNNEL_EUNKNOWN_TYPE = 6,  /* an event type funnel does not know (custom types are x.*) */
	FUNNEL_ENOLEAD = 7,        /* the event needs a lead that was never captured */
	FUNNEL_ETRANSITION = 8,    /* the event makes no sense for the lead's stage */
	FUNNEL_EVERSION = 9,       /* expected_version differs from the lead's version */
	FUNNEL_EOP = 10,           /* unknown request op */
	FUNNEL_ESTORAGE = 11,      /* the log could not be written (disk full, I/O): nothing stored */
	FUNNEL_ESHUTDOWN = 12,     /* the daemon is stopping and took no new work */
	FUNNEL_ENOTFOUND = 13,     /* a query named something that does not exist */
	FUNNEL_EINTERNAL = 14,     /* a bug or an unexpected storage error; the daemon logs the cause */
	FUNNEL_EIDCONFLICT = 15,   /* the id is stored already, for an event with other content */
	FUNNEL_EFORBIDDEN = 16,    /* the authenticated principal may not publish this type, or read */
	/* --- client-side codes: never on the wire --- */
	FUNNEL_ETIMEDOUT = 64,     /* no reply within the timeout */
	FUNNEL_ETRANSPORT = 65,    /* a ZeroMQ call failed (errno kept in the message) */
	FUNNEL_ENOMEM = 66,        /* out of memory */
	FUNNEL_EPROTOCOL = 67,     /* the peer's reply does not follow PROTOCOL.md */
	FUNNEL_ECHAIN = 68,        /* verification found a record that breaks the hash chain */
	FUNNEL_EINVAL = 69,        /* an invalid argument was passed to the library */
	FUNNEL_EJSON = 70          /* a JSON input could not be converted (CLI) */
} funnel_err;

/* The one error struct of funnel: proto/ fills it (as fp_error) for the
 * wire, libfunnel hands it out as the details of an object's last failure.
 * The code, the index of the offending event in its request (-1 if none),
 * the field ("" if none), a message naming the problem, as the daemon sent
 * it, and for FUNNEL_EIDCONFLICT the seq of the event that holds the id (0
 * for every other code).  Plain value, no ownership. */
typedef struct funnel_error_info {
	int code;
	int index;
	char field[32];
	char message[256];
	uint64_t seq;
} funnel_error_info;

/* Human message for a code, e.g. "event makes no sense for the lead's stage". */
const char *funnel_strerror(int err);

/* Stable symbolic name for a code, e.g. "ETRANSITION"; "EUNKNOWN" for codes
 * funnel does not define. */
const char *funnel_errname(int err);

#ifdef __cplusplus
}
#endif
#endif /* FUNNEL_ERROR_H */
