// Swift has no prefetch; this is the one C the engine uses. Inlined by the
// compiler; a prefetch is a hint and never faults, whatever the address.
#ifndef CLVSPREFETCH_H
#define CLVSPREFETCH_H

/// Brings the cache line at `address` in for writing.
static inline void lvs_prefetch(const void *address) { __builtin_prefetch(address, 1, 3); }

#endif
