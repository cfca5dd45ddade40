// Fused seed-replayed perturbation: theta += sum_k scale_k * z(seed_k, global index), in place.
// Compiled at run time by NVRTC with --fmad=false and no fast math, so every float operation is
// the same correctly rounded IEEE f32 operation as in normal.rs and cpu.rs (same order, same
// constants, which cuda.rs prepends as exact bit patterns). Keep the two files in step.
// With DPZO_FAST_NORMAL defined (NormalMath::Fast) box_muller uses libdevice functions instead
// and the module is compiled with FMA contraction: close to, not bitwise equal to, the CPU.
//
// Segment table: 8 u64 per tensor:
//   0 data pointer, 1 numel, 2 global offset, 3 first grid block, 4 dtype (0 f32, 1 f16,
//   2 bf16, 3 f64), 5 mask pointer (int64 flat indices) or 0, 6 mask length, 7 unused.

#define MAX_TERMS 8
#define THREADS 256
// Philox blocks (4 elements) per thread in the dense kernel: a grid block covers
// THREADS * CHUNKS of them, so the per-block segment search is amortised over more work.
#define CHUNKS 8

struct Terms {
    unsigned long long seed[MAX_TERMS];
    float scale[MAX_TERMS];
    unsigned int count;
};

__device__ __forceinline__ void philox4x32_10(unsigned int c[4], unsigned int k0, unsigned int k1) {
    #pragma unroll
    for (int round = 0; round < 10; ++round) {
        if (round > 0) { k0 += PHILOX_WEYL_0; k1 += PHILOX_WEYL_1; }
        unsigned int hi0 = __umulhi(PHILOX_MULTIPLIER_0, c[0]);
        unsigned int lo0 = PHILOX_MULTIPLIER_0 * c[0];
        unsigned int hi1 = __umulhi(PHILOX_MULTIPLIER_1, c[2]);
        unsigned int lo1 = PHILOX_MULTIPLIER_1 * c[2];
        unsigned int n0 = hi1 ^ c[1] ^ k0;
        unsigned int n2 = hi0 ^ c[3] ^ k1;
        c[0] = n0; c[1] = lo1; c[2] = n2; c[3] = lo0;
    }
}

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

#ifdef DPZO_FAST_NORMAL
// Fast variant (NormalMath::Fast, CUDA only): the same Philox words and the same 24-bit
// fractions, but CUDA's libdevice logf / sincospif / sqrtf with FMA contraction instead of the
// correctly rounded series: each z is within a few ulps of the exact one (tests/perturb_gpu.rs).
__device__ __forceinline__ void box_muller(unsigned int radius_word, unsigned int angle_word, float* z0, float* z1) {
    float u = (float)((radius_word >> 8) + 1u) * 5.9604644775390625e-8f;  // n / 2^24, exact
    float radius = sqrtf(-2.0f * logf(u));
    float s, c;
    sincospif((float)(angle_word >> 8) * 1.1920928955078125e-7f, &s, &c);  // 2 pi a / 2^24
    *z0 = radius * c;
    *z1 = radius * s;
}
#else
__device__ __forceinline__ void box_muller(unsigned int radius_word, unsigned int angle_word, float* z0, float* z1) {
    float ln_u = ln_of_24_bit_fraction((radius_word >> 8) + 1u);
    float radius = __fsqrt_rn(__fmul_rn(-2.0f, ln_u));
    float s, c;
    sin_cos_of_24_bit_angle(angle_word >> 8, &s, &c);
    *z0 = __fmul_rn(radius, c);
    *z1 = __fmul_rn(radius, s);
}
#endif

__device__ __forceinline__ void normal_block(unsigned long long seed, unsigned long long block, float z[4]) {
    unsigned int c[4] = {(unsigned int)block, (unsigned int)(block >> 32), 0u, 0u};
    philox4x32_10(c, (unsigned int)seed, (unsigned int)(seed >> 32));
    box_muller(c[0], c[1], &z[0], &z[1]);
    box_muller(c[2], c[3], &z[2], &z[3]);
}

