import Synchronization
import SystemPackage

#if canImport(Glibc)
import Glibc
#endif

/// Every program swift-lvs runs (nft and keepalived's scripts in lvsd, ip
/// and sysctl in lvs-realserver, the lab's tools) starts here: posix_spawn
/// with default signal dispositions and an empty signal mask (lvsd ignores
/// SIGTERM, SIGINT and SIGHUP while it takes them as events; a child must
/// not inherit that), input from an unlinked file (no pipe to fill, no
/// SIGPIPE when the child stops reading), and its end seen with waitpid.
/// Not Foundation's `Process`: it learns of a child's exit through sockets
/// on the loopback interface, and where lo is down (a fresh network
/// namespace) it never does. Not swift-subprocess: it waits only in async
/// code, and the lab and lvs-realserver are synchronous; this one waits
/// either way, in both with the same spawn.
public enum ChildProcess {
    public struct Outcome: Sendable {
        /// The exit status; 128 + the signal's number when a signal ended it,
        /// 127 when it could not start; nil when it ran over its time and was killed.
        public var status: Int32?
        /// Its standard output, when captured (else empty).
        public var output: String
        /// Its standard error (the first 64 KiB).
        public var errorOutput: String

        static func notStarted(_ error: SystemError) -> Outcome { Outcome(status: 127, output: "", errorOutput: error.description) }
    }

    /// What a run takes besides the program and its arguments.
    public struct Options: Sendable {
        /// Written to the child's standard input (else it reads /dev/null).
        public var input = ""
        /// Keep the standard output (else it goes to /dev/null).
        public var captureOutput = false
        /// Find `path` in `PATH` when it holds no slash.
        public var searchPath = false
        /// The child's environment; nil: this process's.
        public var environment: [String: String]? = nil
        /// Standard output and error are this process's (else as above).
        public var inheritOutput = false
        public init(
            input: String = "", captureOutput: Bool = false, searchPath: Bool = false, environment: [String: String]? = nil, inheritOutput: Bool = false
        ) {
            self.inheritOutput = inheritOutput
            self.input = input
            self.captureOutput = captureOutput
            self.searchPath = searchPath
            self.environment = environment
        }

        /// These options with `input` on standard input, when there is any.
        func feeding(_ input: String) -> Options {
            var o = self
            if !input.isEmpty { o.input = input }
            return o
        }
    }

    static func deadline(after timeout: Double) -> UInt64 { MonotonicClock.milliseconds() &+ UInt64(max(0.01, timeout) * 1000) }

    static let outputLimit = 64 << 20
    static let errorLimit = 64 << 10

    /// Runs `path` to its end (at most `timeout` seconds, then it is killed), blocking the caller.
    public static func run(_ path: String, _ arguments: [String], input: String = "", timeout: Double, options: Options = .init()) -> Outcome {
        var child: Child
        do { child = try Child(path, arguments, options.feeding(input)) } catch { return .notStarted(error) }
        defer { child.close() }
        let deadline = deadline(after: timeout)
        while !child.reap() {
            if MonotonicClock.milliseconds() > deadline { return child.killed() }
            child.waitForOutput(milliseconds: 5)
        }
        return child.outcome()
    }

    /// The same from async code: the waiting suspends instead of blocking a thread.
    public static func run(_ path: String, _ arguments: [String], input: String = "", timeout: Double, options: Options = .init()) async -> Outcome {
        var child: Child
        do { child = try Child(path, arguments, options.feeding(input)) } catch { return .notStarted(error) }
        defer { child.close() }
        let deadline = deadline(after: timeout)
        while !child.reap() {
            if MonotonicClock.milliseconds() > deadline { return child.killed() }
            child.drain()
            // A cancelled task still waits for its child: it must not leave a zombie.
            try? await Task.sleep(for: .milliseconds(2))
        }
        return child.outcome()
    }

    /// Starts a long-running program, its standard output and error into
    /// `log` (appended; /dev/null without one).
    public static func spawn(_ path: String, _ arguments: [String], log: FilePath? = nil, options: Options = .init()) throws(SystemError) -> RunningProcess {
        let pid = try Spawn.start(path, arguments, options: options, input: nil, output: log, captureError: nil)
        return RunningProcess(pid: pid)
    }

