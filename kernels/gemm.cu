// One SGEMM for every matrix product of the engine (convolution forward, backward-data and
// backward-weights, deconvolution, inner product):
//   C = alpha * op(A) * op(B) + beta * C     (row-major; op(A) is M x K, op(B) is K x N)
// A is stored M x K (lda >= K) or, transposed, K x M (lda >= M); B likewise K x N or N x K.
// beta == 0 never reads C. A launch runs a batch of products along gridDim.z: product z
// offsets each matrix by (z / zdiv) * s1 + (z % zdiv) * s2, so one launch covers every
// (image, group) pair of a grouped convolution.
//
// Tiling: a block computes a 64 x 64 tile of C; K advances 16 at a time through shared
// memory (K-major, sh[k][row]), tiles loaded with float4 where the matrix is 16-byte aligned
// and in bounds, and double-buffered through registers so the next tile's global loads
// overlap this tile's arithmetic.
//   sgemm:      64 threads, each an 8 x 8 register block: 4 float4 shared loads per 64 FMA,
//               which keeps shared memory from limiting the FMA rate.
//   sgemm_tf32: 128 threads (4 warps), each warp 32 x 32 as 2 x 4 mma.sync m16n8k8 tiles.

#define TILE 64
#define TILE_K 16
#define PAD 4

// Element (r, k) of a matrix whose "wide" index r runs along the tile's 64 and k along K:
// k_contiguous ? P[r * ld + k] : P[k * ld + r].
struct TileSource {
    const float* p;
    int ld;
    int rows;       // extent of r
    int depth;      // extent of k (= K)
    bool k_contiguous;
    bool vec;       // 16-byte aligned base and ld % 4 == 0
};

// A 64 x 16 tile is 256 chunks of 4 values; thread tid fetches chunks tid + i * THREADS.
template <int THREADS>
struct Fetch {
    float v[256 / THREADS][4];
};

template <int THREADS>
__device__ __forceinline__ Fetch<THREADS> fetch_tile(const TileSource& s, int r0, int k0, int tid) {
    Fetch<THREADS> f;
    #pragma unroll
    for (int c = 0; c < 256 / THREADS; c++) {
        const int chunk = tid + c * THREADS;
        if (s.k_contiguous) {
            // 4 consecutive k of row r.
            int r = r0 + chunk / 4, k = k0 + (chunk % 4) * 4;
            const float* q = s.p + (long long)r * s.ld + k;
            if (s.vec && r < s.rows && k + 3 < s.depth) {
                float4 t = *reinterpret_cast<const float4*>(q);
                f.v[c][0] = t.x; f.v[c][1] = t.y; f.v[c][2] = t.z; f.v[c][3] = t.w;
            } else {
                #pragma unroll
                for (int i = 0; i < 4; i++) f.v[c][i] = (r < s.rows && k + i < s.depth) ? q[i] : 0.0f;
            }
        } else {
            // 4 consecutive r of depth row k.
            int k = k0 + chunk / 16, r = r0 + (chunk % 16) * 4;
            const float* q = s.p + (long long)k * s.ld + r;
            if (s.vec && k < s.depth && r + 3 < s.rows) {
                float4 t = *reinterpret_cast<const float4*>(q);
                f.v[c][0] = t.x; f.v[c][1] = t.y; f.v[c][2] = t.z; f.v[c][3] = t.w;
            } else {
                #pragma unroll
                for (int i = 0; i < 4; i++) f.v[c][i] = (k < s.depth && r + i < s.rows) ? q[i] : 0.0f;
            }
        }
    }
    return f;
}

// TF32 (10-bit mantissa), rounded to nearest with ties away from zero, as cvt.rna does.
__device__ __forceinline__ float to_tf32(float x) {
#if defined(DGNAM_HOST_EMU)
    return emu_to_tf32(x);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return __uint_as_float(r);
#else
    return x;
#endif
}

