#if canImport(Glibc)
import Glibc
#endif

/// Interfaces by name and index (if_nametoindex, if_indextoname).
public enum NetworkInterface {
    /// Whether the interface is up (operstate up, or unknown as loopback and some virtual devices report).
    public static func isUp(_ name: String) -> Bool {
        let state = KernelFile.firstLine("/sys/class/net/\(name)/operstate")
        return state == "up" || state == "unknown"
    }

    /// The index of the interface `name`, nil when there is none.
    public static func index(named name: String) -> UInt32? {
        // The name is lent as a NUL-terminated copy for the call only.
        let index = unsafe name.withCString { unsafe if_nametoindex($0) }
        return index == 0 ? nil : index
    }

    /// The indices of the interfaces `pattern` names: one name, or with a
    /// trailing `*` every name it begins (nft's and iptables' wildcard).
    public static func indices(matching pattern: String) -> [UInt32] {
        guard pattern.hasSuffix("*") else { return index(named: pattern).map { [$0] } ?? [] }
        let names = (KernelFile.directory("/sys/class/net") ?? []).filter { $0.hasPrefix(pattern.dropLast()) }
        return names.sorted().compactMap { index(named: $0) }
    }

    /// The name of interface `index`, nil when there is none.
    public static func name(index: UInt32) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(IF_NAMESIZE) + 1)
        // if_indextoname writes at most IF_NAMESIZE bytes, its NUL included, into a buffer one larger.
        let found = unsafe buffer.withUnsafeMutableBufferPointer { unsafe if_indextoname(index, $0.baseAddress!) != nil }
        guard found else { return nil }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Receive queues of interface `name`, as sysfs lists them (1 if it cannot tell).
    public static func receiveQueues(_ name: String) -> Int {
        let entries = KernelFile.directory("/sys/class/net/\(name)/queues") ?? []
        return max(1, entries.filter { $0.hasPrefix("rx-") }.count)
    }
}

/// The few file operations on paths that swift-system leaves out.
public enum FileSystem {
    /// Removes `path` if it is there (a stale socket).
    public static func remove(_ path: String) {
        _ = unsafe path.withCString { unsafe unlink($0) }
    }

    public static func isExecutable(_ path: String) -> Bool {
        unsafe path.withCString { unsafe access($0, X_OK) } == 0
    }

    public static func setPermissions(_ path: String, _ mode: mode_t) throws(SystemError) {
        guard unsafe path.withCString({ unsafe chmod($0, mode) }) == 0 else { throw .last("chmod \(path)") }
    }

    /// Runs `body` with the file-creation mask `mask` (a socket made with no
    /// window in which others may open it), then puts the old mask back.
    public static func withCreationMask<R, E: Error>(_ mask: mode_t, _ body: () throws(E) -> R) throws(E) -> R {
        let old = umask(mask)
        defer { umask(old) }
        return try body()
    }
}
