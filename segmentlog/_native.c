/*
 * segmentlog._native: compiled twins of the hot loops in segmentlog/format.py.
 *
 * Strategy and invariants
 * - Each function mirrors one pure-Python function of format.py, which is the reference: the
 *   same results for every input (whole, truncated, damaged or random bytes) and the same
 *   exception classes for ints out of range. Arguments that are not ints raise TypeError
 *   (where the pure code may compare a float without complaint). tests/native/ checks this
 *   differentially (Hypothesis, a fuzzer, and a run of both under AddressSanitizer and UBSan).
 * - Bytes in, results out: no file I/O, no locks, no module state, no global mutable state.
 *   Stops come back as codes; format._stop turns them into the NEED_DATA, ZERO_FILL and
 *   FrameCorruption objects the pure code returns, so both paths share that code.
 * - Python ints are unbounded; here they are clamped into C ranges in ways that keep every
 *   comparison the pure code makes (a `last` of 1 << 64 is "no limit", a seq can step to
 *   2**64), so no argument ever wraps around.
 * - The GIL is released around loops over immutable input (bytes, or a memoryview of bytes)
 *   of at least GIL_RELEASE_BYTES, and only while no Python object and no mutable buffer is
 *   touched. Mutable input (a bytearray) is read under the GIL, through a buffer export that
 *   keeps it from being resized.
 * - xxh3-64 is the system's xxhash.h (Debian: libxxhash-dev), inlined; nothing of it is
 *   copied here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

/* FORMAT.md section 4.2 (frames) and 6 (index entries); format.py uses the same names. */
#define FRAME_HEADER_SIZE 28
#define FRAME_CHECKSUM_AT 4
#define FRAME_LENGTH_AT 12
#define FRAME_SEQ_AT 16
#define FRAME_MARKS_AT 24
#define FRAME_CHECKSUM_START FRAME_LENGTH_AT
#define FRAME_CONTINUED 0x80000000u
#define INDEX_ENTRY_SIZE 16
#define SEGMENT_HEADER_SIZE 48

static const unsigned char FRAME_MAGIC[4] = {0xc1, 0x53, 0x4c, 0x46};

/* Below this many bytes, releasing and retaking the GIL costs more than it frees. */
#define GIL_RELEASE_BYTES (64 * 1024)

/* Why a walk stopped: format._DONE .. format._SEQ, in the same order. */
enum stop_code {
    STOP_DONE = 0,
    STOP_NEED_DATA = 1,
    STOP_ZERO_FILL = 2,
    STOP_BAD_MAGIC = 3,
    STOP_TOO_LONG = 4,
    STOP_CHECKSUM = 5,
    STOP_SEQ = 6,
};

/* --- little-endian fields (compilers turn these into single loads and stores) --------------- */

static inline uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t
le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static inline void
put_le32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

static inline void
put_le64(unsigned char *p, uint64_t v)
{
    put_le32(p, (uint32_t)v);
    put_le32(p + 4, (uint32_t)(v >> 32));
}

/* --- input bytes ---------------------------------------------------------------------------- */

/* A read-only view of a bytes-like argument. bytes is read in place (the caller's reference
 * keeps it alive, and it cannot change); anything else through a buffer export, which also
 * keeps a bytearray from being resized while it is read. */
typedef struct {
    Py_buffer view; /* view.obj is NULL when no export was taken */
    const unsigned char *buf;
    Py_ssize_t size;
    int immutable; /* safe to read with the GIL released */
} input_bytes;

static int
input_get(PyObject *obj, input_bytes *in)
{
    if (PyBytes_Check(obj)) {
        in->view.obj = NULL;
        in->buf = (const unsigned char *)PyBytes_AS_STRING(obj);
        in->size = PyBytes_GET_SIZE(obj);
        in->immutable = 1;
        return 0;
    }
    if (PyObject_GetBuffer(obj, &in->view, PyBUF_SIMPLE) < 0) {
        return -1;
    }
    in->buf = (const unsigned char *)in->view.buf;
    in->size = in->view.len;
    in->immutable = PyMemoryView_Check(obj) && PyMemoryView_GET_BASE(obj) != NULL &&
                    PyBytes_Check(PyMemoryView_GET_BASE(obj));
    return 0;
}

static void
input_release(input_bytes *in)
{
    if (in->view.obj != NULL) {
        PyBuffer_Release(&in->view);
    }
}

/* --- integer arguments ---------------------------------------------------------------------- */

/* Python's int(x) via __index__ (TypeError for anything else, as a comparison of the pure
 * code's ints with a str or None raises), clamped into [0, UINT64_MAX]. *range is -1 when x
 * was below 0, +1 when above UINT64_MAX, else 0. */
