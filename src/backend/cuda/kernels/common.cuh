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
