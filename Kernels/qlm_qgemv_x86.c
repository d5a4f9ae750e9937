// Packed low-bit GEMV row kernels for x86: AVX-512 (F/BW/VL) and AVX2 + FMA + F16C.
//
// Decode (see the superblock layouts in qlm_quant.h): one zero-extending load (vpmovzxbd) turns
// 16 (AVX-512) or 8 (AVX2) code bytes into 32-bit lanes; shifting gives the next chunk of the
// superblock. For bits <= 4 the weights come from a 16-entry f32 value table held in a register
// — affine: t[i] = s·(i − z), built once per group (one subtract, one multiply); lut: the row's
// codebook — and one permute per vector dequantises. vpermps only reads the low 4 (AVX2: 3)
// index bits, so the junk above a code never needs masking as long as the table repeats every
// 2^bits entries. Further tricks (AVX-512):
//   2-bit: chunks 1 and 3 are looked up with the indices of chunks 0 and 2 in a second table
//          t1[i] = t[i >> 2] (index bits 2..3 select), which saves two of three shifts;
//   3-bit: octets (code layout 3) shift each chunk's code to bits 0..2 of its lane, the single
//          superblocks at a row's end add 4 under the high-bit lane mask; one permute of the
//          8-periodic table then dequantises;
//   8-bit: codes are converted to f32 and s·(q − z) is computed per vector.
// AVX2 4-bit uses two 8-entry permutes and a blend on index bit 3.
// So every path computes exactly the weights of qlm_qmatrix_dequant_rows; only the summation
// order differs (two accumulators per row: even / odd chunks).
//
// Four rows share each load of x; while a 4-row block is consumed, the block(s) >= 16 KiB ahead
// are software-prefetched into L2 in linear address order (as in qlm_gemv_f32.c; prefetching
// into L1 that far ahead halved the f16 bandwidth). The 1-row kernel does exactly the operations
// of one row of the 4-row kernel, so results do not depend on blocking or thread partition.
//
// Throughput note (Zen 4 VM): for bits <= 4 these kernels are bound by vector ops (one permute and
// one FMA per 16 weights at the least, f32 activations), not by DRAM, below about 4 bits/weight.
#if defined(__x86_64__) || defined(__i386__)
#include "qlm_quant_impl.h"
#include "qlm_x86_common.h"

#include <immintrin.h>
#include <string.h>

#define Q512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define Q256 __attribute__((target("avx2,fma,f16c")))
#define QINL __attribute__((always_inline)) static inline

// Value-table index patterns: entry i holds code (i mod 2^bits).
static const float qlm_iota2[16] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
static const float qlm_iota3[16] = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7};
static const float qlm_iota4[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// Lane j -> j / 4: turns a period-4 table t[j & 3] into t[j >> 2] (index bits 2..3 select).
static const int32_t qlm_div4[16] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3};

static inline const float *iota_for(int bits) {
    return bits == 2 ? qlm_iota2 : bits == 3 ? qlm_iota3 : qlm_iota4;
}

enum { KIND_AFFINE = 0, KIND_LUT = 1 };

// =============================================================================================
// AVX-512
// =============================================================================================

// Indices of the four 16-weight chunks of one superblock (codes in the low bits, for bits <= 4
// possibly junk above them; for 8-bit the exact codes).
// 2-bit codes in pairs of chunks: chunks 1 and 3 reuse the indices of chunks 0 and 2 and
// are looked up in a table that reads index bits 2..3 (t[j >> 2]) instead of bits 0..1, which
// saves two of the three shifts.
// 3-bit: whole codes (bits 0..2; the table repeats every 8 entries). The high-bit plane is a 64-bit
// lane mask (bit j = hi(w[j])), so chunk k's mask is its bits 16k .. 16k+15.
Q512 QINL void hibits512(const uint8_t *p, __mmask16 hm[4]) {
    for (int k = 0; k < 4; k++) hm[k] = _load_mask16((__mmask16 *)(void *)(p + 16 + 2 * k));
}

Q512 QINL void decode512(const uint8_t *p, const int BITS, __m512i idx[4]) {
    if (BITS == 2) {
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        idx[0] = idx[1] = v;
        idx[2] = idx[3] = _mm512_srli_epi32(v, 4);
    } else if (BITS == 3) {
        // Low 2 bits from the plane, + 4 under the chunk's 16-lane high-bit mask: the whole code in
        // bits 0..2 for the 8-periodic table (the octets' layout decodes straight into that form).
        const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)), m3 = _mm512_set1_epi32(3);
        __mmask16 hm[4];
        hibits512(p, hm);
        for (int k = 0; k < 4; k++) {
            const __m512i lo = _mm512_and_si512(k ? _mm512_srli_epi32(v, 2 * k) : v, m3);
            idx[k] = _mm512_mask_or_epi32(lo, hm[k], lo, _mm512_set1_epi32(4));
        }
    } else if (BITS == 4) {
        const __m512i lo = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
        const __m512i hi = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16)));
        idx[0] = lo;
        idx[1] = hi;
        idx[2] = _mm512_srli_epi32(lo, 4);
        idx[3] = _mm512_srli_epi32(hi, 4);
    } else {  // 8
        for (int k = 0; k < 4; k++) idx[k] = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(p + 16 * k)));
    }
}

// decode512 for superblock b of a row of nsb superblocks. 3-bit octets (code layout 3): each chunk's 16
// bytes of its vector zero-extended to 32-bit lanes and shifted so the code lands at bits 0..2; the
// 3-bit value table repeats every 8 entries, so one vpermps per 16 weights (the single superblocks at
// a row's end assemble the same codes from plane and mask). Per-core ceiling (f32 activations):
// affine3 g128 17.0 Gw/s with the earlier layout and two permutes per 16 weights, LUT-3 17.7.
Q512 QINL void oct3_decode512(const uint8_t *o, const int s, __m512i idx[4]) {
    const uint8_t *v = o + 64 * (s / 3);  // the placement rule in qlm_quant_impl.h
    for (int k = 0; k < 4; k++) {
        const __m512i x = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(v + 16 * k)));
        if (qlm_oct3_straddles(s)) {
            const __m512i h = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)(o + 128 + 16 * k)));
            idx[k] = _mm512_or_si512(_mm512_srli_epi32(x, 6), _mm512_and_si512(_mm512_srli_epi32(h, (unsigned)qlm_oct3_hishift(s)), _mm512_set1_epi32(4)));
        } else {  // bits 0..2 the code; the bits above are ignored by the 8-periodic table
            idx[k] = _mm512_srli_epi32(x, (unsigned)qlm_oct3_shift(s));
        }
    }
}