// The tile into shared memory, K-major: sh[k][r]. TF32 rounds each value once, here.
template <int THREADS, int W, bool TF32>
__device__ __forceinline__ void store_tile(const TileSource& s, const Fetch<THREADS>& f, float (*sh)[W], int tid) {
    #pragma unroll
    for (int c = 0; c < 256 / THREADS; c++) {
        const int chunk = tid + c * THREADS;
        float v[4];
        #pragma unroll
        for (int i = 0; i < 4; i++) v[i] = TF32 ? to_tf32(f.v[c][i]) : f.v[c][i];
        if (s.k_contiguous) {
            int r = chunk / 4, k = (chunk % 4) * 4;
            #pragma unroll
            for (int i = 0; i < 4; i++) sh[k + i][r] = v[i];
        } else {
            int k = chunk / 16, r = (chunk % 16) * 4;
            *reinterpret_cast<float4*>(&sh[k][r]) = make_float4(v[0], v[1], v[2], v[3]);
        }
    }
}

__device__ __forceinline__ bool aligned16(const float* p, int ld) {
    return ((unsigned long long)p & 15ull) == 0 && (ld & 3) == 0;
}

__device__ __forceinline__ void store_c(float* C, int ldc, int M, int N, int m, int n, float v, float alpha, float beta) {
    if (m < M && n < N) {
        float* c = C + (long long)m * ldc + n;
        *c = beta == 0.0f ? alpha * v : fmaf(beta, *c, alpha * v);
    }
}

#define SGEMM_THREADS 64

