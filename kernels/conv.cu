// im2col / col2im for convolution and deconvolution (Caffe's column layout), over a run of
// `images` consecutive images. For one image the column matrix has rows (c, ki, kj) and
// columns (oh, ow):
//   col[(c*kh + ki)*kw + kj][oh*out_w + ow] = x[c][oh*sh - ph + ki*dh][ow*sw - pw + kj*dw]
// (0 outside the image). Image n's matrix starts at n * channels*kh*kw*out_h*out_w.

extern "C" __global__ void im2col(
    const float* __restrict__ x, float* __restrict__ col, int images,
    int channels, int in_h, int in_w, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const long long plane = (long long)out_h * out_w;
    const long long total = (long long)images * channels * kh * kw * plane;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int ow = i % out_w;
        const int oh = (i / out_w) % out_h;
        const long long row = i / plane;             // (n, c, ki, kj)
        const int kj = row % kw;
        const int ki = (row / kw) % kh;
        const long long nc = row / ((long long)kw * kh);  // n * channels + c
        const int ih = oh * sh - ph + ki * dh;
        const int iw = ow * sw - pw + kj * dw;
        float v = 0.0f;
        if (ih >= 0 && ih < in_h && iw >= 0 && iw < in_w) v = x[(nc * in_h + ih) * in_w + iw];
        col[i] = v;
    }
}

// The transpose of im2col, as a gather (one thread per image pixel, no atomics):
// x[c][ih][iw] (+)= sum of every column entry im2col read from there. accumulate = 0 overwrites.
extern "C" __global__ void col2im(
    const float* __restrict__ col, float* __restrict__ x, int images, int accumulate,
    int channels, int in_h, int in_w, int out_h, int out_w,
    int kh, int kw, int sh, int sw, int ph, int pw, int dh, int dw)
{
    const long long plane = (long long)out_h * out_w;
    const long long total = (long long)images * channels * in_h * in_w;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < total; i += (long long)gridDim.x * blockDim.x) {
        const int iw = i % in_w;
        const int ih = (i / in_w) % in_h;
        const long long nc = i / ((long long)in_w * in_h);
        const float* src = col + nc * kh * kw * plane;  // rows (c, 0, 0).. of image n
        float sum = 0.0f;
        for (int ki = 0; ki < kh; ki++) {
            const int hs = ih + ph - ki * dh;  // = oh * sh
            if (hs < 0 || hs % sh != 0) continue;
            const int oh = hs / sh;
            if (oh >= out_h) continue;
            for (int kj = 0; kj < kw; kj++) {
                const int ws = iw + pw - kj * dw;
                if (ws < 0 || ws % sw != 0) continue;
                const int ow = ws / sw;
                if (ow >= out_w) continue;
                sum += src[(ki * kw + kj) * plane + oh * out_w + ow];
            }
        }
        x[i] = accumulate ? x[i] + sum : sum;
    }
}
