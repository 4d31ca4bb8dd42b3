import SystemPackage

/// Small files the kernel keeps (/proc/sys, /sys/class/net).
public enum KernelFile {
    /// The first line of `path`, without its newline; nil when it cannot be read.
    public static func firstLine(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return nil }
        defer { try? fd.close() }
        var bytes = [UInt8](repeating: 0, count: 4096)
        guard let n = try? unsafe bytes.withUnsafeMutableBytes({ try unsafe fd.read(into: $0) }) else { return nil }
        // The buffer is ours and the kernel wrote at most its length into it.
        return String(decoding: bytes[0..<n].prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
    }
}