extern "C" __global__ void __launch_bounds__(SGEMM_THREADS) sgemm(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, int trans_a, long long a_s1, long long a_s2,
    const float* __restrict__ B, int ldb, int trans_b, long long b_s1, long long b_s2,
    float beta, float* __restrict__ C, int ldc, long long c_s1, long long c_s2, int zdiv)
{
    __shared__ __align__(16) float As[2][TILE_K][TILE + PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][TILE + PAD];

    const int z = blockIdx.z, z1 = z / zdiv, z2 = z % zdiv;
    A += z1 * a_s1 + z2 * a_s2;
    B += z1 * b_s1 + z2 * b_s2;
    C += z1 * c_s1 + z2 * c_s2;

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    // op(A)[m][k]: stored M x K (k contiguous) unless transposed.
    const TileSource sa = { A, lda, M, K, trans_a == 0, aligned16(A, lda) };
    // op(B)[k][n]: stored K x N (n contiguous) unless transposed; its wide index is n.
    const TileSource sb = { B, ldb, N, K, trans_b != 0, aligned16(B, ldb) };

    // Thread (tx, ty) owns rows ty*4 + {0..3} and 32 + ty*4 + {0..3}, columns likewise with
    // tx: each group of 8 lanes reads 8 consecutive float4 (no bank conflicts).
    const int tx = tid % 8, ty = tid / 8;
    float acc[8][8];
    #pragma unroll
    for (int i = 0; i < 8; i++)
        #pragma unroll
        for (int j = 0; j < 8; j++) acc[i][j] = 0.0f;

    Fetch<SGEMM_THREADS> fa = fetch_tile<SGEMM_THREADS>(sa, m0, 0, tid), fb = fetch_tile<SGEMM_THREADS>(sb, n0, 0, tid);
    store_tile<SGEMM_THREADS, TILE + PAD, false>(sa, fa, As[0], tid);
    store_tile<SGEMM_THREADS, TILE + PAD, false>(sb, fb, Bs[0], tid);
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        const bool more = k0 + TILE_K < K;
        if (more) {
            fa = fetch_tile<SGEMM_THREADS>(sa, m0, k0 + TILE_K, tid);
            fb = fetch_tile<SGEMM_THREADS>(sb, n0, k0 + TILE_K, tid);
        }
        #pragma unroll
        for (int kk = 0; kk < TILE_K; kk++) {
            float4 a0 = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            float4 a1 = *reinterpret_cast<const float4*>(&As[buf][kk][32 + ty * 4]);
            float4 b0 = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            float4 b1 = *reinterpret_cast<const float4*>(&Bs[buf][kk][32 + tx * 4]);
            float av[8] = { a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w };
            float bv[8] = { b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w };
            #pragma unroll
            for (int i = 0; i < 8; i++)
                #pragma unroll
                for (int j = 0; j < 8; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        if (more) {
            // The other buffer was last read before the previous barrier: safe to fill.
            store_tile<SGEMM_THREADS, TILE + PAD, false>(sa, fa, As[buf ^ 1], tid);
            store_tile<SGEMM_THREADS, TILE + PAD, false>(sb, fb, Bs[buf ^ 1], tid);
            __syncthreads();
            buf ^= 1;
        }
    }

    #pragma unroll
    for (int i = 0; i < 8; i++) {
        const int m = m0 + (i < 4 ? ty * 4 + i : 32 + ty * 4 + i - 4);
        #pragma unroll
        for (int j = 0; j < 8; j++) {
            const int n = n0 + (j < 4 ? tx * 4 + j : 32 + tx * 4 + j - 4);
            store_c(C, ldc, M, N, m, n, acc[i][j], alpha, beta);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The same product on tensor cores in TF32 (the `--precision tf32` option): inputs rounded
// to TF32 as they enter shared memory, products accumulated in f32 by mma.sync m16n8k8.
// Same arguments, tiles and batching as sgemm. The 4 warps of a block sit 2 by 2; each
// computes 32 x 32 of the 64 x 64 tile as 2 x 4 mma tiles of 16 x 8. A row pad of 8 floats
// makes the fragment reads below free of bank conflicts.

#define PAD_TC 8
#define TC_THREADS 128

// d += a * b for one 16 x 8 x 8 tile, fragments in the PTX ISA's m16n8k8 .tf32 layout:
// with g = lane / 4, t = lane % 4: a = A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4];
// b = B[t][g], B[t+4][g]; d = D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1].
__device__ __forceinline__ void mma_tf32(float (&d)[4], const float (&a)[4], const float (&b)[2]) {
#if defined(DGNAM_HOST_EMU)
    emu_mma_m16n8k8(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(__float_as_uint(a[0])), "r"(__float_as_uint(a[1])), "r"(__float_as_uint(a[2])), "r"(__float_as_uint(a[3])),
          "r"(__float_as_uint(b[0])), "r"(__float_as_uint(b[1])));
#else
    __trap();  // the host never launches this kernel below sm_80
#endif
}

extern "C" __global__ void __launch_bounds__(TC_THREADS) sgemm_tf32(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, int trans_a, long long a_s1, long long a_s2,
    const float* __restrict__ B, int ldb, int trans_b, long long b_s1, long long b_s2,
    float beta, float* __restrict__ C, int ldc, long long c_s1, long long c_s2, int zdiv)
{
    __shared__ __align__(16) float As[2][TILE_K][TILE + PAD_TC];
    __shared__ __align__(16) float Bs[2][TILE_K][TILE + PAD_TC];

    const int z = blockIdx.z, z1 = z / zdiv, z2 = z % zdiv;
    A += z1 * a_s1 + z2 * a_s2;
    B += z1 * b_s1 + z2 * b_s2;
    C += z1 * c_s1 + z2 * c_s2;

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    const TileSource sa = { A, lda, M, K, trans_a == 0, aligned16(A, lda) };
    const TileSource sb = { B, ldb, N, K, trans_b != 0, aligned16(B, ldb) };

    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    float acc[2][4][4];
    #pragma unroll
    for (int i = 0; i < 2; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    Fetch<TC_THREADS> fa = fetch_tile<TC_THREADS>(sa, m0, 0, tid), fb = fetch_tile<TC_THREADS>(sb, n0, 0, tid);
    store_tile<TC_THREADS, TILE + PAD_TC, true>(sa, fa, As[0], tid);
    store_tile<TC_THREADS, TILE + PAD_TC, true>(sb, fb, Bs[0], tid);
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        const bool more = k0 + TILE_K < K;
        if (more) {
            fa = fetch_tile<TC_THREADS>(sa, m0, k0 + TILE_K, tid);
            fb = fetch_tile<TC_THREADS>(sb, n0, k0 + TILE_K, tid);
        }
        #pragma unroll
        for (int kk = 0; kk < TILE_K; kk += 8) {
            float a[2][4], b[4][2];
            #pragma unroll
            for (int i = 0; i < 2; i++) {
                const int m = wm + i * 16 + g;
                a[i][0] = As[buf][kk + t][m];
                a[i][1] = As[buf][kk + t][m + 8];
                a[i][2] = As[buf][kk + t + 4][m];
                a[i][3] = As[buf][kk + t + 4][m + 8];
            }
            #pragma unroll
            for (int j = 0; j < 4; j++) {
                const int n = wn + j * 8 + g;
                b[j][0] = Bs[buf][kk + t][n];
                b[j][1] = Bs[buf][kk + t + 4][n];
            }
            #pragma unroll
            for (int i = 0; i < 2; i++)
                #pragma unroll
                for (int j = 0; j < 4; j++) mma_tf32(acc[i][j], a[i], b[j]);
        }
        if (more) {
            store_tile<TC_THREADS, TILE + PAD_TC, true>(sa, fa, As[buf ^ 1], tid);
            store_tile<TC_THREADS, TILE + PAD_TC, true>(sb, fb, Bs[buf ^ 1], tid);
            __syncthreads();
            buf ^= 1;
        }
    }

    #pragma unroll
    for (int i = 0; i < 2; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++)
                store_c(C, ldc, M, N, m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0), n0 + wn + j * 8 + 2 * t + (e & 1), acc[i][j][e], alpha, beta);
}

// ---------------------------------------------------------------------------------------
// Version 2 of sgemm_tf32 (`sgemm_tf32_2`): the same arguments, product and TF32 rounding,
// built for throughput. A block of 8 warps computes a 128 x 128 tile of C (a quarter of the
// L2 -> SM traffic per flop of 64 x 64); the warps sit 2 (m) by 4 (n), each 64 x 32 as 4 x 4
// mma tiles. K advances 16 at a time through a 3-stage cp.async pipeline: the tiles of the
// next two k-steps are in flight while one is multiplied. Three stages of two 128 x 16
// tiles are 48 KB, all the static shared memory a block may have (a fourth would need
// dynamic shared memory and a function attribute at load).
//
// cp.async copies bytes, so each operand keeps its stored layout in shared memory:
//   K contiguous (A as stored, B transposed): sh[r][k], rows of 16 floats whose 16-byte
//     chunk c sits at c ^ (r / 2 % 4), so that the 8 rows of an ldmatrix hit 8 distinct
//     bank groups; fragments by ldmatrix (an 8 x 4 float matrix is 8 x 8 b16).
//   wide index contiguous (A transposed, B as stored): sh[k][r], rows of 128 floats whose
//     chunk c sits at c ^ 2 (k % 4): the scalar fragment reads (k = t, r = g) are free of
//     bank conflicts.
// Fragments are rounded to TF32 (cvt.rna) as they leave shared memory: the same single
// rounding per operand as version 1. 16-byte copies need what v1's float4 loads need (a
// 16-byte aligned operand, ld % 4 == 0, 4 values in bounds); other operands and the edges
// are copied 4 bytes at a time, zero-filled beyond the matrix.

#define TC2_THREADS 256
#define TC2_TILE 128
#define TC2_STAGES 3
#define TC2_STAGE_FLOATS (TC2_TILE * TILE_K)
// Groups left in flight when a tile is read; the host emulation's suite builds a mutant with
// one more (a wait too weak) and requires every case to fail.
#ifndef TC2_IN_FLIGHT
#define TC2_IN_FLIGHT (TC2_STAGES - 2)
#endif

// Offset of element (r, k) of a K-contiguous tile, or (k, r) of a wide-contiguous one.
template <bool KROW>
__device__ __forceinline__ int tc2_at(int r, int k) {
    return KROW ? r * TILE_K + ((((k >> 2) ^ (r >> 1)) & 3) << 2) + (k & 3)
                : k * TC2_TILE + (((r >> 2) ^ ((k & 3) << 1)) << 2) + (r & 3);
}

// Issues the copies of one 128 x 16 tile of `s` (wide rows from r0, depth from k0) into sh.
template <bool KROW>
__device__ __forceinline__ void tc2_load(float* sh, const TileSource& s, int r0, int k0, int tid) {
    #pragma unroll
    for (int c = 0; c < TC2_STAGE_FLOATS / 4 / TC2_THREADS; c++) {
        const int chunk = tid + c * TC2_THREADS;
        const int r = KROW ? chunk / 4 : (chunk % 32) * 4, k = KROW ? (chunk % 4) * 4 : chunk / 32;
        float* dst = sh + tc2_at<KROW>(r, k);
        const int gr = r0 + r, gk = k0 + k;
        // Whether the row is in, and how many of its 4 contiguous values are.
        const bool in = KROW ? gr < s.rows : gk < s.depth;
        const int left = KROW ? s.depth - gk : s.rows - gr;
        const float* q = KROW ? s.p + (long long)gr * s.ld + gk : s.p + (long long)gk * s.ld + gr;
        if (s.vec && (!in || left <= 0 || left >= 4)) {
            cp_async16(dst, in && left > 0 ? q : s.p, in && left > 0);
        } else {
            #pragma unroll
            for (int i = 0; i < 4; i++) cp_async4(dst + i, in && i < left ? q + i : s.p, in && i < left);
        }
    }
}

__device__ __forceinline__ float tf32_of(unsigned u) { return to_tf32(__uint_as_float(u)); }

// The block's 128 x 128 tile of C, operand layouts fixed (one instance per layout, each
// with its own accumulators: sharing them across the four costs spills).
template <bool KA, bool KB>
__device__ __forceinline__ void tc2_block(float* As, float* Bs, const TileSource& sa, const TileSource& sb, int M, int N, int K,
                                          float alpha, float beta, float* C, int ldc, int m0, int n0, int tid) {
    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = (warp / 4) * 64, wn = (warp % 4) * 32;
    float acc[4][4][4];
    #pragma unroll
    for (int i = 0; i < 4; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    const int ktiles = (K + TILE_K - 1) / TILE_K;
    #pragma unroll
    for (int st = 0; st < TC2_STAGES - 1; st++) {
        if (st < ktiles) {
            tc2_load<KA>(As + st * TC2_STAGE_FLOATS, sa, m0, st * TILE_K, tid);
            tc2_load<KB>(Bs + st * TC2_STAGE_FLOATS, sb, n0, st * TILE_K, tid);
        }
        cp_async_commit();  // empty groups too: every thread counts the same groups
    }
    int read = 0, write = TC2_STAGES - 1;
    for (int kt = 0; kt < ktiles; kt++) {
        // Tile kt has landed (for this thread; the barrier then makes everyone's visible),
        // and every warp is done with the stage the next copies overwrite.
        cp_async_wait<TC2_IN_FLIGHT>();
        __syncthreads();
        if (kt + TC2_STAGES - 1 < ktiles) {
            tc2_load<KA>(As + write * TC2_STAGE_FLOATS, sa, m0, (kt + TC2_STAGES - 1) * TILE_K, tid);
            tc2_load<KB>(Bs + write * TC2_STAGE_FLOATS, sb, n0, (kt + TC2_STAGES - 1) * TILE_K, tid);
        }
        cp_async_commit();
        const float* as = As + read * TC2_STAGE_FLOATS;
        const float* bs = Bs + read * TC2_STAGE_FLOATS;
        #pragma unroll 1  // unrolled, the wide-contiguous layouts spill at 128 registers
        for (int kk = 0; kk < TILE_K; kk += 8) {
            // B's fragments first, then A's one m tile at a time: 12 fragment registers live.
            float b[4][2];
            #pragma unroll
            for (int j = 0; j < 4; j += 2) {
                const int n = wn + j * 8;
                if (KB) {
                    // Matrices: columns n..n+7 at k kk..kk+3 and kk+4..kk+7, then n+8..n+15.
                    unsigned r[4];
                    ldmatrix<4, false>(r, bs + tc2_at<true>(n + lane % 8 + (lane / 16) * 8, kk + (lane / 8 % 2) * 4));
                    b[j][0] = tf32_of(r[0]);
                    b[j][1] = tf32_of(r[1]);
                    b[j + 1][0] = tf32_of(r[2]);
                    b[j + 1][1] = tf32_of(r[3]);
                } else {
                    #pragma unroll
                    for (int h = 0; h < 2; h++) {
                        b[j + h][0] = to_tf32(bs[tc2_at<false>(n + h * 8 + g, kk + t)]);
                        b[j + h][1] = to_tf32(bs[tc2_at<false>(n + h * 8 + g, kk + t + 4)]);
                    }
                }
            }
            #pragma unroll
            for (int i = 0; i < 4; i++) {
                const int m = wm + i * 16;
                float a[4];
                if (KA) {
                    // Matrices: rows m..m+7 and m+8..m+15 at k kk..kk+3, then at kk+4..kk+7.
                    unsigned r[4];
                    ldmatrix<4, false>(r, as + tc2_at<true>(m + lane % 8 + (lane / 8 % 2) * 8, kk + (lane / 16) * 4));
                    #pragma unroll
                    for (int e = 0; e < 4; e++) a[e] = tf32_of(r[e]);
                } else {
                    a[0] = to_tf32(as[tc2_at<false>(m + g, kk + t)]);
                    a[1] = to_tf32(as[tc2_at<false>(m + g + 8, kk + t)]);
                    a[2] = to_tf32(as[tc2_at<false>(m + g, kk + t + 4)]);
                    a[3] = to_tf32(as[tc2_at<false>(m + g + 8, kk + t + 4)]);
                }
                #pragma unroll
                for (int j = 0; j < 4; j++) mma_tf32(acc[i][j], a, b[j]);
            }
        }
        read = read == TC2_STAGES - 1 ? 0 : read + 1;
        write = write == TC2_STAGES - 1 ? 0 : write + 1;
    }
    cp_async_wait<0>();  // no copy outlives the block (the last groups are empty)
    #pragma unroll
    for (int i = 0; i < 4; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++)
                store_c(C, ldc, M, N, m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0), n0 + wn + j * 8 + 2 * t + (e & 1), acc[i][j][e], alpha, beta);
}

extern "C" __global__ void __launch_bounds__(TC2_THREADS, 2) sgemm_tf32_2(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, int trans_a, long long a_s1, long long a_s2,
    const float* __restrict__ B, int ldb, int trans_b, long long b_s1, long long b_s2,
    float beta, float* __restrict__ C, int ldc, long long c_s1, long long c_s2, int zdiv)
{
    __shared__ __align__(128) float As[TC2_STAGES * TC2_STAGE_FLOATS];
    __shared__ __align__(128) float Bs[TC2_STAGES * TC2_STAGE_FLOATS];

    const int z = blockIdx.z, z1 = z / zdiv, z2 = z % zdiv;
    A += z1 * a_s1 + z2 * a_s2;
    B += z1 * b_s1 + z2 * b_s2;
    C += z1 * c_s1 + z2 * c_s2;

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TC2_TILE, n0 = blockIdx.x * TC2_TILE;
    const TileSource sa = { A, lda, M, K, trans_a == 0, aligned16(A, lda) };
    const TileSource sb = { B, ldb, N, K, trans_b != 0, aligned16(B, ldb) };

    if (sa.k_contiguous && sb.k_contiguous) tc2_block<true, true>(As, Bs, sa, sb, M, N, K, alpha, beta, C, ldc, m0, n0, tid);
    else if (sa.k_contiguous) tc2_block<true, false>(As, Bs, sa, sb, M, N, K, alpha, beta, C, ldc, m0, n0, tid);
    else if (sb.k_contiguous) tc2_block<false, true>(As, Bs, sa, sb, M, N, K, alpha, beta, C, ldc, m0, n0, tid);
    else tc2_block<false, false>(As, Bs, sa, sb, M, N, K, alpha, beta, C, ldc, m0, n0, tid);
}

// ---------------------------------------------------------------------------------------
// The same product with BF16 operands (the `--precision bf16` option): matrices stay f32 in
// global memory, each value is rounded to bf16 (to nearest, ties to even) as it enters
// shared memory, and mma.sync m16n8k16 accumulates in f32. Tiles, warps and batching as
// sgemm_tf32; shared memory holds bf16 pairs along K (the low half the even k), so that a
// 32-bit read is one fragment register, and the row pad of 8 words keeps those reads free
// of bank conflicts.

// The bits of x rounded to bf16, to nearest with ties to even (NaN stays NaN).
__device__ __forceinline__ unsigned short to_bf16(float x) {
#if defined(DGNAM_HOST_EMU)
    return emu_to_bf16(x);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    unsigned short r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
    return r;
#else
    return (unsigned short)(__float_as_uint(x) >> 16);  // never launched below sm_80
#endif
}

// d += a * b for one 16 x 8 x 16 tile, fragments in the PTX ISA's m16n8k16 .bf16 layout
// (two bf16 per register, the lower k in the low half): with g = lane / 4, t = lane % 4,
// a = A[g][2t..2t+1], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]; b = B[2t..2t+1][g],
// B[2t+8..2t+9][g]; d as for m16n8k8.
__device__ __forceinline__ void mma_bf16(float (&d)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#if defined(DGNAM_HOST_EMU)
    emu_mma_m16n8k16_bf16(d, a, b);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    __trap();
#endif
}

// The fetched tile into shared memory as bf16 pairs: sh[k / 2][r], half k % 2.
template <int THREADS, int W>
__device__ __forceinline__ void store_tile_bf16(const TileSource& s, const Fetch<THREADS>& f, unsigned (*sh)[W], int tid) {
    #pragma unroll
    for (int c = 0; c < 256 / THREADS; c++) {
        const int chunk = tid + c * THREADS;
        if (s.k_contiguous) {
            // 4 consecutive k of row r: two whole pairs.
            const int r = chunk / 4, k = (chunk % 4) * 4;
            sh[k / 2][r] = to_bf16(f.v[c][0]) | (unsigned)to_bf16(f.v[c][1]) << 16;
            sh[k / 2 + 1][r] = to_bf16(f.v[c][2]) | (unsigned)to_bf16(f.v[c][3]) << 16;
        } else {
            // 4 consecutive r of depth row k: one half of 4 pairs.
            const int k = chunk / 16, r = (chunk % 16) * 4;
            #pragma unroll
            for (int i = 0; i < 4; i++) reinterpret_cast<unsigned short*>(&sh[k / 2][r + i])[k % 2] = to_bf16(f.v[c][i]);
        }
    }
}

extern "C" __global__ void __launch_bounds__(TC_THREADS) sgemm_bf16(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, int trans_a, long long a_s1, long long a_s2,
    const float* __restrict__ B, int ldb, int trans_b, long long b_s1, long long b_s2,
    float beta, float* __restrict__ C, int ldc, long long c_s1, long long c_s2, int zdiv)
{
    __shared__ __align__(16) unsigned As[2][TILE_K / 2][TILE + PAD_TC];
    __shared__ __align__(16) unsigned Bs[2][TILE_K / 2][TILE + PAD_TC];

    const int z = blockIdx.z, z1 = z / zdiv, z2 = z % zdiv;
    A += z1 * a_s1 + z2 * a_s2;
    B += z1 * b_s1 + z2 * b_s2;
    C += z1 * c_s1 + z2 * c_s2;

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TILE, n0 = blockIdx.x * TILE;
    const TileSource sa = { A, lda, M, K, trans_a == 0, aligned16(A, lda) };
    const TileSource sb = { B, ldb, N, K, trans_b != 0, aligned16(B, ldb) };

    const int warp = tid / 32, lane = tid % 32, g = lane / 4, t = lane % 4;
    const int wm = (warp / 2) * 32, wn = (warp % 2) * 32;
    float acc[2][4][4];
    #pragma unroll
    for (int i = 0; i < 2; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    Fetch<TC_THREADS> fa = fetch_tile<TC_THREADS>(sa, m0, 0, tid), fb = fetch_tile<TC_THREADS>(sb, n0, 0, tid);
    store_tile_bf16<TC_THREADS, TILE + PAD_TC>(sa, fa, As[0], tid);
    store_tile_bf16<TC_THREADS, TILE + PAD_TC>(sb, fb, Bs[0], tid);
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        const bool more = k0 + TILE_K < K;
        if (more) {
            fa = fetch_tile<TC_THREADS>(sa, m0, k0 + TILE_K, tid);
            fb = fetch_tile<TC_THREADS>(sb, n0, k0 + TILE_K, tid);
        }
        // One k16 step: pair rows t and t + 4 hold k = 2t, 2t+1 and 2t+8, 2t+9.
        unsigned a[2][4], b[4][2];
        #pragma unroll
        for (int i = 0; i < 2; i++) {
            const int m = wm + i * 16 + g;
            a[i][0] = As[buf][t][m];
            a[i][1] = As[buf][t][m + 8];
            a[i][2] = As[buf][t + 4][m];
            a[i][3] = As[buf][t + 4][m + 8];
        }
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            const int n = wn + j * 8 + g;
            b[j][0] = Bs[buf][t][n];
            b[j][1] = Bs[buf][t + 4][n];
        }
        #pragma unroll
        for (int i = 0; i < 2; i++)
            #pragma unroll
            for (int j = 0; j < 4; j++) mma_bf16(acc[i][j], a[i], b[j]);
        if (more) {
            store_tile_bf16<TC_THREADS, TILE + PAD_TC>(sa, fa, As[buf ^ 1], tid);
            store_tile_bf16<TC_THREADS, TILE + PAD_TC>(sb, fb, Bs[buf ^ 1], tid);
            __syncthreads();
            buf ^= 1;
        }
    }

    #pragma unroll
    for (int i = 0; i < 2; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++)
            #pragma unroll
            for (int e = 0; e < 4; e++)
                store_c(C, ldc, M, N, m0 + wm + i * 16 + g + (e >= 2 ? 8 : 0), n0 + wn + j * 8 + 2 * t + (e & 1), acc[i][j][e], alpha, beta);
}

// C = alpha * sum over s < splits of P[s] + beta * C, where P holds `splits` dense M x N
// partial products (split-K), and C has leading dimension ldc. Summed in a fixed order, so
// the result does not depend on scheduling.
extern "C" __global__ void splitk_reduce(const float* __restrict__ P, int splits, int M, int N, float alpha, float beta, float* __restrict__ C, int ldc)
{
    const long long total = (long long)M * N, plane = total;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        float s = 0.0f;
        for (int k = 0; k < splits; k++) s += P[k * plane + i];
        const long long m = i / N, n = i % N;
        float* c = C + m * ldc + n;
        *c = beta == 0.0f ? alpha * s : fmaf(beta, *c, alpha * s);
    }
}
