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
// The keys and values of the flat positions `rows` [n] from their [n, 3d] q/k/v projection
// `fresh` into the cache `kv`: head h's keys at position j of sequence b at kv[b·seq + h·head +
// j·pos], its values `value` further (the CPU's KvLayout).
extern "C" __global__ void place_kv(float* kv, const float* fresh, const u32* rows, int n, int T,
                                    int H, int dh, int seq, int head, int pos, int value) {
    int d = H * dh;
    GRID_STRIDE(e, (i64)n * 2 * d) {
        i64 i = e / (2 * d);
        int c = (int)(e % (2 * d)), part = c / d, h = (c % d) / dh, x = c % dh;
        i64 r = rows[i], b = r / T, j = r % T;
        kv[b * seq + (i64)h * head + j * pos + (i64)part * value + x] = fresh[i * 3 * d + d + c];
    }
}
// x[rows[i]] += src[i] (distinct rows).
extern "C" __global__ void add_rows(float* x, const float* src, const u32* rows, int n, int d) {
    GRID_STRIDE(e, (i64)n * d) {
        i64 i = e / d, c = e % d;
        x[(i64)rows[i] * d + c] += src[e];
    }
}
