// gpt1's CUDA kernels, compiled at run time by NVRTC (no headers: bf16 conversion is done by
// bit manipulation). One kernel per Backend operation that is not a matrix product (those go to
// cuBLAS). Each kernel's semantics are the CPU kernel's of src/kernels (the gradient
// conventions are written there); reductions run in a fixed order (warp shuffles in a fixed
// pattern, shared-memory trees, per-group partial sums added in group order), never atomics,
// so a result depends only on the device and the launch shape, not on the run.

typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define IGNORE_TARGET 0xFFFFFFFFu
#define NEG_INF __int_as_float(0xff800000)

// ---- counter-based dropout, bitwise the CPU's `rng::bits32` / `Dropout::factor` ----
__device__ __forceinline__ u32 bits32(u64 key, u64 idx) {
    u32 h = ((u32)idx ^ (u32)key) * 0x9E3779B1u;
    h ^= (u32)(key >> 32) ^ (u32)(idx >> 32);
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    return h ^ (h >> 16);
}

__device__ __forceinline__ float drop_factor(u64 key, u64 idx, u32 threshold, float scale) {
    return (bits32(key, idx) >> 8) < threshold ? 0.0f : scale;
}

// ---- deterministic reductions ----
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
// A block-wide sum or max (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ float block_sum(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    v = warp_sum(v);
    return v;
}
__device__ float block_max(float v, float* sh) {
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : NEG_INF;
    v = warp_max(v);
    return v;
}

#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

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
// dst[rows[i]] = src[i].
extern "C" __global__ void place_rows(float* dst, const float* src, const u32* rows, int n, int d) {
    GRID_STRIDE(e, (i64)n * d) {
        i64 i = e / d, c = e % d;
        dst[(i64)rows[i] * d + c] = src[e];
    }
}
// x[rows[i]] += src[i] (distinct rows).
extern "C" __global__ void add_rows(float* x, const float* src, const u32* rows, int n, int d) {
    GRID_STRIDE(e, (i64)n * d) {
        i64 i = e / d, c = e % d;
        x[(i64)rows[i] * d + c] += src[e];
    }
}

// ---- embeddings ----
// out[r] = wte[ids[r]] + wpe[r % t].
extern "C" __global__ void encoder_forward(float* out, const u32* ids, const float* wte,
                                           const float* wpe, i64 rows, int t, int d) {
    GRID_STRIDE(e, rows * d) {
        i64 r = e / d, c = e % d;
        out[e] = wte[(i64)ids[r] * d + c] + wpe[(r % t) * d + c];
    }
}
// out[i] = wte[ids[i]] + wpe[pos[i] % t].
extern "C" __global__ void encoder_rows(float* out, const u32* ids, const u32* pos,
                                        const float* wte, const float* wpe, int n, int t, int d) {
    GRID_STRIDE(e, (i64)n * d) {
        i64 i = e / d, c = e % d;
        out[e] = wte[(i64)ids[i] * d + c] + wpe[(i64)(pos[i] % t) * d + c];
    }
}
// out[i] = table[ids[i]].
extern "C" __global__ void gather(float* out, const float* table, const u32* ids, i64 n, int d) {
    GRID_STRIDE(e, n * d) {
        i64 i = e / d, c = e % d;
        out[e] = table[(i64)ids[i] * d + c];
    }
}
// dtable[uniq[u]] += Σ dout[order[k]] for k in offsets[u]..offsets[u+1]: the positions of each
// id in ascending order (sorted on the host), one block per id: no atomics, and each id's sum in
// the CPU's order.
extern "C" __global__ void scatter_add_sorted(float* dtable, const float* dout, const u32* uniq,
                                              const u32* offsets, const u32* order, int d) {
    int u = blockIdx.x;
    i64 id = uniq[u];
    u32 k0 = offsets[u], k1 = offsets[u + 1];
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float s = dtable[id * d + c];
        for (u32 k = k0; k < k1; k++) s += dout[(i64)order[k] * d + c];
        dtable[id * d + c] = s;
    }
}
// dwpe[p] += Σ_b dout[b·t + p], in sequence order.
extern "C" __global__ void positions_backward(float* dwpe, const float* dout, i64 rows, int t, int d) {
    GRID_STRIDE(e, (i64)t * d) {
        i64 p = e / d, c = e % d;
        float s = dwpe[e];
        for (i64 r = p; r < rows; r += t) s += dout[r * d + c];
        dwpe[e] = s;
    }
}

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