static int
clamp_u64(PyObject *obj, uint64_t *value, int *range)
{
    PyObject *num = PyNumber_Index(obj);
    if (num == NULL) {
        return -1;
    }
    int overflow;
    long long s = PyLong_AsLongLongAndOverflow(num, &overflow);
    if (s == -1 && PyErr_Occurred()) {
        Py_DECREF(num);
        return -1;
    }
    if (overflow < 0 || (overflow == 0 && s < 0)) {
        *value = 0;
        *range = -1;
    }
    else if (overflow == 0) {
        *value = (uint64_t)s;
        *range = 0;
    }
    else {
        unsigned long long u = PyLong_AsUnsignedLongLong(num);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            if (!PyErr_ExceptionMatches(PyExc_OverflowError)) {
                Py_DECREF(num);
                return -1;
            }
            PyErr_Clear();
            *value = UINT64_MAX;
            *range = 1;
        }
        else {
            *value = (uint64_t)u;
            *range = 0;
        }
    }
    Py_DECREF(num);
    return 0;
}

/* A max_record_bytes bound: lengths (u32) above it are too long. Clamped into
 * [-1, UINT32_MAX], which keeps `length > bound` exact for every int. */
static int
length_bound(PyObject *obj, int64_t *bound)
{
    uint64_t v;
    int range;
    if (clamp_u64(obj, &v, &range) < 0) {
        return -1;
    }
    if (range < 0) {
        *bound = -1;
    }
    else if (range > 0 || v > UINT32_MAX) {
        *bound = UINT32_MAX;
    }
    else {
        *bound = (int64_t)v;
    }
    return 0;
}

/* A byte position: an int >= 0 (ValueError below 0). Positions past PY_SSIZE_T_MAX clamp to
 * it, which is past the end of any buffer, as the original position is. */
static int
position(PyObject *obj, const char *name, PyObject **num, Py_ssize_t *pos)
{
    *num = PyNumber_Index(obj);
    if (*num == NULL) {
        return -1;
    }
    *pos = PyNumber_AsSsize_t(*num, NULL);
    if (*pos == -1 && PyErr_Occurred()) {
        Py_CLEAR(*num);
        return -1;
    }
    if (*pos < 0) {
        PyErr_Format(PyExc_ValueError, "%s must be >= 0, not %R", name, *num);
        Py_CLEAR(*num);
        return -1;
    }
    return 0;
}

/* 2**64 as a Python int: the seq after UINT64_MAX. */
static PyObject *
u64_after_max(void)
{
    PyObject *max = PyLong_FromUnsignedLongLong(UINT64_MAX);
    if (max == NULL) {
        return NULL;
    }
    PyObject *one = PyLong_FromLong(1);
    if (one == NULL) {
        Py_DECREF(max);
        return NULL;
    }
    PyObject *r = PyNumber_Add(max, one);
    Py_DECREF(max);
    Py_DECREF(one);
    return r;
}

/* A tuple that steals the n references in items; NULL (releasing them all) if any is NULL. */
static PyObject *
tuple_steal(Py_ssize_t n, PyObject **items)
{
    PyObject *t = NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (items[i] == NULL) {
            goto fail;
        }
    }
    t = PyTuple_New(n);
    if (t == NULL) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(t, i, items[i]);
    }
    return t;
fail:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_XDECREF(items[i]);
    }
    return NULL;
}

static int
check_nargs(const char *name, Py_ssize_t nargs, Py_ssize_t min, Py_ssize_t max)
{
    if (nargs < min || nargs > max) {
        if (min == max) {
            PyErr_Format(PyExc_TypeError, "%s expected %zd arguments, got %zd", name, min, nargs);
        }
        else {
            PyErr_Format(PyExc_TypeError, "%s expected %zd to %zd arguments, got %zd", name, min,
                         max, nargs);
        }
        return -1;
    }
    return 0;
}

/* --- xxh3_64 -------------------------------------------------------------------------------- */

PyDoc_STRVAR(xxh3_64_doc,
             "xxh3_64($module, data, /)\n--\n\n"
             "xxh3-64 (seed 0) of a bytes-like object, as an int.\n\n"
             "Mirrors xxhash.xxh3_64_intdigest(data).");

static PyObject *
native_xxh3_64(PyObject *Py_UNUSED(module), PyObject *data)
{
    input_bytes in;
    if (input_get(data, &in) < 0) {
        return NULL;
    }
    XXH64_hash_t h;
    if (in.immutable && in.size >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        h = XXH3_64bits(in.buf, (size_t)in.size);
        Py_END_ALLOW_THREADS
    }
    else {
        h = XXH3_64bits(in.buf, (size_t)in.size);
    }
    input_release(&in);
    return PyLong_FromUnsignedLongLong(h);
}

