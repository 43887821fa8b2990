// Tensor-core GEMM of the cuda backend (WMMA), compiled by pycuda/nvcc on a real GPU.
//
// C[b, m, n] = alpha * sum_k A[b, m, k] B[b, k, n] + beta * E0[b, m, n] + E1[b, m, n]
// (and -inf past the diagonal when causal): the semantics of `_gemm.gemm` without its
// activation, which the caller applies in place afterwards. A, B, C, E0, E1 are addressed
// with element strides, as in `_gemm.py`: transposes and head splits cost nothing.
//
// A block of 4 warps (2 x 2) computes a 64 x 64 tile of C; each warp 32 x 32 with 2 x 2
// accumulator fragments in fp32. Each k step stages a 64 x 16 tile of A and a 16 x 64 tile
// of B in shared memory, bounds-checked (zeros outside), so any M, N, K and any strides
// work; the fragments are loaded from shared memory, whose rows are padded to keep the
// 256-bit alignment `load_matrix_sync` needs and to spread the banks.
//
// gemm_f16: half operands, m16n16k16 fp16 MMA with fp32 accumulation, half output.
// gemm_tf32: float operands rounded to tf32 (__float_to_tf32) in the fragments,
// m16n16k8 tf32 MMA (sm_80+) with fp32 accumulation, float output.
// peak_f16 / peak_tf32: MMAs on register fragments only, no memory traffic: the device's
// tensor-core peak as WMMA reaches it.

#include <cuda_fp16.h>
#include <mma.h>

using namespace nvcuda;

#define BM 64
#define BN 64
#define BK 16
#define LDA (BK + 8)
#define LDB (BN + 8)
#define THREADS 128

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__half* p, float v) { *p = __float2half_rn(v); }

struct Epilogue {
    float alpha, beta;
    int causal;
};

template <typename T>
__device__ void stage(const T* A, const T* B, T* As, T* Bs, int M, int N, int K, int m0,
                      int n0, int k0, long long am, long long ak, long long bk, long long bn) {
    const T zero = T(0.0f);
    for (int i = threadIdx.x; i < BM * BK; i += THREADS) {
        int r = i / BK, c = i % BK;
        int m = m0 + r, k = k0 + c;
        As[r * LDA + c] = (m < M && k < K) ? A[m * am + k * ak] : zero;
    }
    for (int i = threadIdx.x; i < BK * BN; i += THREADS) {
        int r = i / BN, c = i % BN;
        int k = k0 + r, n = n0 + c;
        Bs[r * LDB + c] = (k < K && n < N) ? B[k * bk + n * bn] : zero;
    }
}

// One 16 x 16 accumulator written out through shared memory: alpha, E0, E1, causal.
template <typename T>
__device__ void write_tile(float* Cs, T* C, const T* E0, const T* E1, int M, int N, int m0,
                           int n0, long long cm, long long cn, long long e0m, long long e0n,
                           long long e1m, long long e1n, Epilogue ep) {
    int lane = threadIdx.x % 32;
    for (int i = lane; i < 256; i += 32) {
        int m = m0 + i / 16, n = n0 + i % 16;
        if (m >= M || n >= N) continue;
        float y = ep.alpha * Cs[i];
        if (E0) y += ep.beta * to_f(E0[m * e0m + n * e0n]);
        if (E1) y += to_f(E1[m * e1m + n * e1n]);
        if (ep.causal && n > m + N - M) y = -INFINITY;
        store(&C[m * cm + n * cn], y);
    }
}

