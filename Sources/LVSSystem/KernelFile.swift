import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

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

    /// The whole of `path` (/proc/self/mounts); nil when it cannot be read.
    public static func contents(_ path: String) -> String? {
        guard let fd = try? FileDescriptor.open(FilePath(path), .readOnly, options: .closeOnExec) else { return nil }
        defer { try? fd.close() }
        var all: [UInt8] = []
        var bytes = [UInt8](repeating: 0, count: 16384)
        while true {
            guard let n = try? unsafe bytes.withUnsafeMutableBytes({ try unsafe fd.read(into: $0) }) else { return nil }
            // The kernel wrote at most the buffer's length into it.
            if n == 0 { break }
            all += bytes[0..<n]
        }
        return String(decoding: all, as: UTF8.self)
    }

    /// Where the cgroup v2 hierarchy is mounted (its root), if it is.
    public static func cgroup2Root() -> String? {
        guard let mounts = contents("/proc/self/mounts") else { return nil }
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            if fields.count > 2 && fields[2] == "cgroup2" { return String(fields[1]) }
        }
        return nil
    }

    public static func exists(_ path: String) -> Bool { unsafe access(path, F_OK) == 0 }

    /// Whether the directory `path` (absolute) lies in a cgroup v2
    /// hierarchy, where cgroup BPF programs attach: its nearest mount is
    /// one (a v1 or hybrid /sys/fs/cgroup is a tmpfs).
    public static func isCgroup2(_ path: String) -> Bool {
        guard path.hasPrefix("/"), exists(path), let mounts = contents("/proc/self/mounts") else { return false }
        var nearest: (length: Int, type: Substring) = (-1, "")
        for line in mounts.split(separator: "\n") {
            let fields = line.split(separator: " ")
            guard fields.count > 2, fields[1].count > nearest.length else { continue }
            let point = fields[1]
            if path == point || path.hasPrefix(point.hasSuffix("/") ? point : point + "/") { nearest = (point.count, fields[2]) }
        }
        return nearest.type == "cgroup2"
    }

    /// The names in a directory (/sys/class/net), without "." and "..".
    public static func directory(_ path: String) -> [String]? {
        guard let dir = unsafe opendir(path) else { return nil }
        defer { _ = unsafe closedir(dir) }
        var names: [String] = []
        // readdir's entry stays valid until the next readdir on `dir`; its name is copied at once.
        while let entry = unsafe readdir(dir) {
            let name = unsafe withUnsafeBytes(of: entry.pointee.d_name) { raw in
                unsafe String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Writes `value` to `path` (a sysctl under /proc/sys, a knob under
    /// /sys); `create`: an ordinary file, made if missing, its contents replaced.
    public static func write(_ path: String, _ value: String, create: Bool = false) throws(SystemError) {
        let fd: FileDescriptor
        do {
            fd =
                create
                ? try FileDescriptor.open(
                    FilePath(path), .writeOnly, options: [.closeOnExec, .create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
                : try FileDescriptor.open(FilePath(path), .writeOnly, options: .closeOnExec)
        } catch {
            throw SystemError("open \(path)", error as? Errno ?? .ioError)
        }
        defer { try? fd.close() }
        do { _ = try fd.writeAll(Array(value.utf8)) } catch { throw SystemError("write \(path)", error as? Errno ?? .ioError) }
    }

    /// A sysctl by its dotted name (net.ipv4.conf.all.rp_filter).
    public static func setSysctl(_ name: String, _ value: String) throws(SystemError) {
        try write("/proc/sys/" + String(name.map { $0 == "." ? "/" : $0 }), value)
    }
}
