// Fused seed-replayed perturbation: theta += sum_k scale_k * z(seed_k, global index), in place,
// or out of place: data = source + sum_k scale_k * z(seed_k, global index) (ParamSet::writing_to).
// Compiled at run time by NVRTC with --fmad=false and no fast math, so every float operation is
// the same correctly rounded IEEE f32 operation as in normal.rs and cpu.rs (same order, same
// constants, which cuda.rs prepends as exact bit patterns). Keep the two files in step.
// With DPZO_FAST_NORMAL defined (NormalMath::Fast, the CUDA default) the pair uses FMA and the
// hardware's approximate base-2 logarithm, square root, sine and cosine instead: close to, not
// bitwise equal to, the CPU (bound in tests/perturb_gpu.rs).
//
// One kernel per element type (f32, f16, bf16, f64) and selection (dense, masked), and the
// proximal pull (see pull below); cuda.rs launches one per type present. Segment table: 8 u64 per tensor:
//   0 data pointer, 1 numel, 2 global offset, 3 first grid block, 4 dtype (0 f32, 1 f16,
//   2 bf16, 3 f64), 5 mask pointer (int64 flat indices) or 0, 6 mask length, 7 source pointer
//   (same dtype and numel; read instead of the data, which is then only written) or 0 for an
//   in-place pass;
// and one u32 per grid block, the index of its segment. The pull reads word 7 as its anchor.

#define MAX_TERMS 8
#define THREADS 256
// Philox blocks (4 elements) per thread in the dense kernel: a grid block covers
// THREADS * CHUNKS of them, and each thread has CHUNKS independent loads in flight while it
// generates z. cuda.rs defines it (and MIN_BLOCKS, the resident grid blocks per SM the register
// budget must allow).
#ifndef CHUNKS
#define CHUNKS 8
#endif
#ifndef MIN_BLOCKS
#define MIN_BLOCKS 4
#endif
// Masked coordinates per thread in the masked kernel (independent gathers in flight); cuda.rs
// defines it.
#ifndef MASKED_PER_THREAD
#define MASKED_PER_THREAD 4
#endif
// 2 pi / 2^32: a 32-bit angle word read as a signed turn fraction (fast normal math).
#define TWO_PI_OVER_2_32 (6.2831853071795865f * 2.3283064365386963e-10f)

// The ten round keys of Philox4x32-10 for one seed (key + r * Weyl, paper section 4.2), computed
// on the host (cuda.rs: philox_round_keys).
struct PhiloxKeys {
    unsigned int k0[10];
    unsigned int k1[10];
};

// The terms of one launch (cuda.rs: KernelTerms): scale_k and the round-key schedule of seed_k.
// Kernels take it as a __grid_constant__ and read it straight from the parameter bank.
struct Terms {
    float scale[MAX_TERMS];
    unsigned int count;
    unsigned int padding;
    PhiloxKeys keys[MAX_TERMS];
};

// Philox4x32-10 (philox.rs): counter (block lo, block hi, 0, 0); each round one 32x32->64
// product per multiplier, high halves XORed with the other words and the round key.
__device__ __forceinline__ void philox_block(const PhiloxKeys& keys, unsigned long long block, unsigned int c[4]) {
    c[0] = (unsigned int)block; c[1] = (unsigned int)(block >> 32); c[2] = 0u; c[3] = 0u;
    #pragma unroll
    for (int round = 0; round < 10; ++round) {
        unsigned int hi0 = __umulhi(PHILOX_MULTIPLIER_0, c[0]), lo0 = PHILOX_MULTIPLIER_0 * c[0];
        unsigned int hi1 = __umulhi(PHILOX_MULTIPLIER_1, c[2]), lo1 = PHILOX_MULTIPLIER_1 * c[2];
        unsigned int n0 = hi1 ^ c[1] ^ keys.k0[round];
        unsigned int n2 = hi0 ^ c[3] ^ keys.k1[round];
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    }
}