/* --- one frame header ----------------------------------------------------------------------- */

/* The checks both walkers make where a frame must start, in the pure code's order, up to (not
 * including) the seq and the checksum. Returns STOP_DONE when a whole frame with a length
 * within bound starts at pos, with *length and *frame_seq set; else the stop code (with
 * *length and *frame_seq set for STOP_TOO_LONG and for a payload that runs past the end). */
static inline int
frame_at(const unsigned char *buf, Py_ssize_t size, Py_ssize_t pos, int64_t bound,
         uint32_t *length, uint64_t *frame_seq)
{
    Py_ssize_t avail = size - pos;
    if (avail < FRAME_HEADER_SIZE) {
        if (avail <= 0) {
            return STOP_NEED_DATA;
        }
        if (buf[pos] == 0) {
            return STOP_ZERO_FILL;
        }
        if (memcmp(buf + pos, FRAME_MAGIC, avail < 4 ? (size_t)avail : 4) != 0) {
            return STOP_BAD_MAGIC;
        }
        return STOP_NEED_DATA;
    }
    const unsigned char *p = buf + pos;
    if (memcmp(p, FRAME_MAGIC, 4) != 0) {
        return p[0] == 0 ? STOP_ZERO_FILL : STOP_BAD_MAGIC;
    }
    *length = le32(p + FRAME_LENGTH_AT);
    *frame_seq = le64(p + FRAME_SEQ_AT);
    if ((int64_t)*length > bound) {
        return STOP_TOO_LONG;
    }
    if ((uint64_t)*length + FRAME_HEADER_SIZE > (uint64_t)avail) {
        return STOP_NEED_DATA;
    }
    return STOP_DONE;
}

static inline int
frame_checksum_ok(const unsigned char *p, uint32_t length)
{
    return XXH3_64bits(p + FRAME_CHECKSUM_START,
                       (size_t)length + FRAME_HEADER_SIZE - FRAME_CHECKSUM_START) ==
           le64(p + FRAME_CHECKSUM_AT);
}

/* --- walk_frames ---------------------------------------------------------------------------- */

/* The expected seq is `seq` while !over; `over` means it matches no frame any more: it stepped
 * past UINT64_MAX to 2**64, or the caller's seq was outside 0..UINT64_MAX to begin with. */
typedef struct {
    const unsigned char *buf;
    Py_ssize_t size;
    Py_ssize_t pos;
    uint64_t seq;
    int over;
    int over_runs;  /* whether `seq <= last` holds while over */
    int last_inf;   /* last >= 2**64 */
    int last_neg;   /* last < 0 */
    uint64_t last;  /* clamped */
    int first_never; /* first > UINT64_MAX: no frame is at or after first */
    uint64_t first; /* clamped */
    int64_t bound;
    /* results */
    int code;
    uint64_t claimed;
    uint32_t length;
    Py_ssize_t copy_from;      /* offset of the first frame verified */
    Py_ssize_t copy_frames;    /* frames verified (contiguous from copy_from) */
    uint64_t copy_bytes;       /* their payload bytes */
} walk_state;

/* Mirrors frames._walk_frames_py, except that payloads are not copied: it records where the
 * verified frames are, for one resize and copy afterwards. Touches no Python object. */
static void
walk_run(walk_state *w)
{
    for (;;) {
        if (w->over ? !w->over_runs : (w->last_neg || w->seq > w->last)) {
            w->code = STOP_DONE;
            return;
        }
        uint32_t length = 0;
        uint64_t frame_seq = 0;
        int code = frame_at(w->buf, w->size, w->pos, w->bound, &length, &frame_seq);
        if (code != STOP_DONE) {
            w->code = code;
            if (code == STOP_TOO_LONG) {
                w->claimed = frame_seq;
                w->length = length;
            }
            return;
        }
        if (w->over || frame_seq != w->seq) {
            w->code = STOP_SEQ;
            w->claimed = frame_seq;
            return;
        }
        if (!w->first_never && w->seq >= w->first) {
            if (!frame_checksum_ok(w->buf + w->pos, length)) {
                w->code = STOP_CHECKSUM;
                w->claimed = frame_seq;
                return;
            }
            if (w->copy_frames++ == 0) {
                w->copy_from = w->pos;
            }
            w->copy_bytes += length;
        }
        w->pos += FRAME_HEADER_SIZE + (Py_ssize_t)length;
        if (w->seq == UINT64_MAX) {
            w->over = 1;
            w->over_runs = w->last_inf;
        }
        else {
            w->seq++;
        }
    }
}

