// Private: who may use OpenBLAS's thread pool, and with how many threads.
// OpenBLAS's thread count is one process-wide setting (this OpenBLAS has no per-call or
// per-thread variant), yet prefill attention must drop it to 1 while its OpenMP tasks each run a
// single-threaded sgemm. Without a lock that drop leaks into any other thread's BLAS calls
// (another session, a test running beside it), which then run on 1 thread and round differently
// from the same call on N threads (measured here: GPTQ weights differ, a resumed quantization is
// no longer byte-identical to an uninterrupted one). So every BLAS entry point holds the pool
// shared; whoever changes the thread count holds it exclusively, and the threads working inside
// that exclusive section mark themselves so their own BLAS calls do not wait on it.
#ifndef QLM_BLAS_H
#define QLM_BLAS_H

void qlm_blas_shared_begin(void);     // around each BLAS call (nests; a no-op inside an exclusive section)
void qlm_blas_shared_end(void);
void qlm_blas_exclusive_begin(void);  // before changing the thread count; waits for running BLAS calls
void qlm_blas_exclusive_end(void);
void qlm_blas_section_enter(void);    // each thread working for an exclusive holder (the holder too)
void qlm_blas_section_leave(void);

#if defined(__linux__)
// OpenBLAS (linked on Linux); declared so no openblas header is needed.
void openblas_set_num_threads(int);
int openblas_get_num_threads(void);
#endif

#endif
