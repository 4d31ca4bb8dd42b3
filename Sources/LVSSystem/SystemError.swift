import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which operation, and the kernel's errno.
public struct SystemError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What was being done, as the operator reads it ("bind /run/lvsd.sock").
    public var operation: String
    public var errno: Errno

    public init(_ operation: String, _ errno: Errno) {
        self.operation = operation
        self.errno = errno
    }

    /// An errno a library reported (SwiftNIO's IOError).
    public init(_ operation: String, errno: Int32) {
        self.init(operation, Errno(rawValue: errno))
    }

    /// The error the last call left in `errno`.
    public static func last(_ operation: String) -> SystemError {
        SystemError(operation, Errno(rawValue: Glibc.errno))
    }

    public var description: String { "\(operation): \(errno.description)" }
}