/* Append the payloads of the frames walk_run verified to out, with one resize. */
static int
walk_copy(const walk_state *w, PyObject *out)
{
    if (w->copy_bytes == 0) {
        return 0; /* as `out += b""`, which never resizes (nor fails on an exported bytearray) */
    }
    Py_ssize_t old = PyByteArray_GET_SIZE(out);
    if (w->copy_bytes > (uint64_t)(PY_SSIZE_T_MAX - old)) {
        PyErr_NoMemory();
        return -1;
    }
    if (PyByteArray_Resize(out, old + (Py_ssize_t)w->copy_bytes) < 0) {
        return -1;
    }
    unsigned char *dst = (unsigned char *)PyByteArray_AS_STRING(out) + old;
    Py_ssize_t p = w->copy_from;
    for (Py_ssize_t i = 0; i < w->copy_frames; i++) {
        uint32_t length = le32(w->buf + p + FRAME_LENGTH_AT);
        memcpy(dst, w->buf + p + FRAME_HEADER_SIZE, length);
        dst += length;
        p += FRAME_HEADER_SIZE + (Py_ssize_t)length;
    }
    return 0;
}

PyDoc_STRVAR(walk_frames_doc,
             "walk_frames($module, buf, pos, seq, first, last, max_record_bytes, out=None, /)\n"
             "--\n\n"
             "Walk the frames of buf from pos, expecting seq first; mirrors\n"
             "frames._walk_frames_py.\n\n"
             "Frames before first are skipped by their headers; frames from first to last are\n"
             "verified and their payloads appended to out (a bytearray, or None). Returns\n"
             "(pos, next_seq, code, claimed_seq, length): code 0 once last was passed, 1\n"
             "NEED_DATA, 2 ZERO_FILL, 3 bad frame magic, 4 length above max_record_bytes,\n"
             "5 checksum mismatch, 6 seq mismatch; claimed_seq (the header's seq, codes 4-6)\n"
             "and length (code 4) are 0 when not given.");

static PyObject *
native_walk_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("walk_frames", nargs, 6, 7) < 0) {
        return NULL;
    }
    PyObject *out = nargs > 6 ? args[6] : Py_None;
    if (out == Py_None) {
        out = NULL;
    }
    else if (!PyByteArray_Check(out)) {
        PyErr_Format(PyExc_TypeError, "out must be a bytearray or None, not %.100s",
                     Py_TYPE(out)->tp_name);
        return NULL;
    }
    walk_state w;
    memset(&w, 0, sizeof w);
    PyObject *pos_obj = NULL, *seq_obj = NULL, *last_obj = NULL;
    PyObject *result = NULL;
    input_bytes in;
    in.view.obj = NULL;
    int range;

    if (input_get(args[0], &in) < 0) {
        return NULL;
    }
    w.buf = in.buf;
    w.size = in.size;
    if (position(args[1], "pos", &pos_obj, &w.pos) < 0) {
        goto done;
    }
    seq_obj = PyNumber_Index(args[2]);
    if (seq_obj == NULL || clamp_u64(seq_obj, &w.seq, &range) < 0) {
        goto done;
    }
    w.over = range != 0;
    if (clamp_u64(args[3], &w.first, &range) < 0) {
        goto done;
    }
    w.first_never = range > 0;
    last_obj = PyNumber_Index(args[4]);
    if (last_obj == NULL || clamp_u64(last_obj, &w.last, &range) < 0) {
        goto done;
    }
    w.last_neg = range < 0;
    w.last_inf = range > 0;
    if (length_bound(args[5], &w.bound) < 0) {
        goto done;
    }
    if (w.over) {
        /* A seq outside 0..UINT64_MAX: whether the loop runs at all is Python's comparison. */
        w.over_runs = PyObject_RichCompareBool(seq_obj, last_obj, Py_LE);
        if (w.over_runs < 0) {
            goto done;
        }
    }

    Py_ssize_t start = w.pos;
    int started_over = w.over;
    if (in.immutable && w.size - w.pos >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        walk_run(&w);
        Py_END_ALLOW_THREADS
    }
    else {
        walk_run(&w);
    }
    if (out != NULL && walk_copy(&w, out) < 0) {
        goto done;
    }

    PyObject *items[5];
    items[0] = w.pos == start ? Py_NewRef(pos_obj) : PyLong_FromSsize_t(w.pos);
    if (started_over) {
        items[1] = Py_NewRef(seq_obj);
    }
    else if (w.over) {
        items[1] = u64_after_max();
    }
    else {
        items[1] = PyLong_FromUnsignedLongLong(w.seq);
    }
    items[2] = PyLong_FromLong(w.code);
    items[3] = PyLong_FromUnsignedLongLong(w.claimed);
    items[4] = PyLong_FromUnsignedLong(w.length);
    result = tuple_steal(5, items);
