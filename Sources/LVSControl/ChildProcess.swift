import Dispatch
#if canImport(Glibc)
import Glibc
#endif

/// A program run to its end with posix_spawn and waitpid. Not Foundation's
/// `Process`: on Linux it learns of a child's exit through sockets on the
/// loopback interface, and where lo is down (a fresh network namespace) it
/// never does, so its caller waited forever (lvsd could not stop).
public enum ChildProcess {
    public struct Outcome: Sendable {
        /// The exit status (128 + the signal's number when a signal ended it, 127 when it could not be started); nil when it ran over its time and was killed.
        public var status: Int32?
        /// What it wrote to standard error (the first 64 KiB).
        public var errorOutput: String
    }

    /// Runs `path` with `arguments`, `input` on its standard input, its standard output discarded.
    public static func run(_ path: String, _ arguments: [String], input: String = "", timeout: Double) -> Outcome {
        func failure(_ what: String, _ code: Int32) -> Outcome { Outcome(status: 127, errorOutput: "\(what): \(String(cString: strerror(code)))") }
        // The input in an unlinked file the child reads at its pace: no pipe to fill, no SIGPIPE when it stops early.
        var inputFile: Int32 = -1
        defer { if inputFile >= 0 { close(inputFile) } }
        if !input.isEmpty {
            var template = Array("/tmp/lvs-input-XXXXXX".utf8CString)
            inputFile = mkstemp(&template)
            guard inputFile >= 0 else { return failure("input file", errno) }
            unlink(template)
            _ = fcntl(inputFile, F_SETFD, FD_CLOEXEC)
            let written = input.utf8CString.withUnsafeBufferPointer { write(inputFile, $0.baseAddress, $0.count - 1) }
            guard written == input.utf8.count, lseek(inputFile, 0, SEEK_SET) == 0 else { return failure("input", errno) }
        }
        var fromChild: [Int32] = [-1, -1]
        guard pipe(&fromChild) == 0 else { return failure("pipe", errno) }
        for fd in fromChild { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
        _ = fcntl(fromChild[0], F_SETFL, O_NONBLOCK)
        defer { close(fromChild[0]) }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if inputFile >= 0 { posix_spawn_file_actions_adddup2(&actions, inputFile, 0) } else { posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, fromChild[1], 2)
        // Signals as a new program expects them: lvsd ignores SIGTERM, SIGINT and SIGHUP (it takes them through Dispatch), a child must not.
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t(), all = sigset_t()
        sigemptyset(&none)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attributes, &none)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for a in argv { free(a) } }
        var pid: pid_t = 0
        let spawned = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        close(fromChild[1])
        guard spawned == 0 else { return failure(path, spawned) }
        var errors: [UInt8] = []
        func drain() {
            var buffer = [UInt8](repeating: 0, count: 4096)
            while errors.count < 65536 {
                let n = buffer.withUnsafeMutableBytes { read(fromChild[0], $0.baseAddress, $0.count) }
                guard n > 0 else { return }
                errors += buffer[0..<n]
            }
        }
        let deadline = DispatchTime.now().uptimeNanoseconds &+ UInt64(max(0.01, timeout) * 1e9)
        var status: Int32 = 0
        var timedOut = false
        // Polled: a child's exit wakes nothing here without a SIGCHLD handler, which would be process-wide.
        while true {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno != EINTR) { break }
            drain()
            if DispatchTime.now().uptimeNanoseconds > deadline {
                kill(pid, SIGKILL)
                while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                timedOut = true
                break
            }
            usleep(2000)
        }
        drain()
        let signal = status & 0x7F
        // A signal is reported as a shell reports it, 128 + its number.
        return Outcome(status: timedOut ? nil : signal == 0 ? (status >> 8) & 0xFF : 128 + signal, errorOutput: String(decoding: errors, as: UTF8.self))
    }
}