Q512 QINL void decode512_sb(const uint8_t *row, const int nsb, const int b, const int BITS, __m512i idx[4]) {
    if (BITS == 3 && qlm_sb3_in_octet(b, nsb)) {
        const uint8_t *o = row + (size_t)(b & ~7) * 24;
        switch (b & 7) {  // each position its own copy: shifts and masks become constants
        case 0: oct3_decode512(o, 0, idx); return;
        case 1: oct3_decode512(o, 1, idx); return;
        case 2: oct3_decode512(o, 2, idx); return;
        case 3: oct3_decode512(o, 3, idx); return;
        case 4: oct3_decode512(o, 4, idx); return;
        case 5: oct3_decode512(o, 5, idx); return;
        case 6: oct3_decode512(o, 6, idx); return;
        default: oct3_decode512(o, 7, idx); return;
        }
    }
    decode512(row + (size_t)b * (size_t)(BITS * 8), BITS, idx);
}

// Converts n (<= 16) f16 values to f32 into out[16] (masked load: never reads past the end).
Q512 QINL void f16x16_to_f32(const uint16_t *src, int n, float *out) {
    const __mmask16 mk = (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u));
    _mm512_storeu_ps(out, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, src)));
}

// Per-block state of the AVX-512 kernel (lives in registers once inlined).
// (The f32 scale/zero cache is kept apart from the vectors: its dynamic indexing would otherwise
// force the whole state into memory.)
typedef struct {
    __m512 acc0[4], acc1[4];  // even / odd chunks
    __m512 tb[4];             // value tables (period 2^bits: the bits above a code are ignored)
    __m512 tb1[4];            // 2-bit: the same table indexed by bits 2..3
    __m512 sv[4], zv[4];      // 8-bit: scale and zero
} q512_state;
typedef struct {
    float sc[4][16], zc[4][16];
} q512_cache;

// Rebuilds row i's dequantisation state for affine group g (f32 scales/zeros cached 16 at a time).
Q512 QINL void q512_group(q512_state *st, q512_cache *ca, const qlm_qmatrix *m, int row, int i, int g, int ng,
                          const int BITS) {
    if ((g & 15) == 0) {
        const int n = ng - g < 16 ? ng - g : 16;
        const size_t off = (size_t)row * (size_t)ng + (size_t)g;
        f16x16_to_f32(m->scales + off, n, ca->sc[i]);
        f16x16_to_f32(m->zeros + off, n, ca->zc[i]);
    }
    const __m512 s1 = _mm512_set1_ps(ca->sc[i][g & 15]), z1 = _mm512_set1_ps(ca->zc[i][g & 15]);
    if (BITS == 8) {
        st->sv[i] = s1;
        st->zv[i] = z1;
    } else {
        st->tb[i] = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(iota_for(BITS)), z1), s1);
        if (BITS == 2) st->tb1[i] = _mm512_permutexvar_ps(_mm512_loadu_si512(qlm_div4), st->tb[i]);
    }
}

// Chunk k's 16 weights of row i from its decoded indices (exactly the weights of the scalar
// dequantisation: tables hold s·(v − z) / the f16 codebook; 8-bit computes (q − z)·s per lane).
Q512 QINL __m512 q512_weight(const q512_state *st, __m512i idx, const int k, const int i,
                             const int BITS) {
    if (BITS == 8) return _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(idx), st->zv[i]), st->sv[i]);
    if (BITS == 2 && (k & 1)) return _mm512_permutexvar_ps(idx, st->tb1[i]);  // the 2-bit pair trick
    return _mm512_permutexvar_ps(idx, st->tb[i]);
}

// Row `row`'s codebook tables into slot i (LUT kind).
Q512 QINL void q512_lut_tables(q512_state *st, const qlm_qmatrix *m, int row, int i, const int BITS) {
    // 2-bit: the 4 entries repeated 4 times; 3-bit: the 8 entries twice; 4-bit: all 16.
    float v[16];
    qlm_lut_row_values(m, row, v);
    st->tb[i] = BITS == 2 ? _mm512_broadcast_f32x4(_mm_loadu_ps(v)) : _mm512_loadu_ps(v);
    if (BITS == 2) st->tb1[i] = _mm512_permutexvar_ps(_mm512_loadu_si512(qlm_div4), st->tb[i]);
}

// Superblock b of NR rows. GCK > 0: chunk-level affine groups (group size 16 or 32, or a
// multiple of 16 that is not a multiple of 64): the table is rebuilt at group starts inside.
Q512 QINL void q512_superblock(q512_state *st, q512_cache *ca, const qlm_qctx *c, int r, int b, const int NR,
                               const int BITS, const int GCK) {
    const qlm_qmatrix *m = c->m;
    const size_t rb = c->rb;
    const int SBB = BITS * 8;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    const float *xb = c->xs + (size_t)b * 64;
    __m512 xv[4];
    for (int k = 0; k < 4; k++) xv[k] = _mm512_loadu_ps(xb + 16 * k);
    for (int i = 0; i < NR; i++) {
        __m512i idx[4];
        decode512_sb(cp + (size_t)i * rb, c->nsb, b, BITS, idx);
        for (int k = 0; k < 4; k++) {
            if (GCK > 0) {
                const int ch = b * 4 + k;
                if (ch % GCK == 0 && ch / GCK < c->n_groups) q512_group(st, ca, m, r + i, i, ch / GCK, c->n_groups, BITS);
            }
            const __m512 w = q512_weight(st, idx[k], k, i, BITS);
            if (k & 1) st->acc1[i] = _mm512_fmadd_ps(w, xv[k], st->acc1[i]);
            else st->acc0[i] = _mm512_fmadd_ps(w, xv[k], st->acc0[i]);
        }
    }
}