done:
    input_release(&in);
    Py_XDECREF(pos_obj);
    Py_XDECREF(seq_obj);
    Py_XDECREF(last_obj);
    return result;
}

/* --- scan_frames ---------------------------------------------------------------------------- */

typedef struct {
    uint64_t seq;
    int64_t offset;
} index_point;

typedef struct {
    const unsigned char *buf;
    Py_ssize_t size;
    int64_t base;  /* base + size <= INT64_MAX, so every absolute offset fits */
    uint64_t seq;
    int over;      /* as in walk_state */
    int64_t bound;
    int64_t interval;
    int64_t last_point;
    /* results */
    Py_ssize_t pos;
    int code;
    uint64_t claimed;
    uint32_t length;
    int batch;             /* a verified frame with CONTINUED clear was seen */
    int64_t batch_end;
    uint64_t batch_seq;
    int64_t tail_start;
    uint64_t frames;
    index_point *points;   /* PyMem_Raw: allocated without the GIL */
    size_t n_points;
    size_t cap_points;
    int no_memory;
} scan_state;

/* a - b >= c, exactly, for a >= 0 (a - b may exceed INT64_MAX when b < 0). */
static inline int
at_least_apart(int64_t a, int64_t b, int64_t c)
{
    if (b < 0 && a > INT64_MAX + b) {
        return 1;
    }
    return a - b >= c;
}

/* Mirrors the loop of frames._scan_frames_py. Touches no Python object. */
static void
scan_run(scan_state *s)
{
    for (;;) {
        uint32_t length = 0;
        uint64_t frame_seq = 0;
        int code = frame_at(s->buf, s->size, s->pos, s->bound, &length, &frame_seq);
        if (code != STOP_DONE) {
            s->code = code;
            if (code == STOP_TOO_LONG) {
                s->claimed = frame_seq;
                s->length = length;
            }
            return;
        }
        if (s->over || frame_seq != s->seq) {
            s->code = STOP_SEQ;
            s->claimed = frame_seq;
            return;
        }
        const unsigned char *p = s->buf + s->pos;
        if (!frame_checksum_ok(p, length)) {
            s->code = STOP_CHECKSUM;
            s->claimed = frame_seq;
            return;
        }
        int64_t at = s->base + (int64_t)s->pos;
        Py_ssize_t end = s->pos + FRAME_HEADER_SIZE + (Py_ssize_t)length;
        if (at_least_apart(at, s->last_point, s->interval)) {
            s->last_point = at;
            if (s->n_points == s->cap_points) {
                size_t cap = s->cap_points ? 2 * s->cap_points : 64;
                index_point *grown = NULL;
                if (cap <= PY_SSIZE_T_MAX / sizeof(index_point)) {
                    grown = PyMem_RawRealloc(s->points, cap * sizeof(index_point));
                }
                if (grown == NULL) {
                    s->no_memory = 1;
                    return;
                }
                s->points = grown;
                s->cap_points = cap;
            }
            s->points[s->n_points].seq = s->seq;
            s->points[s->n_points].offset = at;
            s->n_points++;
        }
        if (!(le32(p + FRAME_MARKS_AT) & FRAME_CONTINUED)) {
            s->batch = 1;
            s->batch_end = s->base + (int64_t)end;
            s->batch_seq = s->seq;
            s->tail_start = at;
        }
        s->pos = end;
        s->frames++;
        if (s->seq == UINT64_MAX) {
            s->over = 1;
        }
        else {
            s->seq++;
        }
    }
}

