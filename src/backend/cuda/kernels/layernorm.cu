// ---- LayerNorm: one warp per row ----
extern "C" __global__ void layernorm_forward(float* out, float* mean, float* rstd, const float* x,
                                             const float* g, const float* b, i64 rows, int d,
                                             float eps) {
    i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float* xr = x + r * d;
    float s = 0.0f;
    for (int i = lane; i < d; i += 32) s += xr[i];
    float mu = warp_sum(s) / d;
    float v = 0.0f;
    for (int i = lane; i < d; i += 32) v += (xr[i] - mu) * (xr[i] - mu);
    float rs = 1.0f / sqrtf(warp_sum(v) / d + eps);
    float* o = out + r * d;
    for (int i = lane; i < d; i += 32) o[i] = (xr[i] - mu) * rs * g[i] + b[i];
    if (lane == 0) {
        mean[r] = mu;
        rstd[r] = rs;
    }
}
extern "C" __global__ void layernorm_backward_dx(float* dx, const float* dout, const float* x,
                                                 const float* mean, const float* rstd,
                                                 const float* g, i64 rows, int d) {
    i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (r >= rows) return;
    const float *dy = dout + r * d, *xr = x + r * d;
    float mu = mean[r], rs = rstd[r];
    float s1 = 0.0f, s2 = 0.0f;
    for (int i = lane; i < d; i += 32) {
        float dn = dy[i] * g[i];
        s1 += dn;
        s2 += dn * (xr[i] - mu) * rs;
    }
    float m1 = warp_sum(s1) / d, m2 = warp_sum(s2) / d;
    float* o = dx + r * d;
    for (int i = lane; i < d; i += 32) {
        float xhat = (xr[i] - mu) * rs;
        o[i] = rs * (dy[i] * g[i] - m1 - xhat * m2);
    }
}
// part[g, c] = Σ over group g's rows of dout[r, c] · x̂[r, c] (then col_sum_finish into dg).
extern "C" __global__ void layernorm_dg_partial(float* part, const float* dout, const float* x,
                                                const float* mean, const float* rstd, i64 rows,
                                                int d) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    i64 per = (rows + gridDim.y - 1) / gridDim.y;
    i64 r0 = blockIdx.y * per, r1 = min(rows, r0 + per);
    float s = 0.0f;
    for (i64 r = r0; r < r1; r++) s += dout[r * d + c] * (x[r * d + c] - mean[r]) * rstd[r];
    part[(i64)blockIdx.y * d + c] = s;
}