Q512 QINL void q512_prefetch(const qlm_qctx *c, int r, int b, const int NR, const int BITS) {
    if (NR != 4) return;
    const int SBB = BITS * 8;
    const size_t blk = (size_t)NR * c->rb;
    const char *p = (const char *)c->m->codes + (size_t)r * c->rb + qlm_pf_distance(blk) + (size_t)b * (size_t)(NR * SBB);
    for (int o = 0; o < NR * SBB; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
}

// NR rows starting at r. GC: 16-column chunks per affine group (0: one group per row).
Q512 QINL void qrows512_block(const qlm_qctx *c, float *y, const int r, const int NR, const int BITS,
                              const int KIND, const int GC) {
    const qlm_qmatrix *m = c->m;
    const int nsb = c->nsb, ng = c->n_groups;
    q512_state st;
    q512_cache ca;
    for (int i = 0; i < NR; i++) st.acc0[i] = st.acc1[i] = _mm512_setzero_ps();
    if (KIND == KIND_LUT) {
        for (int i = 0; i < NR; i++) q512_lut_tables(&st, m, r + i, i, BITS);
    }
    if (KIND == KIND_LUT || GC == 0) {
        if (KIND == KIND_AFFINE)
            for (int i = 0; i < NR; i++) q512_group(&st, &ca, m, r + i, i, 0, ng, BITS);
        for (int b = 0; b < nsb; b++) {
            q512_prefetch(c, r, b, NR, BITS);
            q512_superblock(&st, &ca, c, r, b, NR, BITS, 0);
        }
    } else if (GC % 4 == 0) {  // groups of whole superblocks: tables rebuilt outside the hot loop
        const int spg = GC / 4;
        for (int g = 0, b0 = 0; b0 < nsb; g++, b0 += spg) {
            if (g < ng)
                for (int i = 0; i < NR; i++) q512_group(&st, &ca, m, r + i, i, g, ng, BITS);
            const int b1 = b0 + spg < nsb ? b0 + spg : nsb;
            for (int b = b0; b < b1; b++) {
                q512_prefetch(c, r, b, NR, BITS);
                q512_superblock(&st, &ca, c, r, b, NR, BITS, 0);
            }
        }
    } else {
        for (int b = 0; b < nsb; b++) {
            q512_prefetch(c, r, b, NR, BITS);
            q512_superblock(&st, &ca, c, r, b, NR, BITS, GC);
        }
    }
    for (int i = 0; i < NR; i++) y[r + i] = qlm_hsum512(_mm512_add_ps(st.acc0[i], st.acc1[i]));
}

Q512 QINL void qrows512(const qlm_qctx *c, float *y, int r0, int r1, const int BITS, const int KIND, const int GC) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) qrows512_block(c, y, r, 4, BITS, KIND, GC);
    for (; r < r1; r++) qrows512_block(c, y, r, 1, BITS, KIND, GC);
}

// f16 dense rows (not superblock-padded: the column tail uses a masked load).
Q512 QINL void f16rows512_block(const qlm_qctx *c, float *y, const int r, const int NR) {
    const qlm_qmatrix *m = c->m;
    const int cols = m->cols;
    const uint16_t *w0 = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
    const float *xs = c->xs;
    __m512 acc0[4], acc1[4];
    for (int i = 0; i < NR; i++) acc0[i] = acc1[i] = _mm512_setzero_ps();
    const int main32 = cols & ~31, main16 = cols & ~15, tail = cols & 15;
    const size_t rbytes = (size_t)2 * (size_t)cols;
    const int pf_on = NR == 4;
    const char *pf = (const char *)w0 + qlm_pf_distance((size_t)NR * rbytes);
    int j = 0;
    for (; j < main32; j += 32) {
        if (pf_on) {  // 4 rows x 64 bytes consumed
            const char *p = pf + (size_t)8 * (size_t)j;
            _mm_prefetch(p, _MM_HINT_T1); _mm_prefetch(p + 64, _MM_HINT_T1);
            _mm_prefetch(p + 128, _MM_HINT_T1); _mm_prefetch(p + 192, _MM_HINT_T1);
        }
        const __m512 xa = _mm512_loadu_ps(xs + j), xb = _mm512_loadu_ps(xs + j + 16);
        for (int i = 0; i < NR; i++) {
            const uint16_t *w = w0 + (size_t)i * (size_t)cols + j;
            acc0[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w)), xa, acc0[i]);
            acc1[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + 16))), xb, acc1[i]);
        }
    }
    if (j < main16) {
        const __m512 xa = _mm512_loadu_ps(xs + j);
        for (int i = 0; i < NR; i++) {
            const uint16_t *w = w0 + (size_t)i * (size_t)cols + j;
            acc0[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)w)), xa, acc0[i]);
        }
        j += 16;
    }
    if (tail) {
        const __mmask16 tm = (__mmask16)((1u << tail) - 1u);
        const __m512 xa = _mm512_loadu_ps(xs + j);  // zero-padded
        for (int i = 0; i < NR; i++) {
            const uint16_t *w = w0 + (size_t)i * (size_t)cols + j;
            acc1[i] = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_maskz_loadu_epi16(tm, w)), xa, acc1[i]);
        }
    }
    for (int i = 0; i < NR; i++) y[r + i] = qlm_hsum512(_mm512_add_ps(acc0[i], acc1[i]));
}

Q512 static void f16rows512(const qlm_qctx *c, float *y, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) f16rows512_block(c, y, r, 4);
    for (; r < r1; r++) f16rows512_block(c, y, r, 1);
}