static PyObject *
points_list(const scan_state *s)
{
    PyObject *list = PyList_New((Py_ssize_t)s->n_points);
    if (list == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < s->n_points; i++) {
        PyObject *pair[2] = {PyLong_FromUnsignedLongLong(s->points[i].seq),
                             PyLong_FromLongLong(s->points[i].offset)};
        PyObject *t = tuple_steal(2, pair);
        if (t == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

static int
int64_arg(PyObject *obj, int64_t *value)
{
    PyObject *num = PyNumber_Index(obj);
    if (num == NULL) {
        return -1;
    }
    long long v = PyLong_AsLongLong(num);
    Py_DECREF(num);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    *value = (int64_t)v;
    return 0;
}

PyDoc_STRVAR(scan_frames_doc,
             "scan_frames($module, buf, base, seq, max_record_bytes, interval, last_point, /)\n"
             "--\n\n"
             "Verify every frame of buf (a segment's bytes from absolute offset base),\n"
             "expecting seq first; mirrors frames._scan_frames_py.\n\n"
             "Returns (end, next_seq, code, claimed_seq, length, batch_end, batch_seq,\n"
             "tail_start, frames, points), offsets absolute, code as walk_frames' (never 0),\n"
             "points a list of (seq, offset). base, interval and last_point must fit in 64\n"
             "signed bits, and base + len(buf) too.");

static PyObject *
native_scan_frames(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("scan_frames", nargs, 6, 6) < 0) {
        return NULL;
    }
    scan_state s;
    memset(&s, 0, sizeof s);
    PyObject *seq_obj = NULL, *result = NULL;
    input_bytes in;
    in.view.obj = NULL;
    int range;

    if (input_get(args[0], &in) < 0) {
        return NULL;
    }
    s.buf = in.buf;
    s.size = in.size;
    if (int64_arg(args[1], &s.base) < 0) {
        goto done;
    }
    if (s.base < 0) {
        PyErr_Format(PyExc_ValueError, "base must be >= 0, not %lld", (long long)s.base);
        goto done;
    }
    if (s.base > INT64_MAX - (int64_t)s.size) {
        PyErr_SetString(PyExc_OverflowError, "base + len(buf) does not fit in 64 signed bits");
        goto done;
    }
    seq_obj = PyNumber_Index(args[2]);
    if (seq_obj == NULL || clamp_u64(seq_obj, &s.seq, &range) < 0) {
        goto done;
    }
    s.over = range != 0;
    int started_over = s.over;
    if (length_bound(args[3], &s.bound) < 0 || int64_arg(args[4], &s.interval) < 0 ||
        int64_arg(args[5], &s.last_point) < 0) {
        goto done;
    }

    if (in.immutable && s.size >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        scan_run(&s);
        Py_END_ALLOW_THREADS
    }
    else {
        scan_run(&s);
    }
    if (s.no_memory) {
        PyErr_NoMemory();
        goto done;
    }

    PyObject *items[10];
    items[0] = PyLong_FromLongLong(s.base + (int64_t)s.pos);
    if (started_over) {
        items[1] = Py_NewRef(seq_obj);
    }
    else if (s.over) {
        items[1] = u64_after_max();
    }
    else {
        items[1] = PyLong_FromUnsignedLongLong(s.seq);
    }
    items[2] = PyLong_FromLong(s.code);
    items[3] = PyLong_FromUnsignedLongLong(s.claimed);
    items[4] = PyLong_FromUnsignedLong(s.length);
    if (s.batch) {
        items[5] = PyLong_FromLongLong(s.batch_end);
        items[6] = PyLong_FromUnsignedLongLong(s.batch_seq);
        items[7] = PyLong_FromLongLong(s.tail_start);
    }
    else {
        PyObject *one = PyLong_FromLong(1);
        items[5] = PyLong_FromLongLong(s.base);
        items[6] = one == NULL ? NULL : PyNumber_Subtract(seq_obj, one);
        items[7] = PyLong_FromLong(-1);
        Py_XDECREF(one);
    }
    items[8] = PyLong_FromUnsignedLongLong(s.frames);
    items[9] = points_list(&s);
    result = tuple_steal(10, items);
done:
    PyMem_RawFree(s.points);
    input_release(&in);
    Py_XDECREF(seq_obj);
    return result;
}

/* --- decode_index --------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *data;
    Py_ssize_t count;      /* whole entries in data */
    int last_seq_neg;      /* the seq floor is below 0: every seq passes it */
    uint64_t last_seq;     /* seqs must be above this */
    uint64_t last_off;     /* offsets must be above this */
    int all_past_end;      /* every offset + 28 is past segment_size */
    int none_past_end;     /* no offset + 28 is past segment_size */
    uint64_t max_off;      /* else offsets above this are past the end */
    Py_ssize_t valid;      /* result: entries in the valid prefix */
} index_state;

/* Mirrors the loop of format._decode_index_py: the length of the valid prefix. */
static void
index_run(index_state *x)
{
    Py_ssize_t i = 0;
    for (; i < x->count; i++) {
        const unsigned char *p = x->data + i * INDEX_ENTRY_SIZE;
        uint64_t seq = le64(p), off = le64(p + 8);
        if ((!x->last_seq_neg && seq <= x->last_seq) || off <= x->last_off ||
            x->all_past_end || (!x->none_past_end && off > x->max_off)) {
            break;
        }
        x->last_seq_neg = 0;
        x->last_seq = seq;
        x->last_off = off;
    }
    x->valid = i;
}

PyDoc_STRVAR(decode_index_doc,
             "decode_index($module, data, base_seq, segment_size, /)\n--\n\n"
             "The longest valid prefix of an index file; mirrors format._decode_index_py.\n\n"
             "Returns (seqs, offsets, valid_bytes).");

static PyObject *
native_decode_index(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("decode_index", nargs, 3, 3) < 0) {
        return NULL;
    }
    index_state x;
    memset(&x, 0, sizeof x);
    input_bytes in;
    in.view.obj = NULL;
    PyObject *seqs = NULL, *offsets = NULL, *result = NULL;
    uint64_t v;
    int range;

    if (input_get(args[0], &in) < 0) {
        return NULL;
    }
    x.data = in.buf;
    x.count = in.size / INDEX_ENTRY_SIZE;
    x.last_off = SEGMENT_HEADER_SIZE - 1;

    /* Entry seqs must be >= base_seq, i.e. above base_seq - 1. */
    if (clamp_u64(args[1], &v, &range) < 0) {
        goto done;
    }
    if (range > 0) {
        x.count = 0; /* no u64 seq reaches base_seq */
    }
    else if (range < 0 || v == 0) {
        x.last_seq_neg = 1;
    }
    else {
        x.last_seq = v - 1;
    }

    /* An entry ends the prefix when off + 28 > segment_size, i.e. off > segment_size - 28. */
    if (clamp_u64(args[2], &v, &range) < 0) {
        goto done;
    }
    if (range < 0 || (range == 0 && v < FRAME_HEADER_SIZE)) {
        x.all_past_end = 1;
    }
    else if (range == 0) {
        x.max_off = v - FRAME_HEADER_SIZE;
    }
    else {
        /* segment_size > UINT64_MAX: segment_size - 28 may still fit in a u64. */
        PyObject *num = PyNumber_Index(args[2]);
        PyObject *k = PyLong_FromLong(FRAME_HEADER_SIZE);
        PyObject *max_off = num == NULL || k == NULL ? NULL : PyNumber_Subtract(num, k);
        Py_XDECREF(num);
        Py_XDECREF(k);
        if (max_off == NULL) {
            goto done;
        }
        int rc = clamp_u64(max_off, &x.max_off, &range);
        Py_DECREF(max_off);
        if (rc < 0) {
            goto done;
        }
        x.none_past_end = range > 0;
    }

    if (in.immutable && in.size >= GIL_RELEASE_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        index_run(&x);
        Py_END_ALLOW_THREADS
    }
    else {
        index_run(&x);
    }

    seqs = PyList_New(x.valid);
    offsets = PyList_New(x.valid);
    if (seqs == NULL || offsets == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < x.valid; i++) {
        const unsigned char *p = x.data + i * INDEX_ENTRY_SIZE;
        PyObject *seq = PyLong_FromUnsignedLongLong(le64(p));
        if (seq == NULL) {
            goto done;
        }
        PyList_SET_ITEM(seqs, i, seq);
        PyObject *off = PyLong_FromUnsignedLongLong(le64(p + 8));
        if (off == NULL) {
            goto done;
        }
        PyList_SET_ITEM(offsets, i, off);
    }
    PyObject *items[3] = {seqs, offsets, PyLong_FromSsize_t(x.valid * INDEX_ENTRY_SIZE)};
    seqs = offsets = NULL;
    result = tuple_steal(3, items);
done:
    Py_XDECREF(seqs);
    Py_XDECREF(offsets);
    input_release(&in);
    return result;
}

