// Private: the few OpenMP runtime entry points the kernels use.
// The Swift toolchain's clang ships no omp.h, so they are declared here (ABI of libomp / libgomp).
// Every use must sit under #ifdef _OPENMP so the kernels also build without OpenMP.
#ifndef QLM_OMP_H
#define QLM_OMP_H

#ifdef _OPENMP
#ifdef __cplusplus
extern "C" {
#endif
void omp_set_num_threads(int n);
int omp_get_num_threads(void);
int omp_get_max_threads(void);
int omp_get_thread_num(void);
int omp_in_parallel(void);
#ifdef __cplusplus
}
#endif
#endif

#include <stddef.h>

int qlm_get_threads(void);

// Threads for `work` units of a kernel: 1 below `min` units or inside a parallel region (and without
// OpenMP), else qlm_get_threads(), at most one per `per` units and at most `cap` (cap >= 1). Callers
// with nt == 1 run their loop directly instead of entering a `parallel` construct with an if clause:
// even a serialized `parallel for` costs ~0.4 us in this libomp (its static-for init formats a string).
static inline int qlm_omp_threads(size_t work, size_t min, size_t per, int cap) {
#ifdef _OPENMP
    if (work < min || omp_in_parallel()) return 1;
    int nt = qlm_get_threads();
    if (per > 1 && (size_t)nt > work / per) nt = (int)(work / per);
    if (nt > cap) nt = cap;
    return nt < 1 ? 1 : nt;
#else
    (void)work; (void)min; (void)per; (void)cap;
    return 1;
#endif
}

#endif