__device__ __forceinline__ float normal_at(unsigned long long seed, unsigned long long index) {
    unsigned long long block = index >> 2;
    unsigned int c[4] = {(unsigned int)block, (unsigned int)(block >> 32), 0u, 0u};
    philox4x32_10(c, (unsigned int)seed, (unsigned int)(seed >> 32));
    unsigned int lane = (unsigned int)(index & 3ull);
    float a, b;
    if (lane < 2) box_muller(c[0], c[1], &a, &b); else box_muller(c[2], c[3], &a, &b);
    return (lane & 1u) ? b : a;
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

__device__ __forceinline__ void update_one(unsigned long long ptr, unsigned int dtype, long long i, float delta) {
    switch (dtype) {
        case 0: { float* p = (float*)ptr + i; *p = __fadd_rn(*p, delta); break; }
        case 1: { unsigned short* p = (unsigned short*)ptr + i; *p = float_to_half(__fadd_rn(half_to_float(*p), delta)); break; }
        case 2: { unsigned short* p = (unsigned short*)ptr + i; *p = float_to_bf16(__fadd_rn(bf16_to_float(*p), delta)); break; }
        default: { double* p = (double*)ptr + i; *p = __dadd_rn(*p, (double)delta); break; }
    }
}

// Four consecutive elements starting at i, 4-element aligned: one vector load and store.
__device__ __forceinline__ void update_four(unsigned long long ptr, unsigned int dtype, long long i, const float d[4]) {
    switch (dtype) {
        case 0: {
            float4* p = (float4*)((float*)ptr + i); float4 v = *p;
            v.x = __fadd_rn(v.x, d[0]); v.y = __fadd_rn(v.y, d[1]); v.z = __fadd_rn(v.z, d[2]); v.w = __fadd_rn(v.w, d[3]);
            *p = v; break;
        }
        case 1: case 2: {
            uint2* p = (uint2*)((unsigned short*)ptr + i); uint2 v = *p;
            unsigned short e[4] = {(unsigned short)(v.x & 0xFFFFu), (unsigned short)(v.x >> 16),
                                   (unsigned short)(v.y & 0xFFFFu), (unsigned short)(v.y >> 16)};
            #pragma unroll
            for (int l = 0; l < 4; ++l) {
                e[l] = dtype == 1 ? float_to_half(__fadd_rn(half_to_float(e[l]), d[l]))
                                  : float_to_bf16(__fadd_rn(bf16_to_float(e[l]), d[l]));
            }
            v.x = (unsigned int)e[0] | ((unsigned int)e[1] << 16);
            v.y = (unsigned int)e[2] | ((unsigned int)e[3] << 16);
            *p = v; break;
        }
        default: {
            double2* p = (double2*)((double*)ptr + i); double2 a = p[0], b = p[1];
            a.x = __dadd_rn(a.x, (double)d[0]); a.y = __dadd_rn(a.y, (double)d[1]);
            b.x = __dadd_rn(b.x, (double)d[2]); b.y = __dadd_rn(b.y, (double)d[3]);
            p[0] = a; p[1] = b; break;
        }
    }
}

// The segment whose grid blocks contain blockIdx.x: one thread searches, the block shares it.
__device__ __forceinline__ unsigned int find_segment(const unsigned long long* table, unsigned int n_segments) {
    __shared__ unsigned int segment;
    if (threadIdx.x == 0) {
        unsigned int low = 0, high = n_segments - 1;
        unsigned long long b = blockIdx.x;
        while (low < high) {
            unsigned int mid = (low + high + 1) >> 1;
            if (table[8 * mid + 3] <= b) low = mid; else high = mid - 1;
        }
        segment = low;
    }
    __syncthreads();
    return segment;
}

extern "C" __global__ void __launch_bounds__(THREADS)
perturb_dense(const unsigned long long* table, unsigned int n_segments, Terms terms) {
    const unsigned long long* seg = table + 8 * find_segment(table, n_segments);
    unsigned long long ptr = seg[0], numel = seg[1], offset = seg[2];
    unsigned int dtype = (unsigned int)seg[4];
    unsigned long long last_block = (offset + numel - 1) / 4;
    unsigned long long element_bytes = dtype == 0 ? 4 : (dtype == 3 ? 8 : 2);
    unsigned long long base = offset / 4 + (blockIdx.x - seg[3]) * (unsigned long long)(THREADS * CHUNKS);
    // Chunk c of every thread is contiguous across the block (coalesced accesses).
    for (unsigned int c = 0; c < CHUNKS; ++c) {
        unsigned long long block = base + (unsigned long long)c * THREADS + threadIdx.x;
        if (block > last_block) return;
        float delta[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        for (unsigned int k = 0; k < terms.count; ++k) {
            float z[4];
            normal_block(terms.seed[k], block, z);
            #pragma unroll
            for (int l = 0; l < 4; ++l) delta[l] = __fadd_rn(delta[l], __fmul_rn(terms.scale[k], z[l]));
        }
        long long first = (long long)(4 * block) - (long long)offset;  // local index of lane 0
        // element_bytes is a power of two: test alignment with a mask.
        bool aligned = ((ptr + (unsigned long long)first * element_bytes) & (4 * element_bytes - 1)) == 0;
        if (first >= 0 && first + 4 <= (long long)numel && aligned) {
            update_four(ptr, dtype, first, delta);
        } else {
            #pragma unroll
            for (int l = 0; l < 4; ++l) {
                long long i = first + l;
                if (i >= 0 && i < (long long)numel) update_one(ptr, dtype, i, delta[l]);
            }
        }
    }
}

extern "C" __global__ void __launch_bounds__(THREADS)
perturb_masked(const unsigned long long* table, unsigned int n_segments, Terms terms) {
    const unsigned long long* seg = table + 8 * find_segment(table, n_segments);
    unsigned long long j = (blockIdx.x - seg[3]) * (unsigned long long)THREADS + threadIdx.x;
    if (j >= seg[6]) return;
    long long index = ((const long long*)seg[5])[j];
    unsigned long long global = seg[2] + (unsigned long long)index;
    float delta = 0.0f;
    for (unsigned int k = 0; k < terms.count; ++k)
        delta = __fadd_rn(delta, __fmul_rn(terms.scale[k], normal_at(terms.seed[k], global)));
    update_one(seg[0], (unsigned int)seg[4], index, delta);
}
