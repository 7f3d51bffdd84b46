// Host check of kernels/*.cu: see run.sh.
#include "cuda_emu.h"
#include <cstdio>
#include <random>
#include "../../kernels/common.cuh"
#include "../../kernels/gemm.cu"
#include "../../kernels/conv.cu"
#include "../../kernels/pool.cu"
#include "../../kernels/lrn.cu"
#include "../../kernels/softmax.cu"
#include "../../kernels/elementwise.cu"
#include "../../kernels/activation.cu"
#include "../../kernels/norm.cu"
#include "../../kernels/concat.cu"
#include "../../kernels/eltwise.cu"
#include "../../kernels/dgn.cu"

static std::mt19937 rng(1);
std::vector<float> rnd(size_t n) { std::uniform_real_distribution<float> d(-1, 1); std::vector<float> v(n); for (auto& x : v) x = d(rng); return v; }
int failures = 0;
void check(const char* what, const std::vector<float>& got, const std::vector<double>& want) {
    double mx = 0, err = 0;
    for (size_t i = 0; i < want.size(); i++) { mx = std::max(mx, std::fabs(want[i])); }
    size_t worst = 0;
    for (size_t i = 0; i < want.size(); i++) { double e = std::fabs(got[i] - want[i]); if (e > err) { err = e; worst = i; } }
    bool ok = err <= 1e-4 * mx + 1e-5 && got.size() == want.size();
    if (!ok) { failures++; printf("FAIL %s: err %g at %zu (got %g want %g) max %g\n", what, err, worst, got[worst], want[worst], mx); }
    else printf("ok   %s (err %.2g, max %.3g)\n", what, err, mx);
}
dim3 d3(unsigned x, unsigned y = 1, unsigned z = 1) { dim3 d; d.x = x; d.y = y; d.z = z; return d; }

void test_gemm(int M, int N, int K, int ta, int tb, int batch, int zdiv, int extra_ld, float alpha, float beta, bool tf32 = false) {
    int lda = (ta ? M : K) + extra_ld, ldb = (tb ? K : N) + extra_ld, ldc = N + extra_ld;
    long long asz = (long long)(ta ? K : M) * lda, bsz = (long long)(tb ? N : K) * ldb, csz = (long long)M * ldc;
    // batch strides: z1 steps whole matrices, z2 a second layout (zdiv groups)
    long long a1 = asz * zdiv, a2 = asz, b1 = bsz * zdiv, b2 = bsz, c1 = csz * zdiv, c2 = csz;
    int nz1 = (batch + zdiv - 1) / zdiv;
    auto A = rnd(asz * zdiv * nz1 + 3), B = rnd(bsz * zdiv * nz1 + 3), C = rnd(csz * zdiv * nz1 + 3);
    std::vector<double> want(C.begin(), C.end());
    for (int z = 0; z < batch; z++) {
        long long ao = (z / zdiv) * a1 + (z % zdiv) * a2, bo = (z / zdiv) * b1 + (z % zdiv) * b2, co = (z / zdiv) * c1 + (z % zdiv) * c2;
        for (int m = 0; m < M; m++) for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                float av = A[ao + (ta ? (long long)k * lda + m : (long long)m * lda + k)], bv = B[bo + (tb ? (long long)n * ldb + k : (long long)k * ldb + n)];
                s += tf32 ? (double)emu_to_tf32(av) * emu_to_tf32(bv) : (double)av * bv;
            }
            double& c = want[co + (long long)m * ldc + n];
            c = alpha * s + (beta == 0 ? 0 : beta * c);
        }
    }
    std::vector<float> got = C;
    launch(tf32 ? sgemm_tf32 : sgemm, d3((N + 63) / 64, (M + 63) / 64, batch), d3(tf32 ? 128 : 64), M, N, K, alpha, (const float*)A.data(), lda, ta, a1, a2, (const float*)B.data(), ldb, tb, b1, b2, beta, got.data(), ldc, c1, c2, zdiv);
    char buf[200]; snprintf(buf, 200, "%s M%d N%d K%d ta%d tb%d batch%d zdiv%d ld+%d a%g b%g", tf32 ? "sgemm_tf32" : "sgemm", M, N, K, ta, tb, batch, zdiv, extra_ld, alpha, beta);
    check(buf, got, want);
}