    /// Replaces this process with `path` (execv); returns only when that fails.
    public static func replaceProcess(with path: String, _ arguments: [String]) -> SystemError {
        let argv = CStrings([path] + arguments)
        unsafe argv.withPointers { p in _ = unsafe execv(path, p) }
        return .last("execv \(path)")
    }
}

/// The directory this program runs from, for programs installed beside it.
public enum ExecutablePath {
    public static func sibling(_ name: String) -> String {
        guard let path = current, let slash = path.lastIndex(of: "/") else { return name }
        return String(path[...slash]) + name
    }

    /// This program's path, as /proc/self/exe names it.
    public static var current: String? {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = unsafe buffer.withUnsafeMutableBufferPointer { unsafe readlink("/proc/self/exe", $0.baseAddress!, $0.count - 1) }
        guard n > 0 else { return nil }
        return String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// A program started by `ChildProcess.spawn`, until it has been waited for.
public final class RunningProcess: Sendable {
    public let processIdentifier: pid_t
    let status = Mutex<Int32?>(nil)

    init(pid: pid_t) { processIdentifier = pid }

    /// Whether it still runs (a process that ended is reaped here).
    public var isRunning: Bool {
        status.withLock { s in
            guard s == nil else { return false }
            var raw: Int32 = 0
            let r = unsafe waitpid(processIdentifier, &raw, WNOHANG)
            if r == processIdentifier { s = ChildProcess.exitStatus(raw) }
            return r == 0
        }
    }

    /// Its exit status once it has ended (128 + the signal's number for a signal).
    public var terminationStatus: Int32? {
        _ = isRunning
        return status.withLock { $0 }
    }

    public func signal(_ number: Int32) {
        guard isRunning else { return }
        kill(processIdentifier, number)
    }

    /// Waits for its end, at most `timeout` seconds; its status, or nil while it runs.
    @discardableResult
    public func waitUntilExit(timeout: Double = .infinity) -> Int32? {
        let deadline = timeout.isFinite ? MonotonicClock.milliseconds() &+ UInt64(timeout * 1000) : UInt64.max
        while isRunning {
            if MonotonicClock.milliseconds() >= deadline { return nil }
            usleep(2000)
        }
        return terminationStatus
    }

    /// SIGTERM, then SIGKILL after `grace` seconds; waits for its end.
    public func stop(grace: Double = 3) {
        signal(SIGTERM)
        if waitUntilExit(timeout: grace) == nil {
            signal(SIGKILL)
            waitUntilExit()
        }
    }
}

extension ChildProcess {
    /// A wait status as a shell reports it: the exit code, or 128 + the signal.
    static func exitStatus(_ raw: Int32) -> Int32 {
        let signal = raw & 0x7F
        return signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
    }

    /// One run's child: its pipes and what it wrote, until reaped.
    struct Child {
        let pid: pid_t
        var outputPipe: FileDescriptor?
        var errorPipe: FileDescriptor?
        var output: [UInt8] = []
        var errors: [UInt8] = []
        var status: Int32? = nil

        init(_ path: String, _ arguments: [String], _ options: Options) throws(SystemError) {
            let errorPipe = try FileDescriptor.pipeNonBlockingReader()
            let outputPipe = options.captureOutput ? try FileDescriptor.pipeNonBlockingReader() : nil
            defer {
                try? errorPipe.writeEnd.close()
                try? outputPipe?.writeEnd.close()
            }
            do {
                pid = try Spawn.start(
                    path, arguments, options: options, input: options.input.isEmpty ? nil : options.input,
                    output: nil, captureOutput: outputPipe?.writeEnd, captureError: errorPipe.writeEnd)
            } catch {
                try? errorPipe.readEnd.close()
                try? outputPipe?.readEnd.close()
                throw error
            }
            self.errorPipe = errorPipe.readEnd
            self.outputPipe = outputPipe?.readEnd
        }

        /// True once the child has ended (its status kept).
        mutating func reap() -> Bool {
            var raw: Int32 = 0
            let r = unsafe waitpid(pid, &raw, WNOHANG)
            if r == pid { status = ChildProcess.exitStatus(raw) }
            return r == pid || (r < 0 && errno != EINTR)
        }

        /// Waits up to `milliseconds` for output, and reads what came.
        mutating func waitForOutput(milliseconds: Int32) {
            let fds = [outputPipe, errorPipe].compactMap { $0 }
            if fds.isEmpty {
                usleep(UInt32(milliseconds) * 1000)
                return
            }
            var polled = fds.map { pollfd(fd: $0.rawValue, events: Int16(POLLIN), revents: 0) }
            _ = unsafe poll(&polled, nfds_t(polled.count), milliseconds)
            drain()
        }

        mutating func drain() {
            if let o = outputPipe, !Self.read(o, into: &output, limit: ChildProcess.outputLimit) {
                try? o.close()
                outputPipe = nil
            }
            if let e = errorPipe, !Self.read(e, into: &errors, limit: ChildProcess.errorLimit) {
                try? e.close()
                errorPipe = nil
            }
        }

        /// Reads what is there; false at the end of the stream.
        static func read(_ fd: FileDescriptor, into out: inout [UInt8], limit: Int) -> Bool {
            var chunk = [UInt8](repeating: 0, count: 16384)
            while true {
                let n: Int
                do { n = try unsafe chunk.withUnsafeMutableBytes { try unsafe fd.read(into: $0) } } catch let e as Errno {
                    return e == .resourceTemporarilyUnavailable || e == .interrupted
                } catch { return false }
                if n == 0 { return false }
                if out.count < limit { out += chunk[0..<min(n, limit - out.count)] }
            }
        }

        mutating func killed() -> Outcome {
            kill(pid, SIGKILL)
            var raw: Int32 = 0
            // waitpid writes the status into `raw`, ours, during the call.
            while unsafe waitpid(pid, &raw, 0) < 0 && errno == EINTR {}
            drain()
            return Outcome(status: nil, output: String(decoding: output, as: UTF8.self), errorOutput: String(decoding: errors, as: UTF8.self))
        }

        mutating func outcome() -> Outcome {
            drain()
            return Outcome(status: status, output: String(decoding: output, as: UTF8.self), errorOutput: String(decoding: errors, as: UTF8.self))
        }

        mutating func close() {
            try? outputPipe?.close()
            try? errorPipe?.close()
            outputPipe = nil
            errorPipe = nil
        }
    }
}

/// posix_spawn with the file actions and attributes every child gets.
enum Spawn {
    static func start(
        _ path: String, _ arguments: [String], options: ChildProcess.Options, input: String?, output log: FilePath? = nil,
        captureOutput: FileDescriptor? = nil, captureError: FileDescriptor?
    ) throws(SystemError) -> pid_t {
        var inputFile: FileDescriptor? = nil
        defer { try? inputFile?.close() }
        if let input { inputFile = try unlinkedFile(holding: input) }
        // The file actions and attributes are C structures initialised, used
        // and destroyed in this function; every string and array handed to
        // posix_spawn lives until it returns (the child has its own copies).
        var actions = unsafe posix_spawn_file_actions_t()
        unsafe posix_spawn_file_actions_init(&actions)
        defer { unsafe posix_spawn_file_actions_destroy(&actions) }
        if let inputFile {
            unsafe posix_spawn_file_actions_adddup2(&actions, inputFile.rawValue, 0)
        } else {
            unsafe posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        }
        if options.inheritOutput {
            // Standard output and error stay this process's (a successor lvsd writes where its predecessor did).
        } else if let captureOutput {
            unsafe posix_spawn_file_actions_adddup2(&actions, captureOutput.rawValue, 1)
        } else if let log {
            unsafe posix_spawn_file_actions_addopen(&actions, 1, log.string, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        } else {
            unsafe posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        if options.inheritOutput {
        } else if let captureError {
            unsafe posix_spawn_file_actions_adddup2(&actions, captureError.rawValue, 2)
        } else {
            unsafe posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        var attributes = posix_spawnattr_t()
        unsafe posix_spawnattr_init(&attributes)
        defer { unsafe posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        var all = sigset_t()
        unsafe sigemptyset(&none)
        unsafe sigfillset(&all)
        // SIGKILL and SIGSTOP have no disposition to reset.
        unsafe sigdelset(&all, SIGKILL)
        unsafe sigdelset(&all, SIGSTOP)
        unsafe posix_spawnattr_setsigmask(&attributes, &none)
        unsafe posix_spawnattr_setsigdefault(&attributes, &all)
        unsafe posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let program = options.searchPath ? try resolve(path, environment: options.environment) : path
        let argv = CStrings([path] + arguments)
        var pid: pid_t = 0
        let rc: Int32
        if let environment = options.environment {
            let envp = CStrings(environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
            rc = unsafe argv.withPointers { a in unsafe envp.withPointers { e in unsafe posix_spawn(&pid, program, &actions, &attributes, a, e) } }
        } else {
            rc = unsafe argv.withPointers { a in unsafe posix_spawn(&pid, program, &actions, &attributes, a, environ) }
        }
        guard rc == 0 else { throw SystemError("spawn \(path)", Errno(rawValue: rc)) }
        return pid
    }

    /// `name` looked up in the child's PATH (posix_spawnp would look in this process's).
    static func resolve(_ name: String, environment: [String: String]?) throws(SystemError) -> String {
        guard !name.contains("/") else { return name }
        // getenv's string is copied before anything could change the environment.
        let inherited = unsafe getenv("PATH").map { unsafe String(cString: $0) }
        let search = environment?["PATH"] ?? inherited ?? "/usr/bin:/bin"
        for directory in search.split(separator: ":") where unsafe access("\(directory)/\(name)", X_OK) == 0 {
            return "\(directory)/\(name)"
        }
        throw SystemError("spawn \(name): not found in \(search)", .noSuchFileOrDirectory)
    }

    /// The input in a file the child reads at its own pace, gone from the
    /// file system before the child starts.
    static func unlinkedFile(holding text: String) throws(SystemError) -> FileDescriptor {
        var template = Array("/tmp/lvs-input-XXXXXX".utf8CString)
        let raw = unsafe template.withUnsafeMutableBufferPointer { unsafe mkstemp($0.baseAddress!) }
        guard raw >= 0 else { throw .last("input file") }
        _ = fcntl(raw, F_SETFD, FD_CLOEXEC)
        unsafe template.withUnsafeBufferPointer { _ = unsafe unlink($0.baseAddress!) }
        let fd = FileDescriptor(rawValue: raw)
        do {
            _ = try fd.writeAll(Array(text.utf8))
            _ = try fd.seek(offset: 0, from: FileDescriptor.SeekOrigin.start)
        } catch let e as Errno {
            try? fd.close()
            throw SystemError("input file", e)
        } catch {
            try? fd.close()
            throw SystemError("input file", .ioError)
        }
        return fd
    }
}

/// NUL-terminated copies of strings, as argv and envp want them, freed with it.
@safe final class CStrings {
    let pointers: [UnsafeMutablePointer<CChar>?]

    init(_ strings: [String]) {
        // Each copy is freed once, in deinit; the array never changes.
        unsafe pointers = unsafe (strings.map { unsafe strdup($0) } + [nil])
    }

    deinit { for k in unsafe pointers.indices { unsafe free(pointers[k]) } }

    func withPointers<R>(_ body: (UnsafePointer<UnsafeMutablePointer<CChar>?>) -> R) -> R {
        // The strings live as long as self, which outlives the call.
        unsafe pointers.withUnsafeBufferPointer { unsafe body($0.baseAddress!) }
    }
}

extension FileDescriptor {
    /// A pipe whose read end does not block; both ends close on exec.
    static func pipeNonBlockingReader() throws(SystemError) -> (readEnd: FileDescriptor, writeEnd: FileDescriptor) {
        let ends: (readEnd: FileDescriptor, writeEnd: FileDescriptor)
        do { ends = try FileDescriptor.pipe() } catch { throw .last("pipe") }
        for fd in [ends.readEnd, ends.writeEnd] { _ = fcntl(fd.rawValue, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(ends.readEnd.rawValue, F_SETFL, O_NONBLOCK)
        return ends
    }
}
