#if canImport(Glibc)
import Glibc
#endif

/// Small files the kernel keeps (/proc/sys, /sys/class/net).
public enum KernelFile {
    /// The first line of `path`, without its newline; nil when it cannot be read.
    public static func firstLine(_ path: String) -> String? {
        guard let f = fopen(path, "r") else { return nil }
        defer { fclose(f) }
        var line = [CChar](repeating: 0, count: 128)
        guard fgets(&line, Int32(line.count), f) != nil else { return nil }
        return String(cString: line).filter { !$0.isNewline }
    }
}