/* --- seal_frame ----------------------------------------------------------------------------- */

/* struct.error, which the pure code's FRAME_HEADER.pack_into raises for a field out of range;
 * looked up only on that path (the module keeps no state). */
static void
struct_error(const char *message)
{
    PyObject *mod = PyImport_ImportModule("struct");
    if (mod == NULL) {
        return;
    }
    PyObject *error = PyObject_GetAttrString(mod, "error");
    Py_DECREF(mod);
    if (error == NULL) {
        return;
    }
    PyErr_SetString(error, message);
    Py_DECREF(error);
}

/* A field for struct's "Q" or "I" code: an int (or __index__) in 0..max, else struct.error. */
static int
struct_field(PyObject *obj, uint64_t max, uint64_t *value)
{
    if (!PyLong_Check(obj) && !PyIndex_Check(obj)) {
        struct_error("required argument is not an integer");
        return -1;
    }
    int range;
    if (clamp_u64(obj, value, &range) < 0) {
        return -1;
    }
    if (range != 0 || *value > max) {
        struct_error("argument out of range");
        return -1;
    }
    return 0;
}

PyDoc_STRVAR(seal_frame_doc,
             "seal_frame($module, buf, start, seq, marks, /)\n--\n\n"
             "Write the header of the frame whose payload fills buf[start + 28:], in place;\n"
             "mirrors frames._seal_frame_py.");

