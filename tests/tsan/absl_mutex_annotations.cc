// Teaches ThreadSanitizer what absl::Mutex and absl::Notification do, for the TSan build only.
//
// Debian's abseil is compiled without -fsanitize=thread, so its lock words and futex waits are
// invisible to TSan: every field guarded by an absl::Mutex (AdapterRegistry, AdapterStore) would
// be reported as a race, and a missing lock would be indistinguishable from a present one. The
// TSan test links with `-Wl,--wrap=<symbol>` for the out-of-line functions below (see
// tests/CMakeLists.txt), so every call from loramux code goes through these wrappers, which call
// the real function and tell TSan about the lock transition with its mutex annotations — the same
// annotations abseil itself emits when it is built with TSan. Reader locks are reported as reader
// locks, so a write under ReaderLock still races. Condition evaluation inside Await/LockWhen (the
// library may run it while it juggles the lock word) is hidden from TSan; the reads it makes are
// covered by the lock held when the call returns.
//
// Not wrapped (loramux does not call them; add them here if that changes): ReaderTryLock,
// ReaderLockWhen*, the *WithDeadline variants, ReleasableMutexLock::Release, and
// Notification::HasBeenNotified (inline: a true result orders nothing for TSan).
#include <sanitizer/tsan_interface.h>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"

static_assert(ABSL_OPTION_USE_INLINE_NAMESPACE == 1, "the wrapped symbols below are Debian 12's");
#define LORAMUX_STR2(x) #x
#define LORAMUX_STR(x) LORAMUX_STR2(x)
static_assert(sizeof(LORAMUX_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME)) == sizeof("debian3"),
              "the mangled names below assume abseil's inline namespace absl::debian3");

extern "C" {
void __tsan_ignore_thread_begin();
void __tsan_ignore_thread_end();
}

using absl::Condition;
using absl::CondVar;
using absl::Duration;
using absl::Mutex;
using absl::Notification;
using absl::Time;

namespace {

void Locked(Mutex* mu, unsigned flags) {
  __tsan_mutex_pre_lock(mu, flags);
  __tsan_mutex_post_lock(mu, flags, 0);
}
void Unlocking(Mutex* mu, unsigned flags) {
  __tsan_mutex_pre_unlock(mu, flags);
  __tsan_mutex_post_unlock(mu, flags);
}

// For calls that hold `mu` on entry and on return but release it while waiting.
template <typename Call>
auto Waiting(Mutex* mu, Call call) {
  Unlocking(mu, 0);
  __tsan_ignore_thread_begin();
  auto result = call();
  __tsan_ignore_thread_end();
  Locked(mu, 0);
  return result;
}

}  // namespace

// The wrappers, by mangled name (Itanium ABI, namespace absl::debian3). tests/CMakeLists.txt
// passes -Wl,--wrap=NAME for each NAME below; keep the two lists equal.
extern "C" {

void __real__ZN4absl7debian35Mutex4LockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex4LockEv(Mutex* mu) {
  __tsan_mutex_pre_lock(mu, 0);
  __real__ZN4absl7debian35Mutex4LockEv(mu);
  __tsan_mutex_post_lock(mu, 0, 0);
}

void __real__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex6UnlockEv(Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, 0);
  __tsan_ignore_thread_begin();  // Unlock may evaluate waiters' Conditions
  __real__ZN4absl7debian35Mutex6UnlockEv(mu);
  __tsan_ignore_thread_end();
  __tsan_mutex_post_unlock(mu, 0);
}

bool __real__ZN4absl7debian35Mutex7TryLockEv(Mutex* mu);
bool __wrap__ZN4absl7debian35Mutex7TryLockEv(Mutex* mu) {
  __tsan_mutex_pre_lock(mu, __tsan_mutex_try_lock);
  const bool locked = __real__ZN4absl7debian35Mutex7TryLockEv(mu);
  __tsan_mutex_post_lock(
      mu, locked ? __tsan_mutex_try_lock : __tsan_mutex_try_lock | __tsan_mutex_try_lock_failed, 0);
  return locked;
}

