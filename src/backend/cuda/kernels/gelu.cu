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
