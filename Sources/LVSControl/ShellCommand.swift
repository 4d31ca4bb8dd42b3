import Dispatch
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// keepalived's scripts (MISC_CHECK, notify_*, quorum_*): run by /bin/sh, output discarded.
public enum ShellCommand {
    /// `command` under /bin/sh, its exit status, or nil when it ran over `timeout` seconds (it is killed).
    public static func run(_ command: String, timeout: Double) -> Int32? {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/bin/sh")
        p.arguments = ["-c", command]
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        let done = DispatchSemaphore(value: 0)
        p.terminationHandler = { _ in done.signal() }
        do { try p.run() } catch { return 1 }
        if done.wait(timeout: .now() + max(0.1, timeout)) == .timedOut {
            kill(p.processIdentifier, SIGKILL)
            done.wait()
            return nil
        }
        return p.terminationStatus
    }

    /// Runs `command` in the background (notify and quorum scripts): nobody waits for it.
    public static func spawn(_ command: String, timeout: Double = 30) {
        DispatchQueue.global().async { _ = run(command, timeout: timeout) }
    }
}