// ---- GELU (tanh form, as GPT-1) ----
#define GELU_S 0.7978845608f
#define GELU_C 0.044715f
// tanh of GELU's inner argument: one function, so the forward and the backward's recomputation
// compile to the same instructions (the same rounding, bitwise).
__device__ __forceinline__ float gelu_tanh(float v) {
    return tanhf(GELU_S * (v + GELU_C * v * v * v));
}
extern "C" __global__ void gelu_forward(float* out, const float* x, i64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + gelu_tanh(v));
    }
}
// dx *= gelu'(x), and out = gelu(x) recomputed from the same tanh (the weight gradient reads it).
extern "C" __global__ void gelu_backward(float* dx, float* out, const float* x, i64 n) {
    GRID_STRIDE(i, n) {
        float v = x[i];
        float t = gelu_tanh(v);
        out[i] = 0.5f * v * (1.0f + t);
        dx[i] *= 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * GELU_S * (1.0f + 3.0f * GELU_C * v * v);
    }
}

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
extern "C" __global__ void attention_rows(float* y, const float* qkv, const u32* rows,
                                          float* probs, int T, int H, int dh, float scale) {
    __shared__ float red[32];
    float* p = probs + (i64)blockIdx.x * T;
    int n = blockIdx.x / H, h = blockIdx.x % H;
    int d = H * dh, d3 = 3 * d;
    i64 r = rows[n];
    i64 b = r / T;
    int i = (int)(r % T);
    const float* q = qkv + r * d3 + h * dh;
    float mx = NEG_INF;
    for (int j = threadIdx.x; j <= i; j += blockDim.x) {
        const float* k = qkv + (b * T + j) * d3 + d + h * dh;
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
        for (int j = 0; j <= i; j++) o += p[j] * inv * qkv[(b * T + j) * d3 + 2 * d + h * dh + x];
        y[(i64)n * d + h * dh + x] = o;
    }
}

// ---- the LM head's softmax cross-entropy: one block per row of logits [n, V] ----
// Adds the bias (if any); for a counted target writes `scale · (softmax - onehot)` in place and
// the row's NLL to nll[row]; an ignored target's row becomes zeros, NLL 0.
// Launched with 1024 threads: the bound lets the compiler budget registers for it.
extern "C" __global__ void __launch_bounds__(1024)
    crossentropy_rows(float* logits, const float* bias, const u32* targets, float* nll, int V,
                      float scale, int grad) {
    __shared__ float red[32];
    i64 r = blockIdx.x;
    float* row = logits + r * V;
    u32 tg = targets[r];
    if (tg == IGNORE_TARGET) {
        if (grad) for (int j = threadIdx.x; j < V; j += blockDim.x) row[j] = 0.0f;
        if (threadIdx.x == 0) nll[r] = 0.0f;
        return;
    }
    float mx = NEG_INF;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = row[j] + (bias ? bias[j] : 0.0f);
        if (bias && grad) row[j] = v;
        mx = fmaxf(mx, v);
    }
    mx = block_max(mx, red);
    float s = 0.0f;
    for (int j = threadIdx.x; j < V; j += blockDim.x) {
        float v = row[j] + ((bias && !grad) ? bias[j] : 0.0f);
        s += expf(v - mx);
    }
    s = block_sum(s, red);
    float lt = row[tg] + ((bias && !grad) ? bias[tg] : 0.0f);
    __syncthreads();
    float lp = lt - mx - logf(s);
    if (grad) {
        float inv = 1.0f / s;
        for (int j = threadIdx.x; j < V; j += blockDim.x) {
            float pj = expf(row[j] - mx) * inv * scale;
            row[j] = j == (int)tg ? pj - scale : pj;
        }
        if (threadIdx.x == 0) nll[r] = -lp;
    } else if (threadIdx.x == 0) {
        nll[r] = lp;
    }
}

// ---- the LSTM's cell (time-major rows; one thread per (sequence, unit)) ----
__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }
extern "C" __global__ void lstm_cell_forward(float* gates, float* c, float* h, const float* c_prev,
                                             int b, int hid) {
    GRID_STRIDE(e, (i64)b * hid) {
        i64 s = e / hid;
        int j = (int)(e % hid);
        float* gs = gates + s * 4 * hid;
        float i = sigmoidf_(gs[j]), f = sigmoidf_(gs[hid + j]);
        float g = tanhf(gs[2 * hid + j]), o = sigmoidf_(gs[3 * hid + j]);
        gs[j] = i;
        gs[hid + j] = f;
        gs[2 * hid + j] = g;
        gs[3 * hid + j] = o;
        float cn = f * (c_prev ? c_prev[e] : 0.0f) + i * g;
        c[e] = cn;
        h[e] = o * tanhf(cn);
    }
}
extern "C" __global__ void lstm_cell_backward(float* dg, float* dc_next, const float* dh,
                                              const float* gates, const float* c,
                                              const float* c_prev, int b, int hid) {
    GRID_STRIDE(e, (i64)b * hid) {
        i64 s = e / hid;
        int j = (int)(e % hid);
        const float* gs = gates + s * 4 * hid;
        float* d = dg + s * 4 * hid;
        float i = gs[j], f = gs[hid + j], g = gs[2 * hid + j], o = gs[3 * hid + j];
        float tc = tanhf(c[e]);
        float dhj = dh[e];
        float dc = dc_next[e] + dhj * o * (1.0f - tc * tc);
        float cp = c_prev ? c_prev[e] : 0.0f;
        d[j] = dc * g * i * (1.0f - i);
        d[hid + j] = dc * cp * f * (1.0f - f);
        d[2 * hid + j] = dc * i * (1.0f - g * g);
        d[3 * hid + j] = dhj * tc * o * (1.0f - o);
        dc_next[e] = dc * f;
    }
}

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
