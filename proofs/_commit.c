/* The native commit pass of proofs.engine.CommitEngine.
 *
 * `commit_pass` applies a dirty set to the trie held in the engine's node cache and returns the new
 * root reference with everything the engine needs to finish the commit: the new hashed nodes (for the
 * store and for the cache) and the hashed references that left the trie. It works on exactly the
 * node tuples of the pure-Python path (see proofs/engine.py):
 *
 *     leaf      (0, encoding, born, path: str, value: bytes)
 *     extension (1, encoding, born, path: str, child_ref: bytes)
 *     branch    (2, encoding, born, ref_0, ..., ref_15)
 *
 * and follows the same algorithm step by step (the function names below are those of engine.py), so
 * both paths produce the same roots, nodes, store writes and cache updates. A reference missing from
 * the cache is resolved by calling back into Python (`engine._node(ref)`), which reads the store.
 *
 * The pass changes nothing it was given: new node tuples are only returned, and the caller decides
 * to store and cache them. On any error it raises (the engine's named exceptions for invalid input and
 * corrupt nodes, whatever the store raised otherwise) and everything it built is freed.
 *
 * New node tuples hold only bytes, str and int objects; they are untracked by the cyclic collector at
 * creation, so the cache never needs a collector pass to become invisible to it again.
 *
 * Keccak-256 (the original Keccak padding, as Ethereum uses) is implemented here from the Keccak
 * reference specification: Keccak-f[1600] with rate 1088 bits.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ keccak */

static const uint64_t ROUND_CONSTANTS[24] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808AULL, 0x8000000080008000ULL,
    0x000000000000808BULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008AULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000AULL,
    0x000000008000808BULL, 0x800000000000008BULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800AULL, 0x800000008000000AULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

#define ROL64(v, n) (((v) << (n)) | ((v) >> (64 - (n))))

/* Lane (x, y) of the state is s[x + 5y]; below, the lane variables are named <y><x>. A round is theta
 * (column parities c, their mix d), rho and pi (each lane rotated by its fixed offset and moved from
 * (x, y) to (y, 2x + 3y mod 5), giving b), chi (row-wise non-linear step) and iota (round constant).
 * Rounds alternate between the lane sets a and e, so no lane is copied. */
#define CHI5(E, o, b0, b1, b2, b3, b4)       \
    E##o##0 = b0 ^ (~b1 & b2);                \
    E##o##1 = b1 ^ (~b2 & b3);                \
    E##o##2 = b2 ^ (~b3 & b4);                \
    E##o##3 = b3 ^ (~b4 & b0);                \
    E##o##4 = b4 ^ (~b0 & b1)

