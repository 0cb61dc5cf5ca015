/*
 * proto/seal.h - sealed personal values (PROTOCOL.md "Personal data").
 *
 * funneld replaces each personal value of an event's data (the data paths
 * of its personal-fields setting) by a sealed value before it stores the
 * record: a msgpack ext of type FP_SEAL_EXT whose payload is
 *
 *   version (1 byte, FP_SEAL_VERSION) | nonce (24 bytes) | ciphertext
 *
 * the ciphertext being XChaCha20-Poly1305-IETF (libsodium
 * crypto_aead_xchacha20poly1305_ietf) of the value's msgpack encoding,
 * under the lead's 32-byte data key, with the associated data
 *
 *   lead id | 0x00 | path
 *
 * (path: the dotted data path, "email", "contact.phone").  A reader with
 * the lead's key gets the value back; without it (the lead was erased and
 * its key destroyed) the value reads as FP_SEAL_ERASED.
 *
 * Pure functions of their arguments; no allocation except where a zone
 * is passed (the caller's).
 */
#ifndef FUNNEL_PROTO_SEAL_H
#define FUNNEL_PROTO_SEAL_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "funnel/record.h"

#define FP_SEAL_EXT 16
#define FP_SEAL_VERSION 1
#define FP_SEAL_KEY_BYTES 32
#define FP_SEAL_NONCE_BYTES 24
#define FP_SEAL_TAG_BYTES 16
/* bytes a sealed value's payload adds to the value's encoding */
#define FP_SEAL_OVERHEAD (1 + FP_SEAL_NONCE_BYTES + FP_SEAL_TAG_BYTES)
/* what a sealed value reads as once its key is gone */
#define FP_SEAL_ERASED "[erased]"
/* a data path is at most this long, and at most this deep */
#define FP_SEAL_MAX_PATH 128
#define FP_SEAL_MAX_DEPTH 4

/* Pack the sealed form of `plain` (a msgpack encoding of plen bytes) as
 * one ext value, under a nonce the caller drew at random (never used
 * twice under a key).  Returns 0, or -1 when out of memory. */
int fp_seal_pack(msgpack_packer *pk, const uint8_t key[FP_SEAL_KEY_BYTES],
                 const uint8_t nonce[FP_SEAL_NONCE_BYTES], funnel_str lead,
                 const char *path, size_t path_len, const void *plain, size_t plen);

/* 1 when o is a sealed value (an ext of type FP_SEAL_EXT). */
int fp_seal_is(const msgpack_object *o);

/* The data path of a map entry: path[0..plen) (the parent's path, "" at
 * the top) extended in place by "." and key (a string).  Returns the new
 * length, or -1 when key is not a string or the path would pass
 * FP_SEAL_MAX_PATH (path is then untouched).  path holds
 * FP_SEAL_MAX_PATH bytes. */
int fp_seal_path_join(char *path, size_t plen, const msgpack_object *key);

/*
 * Open the sealed value o found at path of lead's data: on success *out
 * is the clear value, its objects and bytes in z; 0.  Returns 1 when the
 * value does not open under key (the wrong key, a destroyed key's
 * successor, or tampering), -1 when out of memory or o is not sealed.
 */
int fp_seal_open(const msgpack_object *o, const uint8_t key[FP_SEAL_KEY_BYTES], funnel_str lead,
                 const char *path, size_t path_len, msgpack_zone *z, msgpack_object *out);

/*
 * Replace, in the data map of a record of lead (objects the caller owns,
 * in place), every sealed value by its clear value when key opens it, or
 * by the string FP_SEAL_ERASED otherwise (key NULL: every sealed value
 * reads as erased).  Nested maps are walked to FP_SEAL_MAX_DEPTH.
 * Returns the number of sealed values found, or -1 when out of memory.
 */
int fp_seal_open_all(msgpack_object *data, const uint8_t *key, funnel_str lead, msgpack_zone *z);

/* 1 when every sealed value of data opens under key (nothing changed). */
int fp_seal_opens(const msgpack_object *data, const uint8_t key[FP_SEAL_KEY_BYTES],
                  funnel_str lead, msgpack_zone *z);

/* 1 when data (a map) holds a sealed value, to FP_SEAL_MAX_DEPTH. */
int fp_seal_any(const msgpack_object *data);

#endif /* FUNNEL_PROTO_SEAL_H */
