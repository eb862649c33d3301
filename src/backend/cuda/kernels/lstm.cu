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
