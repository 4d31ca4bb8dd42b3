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
    /// Nanoseconds since the epoch: the clock of the kernel's packet timestamps.
    public static func nanoseconds() -> UInt64 {
        var ts = timespec()
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    public static func microseconds() -> Int64 {
        var ts = timespec()
        unsafe clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1000
    }

    /// Hour, minute and second of `seconds` since the epoch in local time.
    public static func localTimeOfDay(_ seconds: Int64) -> (hour: Int, minute: Int, second: Int) {
        var t = time_t(seconds)
        // localtime_r fills `parts`, ours; its tm_zone points at the C library's static zone names, never read here.
        var parts = unsafe tm()
        unsafe localtime_r(&t, &parts)
        return unsafe (Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }
}

/// The process's environment.
public enum Environment {
    public static func value(_ name: String) -> String? {
        // getenv's result stays valid until the environment changes; it is copied at once.
        guard let v = unsafe getenv(name) else { return nil }
        return unsafe String(cString: v)
    }
}
