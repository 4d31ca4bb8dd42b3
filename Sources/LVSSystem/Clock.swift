#if canImport(Glibc)
import Glibc
#endif

/// Milliseconds on the monotonic clock: the engine's `now`, and every
/// timer of the daemon's.
public enum MonotonicClock {
    public static func milliseconds() -> UInt64 {
        var ts = timespec()
        unsafe clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) * 1000 + UInt64(ts.tv_nsec) / 1_000_000
    }
}

/// Microseconds since the epoch, for what operators read (trace times).
public enum WallClock {
    public static func microseconds() -> Int64 {
        var ts = timespec()
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }
}
