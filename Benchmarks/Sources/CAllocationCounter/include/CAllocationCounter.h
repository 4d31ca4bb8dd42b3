// Counts allocations, as SwiftNIO's allocation-counter tests do: malloc and
// its relatives are interposed in lvs-bench-probe and forwarded to glibc's
// own entry points.
#ifndef CALLOCATIONCOUNTER_H
#define CALLOCATIONCOUNTER_H

/// Allocations (malloc, calloc, realloc, posix_memalign, aligned_alloc,
/// memalign) the calling thread has made.
unsigned long long lvs_allocations(void);

#endif
