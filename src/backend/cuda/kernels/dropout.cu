// ---- dropout and residuals ----
// out = x · mask / (1 - p) (in place when out == x); element i draws mask offset + i.
extern "C" __global__ void dropout_copy(float* out, const float* x, i64 n, u64 key, u64 offset, u32 threshold,
                                        float scale) {
    GRID_STRIDE(i, n) out[i] = x[i] * drop_factor(key, offset + (u64)i, threshold, scale);
}
// out = x + dropout(a).
extern "C" __global__ void residual_forward(float* out, const float* x, const float* a, i64 n,
                                            u64 key, u64 offset, u32 threshold, float scale, int active) {
    GRID_STRIDE(i, n) {
        float f = active ? drop_factor(key, offset + (u64)i, threshold, scale) : 1.0f;
        out[i] = x[i] + a[i] * f;
    }
}
