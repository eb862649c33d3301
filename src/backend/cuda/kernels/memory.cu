// ---- memory ----
extern "C" __global__ void fill_f32(float* x, i64 n, float v) {
    GRID_STRIDE(i, n) x[i] = v;
}

// fp32 -> bf16, round to nearest even (NaN stays NaN): the CPU's `bf16::round`.
extern "C" __global__ void to_bf16(unsigned short* dst, const float* src, i64 n) {
    GRID_STRIDE(i, n) {
        u32 u = __float_as_uint(src[i]);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            dst[i] = (unsigned short)((u >> 16) | 0x40u);
        } else {
            dst[i] = (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
        }
    }
}

// dst[i] = src[rows[i]], rows of d.
extern "C" __global__ void copy_rows(float* dst, const float* src, const u32* rows, int n, int d) {
    GRID_STRIDE(e, (i64)n * d) {
        i64 i = e / d, c = e % d;
        dst[e] = src[(i64)rows[i] * d + c];
    }
}
// dst[rows[i] * ldd + c] = src[i * lds + c] for c < w.
extern "C" __global__ void place_rows(float* dst, const float* src, const u32* rows, int n, int w,
                                      int ldd, int lds) {
    GRID_STRIDE(e, (i64)n * w) {
        i64 i = e / w, c = e % w;
        dst[(i64)rows[i] * ldd + c] = src[i * lds + c];
    }
}
// x[rows[i]] += src[i] (distinct rows).
extern "C" __global__ void add_rows(float* x, const float* src, const u32* rows, int n, int d) {
    GRID_STRIDE(e, (i64)n * d) {
        i64 i = e / d, c = e % d;
        x[(i64)rows[i] * d + c] += src[e];
    }
}