#define QLM_DEF512(name, BITS, KIND, GC) \
    Q512 static void name(const qlm_qctx *c, float *y, int r0, int r1) { qrows512(c, y, r0, r1, BITS, KIND, GC); }
#define QLM_DEF512_GENERIC(name, BITS) \
    Q512 static void name(const qlm_qctx *c, float *y, int r0, int r1) { qrows512(c, y, r0, r1, BITS, KIND_AFFINE, c->gchunks); }

#define QLM_DEF512_AFFINE(B)                       \
    QLM_DEF512(a512_b##B##_row, B, KIND_AFFINE, 0) \
    QLM_DEF512(a512_b##B##_g32, B, KIND_AFFINE, 2) \
    QLM_DEF512(a512_b##B##_g64, B, KIND_AFFINE, 4) \
    QLM_DEF512(a512_b##B##_g128, B, KIND_AFFINE, 8) \
    QLM_DEF512_GENERIC(a512_b##B##_gany, B)
QLM_DEF512_AFFINE(2)
QLM_DEF512_AFFINE(3)
QLM_DEF512_AFFINE(4)
QLM_DEF512_AFFINE(8)
QLM_DEF512(l512_b2, 2, KIND_LUT, 0)
QLM_DEF512(l512_b3, 3, KIND_LUT, 0)
QLM_DEF512(l512_b4, 4, KIND_LUT, 0)

static qlm_qrows_fn pick_affine(int gchunks, qlm_qrows_fn row, qlm_qrows_fn g32, qlm_qrows_fn g64,
                                qlm_qrows_fn g128, qlm_qrows_fn gany) {
    switch (gchunks) {
    case 0: return row;
    case 2: return g32;
    case 4: return g64;
    case 8: return g128;
    default: return gany;
    }
}

// 16-column chunks per group as the driver computes it (0: one group per row; -1: unsupported).
static int affine_gchunks(const qlm_qmatrix *m) {
    const int ng = qlm_n_groups(m);
    if (ng <= 1) return 0;
    const int g = m->group_size;
    return g % 16 == 0 ? g / 16 : -1;
}

qlm_qrows_fn qlm_qrows_pick_avx512(const qlm_qmatrix *m) {
    switch (m->format) {
    case QLM_FMT_F16: return m->bits == 16 ? f16rows512 : NULL;
    case QLM_FMT_LUT:
        switch (m->bits) {
        case 2: return l512_b2;
        case 3: return l512_b3;
        case 4: return l512_b4;
        default: return NULL;
        }
    case QLM_FMT_AFFINE: {
        const int gc = affine_gchunks(m);
        if (gc < 0) return NULL;
        switch (m->bits) {
        case 2: return pick_affine(gc, a512_b2_row, a512_b2_g32, a512_b2_g64, a512_b2_g128, a512_b2_gany);
        case 3: return pick_affine(gc, a512_b3_row, a512_b3_g32, a512_b3_g64, a512_b3_g128, a512_b3_gany);
        case 4: return pick_affine(gc, a512_b4_row, a512_b4_g32, a512_b4_g64, a512_b4_g128, a512_b4_gany);
        case 8: return pick_affine(gc, a512_b8_row, a512_b8_g32, a512_b8_g64, a512_b8_g128, a512_b8_gany);
        default: return NULL;
        }
    }
    default: return NULL;
    }
}


// ---------------------------------------------------------------------------------------------
// AVX-512 prefill dequantisation: one stored row into out[cols] (STORED column order), the same
// decode and tables as the GEMV kernel, stored instead of accumulated. GC as for qrows512.
// ---------------------------------------------------------------------------------------------
Q512 QINL void dq512_row(const qlm_qmatrix *m, int r, float *out, const int BITS, const int KIND, const int GC) {
    const int cols = m->cols, SBB = BITS * 8;
    const size_t rb = qlm_row_bytes(BITS, cols);
    const int nsb = (int)(rb / (size_t)SBB);
    const int ng = KIND == KIND_AFFINE ? qlm_n_groups(m) : 1;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    q512_state st;
    q512_cache ca;
    if (KIND == KIND_LUT) q512_lut_tables(&st, m, r, 0, BITS);
    else q512_group(&st, &ca, m, r, 0, 0, ng, BITS);
    for (int b = 0; b < nsb; b++) {
        __m512i idx[4];
        decode512_sb(cp, nsb, b, BITS, idx);
        float *dst = out + (size_t)b * 64;
        const int rem = cols - b * 64;  // > 0
        for (int k = 0; k < 4; k++) {
            if (KIND == KIND_AFFINE && GC > 0) {
                const int ch = b * 4 + k;
                if (ch > 0 && ch % GC == 0 && ch / GC < ng) q512_group(&st, &ca, m, r, 0, ch / GC, ng, BITS);
            }
            const __m512 w = q512_weight(&st, idx[k], k, 0, BITS);
            const int n = rem - 16 * k;
            if (n >= 16) _mm512_storeu_ps(dst + 16 * k, w);
            else if (n > 0) _mm512_mask_storeu_ps(dst + 16 * k, (__mmask16)((1u << n) - 1u), w);
        }
    }
}

Q512 static void dq512_f16(const qlm_qmatrix *m, int r, float *out) {
    const int cols = m->cols;
    const uint16_t *h = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
    int j = 0;
    for (; j + 32 <= cols; j += 32) {
        _mm512_storeu_ps(out + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + j))));
        _mm512_storeu_ps(out + j + 16, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(h + j + 16))));
    }
    for (; j < cols; j += 16) {
        const int n = cols - j;
        const __mmask16 mk = (__mmask16)(n >= 16 ? 0xFFFFu : ((1u << n) - 1u));
        _mm512_mask_storeu_ps(out + j, mk, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(mk, h + j)));
    }
}

#define QLM_DQ512(name, BITS, KIND, GC) \
    Q512 static void name(const qlm_qmatrix *m, int r, float *out) { dq512_row(m, r, out, BITS, KIND, GC); }