void __real__ZN4absl7debian35Mutex10ReaderLockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex10ReaderLockEv(Mutex* mu) {
  __tsan_mutex_pre_lock(mu, __tsan_mutex_read_lock);
  __real__ZN4absl7debian35Mutex10ReaderLockEv(mu);
  __tsan_mutex_post_lock(mu, __tsan_mutex_read_lock, 0);
}

void __real__ZN4absl7debian35Mutex12ReaderUnlockEv(Mutex* mu);
void __wrap__ZN4absl7debian35Mutex12ReaderUnlockEv(Mutex* mu) {
  __tsan_mutex_pre_unlock(mu, __tsan_mutex_read_lock);
  __tsan_ignore_thread_begin();
  __real__ZN4absl7debian35Mutex12ReaderUnlockEv(mu);
  __tsan_ignore_thread_end();
  __tsan_mutex_post_unlock(mu, __tsan_mutex_read_lock);
}

void __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(Mutex* mu, const Condition& c);
void __wrap__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(Mutex* mu, const Condition& c) {
  Waiting(mu, [&] {
    __real__ZN4absl7debian35Mutex5AwaitERKNS0_9ConditionE(mu, c);
    return true;
  });
}

bool __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& c, Duration timeout);
bool __wrap__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& c, Duration timeout) {
  return Waiting(mu, [&] {
    return __real__ZN4absl7debian35Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE(mu, c,
                                                                                           timeout);
  });
}

void __real__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(Mutex* mu, const Condition& c);
void __wrap__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(Mutex* mu, const Condition& c) {
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_ignore_thread_begin();
  __real__ZN4absl7debian35Mutex8LockWhenERKNS0_9ConditionE(mu, c);
  __tsan_ignore_thread_end();
  __tsan_mutex_post_lock(mu, 0, 0);
}

bool __real__ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& c, Duration timeout);
bool __wrap__ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(
    Mutex* mu, const Condition& c, Duration timeout) {
  __tsan_mutex_pre_lock(mu, 0);
  __tsan_ignore_thread_begin();
  const bool met =
      __real__ZN4absl7debian35Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE(mu, c,
                                                                                         timeout);
  __tsan_ignore_thread_end();
  __tsan_mutex_post_lock(mu, 0, 0);  // held on return whether or not the condition holds
  return met;
}

void __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu);
void __wrap__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(CondVar* cv, Mutex* mu) {
  Waiting(mu, [&] {
    __real__ZN4absl7debian37CondVar4WaitEPNS0_5MutexE(cv, mu);
    return true;
  });
}

bool __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(CondVar* cv,
                                                                                 Mutex* mu,
                                                                                 Duration timeout);
bool __wrap__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(CondVar* cv,
                                                                                 Mutex* mu,
                                                                                 Duration timeout) {
  return Waiting(mu, [&] {
    return __real__ZN4absl7debian37CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE(cv, mu,
                                                                                       timeout);
  });
}

// Notification: Notify releases everything before it to whoever returns from a wait.
void __real__ZN4absl7debian312Notification6NotifyEv(Notification* n);
void __wrap__ZN4absl7debian312Notification6NotifyEv(Notification* n) {
  __tsan_release(n);
  __real__ZN4absl7debian312Notification6NotifyEv(n);
}

void __real__ZNK4absl7debian312Notification19WaitForNotificationEv(const Notification* n);
void __wrap__ZNK4absl7debian312Notification19WaitForNotificationEv(const Notification* n) {
  __real__ZNK4absl7debian312Notification19WaitForNotificationEv(n);
  __tsan_acquire(const_cast<Notification*>(n));
}

bool __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const Notification* n, Duration timeout);
bool __wrap__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
    const Notification* n, Duration timeout) {
  const bool notified =
      __real__ZNK4absl7debian312Notification30WaitForNotificationWithTimeoutENS0_8DurationE(
          n, timeout);
  if (notified) __tsan_acquire(const_cast<Notification*>(n));
  return notified;
}

}  // extern "C"
