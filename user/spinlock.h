/* A spin lock in a __u32 of a shared mmapped map value (quota, breakers): the critical
 * sections are a few dozen instructions, and the memory is shared by threads of one process
 * (bpf_spin_lock cannot live in an mmapable map). */
#ifndef PSD2EDGE_SPINLOCK_H
#define PSD2EDGE_SPINLOCK_H

#include <linux/types.h>
#include <sched.h>

static inline void spin_lock(__u32 *lock)
{
	for (unsigned spins = 0;; spins++) {
		if (!__atomic_load_n(lock, __ATOMIC_RELAXED) &&
		    !__atomic_exchange_n(lock, 1, __ATOMIC_ACQUIRE))
			return;
		if (spins >= 64) {
			sched_yield(); /* the holder was preempted */
			spins = 0;
		} else {
			__builtin_ia32_pause();
		}
	}
}

static inline void spin_unlock(__u32 *lock)
{
	__atomic_store_n(lock, 0, __ATOMIC_RELEASE);
}

#endif