#define QLM_DQ512_AFFINE(B)                         \
    QLM_DQ512(dq512_b##B##_row, B, KIND_AFFINE, 0)  \
    QLM_DQ512(dq512_b##B##_g32, B, KIND_AFFINE, 2)  \
    QLM_DQ512(dq512_b##B##_g64, B, KIND_AFFINE, 4)  \
    QLM_DQ512(dq512_b##B##_g128, B, KIND_AFFINE, 8) \
    Q512 static void dq512_b##B##_gany(const qlm_qmatrix *m, int r, float *out) { \
        dq512_row(m, r, out, B, KIND_AFFINE, m->group_size / 16);                 \
    }
QLM_DQ512_AFFINE(2)
QLM_DQ512_AFFINE(3)
QLM_DQ512_AFFINE(4)
QLM_DQ512_AFFINE(8)
QLM_DQ512(dq512_l2, 2, KIND_LUT, 0)
QLM_DQ512(dq512_l3, 3, KIND_LUT, 0)
QLM_DQ512(dq512_l4, 4, KIND_LUT, 0)

static qlm_dqrow_fn pick_dq(int gchunks, qlm_dqrow_fn row, qlm_dqrow_fn g32, qlm_dqrow_fn g64, qlm_dqrow_fn g128,
                            qlm_dqrow_fn gany) {
    switch (gchunks) {
    case 0: return row;
    case 2: return g32;
    case 4: return g64;
    case 8: return g128;
    default: return gany;
    }
}

qlm_dqrow_fn qlm_dqrow_pick_avx512(const qlm_qmatrix *m) {
    switch (m->format) {
    case QLM_FMT_F16: return m->bits == 16 ? dq512_f16 : NULL;
    case QLM_FMT_LUT:
        switch (m->bits) {
        case 2: return dq512_l2;
        case 3: return dq512_l3;
        case 4: return dq512_l4;
        default: return NULL;
        }
    case QLM_FMT_AFFINE: {
        const int gc = affine_gchunks(m);
        if (gc < 0) return NULL;
        switch (m->bits) {
        case 2: return pick_dq(gc, dq512_b2_row, dq512_b2_g32, dq512_b2_g64, dq512_b2_g128, dq512_b2_gany);
        case 3: return pick_dq(gc, dq512_b3_row, dq512_b3_g32, dq512_b3_g64, dq512_b3_g128, dq512_b3_gany);
        case 4: return pick_dq(gc, dq512_b4_row, dq512_b4_g32, dq512_b4_g64, dq512_b4_g128, dq512_b4_gany);
        case 8: return pick_dq(gc, dq512_b8_row, dq512_b8_g32, dq512_b8_g64, dq512_b8_g128, dq512_b8_gany);
        default: return NULL;
        }
    }
    default: return NULL;
    }
}

// =============================================================================================
// AVX2 + FMA + F16C (8 lanes: a superblock is 8 chunks of 8 weights)
// =============================================================================================
Q256 QINL float hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

Q256 QINL __m256i zext8(const uint8_t *p) { return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)); }


// (decode256_sb below: superblock b of a row, 3-bit octets included.)
// Indices of the eight 8-weight chunks of one superblock (chunk j = weights 8j .. 8j+7).
Q256 QINL void decode256(const uint8_t *p, const int BITS, __m256i idx[8]) {
    if (BITS == 2 || BITS == 3) {
        const __m256i a = zext8(p), b = zext8(p + 8);  // weights 16k+0..7 / 16k+8..15 at bits 2k
        idx[0] = a; idx[1] = b;
        idx[2] = _mm256_srli_epi32(a, 2); idx[3] = _mm256_srli_epi32(b, 2);
        idx[4] = _mm256_srli_epi32(a, 4); idx[5] = _mm256_srli_epi32(b, 4);
        idx[6] = _mm256_srli_epi32(a, 6); idx[7] = _mm256_srli_epi32(b, 6);
        if (BITS == 3) {
            // Chunk j's high bits are byte j of the mask, bit l for lane l: broadcast 4 mask bytes,
            // shift bit 8·(j mod 4) + l of lane l down to bit 0, keep it, move it to bit 2.
            const __m256i m3 = _mm256_set1_epi32(3), one = _mm256_set1_epi32(1);
            const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            for (int half = 0; half < 2; half++) {
                uint32_t hw;
                memcpy(&hw, p + 16 + 4 * half, 4);
                const __m256i h = _mm256_set1_epi32((int)hw);
                for (int q = 0; q < 4; q++) {
                    const int j = 4 * half + q;
                    const __m256i bit = _mm256_and_si256(_mm256_srlv_epi32(h, _mm256_add_epi32(lane, _mm256_set1_epi32(8 * q))), one);
                    idx[j] = _mm256_or_si256(_mm256_and_si256(idx[j], m3), _mm256_slli_epi32(bit, 2));
                }
            }
        }
    } else if (BITS == 4) {
        for (int q = 0; q < 4; q++) {
            idx[q] = zext8(p + 8 * q);                       // low nibbles: weights 8q .. 8q+7
            idx[q + 4] = _mm256_srli_epi32(idx[q], 4);       // high nibbles: weights 32+8q ..
        }
    } else {  // 8
        for (int q = 0; q < 8; q++) idx[q] = zext8(p + 8 * q);
    }
}

// decode256 for superblock b of a row of nsb superblocks. 3-bit octets: chunk q's 8 bytes of its vector
// zero-extended and shifted (vpermps reads index bits 0..2, so the bits above a code need no mask);
// codes 2 and 5 merge in the high bit from bit 6 / 7 of V2.
Q256 QINL void decode256_sb(const uint8_t *row, const int nsb, const int b, const int BITS, __m256i idx[8]) {
    if (BITS == 3 && qlm_sb3_in_octet(b, nsb)) {
        const uint8_t *o = row + (size_t)(b & ~7) * 24;
        const int s = b & 7;
        const uint8_t *v = o + 64 * (s / 3);
        for (int q = 0; q < 8; q++) {
            const __m256i x = zext8(v + 8 * q);
            if (qlm_oct3_straddles(s)) {
                const __m256i h = _mm256_and_si256(_mm256_srli_epi32(zext8(o + 128 + 8 * q), qlm_oct3_hishift(s)), _mm256_set1_epi32(4));
                idx[q] = _mm256_or_si256(_mm256_srli_epi32(x, 6), h);
            } else {
                idx[q] = _mm256_srli_epi32(x, qlm_oct3_shift(s));
            }
        }
        return;
    }
    decode256(row + (size_t)b * (size_t)(BITS * 8), BITS, idx);
}

Q256 QINL void f16x8_to_f32(const uint16_t *src, int n, float *out) {
    uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    memcpy(tmp, src, sizeof(uint16_t) * (size_t)(n < 8 ? n : 8));
    _mm256_storeu_ps(out, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tmp)));
}

