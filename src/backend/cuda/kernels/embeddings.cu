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