void test_conv(int C, int H, int W, int O, int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw, int group, int N) {
    int OH = (H + 2 * ph - (dh * (kh - 1) + 1)) / sh + 1, OW = (W + 2 * pw - (dw * (kw - 1) + 1)) / sw + 1;
    int cg = C / group, og = O / group, kk = cg * kh * kw, ohw = OH * OW;
    auto x = rnd((size_t)N * C * H * W), w = rnd((size_t)O * kk), dy = rnd((size_t)N * O * ohw);
    std::vector<double> y_ref((size_t)N * O * ohw, 0.0), dx_ref((size_t)N * C * H * W, 0.0);
    for (int n = 0; n < N; n++) for (int o = 0; o < O; o++) for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
        double s = 0;
        for (int c = 0; c < cg; c++) for (int ki = 0; ki < kh; ki++) for (int kj = 0; kj < kw; kj++) {
            int ih = oh * sh - ph + ki * dh, iw = ow * sw - pw + kj * dw;
            if (ih < 0 || iw < 0 || ih >= H || iw >= W) continue;
            int ci = (o / og) * cg + c;
            size_t xi = (((size_t)n * C + ci) * H + ih) * W + iw;
            double wv = w[((o * cg + c) * kh + ki) * kw + kj];
            s += x[xi] * wv;
            dx_ref[xi] += dy[(((size_t)n * O + o) * OH + oh) * OW + ow] * wv;
        }
        y_ref[(((size_t)n * O + o) * OH + oh) * OW + ow] = s;
    }
    size_t col_img = (size_t)C * kh * kw * ohw;
    std::vector<float> col(col_img * N), y((size_t)N * O * ohw);
    launch(im2col, d3(7), d3(256), (const float*)x.data(), col.data(), N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
    launch(sgemm, d3((ohw + 63) / 64, (og + 63) / 64, N * group), d3(64), og, ohw, kk, 1.0f, (const float*)w.data(), kk, 0, 0LL, (long long)og * kk,
           (const float*)col.data(), ohw, 0, (long long)col_img, (long long)kk * ohw, 0.0f, y.data(), ohw, (long long)O * ohw, (long long)og * ohw, group);
    char buf[200]; snprintf(buf, 200, "conv fwd C%d %dx%d O%d k%dx%d s%d,%d p%d,%d d%d,%d g%d N%d", C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, group, N);
    check(buf, y, y_ref);
    // backward data: col = W^T dy, col2im (accumulate onto a copy of ones)
    launch(sgemm, d3((ohw + 63) / 64, (kk + 63) / 64, N * group), d3(64), kk, ohw, og, 1.0f, (const float*)w.data(), kk, 1, 0LL, (long long)og * kk,
           (const float*)dy.data(), ohw, 0, (long long)O * ohw, (long long)og * ohw, 0.0f, col.data(), ohw, (long long)col_img, (long long)kk * ohw, group);
    std::vector<float> dx(dx_ref.size(), 1.0f);
    for (auto& v : dx_ref) v += 1.0;
    launch(col2im, d3(5), d3(256), (const float*)col.data(), dx.data(), N, 1, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
    snprintf(buf, 200, "conv bwd-data C%d %dx%d O%d k%dx%d s%d,%d p%d,%d d%d,%d g%d N%d", C, H, W, O, kh, kw, sh, sw, ph, pw, dh, dw, group, N);
    check(buf, dx, dx_ref);
    // backward weights: dW_g += dy_g col_g^T per image
    std::vector<double> dw_ref((size_t)O * kk, 0.5);
    for (int n = 0; n < N; n++) for (int o = 0; o < O; o++) for (int r = 0; r < kk; r++) {
        int gi = o / og; double s = 0;
        for (int p = 0; p < ohw; p++) s += (double)dy[((size_t)n * O + o) * ohw + p] * col[n * col_img + ((size_t)gi * kk + r) * ohw + p];
        dw_ref[(size_t)o * kk + r] += s;
    }
    // recompute col of x (it was overwritten)
    launch(im2col, d3(7), d3(256), (const float*)x.data(), col.data(), N, C, H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw);
    std::fill(dw_ref.begin(), dw_ref.end(), 0.5);
    for (int n = 0; n < N; n++) for (int o = 0; o < O; o++) for (int r = 0; r < kk; r++) {
        int gi = o / og; double s = 0;
        for (int p = 0; p < ohw; p++) s += (double)dy[((size_t)n * O + o) * ohw + p] * col[n * col_img + ((size_t)gi * kk + r) * ohw + p];
        dw_ref[(size_t)o * kk + r] += s;
    }
    std::vector<float> dwv((size_t)O * kk, 0.5f);
    for (int n = 0; n < N; n++)
        launch(sgemm, d3((kk + 63) / 64, (og + 63) / 64, group), d3(64), og, kk, ohw, 1.0f, (const float*)(dy.data() + (size_t)n * O * ohw), ohw, 0, 0LL, (long long)og * ohw,
               (const float*)(col.data() + n * col_img), ohw, 1, 0LL, (long long)kk * ohw, 1.0f, dwv.data(), kk, 0LL, (long long)og * kk, group);
    snprintf(buf, 200, "conv bwd-weights g%d N%d", group, N);
    check(buf, dwv, dw_ref);
}

// Caffe's pooling loops, written out as in pooling_layer.cpp.
void test_pool(int planes, int H, int W, int kh, int kw, int sh, int sw, int ph, int pw) {
    auto outsz = [](int size, int k, int s, int p) { int o = (size + 2 * p - k + s - 1) / s + 1; if (p > 0 && (o - 1) * s >= size + p) o--; return o; };
    int OH = outsz(H, kh, sh, ph), OW = outsz(W, kw, sw, pw);
    auto x = rnd((size_t)planes * H * W), dy = rnd((size_t)planes * OH * OW);
    std::vector<double> ymax(planes * OH * OW), yave(planes * OH * OW), dxmax(planes * H * W, 0), dxave(planes * H * W, 0);
    for (int p = 0; p < planes; p++) for (int oh = 0; oh < OH; oh++) for (int ow = 0; ow < OW; ow++) {
        int hs = oh * sh - ph, ws = ow * sw - pw, he = std::min(hs + kh, H + ph), we = std::min(ws + kw, W + pw);
        int pool = (he - hs) * (we - ws);
        int hs2 = std::max(hs, 0), ws2 = std::max(ws, 0), he2 = std::min(he, H), we2 = std::min(we, W);
        double m = -3.402823466e+38; int arg = -1; double s = 0;
        for (int h = hs2; h < he2; h++) for (int w = ws2; w < we2; w++) { double v = x[(p * H + h) * W + w]; if (v > m) { m = v; arg = h * W + w; } s += v; }
        int o = (p * OH + oh) * OW + ow;
        ymax[o] = m; yave[o] = s / pool;
        if (arg >= 0) dxmax[p * H * W + arg] += dy[o];
        for (int h = hs2; h < he2; h++) for (int w = ws2; w < we2; w++) dxave[(p * H + h) * W + w] += dy[o] / pool;
    }
    std::vector<float> y(ymax.size()), dx(dxmax.size(), 0.0f); std::vector<unsigned> am(ymax.size());
    char buf[200]; snprintf(buf, 200, "pool %dx%d k%dx%d s%d,%d p%d,%d -> %dx%d", H, W, kh, kw, sh, sw, ph, pw, OH, OW);
    launch(max_pool_forward, d3(3), d3(256), (const float*)x.data(), y.data(), am.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    check((std::string("max fwd ") + buf).c_str(), y, ymax);
    launch(max_pool_backward, d3(3), d3(256), (const float*)dy.data(), (const unsigned*)am.data(), dx.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    check((std::string("max bwd ") + buf).c_str(), dx, dxmax);
    launch(ave_pool_forward, d3(3), d3(256), (const float*)x.data(), y.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    check((std::string("ave fwd ") + buf).c_str(), y, yave);
    std::fill(dx.begin(), dx.end(), 0.0f);
    launch(ave_pool_backward, d3(3), d3(256), (const float*)dy.data(), dx.data(), planes, H, W, OH, OW, kh, kw, sh, sw, ph, pw);
    check((std::string("ave bwd ") + buf).c_str(), dx, dxave);
}

void test_lrn(int N, int C, int H, int W, int size, int within) {
    float alpha = 0.7f, beta = 0.75f, k = 2.0f;
    int half = (size - 1) / 2; double nn = within ? size * size : size;
    double add = within ? 1.0 : k, mul = alpha / nn, coef = 2 * alpha * beta / nn;
    size_t total = (size_t)N * C * H * W;
    auto x = rnd(total), dy = rnd(total);
    auto at = [&](int n, int c, int h, int w) { return (((size_t)n * C + c) * H + h) * W + w; };
    std::vector<double> scale(total), y(total), dx(total);
    auto win = [&](int n, int c, int h, int w, auto f) { double s = 0;
        if (!within) { for (int cc = c - half; cc <= c + half; cc++) if (cc >= 0 && cc < C) s += f(at(n, cc, h, w)); }
        else for (int hh = h - half; hh <= h + half; hh++) for (int ww = w - half; ww <= w + half; ww++) if (hh >= 0 && hh < H && ww >= 0 && ww < W) s += f(at(n, c, hh, ww));
        return s; };
    for (int n = 0; n < N; n++) for (int c = 0; c < C; c++) for (int h = 0; h < H; h++) for (int w = 0; w < W; w++) {
        size_t i = at(n, c, h, w);
        scale[i] = add + mul * win(n, c, h, w, [&](size_t j) { return (double)x[j] * x[j]; });
        y[i] = x[i] * std::pow(scale[i], -beta);
    }
    for (int n = 0; n < N; n++) for (int c = 0; c < C; c++) for (int h = 0; h < H; h++) for (int w = 0; w < W; w++) {
        size_t i = at(n, c, h, w);
        dx[i] = 0.25 + dy[i] * std::pow(scale[i], -beta) - coef * x[i] * win(n, c, h, w, [&](size_t j) { return dy[j] * y[j] / scale[j]; });
    }
    std::vector<float> gy(total), gs(total), gdx(total, 0.25f);
    launch(lrn_forward, d3(4), d3(256), (const float*)x.data(), gy.data(), gs.data(), (long long)total, C, H, W, half, within, (float)add, (float)mul, beta);
    check(within ? "lrn within fwd" : "lrn across fwd", gy, y);
    check(within ? "lrn within scale" : "lrn across scale", gs, scale);
    launch(lrn_backward, d3(4), d3(256), (const float*)x.data(), (const float*)gy.data(), (const float*)gs.data(), (const float*)dy.data(), gdx.data(), (long long)total, C, H, W, half, within, beta, (float)coef);
    check(within ? "lrn within bwd" : "lrn across bwd", gdx, dx);
}

void test_softmax(int outer, int channels, int inner) {
    auto x = rnd((size_t)outer * channels * inner), dy = rnd(x.size());
    for (auto& v : x) v *= 10;
    std::vector<double> y(x.size()), dx(x.size());
    for (int o = 0; o < outer; o++) for (int i = 0; i < inner; i++) {
        auto at = [&](int c) { return ((size_t)o * channels + c) * inner + i; };
        double m = -1e30, s = 0, d = 0;
        for (int c = 0; c < channels; c++) m = std::max(m, (double)x[at(c)]);
        for (int c = 0; c < channels; c++) s += std::exp(x[at(c)] - m);
        for (int c = 0; c < channels; c++) { y[at(c)] = std::exp(x[at(c)] - m) / s; d += dy[at(c)] * y[at(c)]; }
        for (int c = 0; c < channels; c++) dx[at(c)] = 1.0 + y[at(c)] * (dy[at(c)] - d);
    }
    std::vector<float> gy(x.size()), gdx(x.size(), 1.0f);
    launch(softmax_forward, d3(outer * inner), d3(256), (const float*)x.data(), gy.data(), channels, inner);
    check("softmax fwd", gy, y);
    launch(softmax_backward, d3(outer * inner), d3(256), (const float*)gy.data(), (const float*)dy.data(), gdx.data(), channels, inner);
    check("softmax bwd", gdx, dx);
}

void test_reduce(int outer, int channels, int inner) {
    auto dy = rnd((size_t)outer * channels * inner), x = rnd(dy.size()), mean = rnd(channels), var = rnd(channels);
    for (auto& v : var) v = std::fabs(v) + 0.5f;
    std::vector<float> factor = {0.9f};
    std::vector<double> s1(channels, 1.0), s2(channels, 1.0), dm(channels, 0.0), dv(channels, 0.0);
    double inv_s = 1.0 / 0.9f;
    for (int o = 0; o < outer; o++) for (int c = 0; c < channels; c++) for (int i = 0; i < inner; i++) {
        size_t j = ((size_t)o * channels + c) * inner + i;
        s1[c] += dy[j]; s2[c] += (double)dy[j] * x[j];
        double v = var[c] * inv_s + 1e-5;
        dm[c] += -dy[j] * inv_s / std::sqrt(v);
        dv[c] += -0.5 * dy[j] * (x[j] - mean[c] * inv_s) * inv_s / (v * std::sqrt(v));
    }
    std::vector<float> g1(channels, 1.0f), g2(channels, 1.0f), gm(channels, 0.0f), gv(channels, 0.0f);
    launch(channel_sums, d3(channels), d3(256), (const float*)dy.data(), (const float*)dy.data(), 0, g1.data(), outer, channels, inner);
    launch(channel_sums, d3(channels), d3(256), (const float*)dy.data(), (const float*)x.data(), 1, g2.data(), outer, channels, inner);
    check("channel sums", g1, s1);
    check("channel dot", g2, s2);
    launch(batch_norm_backward_weights, d3(channels), d3(256), (const float*)x.data(), (const float*)dy.data(), (const float*)mean.data(), (const float*)var.data(), (const float*)factor.data(), gm.data(), gv.data(), outer, channels, inner, 1e-5f);
    check("bn dmean", gm, dm);
    check("bn dvar", gv, dv);
    int rows = outer, cols = channels * inner;
    std::vector<double> mar(rows); std::vector<float> gmar(rows);
    for (int r = 0; r < rows; r++) { double s = 0; for (int c = 0; c < cols; c++) s += std::fabs(dy[(size_t)r * cols + c]); mar[r] = s / cols; }
    launch(mean_abs_rows, d3(rows), d3(256), (const float*)dy.data(), gmar.data(), cols);
    check("mean_abs_rows", gmar, mar);
}

void test_misc() {
    int rows = 3, cols = 700;
    auto code = rnd(rows * cols), grad = rnd(rows * cols), upper = rnd(cols);
    for (auto& u : upper) u = std::fabs(u) * 0.5f;
    std::vector<float> step = {2.0f, 0.0f, -1.5f}, active = {1, 0, 1};
    std::vector<double> want(code.begin(), code.end());
    for (int r = 0; r < rows; r++) if (active[r] != 0) for (int j = 0; j < cols; j++) {
        double v = code[r * cols + j] + step[r] * grad[r * cols + j];
        v = std::min(std::max(v, 0.0), (double)upper[j]);
        want[r * cols + j] = v * 0.99f;
    }
    std::vector<float> got = code;
    launch(dgn_update, d3(2), d3(256), got.data(), (const float*)grad.data(), (const float*)step.data(), (const float*)active.data(), (const float*)upper.data(), 1, (long long)(rows * cols), cols, 0.99f, 1);
    check("dgn_update", got, want);
    // crop
    int N = 2, C = 3, H = 9, W = 11, dh = 4, dw = 5, oy = 3, ox = 2;
    auto big = rnd(N * C * H * W); std::vector<float> small(N * C * dh * dw); std::vector<double> sw(small.size()), bw(big.begin(), big.end());
    for (int p = 0; p < N * C; p++) for (int y = 0; y < dh; y++) for (int x = 0; x < dw; x++) { sw[(p * dh + y) * dw + x] = big[(p * H + y + oy) * W + x + ox]; bw[(p * H + y + oy) * W + x + ox] += sw[(p * dh + y) * dw + x]; }
    launch(crop, d3(1), d3(256), big.data(), small.data(), (long long)small.size(), H, W, dh, dw, oy, ox, 0);
    check("crop", small, sw);
    launch(crop, d3(1), d3(256), big.data(), small.data(), (long long)small.size(), H, W, dh, dw, oy, ox, 1);
    check("crop backward", big, bw);
    // concat
    int outer = 3, inner = 5, c0 = 2, c1 = 4, row = (c0 + c1) * inner;
    auto a = rnd(outer * c0 * inner), b = rnd(outer * c1 * inner); std::vector<float> whole(outer * row); std::vector<double> wref(whole.size());
    for (int o = 0; o < outer; o++) { for (int j = 0; j < c0 * inner; j++) wref[o * row + j] = a[o * c0 * inner + j]; for (int j = 0; j < c1 * inner; j++) wref[o * row + c0 * inner + j] = b[o * c1 * inner + j]; }
    launch(concat_copy, d3(1), d3(256), whole.data(), a.data(), (long long)a.size(), (long long)c0 * inner, (long long)row, 0LL, 0);
    launch(concat_copy, d3(1), d3(256), whole.data(), b.data(), (long long)b.size(), (long long)c1 * inner, (long long)row, (long long)c0 * inner, 0);
    check("concat", whole, wref);
    std::vector<double> bref(b.begin(), b.end());
    for (int o = 0; o < outer; o++) for (int j = 0; j < c1 * inner; j++) bref[o * c1 * inner + j] += whole[o * row + c0 * inner + j];
    launch(concat_copy, d3(1), d3(256), whole.data(), b.data(), (long long)b.size(), (long long)c1 * inner, (long long)row, (long long)c0 * inner, 1);
    check("concat backward", b, bref);
}

void test_splitk_reduce() {
    int M = 5, N = 37, S = 3, ldc = 40;
    auto P = rnd((size_t)S * M * N), C = rnd((size_t)M * ldc);
    for (float beta : {0.0f, 1.0f}) {
        std::vector<double> want(C.begin(), C.end());
        for (int m = 0; m < M; m++) for (int n = 0; n < N; n++) {
            double s = 0;
            for (int k = 0; k < S; k++) s += P[(size_t)k * M * N + m * N + n];
            want[m * ldc + n] = 0.5 * s + (beta == 0 ? 0 : beta * want[m * ldc + n]);
        }
        std::vector<float> got = C;
        launch(splitk_reduce, d3(1), d3(64), (const float*)P.data(), S, M, N, 0.5f, beta, got.data(), ldc);
        check(beta == 0 ? "splitk_reduce beta 0" : "splitk_reduce beta 1", got, want);
    }
}

int main() {
    for (int ta = 0; ta < 2; ta++) for (int tb = 0; tb < 2; tb++) {
        test_gemm(64, 64, 16, ta, tb, 1, 1, 0, 1.0f, 0.0f);
        test_gemm(70, 130, 37, ta, tb, 1, 1, 0, 1.0f, 1.0f);
        test_gemm(5, 3, 200, ta, tb, 1, 1, 1, 0.5f, 0.0f);
        test_gemm(96, 33, 64, ta, tb, 6, 2, 0, 1.0f, 1.0f);
        test_gemm(1, 100, 65, ta, tb, 2, 1, 3, 1.0f, 0.5f);
        test_gemm(64, 64, 16, ta, tb, 1, 1, 0, 1.0f, 0.0f, true);
        test_gemm(70, 130, 37, ta, tb, 1, 1, 0, 1.0f, 1.0f, true);
        test_gemm(96, 33, 64, ta, tb, 6, 2, 0, 0.5f, 1.0f, true);
        test_gemm(1, 100, 65, ta, tb, 2, 1, 3, 1.0f, 0.5f, true);
    }
    test_conv(3, 13, 12, 8, 5, 5, 2, 2, 1, 1, 1, 1, 1, 2);
    test_conv(4, 9, 8, 6, 3, 2, 2, 1, 1, 0, 1, 2, 2, 3);
    test_conv(6, 7, 7, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, 2);
    test_conv(8, 6, 6, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1);
    test_conv(4, 5, 5, 4, 4, 4, 2, 2, 1, 1, 1, 1, 1, 2);
    test_pool(5, 13, 13, 3, 3, 2, 2, 0, 0);
    test_pool(4, 10, 9, 3, 2, 2, 3, 1, 1);
    test_pool(3, 7, 7, 2, 2, 3, 3, 0, 0);
    test_pool(3, 6, 5, 6, 5, 1, 1, 0, 0);
    test_pool(2, 8, 8, 3, 3, 1, 1, 2, 2);
    test_lrn(2, 7, 4, 5, 5, 0);
    test_lrn(2, 3, 6, 7, 3, 1);
    test_softmax(3, 1000, 1);
    test_softmax(2, 7, 5);
    test_reduce(3, 5, 17);
    test_reduce(8, 1000, 1);
    test_misc();
    test_splitk_reduce();
    printf("%d failures\n", failures);
    return failures != 0;
}
