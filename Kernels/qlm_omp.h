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

#endif
