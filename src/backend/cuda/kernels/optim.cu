// ---- optimizer ----
// part[blk] = Σ x² over block blk's fixed chunk, in f64 (the host adds the parts in order).
// Launched with 1024 threads (as crossentropy_rows).
extern "C" __global__ void __launch_bounds__(1024)
    sum_squares_partial(double* part, const float* x, i64 n, i64 chunk) {
    __shared__ double red[1024];
    i64 c0 = (i64)blockIdx.x * chunk, c1 = min(n, c0 + chunk);
    double s = 0.0;
    for (i64 i = c0 + threadIdx.x; i < c1; i += blockDim.x) s += (double)x[i] * (double)x[i];
    red[threadIdx.x] = s;
    __syncthreads();
    for (int o = blockDim.x / 2; o > 0; o >>= 1) {
        if (threadIdx.x < o) red[threadIdx.x] += red[threadIdx.x + o];
        __syncthreads();
    }
    if (threadIdx.x == 0) part[blockIdx.x] = red[0];
}
extern "C" __global__ void scale_f32(float* x, i64 n, float f) {
    GRID_STRIDE(i, n) x[i] *= f;
}
extern "C" __global__ void adamw(float* p, const float* g, float* m, float* v, i64 n, float b1,
                                 float b2, float eps, float step_size, float bc2_sqrt, float shrink) {
    GRID_STRIDE(i, n) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * (1.0f - b1);
        float vi = v[i] * b2 + (1.0f - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        p[i] = p[i] * shrink - step_size * (mi / denom);
    }
}