#ifdef DPZO_FAST_NORMAL
// Fast variant (NormalMath::Fast, CUDA only): the same Philox words and 24-bit fractions as the
// exact path, but -2 ln u from the hardware base-2 logarithm, the hardware square root, sine and
// cosine (angle in [-pi, pi)), and FMA, with the scale folded into the radius:
// delta += (scale r) cos, (scale r) sin.
// lg2.approx: absolute error <= 2^-22.6 for u in [0.5, 2], 2 ulp elsewhere (CUDA C++
// Programming Guide, intrinsic functions, __log2f), so near u = 1 the product can come out a
// hair below zero: clamped (r = 0 instead of r <= 5e-4; tests/perturb_gpu.rs bounds the effect).
#define MINUS_2_LN2 (-1.3862943611198906f)
#define TWO_POW_MINUS_24 5.9604644775390625e-8f
__device__ __forceinline__ float lg2_approx(float x) {
    float r; asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); return r;
}
__device__ __forceinline__ float sqrt_approx(float x) {
    float r; asm("sqrt.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x)); return r;
}
__device__ __forceinline__ void accumulate_pair(unsigned int radius_word, unsigned int angle_word, float scale, float* d0, float* d1) {
    // u = ((w >> 8) + 1) / 2^24 in (0, 1], exact in f32.
    float u = (float)((radius_word >> 8) + 1u) * TWO_POW_MINUS_24;
    float minus_2_ln_u = fmaxf(lg2_approx(u) * MINUS_2_LN2, 0.0f);
    float radius = sqrt_approx(minus_2_ln_u) * scale;
    // The whole word as a signed turn fraction: converting it to f32 keeps its top 24 bits up
    // to rounding, i.e. the exact path's 24-bit angle within 2^-24 of a turn.
    float sin_v, cos_v;
    __sincosf((float)(int)angle_word * TWO_PI_OVER_2_32, &sin_v, &cos_v);
    *d0 = fmaf(radius, cos_v, *d0);
    *d1 = fmaf(radius, sin_v, *d1);
}
#else
// ln(n / 2^24), n in 1..=2^24 (normal.rs: ln_of_24_bit_fraction).
__device__ __forceinline__ float ln_of_24_bit_fraction(unsigned int n) {
    unsigned int bits = __float_as_uint((float)n);
    int exponent = (int)(bits >> 23) - 127;
    float mantissa = __uint_as_float((bits & 0x007FFFFFu) | 0x3F800000u);
    if (mantissa > SQRT_2) { mantissa = __fmul_rn(mantissa, 0.5f); exponent += 1; }
    float k = (float)(exponent - 24);
    float s = __fdiv_rn(__fsub_rn(mantissa, 1.0f), __fadd_rn(mantissa, 1.0f));
    float s2 = __fmul_rn(s, s);
    float series = __fmul_rn(s2, __fadd_rn(ATANH_3, __fmul_rn(s2, __fadd_rn(ATANH_5,
        __fmul_rn(s2, __fadd_rn(ATANH_7, __fmul_rn(s2, __fadd_rn(ATANH_9, __fmul_rn(s2, ATANH_11)))))))));
    float two_s = __fadd_rn(s, s);
    float ln_mantissa = __fadd_rn(two_s, __fmul_rn(two_s, series));
    return __fadd_rn(__fmul_rn(k, LN2_HIGH), __fadd_rn(__fmul_rn(k, LN2_LOW), ln_mantissa));
}

// (sin, cos) of 2 pi a / 2^24 (normal.rs: sin_cos_of_24_bit_angle).
__device__ __forceinline__ void sin_cos_of_24_bit_angle(unsigned int a, float* sin_out, float* cos_out) {
    unsigned int quadrant = (a + (1u << 21)) >> 22;
    int remainder = (int)a - (int)(quadrant << 22);
    float x = __fmul_rn((float)remainder, TWO_PI_OVER_2_24);
    float x2 = __fmul_rn(x, x);
    float sin_x = __fadd_rn(x, __fmul_rn(x, __fmul_rn(x2, __fadd_rn(SIN_3, __fmul_rn(x2,
        __fadd_rn(SIN_5, __fmul_rn(x2, __fadd_rn(SIN_7, __fmul_rn(x2, SIN_9)))))))));
    float cos_x = __fadd_rn(1.0f, __fmul_rn(x2, __fadd_rn(COS_2, __fmul_rn(x2, __fadd_rn(COS_4,
        __fmul_rn(x2, __fadd_rn(COS_6, __fmul_rn(x2, __fadd_rn(COS_8, __fmul_rn(x2, COS_10))))))))));
    switch (quadrant & 3u) {
        case 0: *sin_out = sin_x; *cos_out = cos_x; break;
        case 1: *sin_out = cos_x; *cos_out = -sin_x; break;
        case 2: *sin_out = -sin_x; *cos_out = -cos_x; break;
        default: *sin_out = -cos_x; *cos_out = sin_x; break;
    }
}

__device__ __forceinline__ void box_muller(unsigned int radius_word, unsigned int angle_word, float* z0, float* z1) {
    float ln_u = ln_of_24_bit_fraction((radius_word >> 8) + 1u);
    float radius = __fsqrt_rn(__fmul_rn(-2.0f, ln_u));
    float s, c;
    sin_cos_of_24_bit_angle(angle_word >> 8, &s, &c);
    *z0 = __fmul_rn(radius, c);
    *z1 = __fmul_rn(radius, s);
}

// delta += scale * z for one Box-Muller pair, in the CPU's order (cpu.rs: block_delta).
__device__ __forceinline__ void accumulate_pair(unsigned int radius_word, unsigned int angle_word, float scale, float* d0, float* d1) {
    float z0, z1;
    box_muller(radius_word, angle_word, &z0, &z1);
    *d0 = __fadd_rn(*d0, __fmul_rn(scale, z0));
    *d1 = __fadd_rn(*d1, __fmul_rn(scale, z1));
}
#endif

// delta[l] += scale * z[4 block + l] of one seed, l = 0..3.
__device__ __forceinline__ void accumulate_block(const PhiloxKeys& keys, unsigned long long block, float scale, float delta[4]) {
    unsigned int c[4];
    philox_block(keys, block, c);
    accumulate_pair(c[0], c[1], scale, &delta[0], &delta[1]);
    accumulate_pair(c[2], c[3], scale, &delta[2], &delta[3]);
}

// delta += scale * z(seed, index): only the Box-Muller pair the element needs. Both slots of the
// pair start from delta and the element's slot is kept (a select, not an indexed local array).
__device__ __forceinline__ void accumulate_at(const PhiloxKeys& keys, unsigned long long index, float scale, float* delta) {
    unsigned int c[4];
    philox_block(keys, index >> 2, c);
    unsigned int lane = (unsigned int)(index & 3ull);
    float d0 = *delta, d1 = *delta;
    accumulate_pair(lane < 2 ? c[0] : c[2], lane < 2 ? c[1] : c[3], scale, &d0, &d1);
    *delta = (lane & 1u) ? d1 : d0;
}

// Element conversions through PTX (round to nearest even), no headers needed.
__device__ __forceinline__ float half_to_float(unsigned short h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ unsigned short float_to_half(float f) {
    unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float bf16_to_float(unsigned short b) {
    return __uint_as_float(((unsigned int)b) << 16);
}
__device__ __forceinline__ unsigned short float_to_bf16(float f) {
    unsigned short b; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f)); return b;
}

// theta + delta in f32 (f64 for f64), rounded once to the storage type: 0 f32, 1 f16, 2 bf16,
// 3 f64. The vector forms hold four consecutive, 4-element-aligned elements.
template <int DT> struct Storage;

template <> struct Storage<0> {
    typedef float Scalar;
    typedef float4 Quad;
    static __device__ __forceinline__ Scalar add(Scalar x, float d) { return __fadd_rn(x, d); }
    static __device__ __forceinline__ Quad add4(Quad v, const float d[4]) {
        v.x = __fadd_rn(v.x, d[0]); v.y = __fadd_rn(v.y, d[1]); v.z = __fadd_rn(v.z, d[2]); v.w = __fadd_rn(v.w, d[3]);
        return v;
    }
};

template <int DT> struct HalfStorage {
    typedef unsigned short Scalar;
    typedef uint2 Quad;
    static __device__ __forceinline__ Scalar add(Scalar x, float d) {
        return DT == 1 ? float_to_half(__fadd_rn(half_to_float(x), d)) : float_to_bf16(__fadd_rn(bf16_to_float(x), d));
    }
    static __device__ __forceinline__ Quad add4(Quad v, const float d[4]) {
        unsigned int lo0 = add((unsigned short)(v.x & 0xFFFFu), d[0]), hi0 = add((unsigned short)(v.x >> 16), d[1]);
        unsigned int lo1 = add((unsigned short)(v.y & 0xFFFFu), d[2]), hi1 = add((unsigned short)(v.y >> 16), d[3]);
        v.x = lo0 | (hi0 << 16);
        v.y = lo1 | (hi1 << 16);
        return v;
    }
};
template <> struct Storage<1> : HalfStorage<1> {};
template <> struct Storage<2> : HalfStorage<2> {};

struct Double4 { double2 a, b; };
template <> struct Storage<3> {
    typedef double Scalar;
    typedef Double4 Quad;
    static __device__ __forceinline__ Scalar add(Scalar x, float d) { return __dadd_rn(x, (double)d); }
    static __device__ __forceinline__ Quad add4(Quad v, const float d[4]) {
        v.a.x = __dadd_rn(v.a.x, (double)d[0]); v.a.y = __dadd_rn(v.a.y, (double)d[1]);
        v.b.x = __dadd_rn(v.b.x, (double)d[2]); v.b.y = __dadd_rn(v.b.y, (double)d[3]);
        return v;
    }
};

// The segment record of grid block b: `block_segments[b]` is the segment that contains it
// (cuda.rs builds the table once per parameter set). One uniform load, no barrier.
__device__ __forceinline__ const unsigned long long* block_segment(const unsigned long long* table,
                                                                   const unsigned int* block_segments,
                                                                   unsigned long long b) {
    return table + 8 * (unsigned long long)__ldg(block_segments + b);
}

template <int DT>
__device__ __forceinline__ void perturb_dense(const unsigned long long* table, const unsigned int* block_segments,
                                              const Terms& terms) {
    typedef Storage<DT> S;
    const unsigned long long* seg = block_segment(table, block_segments, blockIdx.x);
    unsigned long long ptr = __ldg(seg), numel = __ldg(seg + 1), offset = __ldg(seg + 2), source = __ldg(seg + 7);
    unsigned int count = terms.count;
    unsigned long long base = offset / 4 + (blockIdx.x - __ldg(seg + 3)) * (unsigned long long)(THREADS * CHUNKS);
    // Local index of lane 0 of this grid block's first Philox block (negative when the tensor
    // starts inside it), and of the end of its last one.
    long long first = (long long)(4 * base) - (long long)offset;
    long long end = first + 4LL * THREADS * CHUNKS;
    // Vector access needs the data and the source (if any) aligned at the same element.
    unsigned long long first_bytes = (unsigned long long)first * sizeof(typename S::Scalar);
    bool aligned = (((ptr + first_bytes) | ((source ? source : ptr) + first_bytes)) & (4 * sizeof(typename S::Scalar) - 1)) == 0;
    if (first >= 0 && end <= (long long)numel && aligned) {
        // Interior grid block: every Philox block is four whole, aligned elements. Issue all
        // loads (from the source, if any) first, generate z while they are in flight, then add
        // and store to the data.
        typename S::Quad* data = (typename S::Quad*)((typename S::Scalar*)ptr + first);
        const typename S::Quad* in = source ? (const typename S::Quad*)((const typename S::Scalar*)source + first) : data;
        typename S::Quad values[CHUNKS];
        #pragma unroll
        for (int c = 0; c < CHUNKS; ++c) values[c] = in[c * THREADS + threadIdx.x];
        if (count == 1) {
            // One term (every pass of a single-direction step): round keys from the parameter
            // bank, each chunk's delta added as soon as it is generated.
            float scale = terms.scale[0];
            #pragma unroll
            for (int c = 0; c < CHUNKS; ++c) {
                float delta[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                accumulate_block(terms.keys[0], base + (unsigned long long)(c * THREADS + threadIdx.x), scale, delta);
                values[c] = S::add4(values[c], delta);
            }
            #pragma unroll
            for (int c = 0; c < CHUNKS; ++c) data[c * THREADS + threadIdx.x] = values[c];
            return;
        }
        if (count == 2) {
            // Two terms (a chained step's update plus the next step's perturbation): unrolled
            // like the single term, so both key schedules are uniform constant-bank operands.
            float scale0 = terms.scale[0], scale1 = terms.scale[1];
            #pragma unroll
            for (int c = 0; c < CHUNKS; ++c) {
                float delta[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                unsigned long long block = base + (unsigned long long)(c * THREADS + threadIdx.x);
                accumulate_block(terms.keys[0], block, scale0, delta);
                accumulate_block(terms.keys[1], block, scale1, delta);
                values[c] = S::add4(values[c], delta);
            }
            #pragma unroll
            for (int c = 0; c < CHUNKS; ++c) data[c * THREADS + threadIdx.x] = values[c];
            return;
        }
        // Several terms: chunk by chunk, each term's round keys read from the parameter bank
        // (`terms` is a __grid_constant__, so indexing it by k needs no local copy).
        #pragma unroll
        for (int c = 0; c < CHUNKS; ++c) {
            float delta[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            unsigned long long block = base + (unsigned long long)(c * THREADS + threadIdx.x);
            for (unsigned int k = 0; k < count; ++k) accumulate_block(terms.keys[k], block, terms.scale[k], delta);
            values[c] = S::add4(values[c], delta);
        }
        #pragma unroll
        for (int c = 0; c < CHUNKS; ++c) data[c * THREADS + threadIdx.x] = values[c];
        return;
    }
    // Edge grid block (a tensor's first or last, or misaligned data or source): element by
    // element.
    unsigned long long last_block = (offset + numel - 1) / 4;
    typename S::Scalar* elements = (typename S::Scalar*)ptr;
    const typename S::Scalar* from = source ? (const typename S::Scalar*)source : elements;
    for (unsigned int c = 0; c < CHUNKS; ++c) {
        unsigned long long block = base + (unsigned long long)c * THREADS + threadIdx.x;
        if (block > last_block) return;
        float delta[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (unsigned int k = 0; k < count; ++k) accumulate_block(terms.keys[k], block, terms.scale[k], delta);
        long long lane0 = (long long)(4 * block) - (long long)offset;
        #pragma unroll
        for (int l = 0; l < 4; ++l) {
            long long i = lane0 + l;
            if (i >= 0 && i < (long long)numel) elements[i] = S::add(from[i], delta[l]);
        }
    }
}

template <int DT>
__device__ __forceinline__ void perturb_masked(const unsigned long long* table, const unsigned int* block_segments,
                                               const Terms& terms) {
    typedef Storage<DT> S;
    const unsigned long long* seg = block_segment(table, block_segments, blockIdx.x);
    typename S::Scalar* elements = (typename S::Scalar*)seg[0];
    // Gather from the source when there is one, scatter to the data.
    const typename S::Scalar* from = seg[7] ? (const typename S::Scalar*)seg[7] : elements;
    const long long* indices = (const long long*)seg[5];
    unsigned long long offset = seg[2], length = seg[6];
    unsigned int count = terms.count;
    unsigned long long first = (blockIdx.x - seg[3]) * (unsigned long long)(THREADS * MASKED_PER_THREAD) + threadIdx.x;
    // Gather every coordinate first (independent loads in flight), then generate and store.
    long long index[MASKED_PER_THREAD];
    typename S::Scalar values[MASKED_PER_THREAD];
    #pragma unroll
    for (int m = 0; m < MASKED_PER_THREAD; ++m) {
        unsigned long long j = first + (unsigned long long)(m * THREADS);
        index[m] = j < length ? indices[j] : -1;
    }
    #pragma unroll
    for (int m = 0; m < MASKED_PER_THREAD; ++m) if (index[m] >= 0) values[m] = from[index[m]];
    float delta[MASKED_PER_THREAD];
    #pragma unroll
    for (int m = 0; m < MASKED_PER_THREAD; ++m) delta[m] = 0.0f;
    for (unsigned int k = 0; k < count; ++k) {
        float scale = terms.scale[k];
        #pragma unroll
        for (int m = 0; m < MASKED_PER_THREAD; ++m)
            if (index[m] >= 0) accumulate_at(terms.keys[k], offset + (unsigned long long)index[m], scale, &delta[m]);
    }
    #pragma unroll
    for (int m = 0; m < MASKED_PER_THREAD; ++m) if (index[m] >= 0) elements[index[m]] = S::add(values[m], delta[m]);
}

// Proximal pull (pull.rs): theta <- lerp(theta, anchor, w) at the touched coordinates, as
// ATen's lerp computes it (aten/src/ATen/native/Lerp.h): in f32 (f64 for f64) with the weight
// rounded to that type, x + w (a - x) for |w| < 1/2, else a - (a - x)(1 - w), rounded once to
// the storage type. Record words as above, with 6 the coordinate count (numel, or the mask
// length) and 7 the anchor: one value per coordinate, in mask order for a masked tensor.
#define PULL_PER_THREAD 4

template <int DT> struct Opmath;
template <> struct Opmath<0> {
    typedef float T;
    static __device__ __forceinline__ T load(float x) { return x; }
    static __device__ __forceinline__ float store(T v) { return v; }
};
template <> struct Opmath<1> {
    typedef float T;
    static __device__ __forceinline__ T load(unsigned short x) { return half_to_float(x); }
    static __device__ __forceinline__ unsigned short store(T v) { return float_to_half(v); }
};
template <> struct Opmath<2> {
    typedef float T;
    static __device__ __forceinline__ T load(unsigned short x) { return bf16_to_float(x); }
    static __device__ __forceinline__ unsigned short store(T v) { return float_to_bf16(v); }
};
template <> struct Opmath<3> {
    typedef double T;
    static __device__ __forceinline__ T load(double x) { return x; }
    static __device__ __forceinline__ double store(T v) { return v; }
};

__device__ __forceinline__ float lerp_rn(float x, float a, float w) {
    return fabsf(w) < 0.5f ? __fadd_rn(x, __fmul_rn(w, __fsub_rn(a, x)))
                           : __fsub_rn(a, __fmul_rn(__fsub_rn(a, x), __fsub_rn(1.0f, w)));
}
__device__ __forceinline__ double lerp_rn(double x, double a, double w) {
    return fabs(w) < 0.5 ? __dadd_rn(x, __dmul_rn(w, __dsub_rn(a, x)))
                         : __dsub_rn(a, __dmul_rn(__dsub_rn(a, x), __dsub_rn(1.0, w)));
}

template <int DT>
__device__ __forceinline__ typename Storage<DT>::Scalar lerp_element(typename Storage<DT>::Scalar x, typename Storage<DT>::Scalar a,
                                                                    typename Opmath<DT>::T w) {
    return Opmath<DT>::store(lerp_rn(Opmath<DT>::load(x), Opmath<DT>::load(a), w));
}

// A grid block covers THREADS * PULL_PER_THREAD coordinates of a masked tensor, or that many
// 4-element groups of a dense one (vector loads when the tensor and its anchor are aligned).
template <int DT>
__device__ __forceinline__ void pull(const unsigned long long* table, const unsigned int* block_segments, double weight) {
    typedef Storage<DT> S;
    typedef typename S::Scalar Scalar;
    const unsigned long long* seg = block_segment(table, block_segments, blockIdx.x);
    Scalar* elements = (Scalar*)__ldg(seg);
    const long long* indices = (const long long*)__ldg(seg + 5);
    unsigned long long count = __ldg(seg + 6);
    const Scalar* anchor = (const Scalar*)__ldg(seg + 7);
    typename Opmath<DT>::T w = (typename Opmath<DT>::T)weight;
    unsigned long long block = blockIdx.x - __ldg(seg + 3);
    if (!indices) {
        unsigned long long start = block * (unsigned long long)(THREADS * PULL_PER_THREAD * 4);
        bool aligned = (((unsigned long long)elements | (unsigned long long)anchor) & (4 * sizeof(Scalar) - 1)) == 0;
        if (aligned && start + THREADS * PULL_PER_THREAD * 4 <= count) {
            typename S::Quad* data = (typename S::Quad*)(elements + start);
            const typename S::Quad* targets = (const typename S::Quad*)(anchor + start);
            typename S::Quad x[PULL_PER_THREAD], a[PULL_PER_THREAD];
            #pragma unroll
            for (int m = 0; m < PULL_PER_THREAD; ++m) {
                x[m] = data[m * THREADS + threadIdx.x];
                a[m] = targets[m * THREADS + threadIdx.x];
            }
            #pragma unroll
            for (int m = 0; m < PULL_PER_THREAD; ++m) {
                Scalar* xs = (Scalar*)&x[m];
                const Scalar* as = (const Scalar*)&a[m];
                #pragma unroll
                for (int l = 0; l < 4; ++l) xs[l] = lerp_element<DT>(xs[l], as[l], w);
                data[m * THREADS + threadIdx.x] = x[m];
            }
            return;
        }
        for (int m = 0; m < PULL_PER_THREAD * 4; ++m) {
            unsigned long long j = start + (unsigned long long)(m * THREADS) + threadIdx.x;
            if (j < count) elements[j] = lerp_element<DT>(elements[j], anchor[j], w);
        }
        return;
    }
    // Masked: every load first (independent gathers in flight), then compute and store.
    unsigned long long first = block * (unsigned long long)(THREADS * PULL_PER_THREAD) + threadIdx.x;
    long long index[PULL_PER_THREAD];
    Scalar values[PULL_PER_THREAD], targets[PULL_PER_THREAD];
    #pragma unroll
    for (int m = 0; m < PULL_PER_THREAD; ++m) {
        unsigned long long j = first + (unsigned long long)(m * THREADS);
        index[m] = j < count ? indices[j] : -1;
    }
    #pragma unroll
    for (int m = 0; m < PULL_PER_THREAD; ++m) {
        if (index[m] >= 0) {
            values[m] = elements[index[m]];
            targets[m] = anchor[first + (unsigned long long)(m * THREADS)];
        }
    }
    #pragma unroll
    for (int m = 0; m < PULL_PER_THREAD; ++m)
        if (index[m] >= 0) elements[index[m]] = lerp_element<DT>(values[m], targets[m], w);
}

#define KERNELS(SUFFIX, DT) \
    extern "C" __global__ void __launch_bounds__(THREADS, MIN_BLOCKS) \
    perturb_dense_##SUFFIX(const unsigned long long* table, const unsigned int* block_segments, \
                           const __grid_constant__ Terms terms) { \
        perturb_dense<DT>(table, block_segments, terms); } \
    extern "C" __global__ void __launch_bounds__(THREADS) \
    perturb_masked_##SUFFIX(const unsigned long long* table, const unsigned int* block_segments, \
                            const __grid_constant__ Terms terms) { \
        perturb_masked<DT>(table, block_segments, terms); } \
    extern "C" __global__ void __launch_bounds__(THREADS) \
    pull_##SUFFIX(const unsigned long long* table, const unsigned int* block_segments, double weight) { \
        pull<DT>(table, block_segments, weight); }

KERNELS(f32, 0)
KERNELS(f16, 1)
KERNELS(bf16, 2)
KERNELS(f64, 3)