/* One round from the lanes A<y><x> into the lanes E<y><x>. */
#define KECCAK_ROUND(A, E, rc)                                                                     \
    c0 = A##00 ^ A##10 ^ A##20 ^ A##30 ^ A##40;                                                    \
    c1 = A##01 ^ A##11 ^ A##21 ^ A##31 ^ A##41;                                                    \
    c2 = A##02 ^ A##12 ^ A##22 ^ A##32 ^ A##42;                                                    \
    c3 = A##03 ^ A##13 ^ A##23 ^ A##33 ^ A##43;                                                    \
    c4 = A##04 ^ A##14 ^ A##24 ^ A##34 ^ A##44;                                                    \
    d0 = c4 ^ ROL64(c1, 1);                                                                        \
    d1 = c0 ^ ROL64(c2, 1);                                                                        \
    d2 = c1 ^ ROL64(c3, 1);                                                                        \
    d3 = c2 ^ ROL64(c4, 1);                                                                        \
    d4 = c3 ^ ROL64(c0, 1);                                                                        \
    b0 = A##00 ^ d0; b1 = ROL64(A##11 ^ d1, 44); b2 = ROL64(A##22 ^ d2, 43);                        \
    b3 = ROL64(A##33 ^ d3, 21); b4 = ROL64(A##44 ^ d4, 14);                                        \
    CHI5(E, 0, b0, b1, b2, b3, b4);                                                                \
    E##00 ^= (rc);                                                                                 \
    b0 = ROL64(A##03 ^ d3, 28); b1 = ROL64(A##14 ^ d4, 20); b2 = ROL64(A##20 ^ d0, 3);              \
    b3 = ROL64(A##31 ^ d1, 45); b4 = ROL64(A##42 ^ d2, 61);                                        \
    CHI5(E, 1, b0, b1, b2, b3, b4);                                                                \
    b0 = ROL64(A##01 ^ d1, 1); b1 = ROL64(A##12 ^ d2, 6); b2 = ROL64(A##23 ^ d3, 25);               \
    b3 = ROL64(A##34 ^ d4, 8); b4 = ROL64(A##40 ^ d0, 18);                                         \
    CHI5(E, 2, b0, b1, b2, b3, b4);                                                                \
    b0 = ROL64(A##04 ^ d4, 27); b1 = ROL64(A##10 ^ d0, 36); b2 = ROL64(A##21 ^ d1, 10);             \
    b3 = ROL64(A##32 ^ d2, 15); b4 = ROL64(A##43 ^ d3, 56);                                        \
    CHI5(E, 3, b0, b1, b2, b3, b4);                                                                \
    b0 = ROL64(A##02 ^ d2, 62); b1 = ROL64(A##13 ^ d3, 55); b2 = ROL64(A##24 ^ d4, 39);             \
    b3 = ROL64(A##30 ^ d0, 41); b4 = ROL64(A##41 ^ d1, 2);                                         \
    CHI5(E, 4, b0, b1, b2, b3, b4)

#define LANES(P) P##00, P##01, P##02, P##03, P##04, P##10, P##11, P##12, P##13, P##14, P##20, P##21, \
    P##22, P##23, P##24, P##30, P##31, P##32, P##33, P##34, P##40, P##41, P##42, P##43, P##44

static inline __attribute__((always_inline)) void keccak_rounds(uint64_t s[25])
{
    uint64_t LANES(a), LANES(e), b0, b1, b2, b3, b4, c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    a00 = s[0]; a01 = s[1]; a02 = s[2]; a03 = s[3]; a04 = s[4];
    a10 = s[5]; a11 = s[6]; a12 = s[7]; a13 = s[8]; a14 = s[9];
    a20 = s[10]; a21 = s[11]; a22 = s[12]; a23 = s[13]; a24 = s[14];
    a30 = s[15]; a31 = s[16]; a32 = s[17]; a33 = s[18]; a34 = s[19];
    a40 = s[20]; a41 = s[21]; a42 = s[22]; a43 = s[23]; a44 = s[24];
    for (int round = 0; round < 24; round += 2) {
        KECCAK_ROUND(a, e, ROUND_CONSTANTS[round]);
        KECCAK_ROUND(e, a, ROUND_CONSTANTS[round + 1]);
    }
    s[0] = a00; s[1] = a01; s[2] = a02; s[3] = a03; s[4] = a04;
    s[5] = a10; s[6] = a11; s[7] = a12; s[8] = a13; s[9] = a14;
    s[10] = a20; s[11] = a21; s[12] = a22; s[13] = a23; s[14] = a24;
    s[15] = a30; s[16] = a31; s[17] = a32; s[18] = a33; s[19] = a34;
    s[20] = a40; s[21] = a41; s[22] = a42; s[23] = a43; s[24] = a44;
}

typedef void (*Permutation)(uint64_t s[25]);

static void keccak_f1600_generic(uint64_t s[25])
{
    keccak_rounds(s);
}

#if defined(__GNUC__) && defined(__x86_64__)
/* The same permutation compiled for BMI1 (one and-not instruction per chi term), used when the CPU has it. */
__attribute__((target("bmi"))) static void keccak_f1600_bmi(uint64_t s[25])
{
    keccak_rounds(s);
}
#endif

static Permutation keccak_f1600 = keccak_f1600_generic;

static void choose_keccak(void)
{
#if defined(__GNUC__) && defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("bmi")) {
        keccak_f1600 = keccak_f1600_bmi;
    }
#endif
}

#define KECCAK_RATE 136

static inline uint64_t load_le64(const unsigned char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

/* Write keccak256(data[0:length]) to out[0:32], using the permutation `permute`. */
static void keccak256_with(Permutation permute, const unsigned char *data, size_t length, unsigned char out[32])
{
    uint64_t state[25] = {0};
    while (length >= KECCAK_RATE) {
        for (int i = 0; i < KECCAK_RATE / 8; i++) {
            state[i] ^= load_le64(data + 8 * i);
        }
        permute(state);
        data += KECCAK_RATE;
        length -= KECCAK_RATE;
    }
    unsigned char last[KECCAK_RATE];
    memset(last, 0, sizeof last);
    memcpy(last, data, length);
    last[length] ^= 0x01;
    last[KECCAK_RATE - 1] ^= 0x80;
    for (int i = 0; i < KECCAK_RATE / 8; i++) {
        state[i] ^= load_le64(last + 8 * i);
    }
    permute(state);
    for (int i = 0; i < 4; i++) {
        uint64_t lane = state[i];
        for (int k = 0; k < 8; k++) {
            out[8 * i + k] = (unsigned char)(lane >> (8 * k));
        }
    }
}

static void keccak256(const unsigned char *data, size_t length, unsigned char out[32])
{
    keccak256_with(keccak_f1600, data, length, out);
}

/* Keccak-256 of several messages at once. A commit hashes thousands of nodes, and the nodes of one
 * level of the trie do not depend on each other: with AVX-512, eight of them go through the
 * permutation together, one message per 64-bit element of each lane vector (the same rounds as
 * above, written lane by lane from the specification's step mappings). Elsewhere, or for what is
 * left over, they are hashed one by one. */

/* Rotation offset of lane x + 5y (rho). */
static const int RHO[25] = {
    0, 1, 62, 28, 27, 36, 44, 6, 55, 20, 3, 10, 43, 25, 39, 41, 45, 15, 21, 8, 18, 2, 61, 56, 14,
};

#define KECCAK_WAYS 8

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_KECCAK_X8 1

/* keccak256 of the KECCAK_WAYS messages data[k][0:lengths[k]], all of which absorb the same number of
 * blocks (lengths[k] / KECCAK_RATE equal), into out[k]. The loops over lanes are unrolled whatever
 * the optimization level, so that the rotation offsets and lane indices are constants. */
__attribute__((target("avx512f"))) static void keccak256_x8(const unsigned char *const data[KECCAK_WAYS],
                                                           const size_t lengths[KECCAK_WAYS],
                                                           unsigned char *const out[KECCAK_WAYS])
{
    __m512i a[25], b[25], c[5], d[5];
    for (int i = 0; i < 25; i++) {
        a[i] = _mm512_setzero_si512();
    }
    size_t full_blocks = lengths[0] / KECCAK_RATE;
    /* The last block of each message, padded (0x01 after the data, 0x80 at the end of the block). */
    unsigned char last[KECCAK_WAYS][KECCAK_RATE];
    long long addresses[KECCAK_WAYS];
    for (int k = 0; k < KECCAK_WAYS; k++) {
        size_t rest = lengths[k] - full_blocks * KECCAK_RATE;
        memset(last[k], 0, KECCAK_RATE);
        memcpy(last[k], data[k] + full_blocks * KECCAK_RATE, rest);
        last[k][rest] ^= 0x01;
        last[k][KECCAK_RATE - 1] ^= 0x80;
    }
    for (size_t block = 0; block <= full_blocks; block++) {
        for (int k = 0; k < KECCAK_WAYS; k++) {
            addresses[k] = (long long)(block < full_blocks ? data[k] + block * KECCAK_RATE : last[k]);
        }
        __m512i at = _mm512_loadu_si512(addresses);
        const __m512i step = _mm512_set1_epi64(8);
        for (int i = 0; i < KECCAK_RATE / 8; i++) {
            a[i] = _mm512_xor_si512(a[i], _mm512_i64gather_epi64(at, NULL, 1));
            at = _mm512_add_epi64(at, step);
        }
        for (int round = 0; round < 24; round++) {
#pragma GCC unroll 5
            for (int x = 0; x < 5; x++) {
                c[x] = _mm512_ternarylogic_epi64(a[x], a[x + 5], a[x + 10], 0x96);
                c[x] = _mm512_ternarylogic_epi64(c[x], a[x + 15], a[x + 20], 0x96);
            }
#pragma GCC unroll 5
            for (int x = 0; x < 5; x++) {
                d[x] = _mm512_xor_si512(c[(x + 4) % 5], _mm512_rol_epi64(c[(x + 1) % 5], 1));
            }
#pragma GCC unroll 5
            for (int y = 0; y < 5; y++) {
#pragma GCC unroll 5
                for (int x = 0; x < 5; x++) {
                    __m512i lane = _mm512_xor_si512(a[x + 5 * y], d[x]);
                    b[y + 5 * ((2 * x + 3 * y) % 5)] = _mm512_rolv_epi64(lane, _mm512_set1_epi64(RHO[x + 5 * y]));
                }
            }
#pragma GCC unroll 5
            for (int y = 0; y < 5; y++) {
#pragma GCC unroll 5
                for (int x = 0; x < 5; x++) {
                    a[x + 5 * y] = _mm512_ternarylogic_epi64(b[x + 5 * y], b[(x + 1) % 5 + 5 * y],
                                                             b[(x + 2) % 5 + 5 * y], 0xD2);
                }
            }
            a[0] = _mm512_xor_si512(a[0], _mm512_set1_epi64((long long)ROUND_CONSTANTS[round]));
        }
    }
    uint64_t lanes[4][KECCAK_WAYS];
    for (int i = 0; i < 4; i++) {
        _mm512_storeu_si512(lanes[i], a[i]);
    }
    for (int k = 0; k < KECCAK_WAYS; k++) {
        for (int i = 0; i < 4; i++) {
            for (int m = 0; m < 8; m++) {
                out[k][8 * i + m] = (unsigned char)(lanes[i][k] >> (8 * m));
            }
        }
    }
}
#else
#define HAVE_KECCAK_X8 0
#endif

#if HAVE_KECCAK_X8
static int keccak_x8_usable;
#endif

static void choose_keccak_many(void)
{
#if HAVE_KECCAK_X8
    __builtin_cpu_init();
    keccak_x8_usable = __builtin_cpu_supports("avx512f");
#endif
}

/* out[i] = keccak256(data[i][0:lengths[i]]) for every i < count. Messages absorbing the same number of
 * blocks are gathered eight at a time for keccak256_x8 (a group of fewer than three is cheaper one by
 * one; one of three to seven is completed with copies of its first message). */
#define KECCAK_GROUPS 8 /* messages of up to KECCAK_GROUPS * KECCAK_RATE - 1 bytes are grouped */

static void keccak256_many(const unsigned char *const *data, const size_t *lengths, unsigned char (*out)[32],
                           Py_ssize_t count)
{
#if HAVE_KECCAK_X8
    if (keccak_x8_usable) {
        const unsigned char *group_data[KECCAK_GROUPS][KECCAK_WAYS];
        size_t group_lengths[KECCAK_GROUPS][KECCAK_WAYS];
        unsigned char *group_out[KECCAK_GROUPS][KECCAK_WAYS];
        int filled[KECCAK_GROUPS] = {0};
        unsigned char spare[KECCAK_WAYS][32];
        for (Py_ssize_t i = 0; i < count; i++) {
            size_t blocks = lengths[i] / KECCAK_RATE;
            if (blocks >= KECCAK_GROUPS) {
                keccak256(data[i], lengths[i], out[i]);
                continue;
            }
            int k = filled[blocks]++;
            group_data[blocks][k] = data[i];
            group_lengths[blocks][k] = lengths[i];
            group_out[blocks][k] = out[i];
            if (k + 1 == KECCAK_WAYS) {
                keccak256_x8(group_data[blocks], group_lengths[blocks], group_out[blocks]);
                filled[blocks] = 0;
            }
        }
        for (int blocks = 0; blocks < KECCAK_GROUPS; blocks++) {
            int n = filled[blocks];
            if (n >= 3) {
                for (int k = n; k < KECCAK_WAYS; k++) {
                    group_data[blocks][k] = group_data[blocks][0];
                    group_lengths[blocks][k] = group_lengths[blocks][0];
                    group_out[blocks][k] = spare[k];
                }
                keccak256_x8(group_data[blocks], group_lengths[blocks], group_out[blocks]);
            } else {
                for (int k = 0; k < n; k++) {
                    keccak256(group_data[blocks][k], group_lengths[blocks][k], group_out[blocks][k]);
                }
            }
        }
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < count; i++) {
        keccak256(data[i], lengths[i], out[i]);
    }
}

/* ------------------------------------------------------------------------------------------ module state */

enum { LEAF = 0, EXT = 1, BRANCH = 2 };
#define KEY_BYTES 32
#define KEY_NIBBLES 64
#define HASH_REF_SIZE 33

static PyObject *g_blank;               /* proofs.encoding.BLANK_NODE_REF, b"\x80" */
static PyObject *g_invalid_key_error;   /* proofs.engine.InvalidKeyError */
static PyObject *g_invalid_value_error; /* proofs.engine.InvalidValueError */
static PyObject *g_corrupt_node_error;  /* proofs.engine.CorruptNodeError */
static PyObject *g_tags[3];             /* the ints 0, 1, 2 */

static const char HEX_DIGITS[] = "0123456789abcdef";
static signed char NIBBLE_OF[256]; /* hex digit -> value, -1 for anything else */

/* ------------------------------------------------------------------------------------------ prefetching */

/* The node cache is a dict of millions of entries: each probe of it misses the CPU caches twice (its
 * slot in the index table, then the entry), and a commit probes it thousands of times with keys known
 * in advance. A batch of probes is therefore run as a pipeline: a few keys ahead of the one being
 * probed, the index slot of its first probe is prefetched, then (once it has arrived) the entry it
 * names, then the value that entry holds, so the misses of neighbouring probes overlap instead of
 * following one another.
 *
 * This needs the layout of a dict's key table, which is CPython's internal business: it is mirrored
 * here for the versions known to use it (3.11 and 3.12) and the prefetching is skipped elsewhere. A
 * prefetch never faults and the layout is only read to compute addresses, so a wrong guess would cost
 * time, never correctness. */
typedef struct {
    Py_ssize_t refcnt;
    uint8_t log2_size;
    uint8_t log2_index_bytes;
    uint8_t kind;
    uint32_t version;
    Py_ssize_t usable;
    Py_ssize_t nentries;
    char indices[];
} DictKeys;

typedef struct {
    Py_hash_t hash;
    PyObject *key;
    PyObject *value;
} DictEntry;

enum { DICT_KEYS_GENERAL_KIND = 0 };

#if defined(__GNUC__) && PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030D0000
#define DICT_PREFETCH 1
#define PREFETCH(address) __builtin_prefetch((const void *)(address), 1, 3)
#else
#define DICT_PREFETCH 0
#define PREFETCH(address) ((void)(address))
#endif

/* The key table of `dict` when its layout is the one mirrored above, else NULL. Read again before each
 * use: an insertion may have replaced the table (and freed the old one). */
static inline const DictKeys *dict_keys(PyObject *dict)
{
#if DICT_PREFETCH
    const DictKeys *keys = (const DictKeys *)((PyDictObject *)dict)->ma_keys;
    if (keys->kind != DICT_KEYS_GENERAL_KIND || keys->log2_index_bytes < keys->log2_size ||
        keys->log2_index_bytes - keys->log2_size > 3) {
        return NULL;
    }
    return keys;
#else
    (void)dict;
    return NULL;
#endif
}

/* The index slot of the first probe for `hash`. */
static inline const char *probe_slot(const DictKeys *keys, Py_hash_t hash)
{
#if DICT_PREFETCH
    size_t slot = (size_t)hash & (((size_t)1 << keys->log2_size) - 1);
    return keys->indices + (slot << (keys->log2_index_bytes - keys->log2_size));
#else
    (void)keys;
    (void)hash;
    return NULL;
#endif
}

/* The entry the first probe for `hash` lands on, or NULL for an empty slot. */
static inline const DictEntry *probe_entry(const DictKeys *keys, Py_hash_t hash)
{
#if DICT_PREFETCH
    const char *slot = probe_slot(keys, hash);
    int64_t index;
    switch (keys->log2_index_bytes - keys->log2_size) {
    case 0: index = *(const int8_t *)slot; break;
    case 1: index = *(const int16_t *)slot; break;
    case 2: index = *(const int32_t *)slot; break;
    default: index = *(const int64_t *)slot; break;
    }
    if (index < 0 || index >= keys->nentries) {
        return NULL;
    }
    return &((const DictEntry *)(keys->indices + ((size_t)1 << keys->log2_index_bytes)))[index];
#else
    (void)keys;
    (void)hash;
    return NULL;
#endif
}

/* Probes of `dict` for the bytes keys items[0:count], prefetched by batches: call `prefetch_probes`
 * with i before operating on items[i]. At the start of each batch of PROBE_BATCH keys, every stage is
 * run over the whole batch before the next one (the index slots of their first probes, then the
 * entries those name, then, with `values`, the values the entries hold (node tuples about to be
 * dropped) and the items of those tuples (about to be released)), so the misses of a stage overlap. */
#define PROBE_BATCH 128

typedef struct {
    PyObject *dict;
    PyObject *const *items;
    Py_ssize_t count;
    int values;
    Py_hash_t hashes[PROBE_BATCH];
    PyObject *found[PROBE_BATCH];
} Probes;

static void probes_start(Probes *probes, PyObject *dict, PyObject *const *items, Py_ssize_t count, int values)
{
    probes->dict = dict;
    probes->items = items;
    probes->count = count;
    probes->values = values;
}

static inline void prefetch_probes(Probes *probes, Py_ssize_t i)
{
#if DICT_PREFETCH
    if (i % PROBE_BATCH != 0) {
        return;
    }
    const DictKeys *keys = dict_keys(probes->dict);
    if (keys == NULL) {
        return;
    }
    Py_ssize_t size = probes->count - i < PROBE_BATCH ? probes->count - i : PROBE_BATCH;
    PyObject *const *items = probes->items + i;
    for (Py_ssize_t k = 0; k < size; k++) {
        Py_hash_t hash = PyBytes_CheckExact(items[k]) ? PyObject_Hash(items[k]) : -1;
        probes->hashes[k] = hash;
        if (hash != -1) {
            PREFETCH(probe_slot(keys, hash));
        }
    }
    for (Py_ssize_t k = 0; k < size; k++) {
        const DictEntry *entry = probes->hashes[k] == -1 ? NULL : probe_entry(keys, probes->hashes[k]);
        if (entry != NULL) {
            PREFETCH(entry);
        }
    }
    if (!probes->values) {
        return;
    }
    for (Py_ssize_t k = 0; k < size; k++) {
        const DictEntry *entry = probes->hashes[k] == -1 ? NULL : probe_entry(keys, probes->hashes[k]);
        PyObject *value = entry != NULL && entry->hash == probes->hashes[k] ? entry->value : NULL;
        if (value != NULL) {
            PREFETCH(value);
            PREFETCH((const char *)value + 64);
            PREFETCH((const char *)value + 128);
        }
        probes->found[k] = value;
    }
    for (Py_ssize_t k = 0; k < size; k++) {
        PyObject *value = probes->found[k];
        if (value != NULL && PyTuple_CheckExact(value)) {
            for (Py_ssize_t m = 1; m < PyTuple_GET_SIZE(value); m++) {
                PREFETCH(PyTuple_GET_ITEM(value, m));
            }
        }
    }
#else
    (void)probes;
    (void)i;
#endif
}

/* ------------------------------------------------------------------------------------------ arena */

/* Every node being built and every scratch array of one commit comes from this arena and is freed
 * at once when the commit pass returns. */
typedef struct Chunk {
    struct Chunk *next;
    size_t used, size;
    max_align_t data[];
} Chunk;

typedef struct {
    Chunk *head;
} Arena;

/* Standard-size chunks of finished commits, kept for the next ones (at most SPARE_LIMIT of them, 16 MiB):
 * a commit then writes to memory that is already mapped and warm instead of fresh pages. Only touched
 * with the GIL held. */
#define CHUNK_CAPACITY (1u << 18)
#define SPARE_LIMIT 64
static Chunk *spare_chunks;
static int spare_count;

static void *arena_alloc(Arena *arena, size_t size)
{
    size = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    Chunk *chunk = arena->head;
    if (chunk == NULL || chunk->size - chunk->used < size) {
        if (size <= CHUNK_CAPACITY && spare_chunks != NULL) {
            chunk = spare_chunks;
            spare_chunks = chunk->next;
            spare_count--;
        } else {
            size_t capacity = size > CHUNK_CAPACITY ? size : CHUNK_CAPACITY;
            chunk = malloc(sizeof(Chunk) + capacity);
            if (chunk == NULL) {
                PyErr_NoMemory();
                return NULL;
            }
            chunk->size = capacity;
        }
        chunk->next = arena->head;
        chunk->used = 0;
        arena->head = chunk;
    }
    void *result = (char *)chunk->data + chunk->used;
    chunk->used += size;
    return result;
}

static void arena_free(Arena *arena)
{
    Chunk *chunk = arena->head;
    while (chunk != NULL) {
        Chunk *next = chunk->next;
        if (chunk->size == CHUNK_CAPACITY && spare_count < SPARE_LIMIT) {
            chunk->next = spare_chunks;
            spare_chunks = chunk;
            spare_count++;
        } else {
            free(chunk);
        }
        chunk = next;
    }
    arena->head = NULL;
}

/* ------------------------------------------------------------------------------------------ slots */

typedef struct Built Built;

/* What stands at a position of the trie: a reference (`ref`, borrowed: kept alive by a node tuple,
 * the commit's lists or the module) or a node being built in this commit (`node`). */
typedef struct {
    PyObject *ref;
    Built *node;
} Slot;

/* A node being built (encoding not known yet). Paths are hex digits, one per nibble. */
struct Built {
    int tag;
    int path_length;
    char path[KEY_NIBBLES];
    PyObject *path_obj; /* an existing str equal to path (borrowed), or NULL */
    PyObject *value;    /* leaf: the value (borrowed) */
    int height;         /* finalize: 0 for a node with no child being built, else 1 + their greatest */
    PyObject *ref;      /* finalize: the node's new reference (owned), once encoded */
    PyObject *tuple;    /* finalize: the new node tuple of a hashed node (owned) */
    PyObject *encoded;  /* finalize: the encoding of a hashed node (owned) */
    PyObject *hash;     /* finalize: the keccak of a hashed node (owned) */
    Slot child;         /* extension */
    Slot children[16];  /* branch */
};

/* The fields of a node, whether cached (a tuple) or being built. */
typedef struct {
    int tag;
    const char *path;
    int path_length;
    PyObject *path_obj;
    PyObject *value; /* leaf */
    Slot child;      /* extension */
    PyObject *tuple; /* cached node, or NULL */
    Built *built;    /* node being built, or NULL */
} View;

typedef struct {
    PyObject *nodes; /* the engine's node cache (dict) */
    PyObject *load;  /* engine._node */
    Py_ssize_t count;
    const char *hex;   /* count * 64 hex digits: the sorted dirty keys */
    PyObject **values; /* count values, in key order (owned) */
    PyObject *version; /* int */
    PyObject *hashes, *encodings, *created_refs, *created_nodes, *dropped, *loaded;
    Py_ssize_t built;  /* nodes built so far (some of them replaced before the end of the pass) */
    Py_ssize_t warmed; /* the dirty entries before this one had their paths prefetched (warm) */
    Arena arena;
} Ctx;

static inline int is_blank(PyObject *ref)
{
    return ref == g_blank || (PyBytes_GET_SIZE(ref) == 1 && PyBytes_AS_STRING(ref)[0] == (char)0x80);
}

static inline int slot_is_blank(Slot slot)
{
    return slot.node == NULL && is_blank(slot.ref);
}

/* The Python path compares slots by identity (`new is not old`); blank slots are one object there. */
static inline int slot_same(Slot a, Slot b)
{
    if (a.node != NULL || b.node != NULL) {
        return a.node == b.node;
    }
    return a.ref == b.ref || (is_blank(a.ref) && is_blank(b.ref));
}

static inline Slot slot_of_ref(PyObject *ref)
{
    Slot slot = {ref, NULL};
    return slot;
}

static inline Slot slot_of_node(Built *node)
{
    Slot slot = {NULL, node};
    return slot;
}

static inline Slot blank_slot(void)
{
    return slot_of_ref(g_blank);
}

static inline const char *key_hex(Ctx *ctx, Py_ssize_t i)
{
    return ctx->hex + KEY_NIBBLES * i;
}

/* The end of the run of sorted dirty keys from i (below hi) that share key i's nibble at depth: the
 * keys that go to one child of a branch. */
static inline Py_ssize_t nibble_run_end(Ctx *ctx, Py_ssize_t i, Py_ssize_t hi, int depth)
{
    char nibble = key_hex(ctx, i)[depth];
    Py_ssize_t j = i + 1;
    while (j < hi && key_hex(ctx, j)[depth] == nibble) {
        j++;
    }
    return j;
}

static inline int is_empty_value(PyObject *value)
{
    return PyBytes_GET_SIZE(value) == 0;
}

static inline int bytes_equal(PyObject *a, PyObject *b)
{
    Py_ssize_t n = PyBytes_GET_SIZE(a);
    return a == b || (n == PyBytes_GET_SIZE(b) && memcmp(PyBytes_AS_STRING(a), PyBytes_AS_STRING(b), n) == 0);
}

static Built *new_built(Ctx *ctx, int tag)
{
    /* Leaves and extensions never use the children array. */
    Built *node = arena_alloc(&ctx->arena, tag == BRANCH ? sizeof(Built) : offsetof(Built, children));
    if (node != NULL) {
        node->tag = tag;
        node->path_length = 0;
        node->path_obj = NULL;
        node->value = NULL;
        node->height = 0;
        node->ref = NULL;
        node->tuple = NULL;
        node->encoded = NULL;
        node->hash = NULL;
        node->child.ref = NULL;
        node->child.node = NULL;
        ctx->built++;
    }
    return node;
}

static Built *new_leaf(Ctx *ctx, const char *path, int path_length, PyObject *path_obj, PyObject *value)
{
    Built *node = new_built(ctx, LEAF);
    if (node != NULL) {
        memcpy(node->path, path, path_length);
        node->path_length = path_length;
        node->path_obj = path_obj;
        node->value = value;
    }
    return node;
}

static Built *new_extension(Ctx *ctx, const char *path, int path_length, PyObject *path_obj, Slot child)
{
    Built *node = new_built(ctx, EXT);
    if (node != NULL) {
        memcpy(node->path, path, path_length);
        node->path_length = path_length;
        node->path_obj = path_obj;
        node->child = child;
    }
    return node;
}

static Built *new_branch(Ctx *ctx, const Slot children[16])
{
    Built *node = new_built(ctx, BRANCH);
    if (node != NULL) {
        memcpy(node->children, children, sizeof node->children);
    }
    return node;
}

/* ------------------------------------------------------------------------------------------ reading nodes */

static int corrupt(const char *message)
{
    PyErr_SetString(g_corrupt_node_error, message);
    return -1;
}

static int check_ref(PyObject *ref)
{
    if (!PyBytes_CheckExact(ref) || PyBytes_GET_SIZE(ref) == 0 || PyBytes_GET_SIZE(ref) > HASH_REF_SIZE) {
        return corrupt("a cached node holds a child reference that is not a node reference");
    }
    return 0;
}

/* Fill `view` with the fields of the cached node tuple `tuple` (which must stay alive). */
static int view_tuple(PyObject *tuple, View *view)
{
    if (!PyTuple_CheckExact(tuple) || PyTuple_GET_SIZE(tuple) < 5) {
        return corrupt("a cached trie node is not a node tuple");
    }
    PyObject *tag_obj = PyTuple_GET_ITEM(tuple, 0);
    long tag;
    if (tag_obj == g_tags[0]) {
        tag = LEAF;
    } else if (tag_obj == g_tags[1]) {
        tag = EXT;
    } else if (tag_obj == g_tags[2]) {
        tag = BRANCH;
    } else {
        tag = PyLong_Check(tag_obj) ? PyLong_AsLong(tag_obj) : -1;
        if (tag == -1 && PyErr_Occurred()) {
            PyErr_Clear();
        }
    }
    view->tag = (int)tag;
    view->tuple = tuple;
    view->built = NULL;
    view->path = NULL;
    view->path_length = 0;
    view->path_obj = NULL;
    view->value = NULL;
    view->child.ref = NULL;
    view->child.node = NULL;
    if (tag == BRANCH) {
        /* Its children are checked where they are used (check_ref): a rebuilt branch reads each of
         * them only once. */
        if (PyTuple_GET_SIZE(tuple) != 19) {
            return corrupt("a cached branch does not have 16 children");
        }
        return 0;
    }
    if ((tag != LEAF && tag != EXT) || PyTuple_GET_SIZE(tuple) != 5) {
        return corrupt("a cached trie node has an unknown shape");
    }
    PyObject *path = PyTuple_GET_ITEM(tuple, 3);
    PyObject *second = PyTuple_GET_ITEM(tuple, 4);
    if (!PyUnicode_CheckExact(path) || !PyUnicode_IS_COMPACT_ASCII(path) ||
        PyUnicode_GET_LENGTH(path) > KEY_NIBBLES || !PyBytes_CheckExact(second)) {
        return corrupt("a cached leaf or extension has a malformed path or value");
    }
    view->path = (const char *)PyUnicode_1BYTE_DATA(path);
    view->path_length = (int)PyUnicode_GET_LENGTH(path);
    for (int k = 0; k < view->path_length; k++) {
        if (NIBBLE_OF[(unsigned char)view->path[k]] < 0) {
            return corrupt("a cached trie path holds a character that is not a hex digit");
        }
    }
    view->path_obj = path;
    if (tag == LEAF) {
        view->value = second;
    } else {
        if (check_ref(second) < 0) {
            return -1;
        }
        view->child = slot_of_ref(second);
    }
    return 0;
}

static void view_built(Built *node, View *view)
{
    view->tag = node->tag;
    view->tuple = NULL;
    view->built = node;
    view->path = node->path;
    view->path_length = node->path_length;
    view->path_obj = node->path_obj;
    view->value = node->value;
    view->child = node->child;
}

/* Return the cached node tuple for the non-empty reference `ref` (borrowed), loading it through the
 * engine on a cache miss (the loaded node is kept alive in ctx->loaded). */
static PyObject *get_node(Ctx *ctx, PyObject *ref)
{
    PyObject *node = PyDict_GetItemWithError(ctx->nodes, ref);
    if (node != NULL || PyErr_Occurred()) {
        return node;
    }
    node = PyObject_CallOneArg(ctx->load, ref);
    if (node == NULL) {
        return NULL;
    }
    int status = PyList_Append(ctx->loaded, node);
    Py_DECREF(node);
    return status < 0 ? NULL : node;
}

static int view_ref(Ctx *ctx, PyObject *ref, View *view)
{
    PyObject *node = get_node(ctx, ref);
    if (node == NULL) {
        return -1;
    }
    return view_tuple(node, view);
}

static int view_slot(Ctx *ctx, Slot slot, View *view)
{
    if (slot.node != NULL) {
        view_built(slot.node, view);
        return 0;
    }
    return view_ref(ctx, slot.ref, view);
}

static inline Slot view_child(const View *view, int index)
{
    if (view->built != NULL) {
        return view->built->children[index];
    }
    return slot_of_ref(PyTuple_GET_ITEM(view->tuple, 3 + index));
}

/* Record that the hashed node `slot` (an existing one) leaves the trie. Embedded nodes live in their
 * parent and are not recorded. */
static int drop(Ctx *ctx, Slot slot)
{
    PyObject *ref = slot.ref;
    if (PyBytes_GET_SIZE(ref) != HASH_REF_SIZE) {
        return 0;
    }
    return PyList_Append(ctx->dropped, ref);
}

/* ------------------------------------------------------------------------------------------ the pass */

typedef struct {
    const char *hex; /* 64 hex digits */
    PyObject *value;
} Pair;

static int apply(Ctx *ctx, Slot slot, int depth, Py_ssize_t lo, Py_ssize_t hi, Slot *out);
static void warm(Ctx *ctx, PyObject *start, int start_depth, Py_ssize_t start_lo, Py_ssize_t start_hi);

/* The pass prefetches the dirty paths of a subtree (warm) before it walks it, for the first subtrees
 * on its way down with at most WARM_KEYS dirty keys: the whole trie for small commits, one subtree
 * after another for big ones, whose paths would not stay in cache from the prefetch to the walk. */
#define WARM_KEYS 256

static int common_prefix_length(const char *a, const char *b, int n)
{
    int i = 0;
    while (i < n && a[i] == b[i]) {
        i++;
    }
    return i;
}

/* _build: a new subtree at `depth` holding exactly pairs[lo:hi] (sorted, non-empty values). */
static int build(Ctx *ctx, int depth, const Pair *pairs, Py_ssize_t lo, Py_ssize_t hi, Slot *out)
{
    if (lo == hi) {
        *out = blank_slot();
        return 0;
    }
    if (hi - lo == 1) {
        Built *leaf = new_leaf(ctx, pairs[lo].hex + depth, KEY_NIBBLES - depth, NULL, pairs[lo].value);
        if (leaf == NULL) {
            return -1;
        }
        *out = slot_of_node(leaf);
        return 0;
    }
    const char *first = pairs[lo].hex;
    int shared = common_prefix_length(first + depth, pairs[hi - 1].hex + depth, KEY_NIBBLES - depth);
    int at = depth + shared;
    if (at >= KEY_NIBBLES) {
        return corrupt("two equal keys in one build");
    }
    Slot children[16];
    for (int k = 0; k < 16; k++) {
        children[k] = blank_slot();
    }
    Py_ssize_t i = lo;
    while (i < hi) {
        char nibble = pairs[i].hex[at];
        Py_ssize_t j = i + 1;
        while (j < hi && pairs[j].hex[at] == nibble) {
            j++;
        }
        if (build(ctx, at + 1, pairs, i, j, &children[NIBBLE_OF[(unsigned char)nibble]]) < 0) {
            return -1;
        }
        i = j;
    }
    Built *branch = new_branch(ctx, children);
    if (branch == NULL) {
        return -1;
    }
    if (shared) {
        Built *extension = new_extension(ctx, first + depth, shared, NULL, slot_of_node(branch));
        if (extension == NULL) {
            return -1;
        }
        *out = slot_of_node(extension);
    } else {
        *out = slot_of_node(branch);
    }
    return 0;
}

/* The dirty entries lo:hi with non-empty values, as pairs (room for one more). */
static Pair *live_pairs(Ctx *ctx, Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t *count)
{
    Pair *pairs = arena_alloc(&ctx->arena, sizeof(Pair) * (size_t)(hi - lo + 1));
    if (pairs == NULL) {
        return NULL;
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t i = lo; i < hi; i++) {
        if (!is_empty_value(ctx->values[i])) {
            pairs[n].hex = key_hex(ctx, i);
            pairs[n].value = ctx->values[i];
            n++;
        }
    }
    *count = n;
    return pairs;
}

/* _build_fresh: the subtree holding exactly the non-deleting dirty entries lo:hi. */
static int build_fresh(Ctx *ctx, int depth, Py_ssize_t lo, Py_ssize_t hi, Slot *out)
{
    if (hi - lo == 1) {
        PyObject *value = ctx->values[lo];
        if (is_empty_value(value)) {
            *out = blank_slot();
            return 0;
        }
        Built *leaf = new_leaf(ctx, key_hex(ctx, lo) + depth, KEY_NIBBLES - depth, NULL, value);
        if (leaf == NULL) {
            return -1;
        }
        *out = slot_of_node(leaf);
        return 0;
    }
    Py_ssize_t n;
    Pair *pairs = live_pairs(ctx, lo, hi, &n);
    if (pairs == NULL) {
        return -1;
    }
    return build(ctx, depth, pairs, 0, n, out);
}

/* _prefix: the node equal to an extension with `path` over `slot`, merging paths as MPT requires. */
static int prefix(Ctx *ctx, const char *path, int path_length, PyObject *path_obj, Slot slot, Slot *out)
{
    View view;
    if (view_slot(ctx, slot, &view) < 0) {
        return -1;
    }
    if (view.tag == BRANCH) {
        Built *extension = new_extension(ctx, path, path_length, path_obj, slot);
        if (extension == NULL) {
            return -1;
        }
        *out = slot_of_node(extension);
        return 0;
    }
    if (path_length + view.path_length > KEY_NIBBLES) {
        return corrupt("a trie path is longer than a key");
    }
    if (slot.node == NULL && drop(ctx, slot) < 0) {
        return -1;
    }
    Built *merged = new_built(ctx, view.tag);
    if (merged == NULL) {
        return -1;
    }
    memcpy(merged->path, path, path_length);
    memcpy(merged->path + path_length, view.path, view.path_length);
    merged->path_length = path_length + view.path_length;
    merged->value = view.value;
    merged->child = view.child;
    *out = slot_of_node(merged);
    return 0;
}

/* _normalize_branch: a branch with these children, a collapsed leaf/extension, or empty. */
static int normalize_branch(Ctx *ctx, const Slot children[16], Slot *out)
{
    int occupied = 0, index = -1;
    for (int k = 0; k < 16; k++) {
        if (children[k].node == NULL && check_ref(children[k].ref) < 0) {
            return -1;
        }
        if (!slot_is_blank(children[k])) {
            occupied++;
            if (index < 0) {
                index = k;
            }
        }
    }
    if (occupied >= 2) {
        Built *branch = new_branch(ctx, children);
        if (branch == NULL) {
            return -1;
        }
        *out = slot_of_node(branch);
        return 0;
    }
    if (occupied == 0) {
        *out = blank_slot();
        return 0;
    }
    return prefix(ctx, &HEX_DIGITS[index], 1, NULL, children[index], out);
}

static int apply_branch(Ctx *ctx, Slot slot, const View *node, int depth, Py_ssize_t lo, Py_ssize_t hi, Slot *out)
{
    int fresh = slot.node != NULL;
    if (depth >= KEY_NIBBLES) {
        return corrupt("a branch below the last nibble of a key");
    }
    Slot children[16];
    for (int k = 0; k < 16; k++) {
        children[k] = view_child(node, k);
    }
    Slot new_children[16];
    int have_new = 0, emptied = 0;
    Py_ssize_t i = lo;
    while (i < hi) {
        Py_ssize_t j = nibble_run_end(ctx, i, hi, depth);
        int index = NIBBLE_OF[(unsigned char)key_hex(ctx, i)[depth]];
        Slot child = children[index];
        Slot new_child;
        /* (The Python pass inlines one dirty key updating its own leaf here; apply_leaf does the same.) */
        if (apply(ctx, child, depth + 1, i, j, &new_child) < 0) {
            return -1;
        }
        if (!slot_same(new_child, child)) {
            if (!have_new) {
                memcpy(new_children, children, sizeof children);
                have_new = 1;
            }
            new_children[index] = new_child;
            if (slot_is_blank(new_child)) {
                emptied = 1;
            }
        }
        i = j;
    }
    if (!have_new) {
        if (!fresh) {
            *out = slot;
            return 0;
        }
        return normalize_branch(ctx, children, out);
    }
    if (fresh || emptied) {
        if (!fresh && drop(ctx, slot) < 0) {
            return -1;
        }
        return normalize_branch(ctx, new_children, out);
    }
    /* An unchanged number of children (still two or more). */
    if (drop(ctx, slot) < 0) {
        return -1;
    }
    Built *branch = new_branch(ctx, new_children);
    if (branch == NULL) {
        return -1;
    }
    *out = slot_of_node(branch);
    return 0;
}

static int apply_leaf(Ctx *ctx, Slot slot, const View *node, int depth, Py_ssize_t lo, Py_ssize_t hi, Slot *out)
{
    int fresh = slot.node != NULL;
    if (depth + node->path_length != KEY_NIBBLES) {
        return corrupt("a leaf's path does not end at the last nibble of a key");
    }
    char full_key[KEY_NIBBLES];
    memcpy(full_key, key_hex(ctx, lo), depth);
    memcpy(full_key + depth, node->path, node->path_length);
    if (hi - lo == 1 && memcmp(key_hex(ctx, lo), full_key, KEY_NIBBLES) == 0) {
        PyObject *value = ctx->values[lo];
        if (bytes_equal(value, node->value)) {
            *out = slot;
            return 0;
        }
        if (!fresh && drop(ctx, slot) < 0) {
            return -1;
        }
        if (is_empty_value(value)) {
            *out = blank_slot();
            return 0;
        }
        Built *leaf = new_leaf(ctx, node->path, node->path_length, node->path_obj, value);
        if (leaf == NULL) {
            return -1;
        }
        *out = slot_of_node(leaf);
        return 0;
    }
    Py_ssize_t n;
    Pair *pairs = live_pairs(ctx, lo, hi, &n);
    if (pairs == NULL) {
        return -1;
    }
    int touched = 0;
    for (Py_ssize_t i = lo; i < hi && !touched; i++) {
        touched = memcmp(key_hex(ctx, i), full_key, KEY_NIBBLES) == 0;
    }
    if (n == 0 && !touched) {
        *out = slot; /* only deletes of absent keys */
        return 0;
    }
    if (!fresh && drop(ctx, slot) < 0) {
        return -1;
    }
    if (!touched) {
        /* Insert the existing leaf's pair at its sorted position (its key is none of the dirty keys). */
        Py_ssize_t position = 0;
        while (position < n && memcmp(pairs[position].hex, full_key, KEY_NIBBLES) < 0) {
            position++;
        }
        char *stored_key = arena_alloc(&ctx->arena, KEY_NIBBLES);
        if (stored_key == NULL) {
            return -1;
        }
        memcpy(stored_key, full_key, KEY_NIBBLES);
        memmove(&pairs[position + 1], &pairs[position], sizeof(Pair) * (size_t)(n - position));
        pairs[position].hex = stored_key;
        pairs[position].value = node->value;
        n++;
    }
    return build(ctx, depth, pairs, 0, n, out);
}

static int apply_extension(Ctx *ctx, Slot slot, const View *node, int depth, Py_ssize_t lo, Py_ssize_t hi, Slot *out)
{
    int fresh = slot.node != NULL;
    const char *path = node->path;
    int length = node->path_length;
    if (length == 0 || depth + length >= KEY_NIBBLES) {
        return corrupt("an extension's path is empty or reaches the last nibble of a key");
    }
    const char *first = key_hex(ctx, lo) + depth;
    const char *last = key_hex(ctx, hi - 1) + depth;
    Slot child = node->child;
    if (memcmp(first, path, length) == 0 && memcmp(last, path, length) == 0) {
        Slot new_child;
        if (apply(ctx, child, depth + length, lo, hi, &new_child) < 0) {
            return -1;
        }
        if (slot_same(new_child, child) && !fresh) {
            *out = slot;
            return 0;
        }
        if (!fresh && drop(ctx, slot) < 0) {
            return -1;
        }
        if (slot_is_blank(new_child)) {
            *out = blank_slot();
            return 0;
        }
        return prefix(ctx, path, length, node->path_obj, new_child, out);
    }
    /* Some keys leave the extension's path: split it at the first diverging nibble, then apply. */
    int split_first = common_prefix_length(first, path, length);
    int split_last = common_prefix_length(last, path, length);
    int split = split_first < split_last ? split_first : split_last;
    if (!fresh && drop(ctx, slot) < 0) {
        return -1;
    }
    Slot lower = child;
    if (split + 1 != length) {
        Built *rest = new_extension(ctx, path + split + 1, length - split - 1, NULL, child);
        if (rest == NULL) {
            return -1;
        }
        lower = slot_of_node(rest);
    }
    int index = NIBBLE_OF[(unsigned char)path[split]];
    if (index < 0) {
        return corrupt("a trie path holds a character that is not a hex digit");
    }
    Slot children[16];
    for (int k = 0; k < 16; k++) {
        children[k] = blank_slot();
    }
    children[index] = lower;
    Built *top = new_branch(ctx, children);
    if (top == NULL) {
        return -1;
    }
    Slot top_slot = slot_of_node(top);
    if (split) {
        Built *head = new_extension(ctx, path, split, NULL, top_slot);
        if (head == NULL) {
            return -1;
        }
        top_slot = slot_of_node(head);
    }
    return apply(ctx, top_slot, depth, lo, hi, out);
}

/* _apply: the slot standing at `depth` after applying dirty entries lo:hi (all below it); `slot`
 * itself when nothing under it changes. */
static int apply(Ctx *ctx, Slot slot, int depth, Py_ssize_t lo, Py_ssize_t hi, Slot *out)
{
    View view;
    if (slot.node != NULL) {
        view_built(slot.node, &view);
    } else if (check_ref(slot.ref) < 0) {
        return -1;
    } else if (is_blank(slot.ref)) {
        return build_fresh(ctx, depth, lo, hi, out);
    } else {
        if (hi - lo <= WARM_KEYS && lo >= ctx->warmed) {
            /* The first subtree small enough: prefetch its dirty paths before walking them. */
            warm(ctx, slot.ref, depth, lo, hi);
            ctx->warmed = hi;
        }
        if (view_ref(ctx, slot.ref, &view) < 0) {
            return -1;
        }
    }
    if (view.tag == BRANCH) {
        return apply_branch(ctx, slot, &view, depth, lo, hi, out);
    }
    if (view.tag == LEAF) {
        return apply_leaf(ctx, slot, &view, depth, lo, hi, out);
    }
    return apply_extension(ctx, slot, &view, depth, lo, hi, out);
}

/* ------------------------------------------------------------------------------------------ encoding */

/* Bytes of the RLP string header for a payload of `length` bytes (a single byte below 0x80 has none:
 * the caller handles that case). */
static size_t header_size(size_t length)
{
    if (length < 56) {
        return 1;
    }
    size_t size = 1;
    while (length) {
        size++;
        length >>= 8;
    }
    return size;
}

static unsigned char *write_header(unsigned char *out, size_t length, unsigned char short_base)
{
    if (length < 56) {
        *out++ = (unsigned char)(short_base + length);
        return out;
    }
    int count = 0;
    for (size_t rest = length; rest; rest >>= 8) {
        count++;
    }
    *out++ = (unsigned char)(short_base + 55 + count);
    for (int k = count - 1; k >= 0; k--) {
        *out++ = (unsigned char)(length >> (8 * k));
    }
    return out;
}

/* The compact (hex-prefix) encoding of `path` with the leaf flag; returns its length (at most 33). */
static int hex_prefix(const char *path, int length, int is_leaf, unsigned char out[33])
{
    int flag = is_leaf ? 2 : 0;
    int n = 0;
    int k = 0;
    if (length & 1) {
        out[n++] = (unsigned char)(((flag | 1) << 4) | NIBBLE_OF[(unsigned char)path[0]]);
        k = 1;
    } else {
        out[n++] = (unsigned char)(flag << 4);
    }
    for (; k < length; k += 2) {
        out[n++] = (unsigned char)((NIBBLE_OF[(unsigned char)path[k]] << 4) | NIBBLE_OF[(unsigned char)path[k + 1]]);
    }
    return n;
}

/* RLP string item size of `data[0:length]`. */
static size_t string_item_size(const unsigned char *data, size_t length)
{
    if (length == 1 && data[0] < 0x80) {
        return 1;
    }
    return header_size(length) + length;
}

static unsigned char *write_string_item(unsigned char *out, const unsigned char *data, size_t length)
{
    if (!(length == 1 && data[0] < 0x80)) {
        out = write_header(out, length, 0x80);
    }
    memcpy(out, data, length);
    return out + length;
}

/* The RLP list [hex_prefix(path), second] where second is a value (leaf: RLP string) or an
 * already-encoded child reference (extension). */
static PyObject *encode_short_node(const char *path, int path_length, int is_leaf, PyObject *second)
{
    unsigned char path_item[33];
    int path_size = hex_prefix(path, path_length, is_leaf, path_item);
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(second);
    size_t data_size = (size_t)PyBytes_GET_SIZE(second);
    size_t payload = string_item_size(path_item, path_size) + (is_leaf ? string_item_size(data, data_size) : data_size);
    PyObject *encoded = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(header_size(payload) + payload));
    if (encoded == NULL) {
        return NULL;
    }
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(encoded);
    out = write_header(out, payload, 0xC0);
    out = write_string_item(out, path_item, path_size);
    if (is_leaf) {
        write_string_item(out, data, data_size);
    } else {
        memcpy(out, data, data_size);
    }
    return encoded;
}

static PyObject *path_str(const Built *node)
{
    if (node->path_obj != NULL) {
        Py_INCREF(node->path_obj);
        return node->path_obj;
    }
    PyObject *text = PyUnicode_New(node->path_length, 127);
    if (text != NULL) {
        memcpy(PyUnicode_1BYTE_DATA(text), node->path, node->path_length);
    }
    return text;
}

/* _finalize, level by level. The Python pass encodes and hashes depth first; here the nodes being
 * built are first listed children first (the order in which `_finalize` emits them), then encoded by
 * height (leaves first, each node after all of its children), so that the nodes of one height are
 * hashed together (`keccak256_many`); finally they are queued for the store and the cache in the
 * listed order. The results are the same nodes in the same order. */

/* List `node` and the nodes being built under it, children first, giving each its height. */
static void list_built(Built *node, Built **order, Py_ssize_t *count)
{
    int height = 0;
    if (node->tag == BRANCH) {
        for (int k = 0; k < 16; k++) {
            Built *child = node->children[k].node;
            if (child != NULL) {
                list_built(child, order, count);
                height = child->height + 1 > height ? child->height + 1 : height;
            }
        }
    } else if (node->tag == EXT && node->child.node != NULL) {
        list_built(node->child.node, order, count);
        height = node->child.node->height + 1;
    }
    node->height = height;
    order[(*count)++] = node;
}

/* A new reference to the RLP reference standing in `slot`, whose node (if being built) is encoded. */
static inline PyObject *encoded_ref(Slot slot)
{
    PyObject *ref = slot.node != NULL ? slot.node->ref : slot.ref;
    Py_INCREF(ref);
    return ref;
}

/* Build the node tuple (without encoding and version) and the encoding of `node`, whose children are
 * encoded; an embedded node (under 32 bytes) gets its encoding as its reference right away. */
static int encode_built(Built *node)
{
    PyObject *tuple, *encoded;
    if (node->tag == BRANCH) {
        tuple = PyTuple_New(19);
        if (tuple == NULL) {
            return -1;
        }
        Py_INCREF(g_tags[BRANCH]);
        PyTuple_SET_ITEM(tuple, 0, g_tags[BRANCH]);
        size_t payload = 1; /* the empty branch value */
        for (int k = 0; k < 16; k++) {
            PyObject *ref = encoded_ref(node->children[k]);
            PyTuple_SET_ITEM(tuple, 3 + k, ref);
            if (node->children[k].node == NULL && check_ref(ref) < 0) {
                Py_DECREF(tuple);
                return -1;
            }
            payload += (size_t)PyBytes_GET_SIZE(ref);
        }
        encoded = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(header_size(payload) + payload));
        if (encoded == NULL) {
            Py_DECREF(tuple);
            return -1;
        }
        unsigned char *out = write_header((unsigned char *)PyBytes_AS_STRING(encoded), payload, 0xC0);
        for (int k = 0; k < 16; k++) {
            PyObject *ref = PyTuple_GET_ITEM(tuple, 3 + k);
            Py_ssize_t size = PyBytes_GET_SIZE(ref);
            memcpy(out, PyBytes_AS_STRING(ref), size);
            out += size;
        }
        *out = 0x80;
    } else {
        PyObject *second;
        if (node->tag == LEAF) {
            second = node->value;
            Py_INCREF(second);
        } else {
            second = encoded_ref(node->child);
        }
        tuple = PyTuple_New(5);
        if (tuple == NULL) {
            Py_DECREF(second);
            return -1;
        }
        Py_INCREF(g_tags[node->tag]);
        PyTuple_SET_ITEM(tuple, 0, g_tags[node->tag]);
        PyTuple_SET_ITEM(tuple, 4, second);
        PyObject *path = path_str(node);
        if (path == NULL) {
            Py_DECREF(tuple);
            return -1;
        }
        PyTuple_SET_ITEM(tuple, 3, path);
        encoded = encode_short_node(node->path, node->path_length, node->tag == LEAF, second);
        if (encoded == NULL) {
            Py_DECREF(tuple);
            return -1;
        }
    }
    if (PyBytes_GET_SIZE(encoded) < 32) {
        Py_DECREF(tuple);
        node->ref = encoded;
        return 0;
    }
    node->tuple = tuple;
    node->encoded = encoded;
    return 0;
}

/* Name the hashed node `node` by its digest: its hash and reference objects, and its tuple completed
 * with the encoding and the commit's version. */
static int name_built(Ctx *ctx, Built *node, const unsigned char digest[32])
{
    node->hash = PyBytes_FromStringAndSize((const char *)digest, 32);
    node->ref = PyBytes_FromStringAndSize(NULL, HASH_REF_SIZE);
    if (node->hash == NULL || node->ref == NULL) {
        return -1;
    }
    unsigned char *ref_bytes = (unsigned char *)PyBytes_AS_STRING(node->ref);
    ref_bytes[0] = 0xA0;
    memcpy(ref_bytes + 1, digest, 32);
    Py_INCREF(node->encoded);
    PyTuple_SET_ITEM(node->tuple, 1, node->encoded);
    Py_INCREF(ctx->version);
    PyTuple_SET_ITEM(node->tuple, 2, ctx->version);
    /* Only bytes, str and int inside: nothing for the cyclic collector to find. */
    PyObject_GC_UnTrack(node->tuple);
    return 0;
}

static void release_built(Built **order, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_CLEAR(order[i]->ref);
        Py_CLEAR(order[i]->tuple);
        Py_CLEAR(order[i]->encoded);
        Py_CLEAR(order[i]->hash);
    }
}

#define FINALIZE_WINDOW 512

/* Encoding a branch references each of its 16 children again, most of them unchanged reference
 * objects scattered in memory: the next branch's are prefetched while one is encoded. (Measured: the
 * pass 0.3-0.7 ms shorter per 1,000-update commit in three runs of four, unchanged in the fourth;
 * prefetching four branches ahead, two lines per child, gained nothing.) */
static inline void prefetch_children(const Built *node)
{
    if (node->tag == BRANCH) {
        for (int k = 0; k < 16; k++) {
            if (node->children[k].ref != NULL) {
                PREFETCH(node->children[k].ref);
            }
        }
    }
}

/* Encode and hash `root` and every node being built under it; queue each hashed node for the store
 * and the cache (children first); return the new reference of `root`. */
static PyObject *finalize(Ctx *ctx, Built *root)
{
    Built **order = arena_alloc(&ctx->arena, sizeof(Built *) * (size_t)ctx->built);
    if (order == NULL) {
        return NULL;
    }
    Py_ssize_t count = 0;
    list_built(root, order, &count);
    /* The listed order is cut into windows of FINALIZE_WINDOW nodes (a window holds whole subtrees,
     * or the upper part of one whose lower part came before); a window's nodes are encoded by height
     * (counting sort; heights are below the number of nodes), so each node comes after its children,
     * and each height's hashed nodes are hashed together. Windows keep a big commit's nodes in cache
     * from one step to the next. */
    int top = root->height;
    Py_ssize_t *starts = arena_alloc(&ctx->arena, sizeof(Py_ssize_t) * (size_t)(top + 2));
    Built **by_height = arena_alloc(&ctx->arena, sizeof(Built *) * FINALIZE_WINDOW);
    const unsigned char **data = arena_alloc(&ctx->arena, sizeof(unsigned char *) * FINALIZE_WINDOW);
    size_t *lengths = arena_alloc(&ctx->arena, sizeof(size_t) * FINALIZE_WINDOW);
    unsigned char(*digests)[32] = arena_alloc(&ctx->arena, 32 * FINALIZE_WINDOW);
    Built **hashed = arena_alloc(&ctx->arena, sizeof(Built *) * FINALIZE_WINDOW);
    if (starts == NULL || by_height == NULL || data == NULL || lengths == NULL || digests == NULL || hashed == NULL) {
        return NULL;
    }
    PyObject *result = NULL;
    for (Py_ssize_t window = 0; window < count; window += FINALIZE_WINDOW) {
        Py_ssize_t size = count - window < FINALIZE_WINDOW ? count - window : FINALIZE_WINDOW;
        Built **nodes = order + window;
        int highest = 0;
        for (Py_ssize_t i = 0; i < size; i++) {
            highest = nodes[i]->height > highest ? nodes[i]->height : highest;
        }
        memset(starts, 0, sizeof(Py_ssize_t) * (size_t)(highest + 2));
        for (Py_ssize_t i = 0; i < size; i++) {
            starts[nodes[i]->height + 1]++;
        }
        for (int h = 0; h <= highest; h++) {
            starts[h + 1] += starts[h];
        }
        for (Py_ssize_t i = 0; i < size; i++) {
            by_height[starts[nodes[i]->height]++] = nodes[i];
        }
        /* starts[h] is now the end of height h. */
        Py_ssize_t begin = 0;
        for (int h = 0; h <= highest; h++) {
            Py_ssize_t pending = 0;
            for (Py_ssize_t i = begin; i < starts[h]; i++) {
                Built *node = by_height[i];
                if (i + 1 < starts[h]) {
                    prefetch_children(by_height[i + 1]);
                }
                if (encode_built(node) < 0) {
                    goto done;
                }
                if (node->tuple != NULL) {
                    data[pending] = (const unsigned char *)PyBytes_AS_STRING(node->encoded);
                    lengths[pending] = (size_t)PyBytes_GET_SIZE(node->encoded);
                    hashed[pending++] = node;
                }
            }
            keccak256_many(data, lengths, digests, pending);
            for (Py_ssize_t i = 0; i < pending; i++) {
                if (name_built(ctx, hashed[i], digests[i]) < 0) {
                    goto done;
                }
            }
            begin = starts[h];
        }
    }
    /* The four lists, empty until now, are made at their final size. */
    Py_ssize_t named = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        named += order[i]->hash != NULL;
    }
    PyObject *lists[4] = {PyList_New(named), PyList_New(named), PyList_New(named), PyList_New(named)};
    if (lists[0] == NULL || lists[1] == NULL || lists[2] == NULL || lists[3] == NULL) {
        for (int k = 0; k < 4; k++) {
            Py_XDECREF(lists[k]);
        }
        goto done;
    }
    for (Py_ssize_t i = 0, at = 0; i < count; i++) {
        Built *node = order[i];
        if (node->hash != NULL) {
            PyObject *items[4] = {node->hash, node->encoded, node->ref, node->tuple};
            for (int k = 0; k < 4; k++) {
                Py_INCREF(items[k]);
                PyList_SET_ITEM(lists[k], at, items[k]);
            }
            at++;
        }
    }
    Py_SETREF(ctx->hashes, lists[0]);
    Py_SETREF(ctx->encodings, lists[1]);
    Py_SETREF(ctx->created_refs, lists[2]);
    Py_SETREF(ctx->created_nodes, lists[3]);
    result = root->ref;
    Py_INCREF(result);
done:
    release_built(order, count);
    return result;
}

/* A new reference to the RLP reference of `slot`, finalizing it if it is being built. */
static PyObject *slot_ref(Ctx *ctx, Slot slot)
{
    if (slot.node != NULL) {
        return finalize(ctx, slot.node);
    }
    Py_INCREF(slot.ref);
    return slot.ref;
}

/* ------------------------------------------------------------------------------------------ warming */

/* The pass walks the trie depth first, so each node it reads waits for the one above it: a miss per
 * node, one after another. Before it starts, `warm` walks the same dirty paths breadth first and only
 * prefetches: each level's nodes are fetched together (their references, their index slots, their
 * entries, the node tuples, then what the pass will read of a leaf or an extension: its path and its
 * value or child), so the misses of one level overlap and the pass finds its nodes in cache. (A
 * branch's children are not fetched: most of them are only read when the branch is encoded again,
 * long after this.)
 * It changes nothing and stops wherever the trie is not plain cached nodes (a miss, a node being
 * loaded, anything malformed): the pass itself handles and reports those. */

typedef struct {
    PyObject *ref;
    Py_hash_t hash;
    PyObject *node;
    int depth;
    Py_ssize_t lo, hi;
} Warm;

/* Append the child that the dirty keys lo:hi reach below a cached node to `next`. */
static inline void warm_push(Warm *next, Py_ssize_t *count, PyObject *ref, int depth, Py_ssize_t lo, Py_ssize_t hi)
{
    if (!PyBytes_CheckExact(ref) || PyBytes_GET_SIZE(ref) != HASH_REF_SIZE) {
        return; /* empty or embedded: nothing to look up */
    }
    PREFETCH(ref);
    Warm *item = &next[(*count)++];
    item->ref = ref;
    item->depth = depth;
    item->lo = lo;
    item->hi = hi;
}

#define WARM_CHUNK 512

static void warm(Ctx *ctx, PyObject *start, int start_depth, Py_ssize_t start_lo, Py_ssize_t start_hi)
{
#if DICT_PREFETCH /* the walk reads the dict layout mirrored above */
    if (dict_keys(ctx->nodes) == NULL || start_hi <= start_lo) {
        return;
    }
    Warm *level = arena_alloc(&ctx->arena, sizeof(Warm) * (size_t)(start_hi - start_lo));
    Warm *next = arena_alloc(&ctx->arena, sizeof(Warm) * (size_t)(start_hi - start_lo));
    if (level == NULL || next == NULL) {
        PyErr_Clear(); /* warming is optional */
        return;
    }
    Py_ssize_t size = 0;
    warm_push(level, &size, start, start_depth, start_lo, start_hi);
    while (size > 0) {
        Py_ssize_t next_size = 0;
        /* A level is fetched WARM_CHUNK nodes at a time: a big commit's level would not stay in cache
         * from one stage to the next. */
        for (Py_ssize_t first = 0; first < size; first += WARM_CHUNK) {
            Py_ssize_t last = first + WARM_CHUNK < size ? first + WARM_CHUNK : size;
            for (Py_ssize_t k = first; k < last; k++) {
                level[k].hash = PyObject_Hash(level[k].ref);
                const DictKeys *keys = dict_keys(ctx->nodes);
                if (keys != NULL) {
                    PREFETCH(probe_slot(keys, level[k].hash));
                }
            }
            for (Py_ssize_t k = first; k < last; k++) {
                const DictKeys *keys = dict_keys(ctx->nodes);
                const DictEntry *entry = keys == NULL ? NULL : probe_entry(keys, level[k].hash);
                if (entry != NULL) {
                    PREFETCH(entry);
                }
            }
            for (Py_ssize_t k = first; k < last; k++) {
                PyObject *node = _PyDict_GetItem_KnownHash(ctx->nodes, level[k].ref, level[k].hash);
                if (node == NULL) {
                    PyErr_Clear();
                } else {
                    PREFETCH(node);
                    PREFETCH((const char *)node + 64);
                    PREFETCH((const char *)node + 128);
                }
                level[k].node = node;
            }
            for (Py_ssize_t k = first; k < last; k++) {
                PyObject *node = level[k].node;
                if (node == NULL || !PyTuple_CheckExact(node)) {
                    continue;
                }
                int depth = level[k].depth;
                Py_ssize_t lo = level[k].lo, hi = level[k].hi;
                PyObject *tag = PyTuple_GET_ITEM(node, 0);
                if (tag == g_tags[BRANCH] && PyTuple_GET_SIZE(node) == 19 && depth < KEY_NIBBLES) {
                    Py_ssize_t i = lo;
                    while (i < hi) {
                        Py_ssize_t j = nibble_run_end(ctx, i, hi, depth);
                        PyObject *child = PyTuple_GET_ITEM(node, 3 + NIBBLE_OF[(unsigned char)key_hex(ctx, i)[depth]]);
                        warm_push(next, &next_size, child, depth + 1, i, j);
                        i = j;
                    }
                } else if (PyTuple_GET_SIZE(node) == 5 && (tag == g_tags[LEAF] || tag == g_tags[EXT])) {
                    PyObject *path = PyTuple_GET_ITEM(node, 3);
                    PREFETCH(path);
                    PREFETCH(PyTuple_GET_ITEM(node, 4));
                    if (tag == g_tags[EXT] && PyUnicode_CheckExact(path) && PyUnicode_IS_COMPACT_ASCII(path)) {
                        Py_ssize_t length = PyUnicode_GET_LENGTH(path);
                        const char *digits = (const char *)PyUnicode_1BYTE_DATA(path);
                        if (depth + length < KEY_NIBBLES && memcmp(key_hex(ctx, lo) + depth, digits, length) == 0 &&
                            memcmp(key_hex(ctx, hi - 1) + depth, digits, length) == 0) {
                            warm_push(next, &next_size, PyTuple_GET_ITEM(node, 4), depth + (int)length, lo, hi);
                        }
                    }
                }
            }
        }
        Warm *swap = level;
        level = next;
        next = swap;
        size = next_size;
    }
#else
    (void)ctx;
    (void)start;
    (void)start_depth;
    (void)start_lo;
    (void)start_hi;
#endif
}

/* ------------------------------------------------------------------------------------------ entry points */

typedef struct {
    const unsigned char *key;
    PyObject *value;
} Entry;

static int compare_entries(const void *a, const void *b)
{
    return memcmp(((const Entry *)a)->key, ((const Entry *)b)->key, KEY_BYTES);
}

static void ctx_clear(Ctx *ctx)
{
    if (ctx->values != NULL) {
        for (Py_ssize_t i = 0; i < ctx->count; i++) {
            Py_XDECREF(ctx->values[i]);
        }
    }
    Py_CLEAR(ctx->hashes);
    Py_CLEAR(ctx->encodings);
    Py_CLEAR(ctx->created_refs);
    Py_CLEAR(ctx->created_nodes);
    Py_CLEAR(ctx->dropped);
    Py_CLEAR(ctx->loaded);
    arena_free(&ctx->arena);
}

/* Validate and sort the dirty set into ctx (hex digits of the keys, owned values). */
static int load_dirty(Ctx *ctx, PyObject *dirty)
{
    Py_ssize_t count = PyDict_GET_SIZE(dirty);
    Entry *entries = arena_alloc(&ctx->arena, sizeof(Entry) * (size_t)(count ? count : 1));
    if (entries == NULL) {
        return -1;
    }
    Py_ssize_t position = 0, n = 0;
    PyObject *key, *value;
    while (PyDict_Next(dirty, &position, &key, &value)) {
        if (!PyBytes_CheckExact(key) || PyBytes_GET_SIZE(key) != KEY_BYTES) {
            PyErr_Format(g_invalid_key_error, "trie keys are 32 bytes, got %R", key);
            return -1;
        }
        if (!PyBytes_CheckExact(value)) {
            PyErr_Format(g_invalid_value_error, "trie values are bytes, got %s", _PyType_Name(Py_TYPE(value)));
            return -1;
        }
        if (n == count) {
            PyErr_SetString(PyExc_RuntimeError, "the dirty set changed size during the commit");
            return -1;
        }
        entries[n].key = (const unsigned char *)PyBytes_AS_STRING(key);
        entries[n].value = value;
        n++;
    }
    qsort(entries, (size_t)n, sizeof(Entry), compare_entries);
    char *hex = arena_alloc(&ctx->arena, (size_t)KEY_NIBBLES * (size_t)(n ? n : 1));
    PyObject **values = arena_alloc(&ctx->arena, sizeof(PyObject *) * (size_t)(n ? n : 1));
    if (hex == NULL || values == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        for (int k = 0; k < KEY_BYTES; k++) {
            unsigned char byte = entries[i].key[k];
            hex[KEY_NIBBLES * i + 2 * k] = HEX_DIGITS[byte >> 4];
            hex[KEY_NIBBLES * i + 2 * k + 1] = HEX_DIGITS[byte & 15];
        }
        Py_INCREF(entries[i].value);
        values[i] = entries[i].value;
    }
    ctx->hex = hex;
    ctx->values = values;
    ctx->count = n;
    return 0;
}

PyDoc_STRVAR(commit_pass_doc,
"commit_pass(nodes, load, root_ref, dirty, version) -> (new_ref, hashes, encodings, created_refs, created_nodes, dropped, loads)\n\n"
"Apply `dirty` (a dict of 32-byte keys to bytes values, b\"\" deletes) to the trie whose root reference\n"
"is `root_ref`, reading nodes from the node cache `nodes` (a dict ref -> node tuple) and calling\n"
"`load(ref)` on a miss. Returns the new root reference (hashed, embedded or b\"\\x80\"), the new hashed\n"
"nodes as parallel lists (hash, encoding, ref, node tuple with birth `version`), the hashed refs of\n"
"replaced nodes, and how many nodes `load` returned. Changes none of its arguments; raises\n"
"InvalidKeyError/InvalidValueError before any work, CorruptNodeError for malformed nodes, and\n"
"whatever `load` raises.");

static PyObject *commit_pass(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "commit_pass takes 5 arguments");
        return NULL;
    }
    if (g_blank == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "proofs._commit is not configured");
        return NULL;
    }
    PyObject *nodes = args[0], *load = args[1], *root_ref = args[2], *dirty = args[3], *version = args[4];
    if (!PyDict_Check(nodes) || !PyCallable_Check(load) || !PyBytes_CheckExact(root_ref) ||
        PyBytes_GET_SIZE(root_ref) == 0 || !PyDict_Check(dirty) || !PyLong_Check(version)) {
        PyErr_SetString(PyExc_TypeError, "commit_pass(dict, callable, bytes, dict, int)");
        return NULL;
    }
    Ctx ctx;
    memset(&ctx, 0, sizeof ctx);
    ctx.nodes = nodes;
    ctx.load = load;
    ctx.version = version;
    PyObject *result = NULL;
    PyObject *new_ref = NULL;
    if (load_dirty(&ctx, dirty) < 0) {
        goto done;
    }
    ctx.hashes = PyList_New(0);
    ctx.encodings = PyList_New(0);
    ctx.created_refs = PyList_New(0);
    ctx.created_nodes = PyList_New(0);
    ctx.dropped = PyList_New(0);
    ctx.loaded = PyList_New(0);
    if (!ctx.hashes || !ctx.encodings || !ctx.created_refs || !ctx.created_nodes || !ctx.dropped || !ctx.loaded) {
        goto done;
    }
    Slot root = slot_of_ref(root_ref);
    if (ctx.count) {
        if (apply(&ctx, root, 0, 0, ctx.count, &root) < 0) {
            goto done;
        }
    }
    new_ref = slot_ref(&ctx, root);
    if (new_ref == NULL) {
        goto done;
    }
    result = Py_BuildValue("(NOOOOOn)", new_ref, ctx.hashes, ctx.encodings, ctx.created_refs, ctx.created_nodes,
                           ctx.dropped, PyList_GET_SIZE(ctx.loaded));
done:
    ctx_clear(&ctx);
    return result;
}

PyDoc_STRVAR(update_cache_doc,
"update_cache(nodes, dropped, refs, created_nodes)\n\n"
"Remove every reference of `dropped` from the dict `nodes` (absent ones are ignored), then set\n"
"nodes[refs[i]] = created_nodes[i] for every i, in order: what `commit` does to a plain node cache.");

static PyObject *update_cache(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyDict_Check(args[0]) || !PyList_CheckExact(args[1]) || !PyList_CheckExact(args[2]) ||
        !PyList_CheckExact(args[3]) || PyList_GET_SIZE(args[2]) != PyList_GET_SIZE(args[3])) {
        PyErr_SetString(PyExc_TypeError, "update_cache(dict, list, list, list of the same length)");
        return NULL;
    }
    PyObject *nodes = args[0], *dropped = args[1], *refs = args[2], *created = args[3];
    Probes probes;
    probes_start(&probes, nodes, &PyList_GET_ITEM(dropped, 0), PyList_GET_SIZE(dropped), 1);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dropped); i++) {
        prefetch_probes(&probes, i);
        PyObject *removed = _PyDict_Pop(nodes, PyList_GET_ITEM(dropped, i), Py_None);
        if (removed == NULL) {
            return NULL;
        }
        Py_DECREF(removed);
    }
    probes_start(&probes, nodes, &PyList_GET_ITEM(refs, 0), PyList_GET_SIZE(refs), 0);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++) {
        prefetch_probes(&probes, i);
        if (PyDict_SetItem(nodes, PyList_GET_ITEM(refs, i), PyList_GET_ITEM(created, i)) < 0) {
            return NULL;
        }
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(update_tracked_cache_doc,
"update_tracked_cache(nodes, extra, deaths, dropped, refs, created_nodes, version)\n\n"
"What `commit` does to the node cache of a pruning engine that tracks the whole trie and holds no\n"
"node twice (`extra` empty on entry): pop every reference of `dropped` (KeyError if one is not\n"
"cached) and append (ref, born, version) to the list `deaths`; then for every new node, in order,\n"
"set nodes[ref] = node if ref is not cached, else count one more occurrence in `extra`.");

static PyObject *update_tracked_cache(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 7 || !PyDict_Check(args[0]) || !PyDict_Check(args[1]) || !PyList_CheckExact(args[2]) ||
        !PyList_CheckExact(args[3]) || !PyList_CheckExact(args[4]) || !PyList_CheckExact(args[5]) ||
        PyList_GET_SIZE(args[4]) != PyList_GET_SIZE(args[5]) || !PyLong_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "update_tracked_cache(dict, dict, list, list, list, list, int)");
        return NULL;
    }
    PyObject *nodes = args[0], *extra = args[1], *deaths = args[2], *dropped = args[3];
    PyObject *refs = args[4], *created = args[5], *version = args[6];
    Probes probes;
    probes_start(&probes, nodes, &PyList_GET_ITEM(dropped, 0), PyList_GET_SIZE(dropped), 1);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(dropped); i++) {
        prefetch_probes(&probes, i);
        PyObject *ref = PyList_GET_ITEM(dropped, i);
        PyObject *node = _PyDict_Pop(nodes, ref, NULL);
        if (node == NULL) {
            return NULL;
        }
        if (!PyTuple_CheckExact(node) || PyTuple_GET_SIZE(node) < 3) {
            Py_DECREF(node);
            PyErr_SetString(g_corrupt_node_error, "a cached trie node is not a node tuple");
            return NULL;
        }
        PyObject *death = PyTuple_Pack(3, ref, PyTuple_GET_ITEM(node, 2), version);
        Py_DECREF(node);
        if (death == NULL) {
            return NULL;
        }
        PyObject_GC_UnTrack(death); /* bytes and ints only */
        int status = PyList_Append(deaths, death);
        Py_DECREF(death);
        if (status < 0) {
            return NULL;
        }
    }
    probes_start(&probes, nodes, &PyList_GET_ITEM(refs, 0), PyList_GET_SIZE(refs), 0);
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(refs); i++) {
        prefetch_probes(&probes, i);
        PyObject *ref = PyList_GET_ITEM(refs, i);
        int present = PyDict_Contains(nodes, ref);
        if (present < 0) {
            return NULL;
        }
        if (!present) {
            if (PyDict_SetItem(nodes, ref, PyList_GET_ITEM(created, i)) < 0) {
                return NULL;
            }
            continue;
        }
        PyObject *count = PyDict_GetItemWithError(extra, ref);
        if (count == NULL && PyErr_Occurred()) {
            return NULL;
        }
        long value = count == NULL ? 0 : PyLong_AsLong(count);
        if (value == -1 && PyErr_Occurred()) {
            return NULL;
        }
        PyObject *next = PyLong_FromLong(value + 1);
        if (next == NULL || PyDict_SetItem(extra, ref, next) < 0) {
            Py_XDECREF(next);
            return NULL;
        }
        Py_DECREF(next);
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(keccak256_doc, "keccak256(data) -> bytes\n\nThe Keccak-256 digest (Ethereum's) of a bytes-like object.");

static PyObject *digest_of(Permutation permute, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    unsigned char digest[32];
    keccak256_with(permute, (const unsigned char *)view.buf, (size_t)view.len, digest);
    PyBuffer_Release(&view);
    return PyBytes_FromStringAndSize((const char *)digest, 32);
}

static PyObject *keccak256_py(PyObject *module, PyObject *arg)
{
    (void)module;
    return digest_of(keccak_f1600, arg);
}

PyDoc_STRVAR(keccak256_generic_doc,
"keccak256_generic(data) -> bytes\n\nkeccak256 through the portable permutation (the one used on CPUs without BMI1).");

static PyObject *keccak256_generic_py(PyObject *module, PyObject *arg)
{
    (void)module;
    return digest_of(keccak_f1600_generic, arg);
}

PyDoc_STRVAR(merkle_root_doc,
"merkle_root(items, hashed) -> bytes\n\n"
"The binary Merkle root of node.tradezone.merkle over a list of bytes: leaf = keccak256(0x00 || h),\n"
"node = keccak256(0x01 || left || right), an odd node carried up. With hashed=False each item is\n"
"hashed first (h = keccak256(item)); with hashed=True the items are those 32-byte hashes\n"
"(ValueError otherwise). keccak256(b\"\") for no items. The hashing runs without the GIL.");

static PyObject *merkle_root_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyList_CheckExact(args[0])) {
        PyErr_SetString(PyExc_TypeError, "merkle_root(items: list[bytes], hashed: bool)");
        return NULL;
    }
    int hashed = PyObject_IsTrue(args[1]);
    if (hashed < 0) {
        return NULL;
    }
    PyObject *items = args[0];
    Py_ssize_t count = PyList_GET_SIZE(items);
    unsigned char root[32];
    if (count == 0) {
        keccak256((const unsigned char *)"", 0, root);
        return PyBytes_FromStringAndSize((const char *)root, 32);
    }
    Py_INCREF(items); /* the list and its bytes stay alive (and unchanged: bytes are immutable) while the GIL is off */
    unsigned char (*level)[32] = PyMem_Malloc((size_t)count * 32);
    unsigned char *messages = PyMem_Malloc((size_t)count * 65);
    const unsigned char **data = PyMem_Malloc((size_t)count * sizeof(*data));
    size_t *lengths = PyMem_Malloc((size_t)count * sizeof(*lengths));
    PyObject *result = NULL;
    if (level == NULL || messages == NULL || data == NULL || lengths == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PyList_GET_ITEM(items, i);
        if (!PyBytes_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "merkle_root items must be bytes");
            goto done;
        }
        if (hashed && PyBytes_GET_SIZE(item) != 32) {
            PyErr_SetString(PyExc_ValueError, "merkle_root item hashes must be 32 bytes");
            goto done;
        }
        data[i] = (const unsigned char *)PyBytes_AS_STRING(item);
        lengths[i] = (size_t)PyBytes_GET_SIZE(item);
    }
    Py_BEGIN_ALLOW_THREADS
    if (!hashed) {
        keccak256_many(data, lengths, level, count);
    } else {
        for (Py_ssize_t i = 0; i < count; i++) {
            memcpy(level[i], data[i], 32);
        }
    }
    for (Py_ssize_t i = 0; i < count; i++) { /* leaves */
        unsigned char *message = messages + i * 33;
        message[0] = 0x00;
        memcpy(message + 1, level[i], 32);
        data[i] = message;
        lengths[i] = 33;
    }
    keccak256_many(data, lengths, level, count);
    Py_ssize_t width = count;
    while (width > 1) { /* inner levels: pairs left to right, an odd node carried up */
        Py_ssize_t pairs = width / 2;
        for (Py_ssize_t j = 0; j < pairs; j++) {
            unsigned char *message = messages + j * 65;
            message[0] = 0x01;
            memcpy(message + 1, level[2 * j], 32);
            memcpy(message + 33, level[2 * j + 1], 32);
            data[j] = message;
            lengths[j] = 65;
        }
        if (width & 1) {
            memmove(level[pairs], level[width - 1], 32);
        }
        keccak256_many(data, lengths, level, pairs);
        width = pairs + (width & 1);
    }
    memcpy(root, level[0], 32);
    Py_END_ALLOW_THREADS
    result = PyBytes_FromStringAndSize((const char *)root, 32);
