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