// Per-block state of the AVX2 kernel; tables: t0 = entries 0..7, t1 = entries 8..15 (4-bit).
typedef struct {
    __m256 acc0[4], acc1[4];
    __m256 t0[4], t1[4];
    __m256 sv[4], zv[4];  // 8-bit
} q256_state;
typedef struct {
    float sc[4][8], zc[4][8];
} q256_cache;

Q256 QINL void q256_group(q256_state *st, q256_cache *ca, const qlm_qmatrix *m, int row, int i, int g, int ng,
                          const int BITS) {
    if ((g & 7) == 0) {
        const int n = ng - g < 8 ? ng - g : 8;
        const size_t off = (size_t)row * (size_t)ng + (size_t)g;
        f16x8_to_f32(m->scales + off, n, ca->sc[i]);
        f16x8_to_f32(m->zeros + off, n, ca->zc[i]);
    }
    const __m256 s1 = _mm256_broadcast_ss(&ca->sc[i][g & 7]), z1 = _mm256_broadcast_ss(&ca->zc[i][g & 7]);
    if (BITS == 8) {
        st->sv[i] = s1;
        st->zv[i] = z1;
    } else {
        const float *io = iota_for(BITS);
        st->t0[i] = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(io), z1), s1);
        if (BITS == 4) st->t1[i] = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(io + 8), z1), s1);
    }
}

// 8 weights of row i from decoded indices (the exact weights of the scalar dequantisation).
Q256 QINL __m256 q256_weight(const q256_state *st, __m256i idx, const int i, const int BITS) {
    if (BITS == 8) return _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(idx), st->zv[i]), st->sv[i]);
    if (BITS == 4) {
        const __m256 lo = _mm256_permutevar8x32_ps(st->t0[i], idx);
        const __m256 hi = _mm256_permutevar8x32_ps(st->t1[i], idx);
        return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
    }
    return _mm256_permutevar8x32_ps(st->t0[i], idx);
}

// Row `row`'s codebook tables into slot i (LUT kind).
Q256 QINL void q256_lut_tables(q256_state *st, const qlm_qmatrix *m, int row, int i, const int BITS) {
    float v[16];  // 2-bit: entries 0..3 twice; 3-bit: 0..7; 4-bit: 0..7 and 8..15
    qlm_lut_row_values(m, row, v);
    st->t0[i] = _mm256_loadu_ps(v);
    if (BITS == 4) st->t1[i] = _mm256_loadu_ps(v + 8);
}

Q256 QINL void q256_superblock(q256_state *st, q256_cache *ca, const qlm_qctx *c, int r, int b, const int NR,
                               const int BITS, const int GCK) {
    const qlm_qmatrix *m = c->m;
    const size_t rb = c->rb;
    const int SBB = BITS * 8;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    const float *xb = c->xs + (size_t)b * 64;
    for (int i = 0; i < NR; i++) {
        __m256i idx[8];
        decode256_sb(cp + (size_t)i * rb, c->nsb, b, BITS, idx);
        for (int q = 0; q < 8; q++) {
            // chunk q (8 weights) lies in 16-column chunk b*4 + q/2 (groups are multiples of 16)
            if (GCK > 0 && (q & 1) == 0) {
                const int ch = b * 4 + q / 2;
                if (ch % GCK == 0 && ch / GCK < c->n_groups) q256_group(st, ca, m, r + i, i, ch / GCK, c->n_groups, BITS);
            }
            const __m256 w = q256_weight(st, idx[q], i, BITS);
            const __m256 xv = _mm256_loadu_ps(xb + 8 * q);
            if (q & 1) st->acc1[i] = _mm256_fmadd_ps(w, xv, st->acc1[i]);
            else st->acc0[i] = _mm256_fmadd_ps(w, xv, st->acc0[i]);
        }
    }
}

Q256 QINL void q256_prefetch(const qlm_qctx *c, int r, int b, const int NR, const int BITS) {
    if (NR != 4) return;
    const int SBB = BITS * 8;
    const char *p = (const char *)c->m->codes + (size_t)r * c->rb + qlm_pf_distance((size_t)NR * c->rb) +
                    (size_t)b * (size_t)(NR * SBB);
    for (int o = 0; o < NR * SBB; o += 64) _mm_prefetch(p + o, _MM_HINT_T1);
}

