import SystemPackage

/// Standard output and error, written whole (a pipe may take a long
/// listing in parts) and unbuffered, so that what a command printed is out
/// before it exits or execs.
public enum StandardStream {
    case output, error

    public func write(_ text: String) {
        let fd: FileDescriptor = self == .output ? .standardOutput : .standardError
        // A closed or full pipe loses the text; there is nowhere left to say so.
        _ = try? fd.writeAll(Array(text.utf8))
    }
}
