// DGN-AM's update of a rows x cols code on the device, per row r whose `active[r]` is set:
//   code += step[r] * grad; code = clamp(code, 0, upper[col]) (has_upper); code *= decay (decays)
// Inactive rows (their optimization has stopped) are left exactly as they are.
extern "C" __global__ void dgn_update(
    float* __restrict__ code, const float* __restrict__ grad, const float* __restrict__ step,
    const float* __restrict__ active, const float* __restrict__ upper, int has_upper,
    long long n, int cols, float decay, int decays)
{
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x) {
        const long long r = i / cols;
        if (active[r] == 0.0f) continue;
        float v = code[i] + step[r] * grad[i];
        if (has_upper) v = fminf(fmaxf(v, 0.0f), upper[i % cols]);
        code[i] = decays ? v * decay : v;
    }
}