Q256 QINL void qrows256_block(const qlm_qctx *c, float *y, const int r, const int NR, const int BITS,
                              const int KIND, const int GC) {
    const qlm_qmatrix *m = c->m;
    const int nsb = c->nsb, ng = c->n_groups;
    q256_state st;
    q256_cache ca;
    for (int i = 0; i < NR; i++) st.acc0[i] = st.acc1[i] = _mm256_setzero_ps();
    if (KIND == KIND_LUT) {
        for (int i = 0; i < NR; i++) q256_lut_tables(&st, m, r + i, i, BITS);
    }
    if (KIND == KIND_LUT || GC == 0) {
        if (KIND == KIND_AFFINE)
            for (int i = 0; i < NR; i++) q256_group(&st, &ca, m, r + i, i, 0, ng, BITS);
        for (int b = 0; b < nsb; b++) {
            q256_prefetch(c, r, b, NR, BITS);
            q256_superblock(&st, &ca, c, r, b, NR, BITS, 0);
        }
    } else if (GC % 4 == 0) {  // groups of whole superblocks
        const int spg = GC / 4;
        for (int g = 0, b0 = 0; b0 < nsb; g++, b0 += spg) {
            if (g < ng)
                for (int i = 0; i < NR; i++) q256_group(&st, &ca, m, r + i, i, g, ng, BITS);
            const int b1 = b0 + spg < nsb ? b0 + spg : nsb;
            for (int b = b0; b < b1; b++) {
                q256_prefetch(c, r, b, NR, BITS);
                q256_superblock(&st, &ca, c, r, b, NR, BITS, 0);
            }
        }
    } else {
        for (int b = 0; b < nsb; b++) {
            q256_prefetch(c, r, b, NR, BITS);
            q256_superblock(&st, &ca, c, r, b, NR, BITS, GC);
        }
    }
    for (int i = 0; i < NR; i++) y[r + i] = hsum256(_mm256_add_ps(st.acc0[i], st.acc1[i]));
}

Q256 QINL void qrows256(const qlm_qctx *c, float *y, int r0, int r1, const int BITS, const int KIND, const int GC) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) qrows256_block(c, y, r, 4, BITS, KIND, GC);
    for (; r < r1; r++) qrows256_block(c, y, r, 1, BITS, KIND, GC);
}

Q256 QINL void f16rows256_block(const qlm_qctx *c, float *y, const int r, const int NR) {
    const qlm_qmatrix *m = c->m;
    const int cols = m->cols;
    const uint16_t *w0 = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
    const float *xs = c->xs;
    __m256 acc0[4], acc1[4];
    for (int i = 0; i < NR; i++) acc0[i] = acc1[i] = _mm256_setzero_ps();
    const int main16 = cols & ~15, main8 = cols & ~7, tail = cols & 7;
    const int pf_on = NR == 4;
    const char *pf = (const char *)w0 + qlm_pf_distance((size_t)NR * 2 * (size_t)cols);
    int j = 0;
    for (; j < main16; j += 16) {
        if (pf_on) {  // 4 rows x 32 bytes consumed
            const char *p = pf + (size_t)8 * (size_t)j;
            _mm_prefetch(p, _MM_HINT_T1); _mm_prefetch(p + 64, _MM_HINT_T1);
        }
        const __m256 xa = _mm256_loadu_ps(xs + j), xb = _mm256_loadu_ps(xs + j + 8);
        for (int i = 0; i < NR; i++) {
            const uint16_t *w = w0 + (size_t)i * (size_t)cols + j;
            acc0[i] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w)), xa, acc0[i]);
            acc1[i] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(w + 8))), xb, acc1[i]);
        }
    }
    if (j < main8) {
        const __m256 xa = _mm256_loadu_ps(xs + j);
        for (int i = 0; i < NR; i++) {
            const uint16_t *w = w0 + (size_t)i * (size_t)cols + j;
            acc0[i] = _mm256_fmadd_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)w)), xa, acc0[i]);
        }
        j += 8;
    }
    if (tail) {
        const __m256 xa = _mm256_loadu_ps(xs + j);  // zero-padded
        for (int i = 0; i < NR; i++) {
            float wt[8];
            f16x8_to_f32(w0 + (size_t)i * (size_t)cols + j, tail, wt);
            acc1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(wt), xa, acc1[i]);
        }
    }
    for (int i = 0; i < NR; i++) y[r + i] = hsum256(_mm256_add_ps(acc0[i], acc1[i]));
}

Q256 static void f16rows256(const qlm_qctx *c, float *y, int r0, int r1) {
    int r = r0;
    for (; r + 4 <= r1; r += 4) f16rows256_block(c, y, r, 4);
    for (; r < r1; r++) f16rows256_block(c, y, r, 1);
}

#define QLM_DEF256(name, BITS, KIND, GC) \
    Q256 static void name(const qlm_qctx *c, float *y, int r0, int r1) { qrows256(c, y, r0, r1, BITS, KIND, GC); }
#define QLM_DEF256_GENERIC(name, BITS) \
    Q256 static void name(const qlm_qctx *c, float *y, int r0, int r1) { qrows256(c, y, r0, r1, BITS, KIND_AFFINE, c->gchunks); }
