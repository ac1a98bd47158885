// The host's float tanh (core/kernels/math.h), from SLEEF: the scalar function, and the
// vector-ABI entry points GCC calls from `omp simd` loops for a function declared
// `declare simd notinbranch simdlen(8)`: `_ZGVdN8v_` (8 lanes, AVX2: this build's baseline)
// and `_ZGVeN8v_` (8 lanes, as GCC calls it when built with -march=native on an AVX-512 CPU;
// the 8 floats arrive in a ymm register there too). All three run the same SLEEF algorithm
// with FMA (its AVX2 and its scalar "purecfma" builds), so a value's bits do not depend on
// where in a loop it falls, on the CPU, or on the build's -march.
#include <immintrin.h>
#include <sleef.h>

extern "C" {

float lopper_tanhf(float x) { return Sleef_tanhf1_u10purecfma(x); }

__m256 lopper_tanhf_avx2(__m256 x) __asm__("_ZGVdN8v_lopper_tanhf");
__m256 lopper_tanhf_avx2(__m256 x) { return Sleef_tanhf8_u10avx2(x); }
__m256 lopper_tanhf_avx512_8(__m256 x) __asm__("_ZGVeN8v_lopper_tanhf");
__m256 lopper_tanhf_avx512_8(__m256 x) { return Sleef_tanhf8_u10avx2(x); }

}  // extern "C"
