// ---- attention: heads permuted to [B, H, T, dh] for cuBLAS's batched products ----
// (b, h, t, x) of element e of a [B, H, T, dh] buffer.
__device__ __forceinline__ void head_index(i64 e, int T, int H, int dh, int* b, int* h, int* t,
                                           int* x) {
    *x = (int)(e % dh);
    i64 rest = e / dh;
    *t = (int)(rest % T);
    rest /= T;
    *h = (int)(rest % H);
    *b = (int)(rest / H);
}
// q, k, v [B, H, T, dh] from qkv [B, T, 3d].
extern "C" __global__ void permute_qkv(float* q, float* k, float* v, const float* qkv, int B, int T,
                                       int H, int dh) {
    i64 n = (i64)B * H * T * dh;
    int d = H * dh;
    GRID_STRIDE(e, n) {
        int b, h, t, x;
        head_index(e, T, H, dh, &b, &h, &t, &x);
        i64 src = ((i64)b * T + t) * 3 * d + h * dh + x;
        q[e] = qkv[src];
        k[e] = qkv[src + d];
        v[e] = qkv[src + 2 * d];
    }
}
// dqkv [B, T, 3d] (assigned) from dq, dk, dv [B, H, T, dh].
extern "C" __global__ void unpermute_qkv(float* dqkv, const float* dq, const float* dk,
                                         const float* dv, int B, int T, int H, int dh) {
    i64 n = (i64)B * H * T * dh;
    int d = H * dh;
    GRID_STRIDE(e, n) {
        int b, h, t, x;
        head_index(e, T, H, dh, &b, &h, &t, &x);
        i64 dst = ((i64)b * T + t) * 3 * d + h * dh + x;
        dqkv[dst] = dq[e];
        dqkv[dst + d] = dk[e];
        dqkv[dst + 2 * d] = dv[e];
    }
}
// y [B, T, d] from per-head outputs [B, H, T, dh] (forward), or back (backward: to_heads = 1).
extern "C" __global__ void heads_merge(float* y, float* heads, int B, int T, int H, int dh,
                                       int to_heads) {
    i64 n = (i64)B * H * T * dh;
    GRID_STRIDE(e, n) {
        int b, h, t, x;
        head_index(e, T, H, dh, &b, &h, &t, &x);
        i64 o = ((i64)b * T + t) * H * dh + h * dh + x;
        if (to_heads) heads[e] = y[o]; else y[o] = heads[e];
    }
}
// Causal softmax of `scale · att` over each row's first i + 1 entries (i = row % T), zeros
// after: one warp per row of [B·H·T, T].
extern "C" __global__ void softmax_causal(float* att, i64 nrows, int T, float scale) {
    i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (r >= nrows) return;
    int i = (int)(r % T);
    float* row = att + r * T;
    float mx = NEG_INF;
    for (int j = lane; j <= i; j += 32) mx = fmaxf(mx, row[j] * scale);
    mx = warp_max(mx);
    float s = 0.0f;
    for (int j = lane; j <= i; j += 32) {
        float e = expf(row[j] * scale - mx);
        row[j] = e;
        s += e;
    }
    float inv = 1.0f / warp_sum(s);
    for (int j = lane; j < T; j += 32) row[j] = j <= i ? row[j] * inv : 0.0f;
}
// In: ds = ∂L/∂(dropped probabilities); out: ∂L/∂(pre-softmax scores), for probabilities p.
// The dropout mask index of entry (row, j) is row · T + j, as in the forward pass.
extern "C" __global__ void softmax_causal_backward(float* ds, const float* p, i64 nrows, int T,
                                                   float scale, u64 key, u64 offset, u32 threshold,
                                                   float dscale, int active) {
    i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    int lane = threadIdx.x & 31;
    if (r >= nrows) return;
    int i = (int)(r % T);
    float* row = ds + r * T;
    const float* pr = p + r * T;
    float dot = 0.0f;
    for (int j = lane; j <= i; j += 32) {
        float g = row[j];
        if (active) g *= drop_factor(key, offset + (u64)(r * T + j), threshold, dscale);
        row[j] = g;
        dot += pr[j] * g;
    }
    dot = warp_sum(dot);
    for (int j = lane; j < T; j += 32) row[j] = j <= i ? pr[j] * (row[j] - dot) * scale : 0.0f;
}
// Attention outputs at some flat positions `rows` of [B, T] against the cache (no dropout):
// one block per (row, head), its scores in `probs` [rows·H, T] (global memory: any context
// length fits, where shared memory would stop near 12k positions; the row is read back from L1/L2).
// `q`: the rows' own [rows, 3d] projection (queries first); `kv`: the cache, head h's keys at
// position j of sequence b at kv[b·seq + h·head + j·pos], its values `value` further (the CPU's
// KvLayout).
extern "C" __global__ void attention_rows(float* y, const float* q_rows, const float* kv,
                                          const u32* rows, float* probs, int T, int H, int dh,
                                          int seq, int head, int pos, int value, float scale) {
    __shared__ float red[32];
    float* p = probs + (i64)blockIdx.x * T;
    int n = blockIdx.x / H, h = blockIdx.x % H;
    int d = H * dh, d3 = 3 * d;
    i64 r = rows[n];
    i64 b = r / T;
    int i = (int)(r % T);
    const float* q = q_rows + (i64)n * d3 + h * dh;
    const float* kh = kv + b * seq + (i64)h * head;
    float mx = NEG_INF;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        const float* k = kh + (i64)j * pos;
        float s = 0.0f;
        for (int x = 0; x < dh; x++) s += q[x] * k[x];
        s *= scale;
        p[j] = s;
        mx = fmaxf(mx, s);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        float e = expf(p[j] - mx);
        p[j] = e;
        sum += e;
    }
    float inv = 1.0f / block_sum(sum, red);
    __syncthreads();
    for (int x = threadIdx.x; x < dh; x += blockDim.x) {
        float o = 0.0f;
        for (int j = 0; j <= i; j++) o += p[j] * inv * kh[(i64)j * pos + value + x];
        y[(i64)n * d + h * dh + x] = o;
    }
}