done:
    PyMem_Free(level);
    PyMem_Free(messages);
    PyMem_Free(data);
    PyMem_Free(lengths);
    Py_DECREF(items);
    return result;
}

/* ---------------------------------------------------------------------------------- rlp decoding */

/* One RLP item of data[*pos..limit), in the one canonical form only (the rules of
 * node.tradezone.transactions._decode_item): a byte below 0x80 stands for itself, a one-byte string
 * holding such a byte is not canonical, the long forms are only for payloads of 56 bytes or more and
 * their lengths have no leading zero byte, no item runs past its enclosing list, and a list may only
 * begin with depth > 0 left (its items get depth - 1). Strings become bytes, lists Python lists.
 * Returns NULL with ValueError set for anything else; the caller's Python decoder then names it. */
static PyObject *rlp_item(const unsigned char *data, Py_ssize_t *pos, Py_ssize_t limit, long depth)
{
    Py_ssize_t at = *pos;
    if (at >= limit) {
        goto bad;
    }
    unsigned int prefix = data[at];
    if (prefix < 0x80) {
        *pos = at + 1;
        return PyBytes_FromStringAndSize((const char *)data + at, 1);
    }
    uint64_t length;
    Py_ssize_t start;
    int is_list = prefix >= 0xC0;
    unsigned int short_base = is_list ? 0xC0 : 0x80;
    unsigned int long_base = is_list ? 0xF7 : 0xB7;
    if (prefix <= long_base) {
        length = prefix - short_base;
        start = at + 1;
    } else {
        Py_ssize_t size = (Py_ssize_t)(prefix - long_base); /* 1..8 bytes of length */
        start = at + 1 + size;
        if (start > limit || data[at + 1] == 0) {
            goto bad;
        }
        length = 0;
        for (Py_ssize_t k = at + 1; k < start; k++) {
            length = (length << 8) | data[k];
        }
        if (length < 56) {
            goto bad;
        }
    }
    if (length > (uint64_t)(limit - start)) {
        goto bad;
    }
    Py_ssize_t end = start + (Py_ssize_t)length;
    if (!is_list) {
        if (length == 1 && data[start] < 0x80) {
            goto bad;
        }
        *pos = end;
        return PyBytes_FromStringAndSize((const char *)data + start, (Py_ssize_t)length);
    }
    if (depth <= 0) {
        goto bad;
    }
    PyObject *items = PyList_New(0);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t cursor = start;
    while (cursor < end) {
        PyObject *item = rlp_item(data, &cursor, end, depth - 1);
        if (item == NULL || PyList_Append(items, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(items);
            return NULL;
        }
        Py_DECREF(item);
    }
    *pos = end;
    return items;
bad:
    PyErr_SetString(PyExc_ValueError, "not canonical RLP");
    return NULL;
}

PyDoc_STRVAR(rlp_decode_doc,
"rlp_decode(data: bytes, max_depth: int) -> bytes | list\n\n"
"The one RLP item that spans data exactly, in its canonical form only, lists nested at most\n"
"max_depth deep; ValueError for anything else (node.tradezone.transactions.rlp_decode, which names\n"
"what is wrong, is the reference).");

static PyObject *rlp_decode_py(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyBytes_CheckExact(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "rlp_decode(data: bytes, max_depth: int)");
        return NULL;
    }
    long depth = PyLong_AsLong(args[1]);
    if (depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const unsigned char *data = (const unsigned char *)PyBytes_AS_STRING(args[0]);
    Py_ssize_t size = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t pos = 0;
    PyObject *item = rlp_item(data, &pos, size, depth);
    if (item != NULL && pos != size) {
        Py_DECREF(item);
        PyErr_SetString(PyExc_ValueError, "trailing bytes after the RLP item");
        return NULL;
    }
    return item;
}

PyDoc_STRVAR(configure_doc,
"configure(blank, invalid_key_error, invalid_value_error, corrupt_node_error)\n\n"
"Give the module the shared empty reference b\"\\x80\" and the engine's exception classes.");

static PyObject *configure(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 4 || !PyBytes_CheckExact(args[0]) || PyBytes_GET_SIZE(args[0]) != 1 ||
        PyBytes_AS_STRING(args[0])[0] != (char)0x80) {
        PyErr_SetString(PyExc_TypeError, "configure(b\"\\x80\", InvalidKeyError, InvalidValueError, CorruptNodeError)");
        return NULL;
    }
    for (int k = 1; k < 4; k++) {
        if (!PyExceptionClass_Check(args[k])) {
            PyErr_SetString(PyExc_TypeError, "configure expects exception classes");
            return NULL;
        }
    }
    Py_INCREF(args[0]);
    Py_XSETREF(g_blank, args[0]);
    Py_INCREF(args[1]);
    Py_XSETREF(g_invalid_key_error, args[1]);
    Py_INCREF(args[2]);
    Py_XSETREF(g_invalid_value_error, args[2]);
    Py_INCREF(args[3]);
    Py_XSETREF(g_corrupt_node_error, args[3]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"commit_pass", (PyCFunction)(void (*)(void))commit_pass, METH_FASTCALL, commit_pass_doc},
    {"update_cache", (PyCFunction)(void (*)(void))update_cache, METH_FASTCALL, update_cache_doc},
    {"update_tracked_cache", (PyCFunction)(void (*)(void))update_tracked_cache, METH_FASTCALL,
     update_tracked_cache_doc},
    {"keccak256", keccak256_py, METH_O, keccak256_doc},
    {"keccak256_generic", keccak256_generic_py, METH_O, keccak256_generic_doc},
    {"configure", (PyCFunction)(void (*)(void))configure, METH_FASTCALL, configure_doc},
    {"merkle_root", (PyCFunction)(void (*)(void))merkle_root_py, METH_FASTCALL, merkle_root_doc},
    {"rlp_decode", (PyCFunction)(void (*)(void))rlp_decode_py, METH_FASTCALL, rlp_decode_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "proofs._commit", "The native commit pass of proofs.engine (see _commit.c).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__commit(void)
{
    choose_keccak();
    choose_keccak_many();
    memset(NIBBLE_OF, -1, sizeof NIBBLE_OF);
    for (int k = 0; k < 16; k++) {
        NIBBLE_OF[(unsigned char)HEX_DIGITS[k]] = (signed char)k;
    }
    for (int k = 0; k < 3; k++) {
        g_tags[k] = PyLong_FromLong(k);
        if (g_tags[k] == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&module_def);
}