static PyObject *
native_seal_frame(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (check_nargs("seal_frame", nargs, 4, 4) < 0) {
        return NULL;
    }
    PyObject *buf = args[0];
    /* The pure code's order: len(buf), then the range of start, then pack_into's checks. */
    Py_ssize_t size = PyObject_Size(buf);
    if (size < 0) {
        return NULL;
    }
    PyObject *num = PyNumber_Index(args[1]);
    if (num == NULL) {
        return NULL;
    }
    Py_ssize_t start = PyNumber_AsSsize_t(num, NULL);
    Py_DECREF(num);
    if (start == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (start < 0 || start > size - FRAME_HEADER_SIZE) {
        PyErr_Format(PyExc_ValueError, "frame start %zd outside 0..len(buf) - %d (len(buf) = %zd)",
                     start, FRAME_HEADER_SIZE, size);
        return NULL;
    }
    uint64_t length = (uint64_t)(size - start - FRAME_HEADER_SIZE);
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "argument must be read-write bytes-like object, not %.100s",
                     Py_TYPE(buf)->tp_name);
        return NULL;
    }
    /* The export keeps buf from being resized while the fields are converted (which may run
     * __index__) and written; its size is the one len(buf) gave unless buf is no bytearray. */
    uint64_t seq, marks;
    if (length > UINT32_MAX) {
        struct_error("argument out of range");
        goto fail;
    }
    if (struct_field(args[2], UINT64_MAX, &seq) < 0 ||
        struct_field(args[3], UINT32_MAX, &marks) < 0) {
        goto fail;
    }
    if (start > view.len - FRAME_HEADER_SIZE) {
        PyErr_SetString(PyExc_ValueError, "buffer shrank while the frame was sealed");
        goto fail;
    }
    unsigned char *p = (unsigned char *)view.buf + start;
    memcpy(p, FRAME_MAGIC, 4);
    put_le32(p + FRAME_LENGTH_AT, (uint32_t)length);
    put_le64(p + FRAME_SEQ_AT, seq);
    put_le32(p + FRAME_MARKS_AT, (uint32_t)marks);
    put_le64(p + FRAME_CHECKSUM_AT,
             XXH3_64bits(p + FRAME_CHECKSUM_START,
                         (size_t)(view.len - start - FRAME_CHECKSUM_START)));
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&view);
    return NULL;
}

/* --- module --------------------------------------------------------------------------------- */

static PyMethodDef native_methods[] = {
    {"xxh3_64", (PyCFunction)native_xxh3_64, METH_O, xxh3_64_doc},
    {"walk_frames", (PyCFunction)(void (*)(void))native_walk_frames, METH_FASTCALL,
     walk_frames_doc},
    {"scan_frames", (PyCFunction)(void (*)(void))native_scan_frames, METH_FASTCALL,
     scan_frames_doc},
    {"decode_index", (PyCFunction)(void (*)(void))native_decode_index, METH_FASTCALL,
     decode_index_doc},
    {"seal_frame", (PyCFunction)(void (*)(void))native_seal_frame, METH_FASTCALL,
     seal_frame_doc},
    {NULL, NULL, 0, NULL},
};

/* setup.py passes the SHA-256 of this file, so a test can tell a stale build from a fresh one. */
#ifndef SEGMENTLOG_NATIVE_SOURCE_SHA256
#define SEGMENTLOG_NATIVE_SOURCE_SHA256 ""
#endif

static int
native_exec(PyObject *module)
{
    return PyModule_AddStringConstant(module, "source_sha256", SEGMENTLOG_NATIVE_SOURCE_SHA256);
}

static PyModuleDef_Slot native_slots[] = {
    {Py_mod_exec, native_exec},
#ifdef Py_mod_multiple_interpreters
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(native_doc,
             "Compiled twins of segmentlog.format's hot loops: frame walk, recovery scan,\n"
             "index decode, frame sealing and xxh3-64.\n\n"
             "Optional: segmentlog.format uses it when it was built and imports, and its\n"
             "pure-Python functions (the reference this module must match) otherwise, or when\n"
             "SEGMENTLOG_PURE=1. Bytes in, results out; no I/O and no state.");

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "segmentlog._native",
    .m_doc = native_doc,
    .m_size = 0,
    .m_methods = native_methods,
    .m_slots = native_slots,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    return PyModuleDef_Init(&native_module);
}
