// ISA selection and thread-pool sizing shared by every kernel.
#include "qlm_kernels.h"
#include "qlm_omp.h"
#include "qlm_blas.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------------------------------------
// The BLAS pool lock (see qlm_blas.h for why).
// ---------------------------------------------------------------------------------------------
static pthread_rwlock_t g_blas_pool = PTHREAD_RWLOCK_INITIALIZER;
static _Thread_local int tls_blas_depth;  // > 0: this thread already holds the pool (or works for its holder)

void qlm_blas_shared_begin(void) {
    if (tls_blas_depth++ == 0) pthread_rwlock_rdlock(&g_blas_pool);
}
void qlm_blas_shared_end(void) {
    if (--tls_blas_depth == 0) pthread_rwlock_unlock(&g_blas_pool);
}
void qlm_blas_exclusive_begin(void) { pthread_rwlock_wrlock(&g_blas_pool); }
void qlm_blas_exclusive_end(void) { pthread_rwlock_unlock(&g_blas_pool); }
void qlm_blas_section_enter(void) { tls_blas_depth++; }
void qlm_blas_section_leave(void) { tls_blas_depth--; }

// ---------------------------------------------------------------------------------------------
// ISA
// ---------------------------------------------------------------------------------------------

static int cpu_has_avx2(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int cpu_has_avx512(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && cpu_has_avx2();
#else
    return 0;
#endif
}

int qlm_isa_supported(qlm_isa isa) {
    switch (isa) {
    case QLM_ISA_SCALAR: return 1;
    case QLM_ISA_AVX2: return cpu_has_avx2();
    case QLM_ISA_AVX512: return cpu_has_avx512();
    case QLM_ISA_NEON:
#if defined(__aarch64__)
        return 1;
#else
        return 0;
#endif
    }
    return 0;
}

qlm_isa qlm_isa_best(void) {
#if defined(__aarch64__)
    return QLM_ISA_NEON;
#else
    if (cpu_has_avx512()) return QLM_ISA_AVX512;
    if (cpu_has_avx2()) return QLM_ISA_AVX2;
    return QLM_ISA_SCALAR;
#endif
}

const char *qlm_isa_name(qlm_isa isa) {
    switch (isa) {
    case QLM_ISA_SCALAR: return "scalar";
    case QLM_ISA_AVX2: return "avx2";
    case QLM_ISA_AVX512: return "avx512";
    case QLM_ISA_NEON: return "neon";
    }
    return "unknown";
}

static _Atomic int g_active_isa = -1;  // -1: not yet resolved
static pthread_once_t g_isa_once = PTHREAD_ONCE_INIT;

static void isa_init_from_env(void) {
    qlm_isa isa = qlm_isa_best();
    const char *env = getenv("QLM_ISA");
    if (env && *env) {
        static const qlm_isa all[] = {QLM_ISA_SCALAR, QLM_ISA_AVX2, QLM_ISA_AVX512, QLM_ISA_NEON};
        int found = 0;
        for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
            if (strcmp(env, qlm_isa_name(all[i])) == 0) {
                found = 1;
                if (qlm_isa_supported(all[i])) isa = all[i];
                else fprintf(stderr, "qlm: QLM_ISA=%s is not supported on this CPU; using %s\n",
                             env, qlm_isa_name(isa));
                break;
            }
        }
        if (!found)
            fprintf(stderr, "qlm: unknown QLM_ISA=%s (scalar|avx2|avx512|neon); using %s\n", env,
                    qlm_isa_name(isa));
    }
    int expected = -1;  // a qlm_isa_force that ran first wins
    atomic_compare_exchange_strong(&g_active_isa, &expected, (int)isa);
}

qlm_isa qlm_isa_active(void) {
    int v = atomic_load_explicit(&g_active_isa, memory_order_relaxed);
    if (v >= 0) return (qlm_isa)v;
    pthread_once(&g_isa_once, isa_init_from_env);
    return (qlm_isa)atomic_load(&g_active_isa);
}

int qlm_isa_force(qlm_isa isa) {
    if (!qlm_isa_supported(isa)) return -1;
    pthread_once(&g_isa_once, isa_init_from_env);  // env is read once, before any override
    atomic_store(&g_active_isa, (int)isa);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Threads
// ---------------------------------------------------------------------------------------------

static _Atomic int g_threads = 0;  // 0: not yet set → online cores

static int online_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

void qlm_set_threads(int n) {
    if (n <= 0) n = online_cores();
    atomic_store(&g_threads, n);
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
#if defined(__linux__)
    // Not while another thread is inside a BLAS call (OpenBLAS does not expect its pool resized
    // under a running call); from inside a section that already holds the pool, directly.
    const int own = tls_blas_depth == 0;
    if (own) qlm_blas_exclusive_begin();
    openblas_set_num_threads(n);
    if (own) qlm_blas_exclusive_end();
#endif
}

int qlm_blas_threads_seen(void) {
#if defined(__linux__)
    qlm_blas_shared_begin();
    const int n = openblas_get_num_threads();
    qlm_blas_shared_end();
    return n;
#else
    return qlm_get_threads();
#endif
}

int qlm_get_threads(void) {
    int n = atomic_load_explicit(&g_threads, memory_order_relaxed);
    return n > 0 ? n : online_cores();
}
