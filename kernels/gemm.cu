// One SGEMM for every matrix product of the engine (convolution forward, backward-data and
// backward-weights, deconvolution, inner product):
//   C = alpha * op(A) * op(B) + beta * C     (row-major; op(A) is M x K, op(B) is K x N)
// A is stored M x K (lda >= K) or, transposed, K x M (lda >= M); B likewise K x N or N x K.
// beta == 0 never reads C. A launch runs a batch of products along gridDim.z: product z
// offsets each matrix by (z / zdiv) * s1 + (z % zdiv) * s2, so one launch covers every
// (image, group) pair of a grouped convolution.
//
// Tiling: a 256-thread block computes a 64 x 64 tile of C, each thread a 4 x 4 register
// block; K advances 16 at a time through shared memory, tiles loaded with float4 where the
// matrix is 16-byte aligned and in bounds, and double-buffered through registers so the
// next tile's global loads overlap this tile's arithmetic.

#define TILE_M 64
#define TILE_N 64
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

// Each of the 256 threads fetches 4 values of the 64 x 16 tile starting at (r0, k0).
struct Fetch {
    float v[4];
};

__device__ __forceinline__ Fetch fetch_tile(const TileSource& s, int r0, int k0, int tid) {
    Fetch f;
    if (s.k_contiguous) {
        // Thread reads 4 consecutive k of row r.
        int r = r0 + tid / 4, k = k0 + (tid % 4) * 4;
        const float* q = s.p + (long long)r * s.ld + k;
        if (s.vec && r < s.rows && k + 3 < s.depth) {
            float4 t = *reinterpret_cast<const float4*>(q);
            f.v[0] = t.x; f.v[1] = t.y; f.v[2] = t.z; f.v[3] = t.w;
        } else {
            #pragma unroll
            for (int i = 0; i < 4; i++) f.v[i] = (r < s.rows && k + i < s.depth) ? q[i] : 0.0f;
        }
    } else {
        // Thread reads 4 consecutive r of depth row k.
        int k = k0 + tid / 16, r = r0 + (tid % 16) * 4;
        const float* q = s.p + (long long)k * s.ld + r;
        if (s.vec && k < s.depth && r + 3 < s.rows) {
            float4 t = *reinterpret_cast<const float4*>(q);
            f.v[0] = t.x; f.v[1] = t.y; f.v[2] = t.z; f.v[3] = t.w;
        } else {
            #pragma unroll
            for (int i = 0; i < 4; i++) f.v[i] = (k < s.depth && r + i < s.rows) ? q[i] : 0.0f;
        }
    }
    return f;
}

__device__ __forceinline__ void store_tile(const TileSource& s, const Fetch& f, float (*sh)[TILE_M + PAD], int tid) {
    if (s.k_contiguous) {
        int r = tid / 4, k = (tid % 4) * 4;
        #pragma unroll
        for (int i = 0; i < 4; i++) sh[k + i][r] = f.v[i];
    } else {
        int k = tid / 16, r = (tid % 16) * 4;
        *reinterpret_cast<float4*>(&sh[k][r]) = make_float4(f.v[0], f.v[1], f.v[2], f.v[3]);
    }
}

__device__ __forceinline__ bool aligned16(const float* p, int ld) {
    return ((unsigned long long)p & 15ull) == 0 && (ld & 3) == 0;
}

extern "C" __global__ void __launch_bounds__(256) sgemm(
    int M, int N, int K, float alpha,
    const float* __restrict__ A, int lda, int trans_a, long long a_s1, long long a_s2,
    const float* __restrict__ B, int ldb, int trans_b, long long b_s1, long long b_s2,
    float beta, float* __restrict__ C, int ldc, long long c_s1, long long c_s2, int zdiv)
{
    __shared__ __align__(16) float As[2][TILE_K][TILE_M + PAD];
    __shared__ __align__(16) float Bs[2][TILE_K][TILE_N + PAD];

    const int z = blockIdx.z, z1 = z / zdiv, z2 = z % zdiv;
    A += z1 * a_s1 + z2 * a_s2;
    B += z1 * b_s1 + z2 * b_s2;
    C += z1 * c_s1 + z2 * c_s2;

    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * TILE_M, n0 = blockIdx.x * TILE_N;
    // op(A)[m][k]: stored M x K (k contiguous) unless transposed.
    const TileSource sa = { A, lda, M, K, trans_a == 0, aligned16(A, lda) };
    // op(B)[k][n]: stored K x N (n contiguous) unless transposed; its wide index is n.
    const TileSource sb = { B, ldb, N, K, trans_b != 0, aligned16(B, ldb) };

    const int tx = tid % 16, ty = tid / 16;
    float acc[4][4];
    #pragma unroll
    for (int i = 0; i < 4; i++)
        #pragma unroll
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;

    Fetch fa = fetch_tile(sa, m0, 0, tid), fb = fetch_tile(sb, n0, 0, tid);
    store_tile(sa, fa, As[0], tid);
    store_tile(sb, fb, Bs[0], tid);
    __syncthreads();

    int buf = 0;
    for (int k0 = 0; k0 < K; k0 += TILE_K) {
        const bool more = k0 + TILE_K < K;
        if (more) {
            fa = fetch_tile(sa, m0, k0 + TILE_K, tid);
            fb = fetch_tile(sb, n0, k0 + TILE_K, tid);
        }
        #pragma unroll
        for (int kk = 0; kk < TILE_K; kk++) {
            float4 a = *reinterpret_cast<const float4*>(&As[buf][kk][ty * 4]);
            float4 b = *reinterpret_cast<const float4*>(&Bs[buf][kk][tx * 4]);
            float av[4] = { a.x, a.y, a.z, a.w }, bv[4] = { b.x, b.y, b.z, b.w };
            #pragma unroll
            for (int i = 0; i < 4; i++)
                #pragma unroll
                for (int j = 0; j < 4; j++) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
        if (more) {
            // The other buffer was last read before the previous barrier: safe to fill.
            store_tile(sa, fa, As[buf ^ 1], tid);
            store_tile(sb, fb, Bs[buf ^ 1], tid);
            __syncthreads();
            buf ^= 1;
        }
    }

    #pragma unroll
    for (int i = 0; i < 4; i++) {
        int m = m0 + ty * 4 + i;
        if (m >= M) continue;
        float* row = C + (long long)m * ldc;
        #pragma unroll
        for (int j = 0; j < 4; j++) {
            int n = n0 + tx * 4 + j;
            if (n < N) row[n] = beta == 0.0f ? alpha * acc[i][j] : fmaf(beta, row[n], alpha * acc[i][j]);
        }
    }
}
