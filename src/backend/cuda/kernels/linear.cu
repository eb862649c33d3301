// ---- linear layers ----
// out[r] = bias, for rows of n.
extern "C" __global__ void bias_broadcast(float* out, const float* bias, i64 rows, int n) {
    GRID_STRIDE(e, rows * n) out[e] = bias[e % n];
}
// x[r] += b1 + b2.
extern "C" __global__ void add_biases(float* x, const float* b1, const float* b2, i64 rows, int n) {
    GRID_STRIDE(e, rows * n) {
        int c = (int)(e % n);
        x[e] += b1[c] + b2[c];
    }
}
// Column sums in two passes: part[g, c] = Σ over group g's rows (in order) of src[r, c]; then
// dst[c] += Σ_g part[g, c] (in order). grid = (ceil(cols / block), groups).
extern "C" __global__ void col_sum_partial(float* part, const float* src, i64 rows, int cols) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    i64 per = (rows + gridDim.y - 1) / gridDim.y;
    i64 r0 = blockIdx.y * per, r1 = min(rows, r0 + per);
    float s = 0.0f;
    for (i64 r = r0; r < r1; r++) s += src[r * cols + c];
    part[(i64)blockIdx.y * cols + c] = s;
}
extern "C" __global__ void col_sum_finish(float* dst, const float* part, int cols, int groups) {
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= cols) return;
    float s = dst[c];
    for (int g = 0; g < groups; g++) s += part[(i64)g * cols + c];
    dst[c] = s;
}