#define QLM_DEF256_AFFINE(B)                       \
    QLM_DEF256(a256_b##B##_row, B, KIND_AFFINE, 0) \
    QLM_DEF256(a256_b##B##_g32, B, KIND_AFFINE, 2) \
    QLM_DEF256(a256_b##B##_g64, B, KIND_AFFINE, 4) \
    QLM_DEF256(a256_b##B##_g128, B, KIND_AFFINE, 8) \
    QLM_DEF256_GENERIC(a256_b##B##_gany, B)
QLM_DEF256_AFFINE(2)
QLM_DEF256_AFFINE(3)
QLM_DEF256_AFFINE(4)
QLM_DEF256_AFFINE(8)
QLM_DEF256(l256_b2, 2, KIND_LUT, 0)
QLM_DEF256(l256_b3, 3, KIND_LUT, 0)
QLM_DEF256(l256_b4, 4, KIND_LUT, 0)

static int cpu_has_f16c(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c");
}

qlm_qrows_fn qlm_qrows_pick_avx2(const qlm_qmatrix *m) {
    if (!cpu_has_f16c()) return NULL;  // every AVX2 CPU has it; a VM might hide it
    switch (m->format) {
    case QLM_FMT_F16: return m->bits == 16 ? f16rows256 : NULL;
    case QLM_FMT_LUT:
        switch (m->bits) {
        case 2: return l256_b2;
        case 3: return l256_b3;
        case 4: return l256_b4;
        default: return NULL;
        }
    case QLM_FMT_AFFINE: {
        const int gc = affine_gchunks(m);
        if (gc < 0) return NULL;
        switch (m->bits) {
        case 2: return pick_affine(gc, a256_b2_row, a256_b2_g32, a256_b2_g64, a256_b2_g128, a256_b2_gany);
        case 3: return pick_affine(gc, a256_b3_row, a256_b3_g32, a256_b3_g64, a256_b3_g128, a256_b3_gany);
        case 4: return pick_affine(gc, a256_b4_row, a256_b4_g32, a256_b4_g64, a256_b4_g128, a256_b4_gany);
        case 8: return pick_affine(gc, a256_b8_row, a256_b8_g32, a256_b8_g64, a256_b8_g128, a256_b8_gany);
        default: return NULL;
        }
    }
    default: return NULL;
    }
}


// ---------------------------------------------------------------------------------------------
// AVX2 prefill dequantisation (see dq512_row): 8 chunks of 8 weights per superblock.
// ---------------------------------------------------------------------------------------------
Q256 QINL void dq256_row(const qlm_qmatrix *m, int r, float *out, const int BITS, const int KIND, const int GC) {
    const int cols = m->cols, SBB = BITS * 8;
    const size_t rb = qlm_row_bytes(BITS, cols);
    const int nsb = (int)(rb / (size_t)SBB);
    const int ng = KIND == KIND_AFFINE ? qlm_n_groups(m) : 1;
    const uint8_t *cp = m->codes + (size_t)r * rb;
    q256_state st;
    q256_cache ca;
    float tmp[64];
    if (KIND == KIND_LUT) q256_lut_tables(&st, m, r, 0, BITS);
    else q256_group(&st, &ca, m, r, 0, 0, ng, BITS);
    for (int b = 0; b < nsb; b++) {
        __m256i idx[8];
        decode256_sb(cp, nsb, b, BITS, idx);
        const int rem = cols - b * 64;
        float *dst = rem >= 64 ? out + (size_t)b * 64 : tmp;
        for (int q = 0; q < 8; q++) {
            if (KIND == KIND_AFFINE && GC > 0 && (q & 1) == 0) {
                const int ch = b * 4 + q / 2;
                if (ch > 0 && ch % GC == 0 && ch / GC < ng) q256_group(&st, &ca, m, r, 0, ch / GC, ng, BITS);
            }
            _mm256_storeu_ps(dst + 8 * q, q256_weight(&st, idx[q], 0, BITS));
        }
        if (rem < 64) memcpy(out + (size_t)b * 64, tmp, sizeof(float) * (size_t)rem);
    }
}

Q256 static void dq256_f16(const qlm_qmatrix *m, int r, float *out) {
    const int cols = m->cols;
    const uint16_t *h = (const uint16_t *)(const void *)m->codes + (size_t)r * (size_t)cols;
    int j = 0;
    for (; j + 16 <= cols; j += 16) {
        _mm256_storeu_ps(out + j, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j))));
        _mm256_storeu_ps(out + j + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + j + 8))));
    }
    for (; j < cols; j += 8) {
        const int n = cols - j < 8 ? cols - j : 8;
        float t[8];
        f16x8_to_f32(h + j, n, t);
        memcpy(out + j, t, sizeof(float) * (size_t)n);
    }
}

#define QLM_DQ256(name, BITS, KIND, GC) \
    Q256 static void name(const qlm_qmatrix *m, int r, float *out) { dq256_row(m, r, out, BITS, KIND, GC); }
#define QLM_DQ256_AFFINE(B)                         \
    QLM_DQ256(dq256_b##B##_row, B, KIND_AFFINE, 0)  \
    QLM_DQ256(dq256_b##B##_g32, B, KIND_AFFINE, 2)  \
    QLM_DQ256(dq256_b##B##_g64, B, KIND_AFFINE, 4)  \
    QLM_DQ256(dq256_b##B##_g128, B, KIND_AFFINE, 8) \
    Q256 static void dq256_b##B##_gany(const qlm_qmatrix *m, int r, float *out) { \
        dq256_row(m, r, out, B, KIND_AFFINE, m->group_size / 16);                 \
    }
QLM_DQ256_AFFINE(2)
QLM_DQ256_AFFINE(3)
QLM_DQ256_AFFINE(4)
QLM_DQ256_AFFINE(8)
QLM_DQ256(dq256_l2, 2, KIND_LUT, 0)
QLM_DQ256(dq256_l3, 3, KIND_LUT, 0)
QLM_DQ256(dq256_l4, 4, KIND_LUT, 0)

qlm_dqrow_fn qlm_dqrow_pick_avx2(const qlm_qmatrix *m) {
    if (!cpu_has_f16c()) return NULL;
    switch (m->format) {
    case QLM_FMT_F16: return m->bits == 16 ? dq256_f16 : NULL;
    case QLM_FMT_LUT:
        switch (m->bits) {
        case 2: return dq256_l2;
        case 3: return dq256_l3;
        case 4: return dq256_l4;
        default: return NULL;
        }
    case QLM_FMT_AFFINE: {
        const int gc = affine_gchunks(m);
        if (gc < 0) return NULL;
        switch (m->bits) {
        case 2: return pick_dq(gc, dq256_b2_row, dq256_b2_g32, dq256_b2_g64, dq256_b2_g128, dq256_b2_gany);
        case 3: return pick_dq(gc, dq256_b3_row, dq256_b3_g32, dq256_b3_g64, dq256_b3_g128, dq256_b3_gany);
        case 4: return pick_dq(gc, dq256_b4_row, dq256_b4_g32, dq256_b4_g64, dq256_b4_g128, dq256_b4_gany);
        case 8: return pick_dq(gc, dq256_b8_row, dq256_b8_g32, dq256_b8_g64, dq256_b8_g128, dq256_b8_gany);
        default: return NULL;
        }
    }
    default: return NULL;
    }
}

#endif  // x86