template <typename T, typename FragT, int KS>
__device__ void gemm_tc(const T* A, const T* B, T* C, int M, int N, int K, int nb2,
                        long long sa1, long long sa2, long long sb1, long long sb2,
                        long long sc1, long long sc2, long long am, long long ak,
                        long long bk, long long bn, long long cm, long long cn, float alpha,
                        const T* E0, long long s01, long long s02, long long e0m,
                        long long e0n, float beta, const T* E1, long long s11,
                        long long s12, long long e1m, long long e1n, int causal) {
    __shared__ __align__(32) T As[BM * LDA];
    __shared__ __align__(32) T Bs[BK * LDB];
    __shared__ __align__(32) float Cs[4][256];

    // batch (b1, b2) from blockIdx.z, as the tiled kernel does it
    long long z = blockIdx.z, b1 = z / nb2, b2 = z % nb2;
    A += b1 * sa1 + b2 * sa2;
    B += b1 * sb1 + b2 * sb2;
    C += b1 * sc1 + b2 * sc2;
    if (E0) E0 += b1 * s01 + b2 * s02;
    if (E1) E1 += b1 * s11 + b2 * s12;

    int warp = threadIdx.x / 32;
    int wm = (warp / 2) * 32, wn = (warp % 2) * 32;  // the warp's 32 x 32 in the block tile
    int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;

    wmma::fragment<wmma::accumulator, 16, 16, KS, float> acc[2][2];
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);

    for (int k0 = 0; k0 < K; k0 += BK) {
        stage<T>(A, B, As, Bs, M, N, K, m0, n0, k0, am, ak, bk, bn);
        __syncthreads();
        for (int kk = 0; kk < BK; kk += KS) {
            wmma::fragment<wmma::matrix_a, 16, 16, KS, FragT, wmma::row_major> a[2];
            wmma::fragment<wmma::matrix_b, 16, 16, KS, FragT, wmma::row_major> b[2];
            for (int i = 0; i < 2; i++) {
                wmma::load_matrix_sync(a[i], As + (wm + i * 16) * LDA + kk, LDA);
                wmma::load_matrix_sync(b[i], Bs + kk * LDB + wn + i * 16, LDB);
#if defined(WB_TF32)
                for (int t = 0; t < a[i].num_elements; t++)
                    a[i].x[t] = wmma::__float_to_tf32(a[i].x[t]);
                for (int t = 0; t < b[i].num_elements; t++)
                    b[i].x[t] = wmma::__float_to_tf32(b[i].x[t]);
#endif
            }
            for (int i = 0; i < 2; i++)
                for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }

    Epilogue ep = {alpha, beta, causal};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            wmma::store_matrix_sync(Cs[warp], acc[i][j], 16, wmma::mem_row_major);
            __syncwarp();
            write_tile<T>(Cs[warp], C, E0, E1, M, N, m0 + wm + i * 16, n0 + wn + j * 16, cm,
                          cn, e0m, e0n, e1m, e1n, ep);
            __syncwarp();
        }
}

#define GEMM_ARGS(T)                                                                        \
    const T *A, const T *B, T *C, int M, int N, int K, int nb2, long long sa1,              \
        long long sa2, long long sb1, long long sb2, long long sc1, long long sc2,          \
        long long am, long long ak, long long bk, long long bn, long long cm, long long cn, \
        float alpha, const T *E0, long long s01, long long s02, long long e0m,              \
        long long e0n, float beta, const T *E1, long long s11, long long s12,               \
        long long e1m, long long e1n, int causal
#define GEMM_PASS                                                                          \
    A, B, C, M, N, K, nb2, sa1, sa2, sb1, sb2, sc1, sc2, am, ak, bk, bn, cm, cn, alpha, E0, \
        s01, s02, e0m, e0n, beta, E1, s11, s12, e1m, e1n, causal

extern "C" {

#if defined(WB_TF32)
__global__ void __launch_bounds__(THREADS) gemm_tf32(GEMM_ARGS(float)) {
    gemm_tc<float, wmma::precision::tf32, 8>(GEMM_PASS);
}

__global__ void peak_tf32(float* out, int iters) {
    wmma::fragment<wmma::matrix_a, 16, 16, 8, wmma::precision::tf32, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 8, wmma::precision::tf32, wmma::row_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 8, float> c[4];
    wmma::fill_fragment(a, wmma::__float_to_tf32(0.001f));
    wmma::fill_fragment(b, wmma::__float_to_tf32(0.001f));
    for (int j = 0; j < 4; j++) wmma::fill_fragment(c[j], 0.0f);
    for (int i = 0; i < iters; i++)  // four independent chains keep the pipes busy
        for (int j = 0; j < 4; j++) wmma::mma_sync(c[j], a, b, c[j]);
    if (threadIdx.x == 0 && c[0].x[0] + c[3].x[0] == -1.0f) out[blockIdx.x] = c[1].x[0];
}
#else
__global__ void __launch_bounds__(THREADS) gemm_f16(GEMM_ARGS(__half)) {
    gemm_tc<__half, __half, 16>(GEMM_PASS);
}

__global__ void peak_f16(float* out, int iters) {
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> b;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> c[4];
    wmma::fill_fragment(a, __float2half(0.001f));
    wmma::fill_fragment(b, __float2half(0.001f));
    for (int j = 0; j < 4; j++) wmma::fill_fragment(c[j], 0.0f);
    for (int i = 0; i < iters; i++)
        for (int j = 0; j < 4; j++) wmma::mma_sync(c[j], a, b, c[j]);
    if (threadIdx.x == 0 && c[0].x[0] + c[3].x[0] == -1.0f) out[blockIdx.x] = c[1].x[0];
}
#endif
}
