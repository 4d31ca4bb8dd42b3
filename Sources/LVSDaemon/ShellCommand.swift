import LVSSystem

/// keepalived's scripts (MISC_CHECK, notify_*, quorum_*): run by /bin/sh, output discarded.
public enum ShellCommand {
    /// `command` under /bin/sh, its exit status, or nil when it ran over `timeout` seconds (it is killed).
    public static func run(_ command: String, timeout: Double) async -> Int32? {
        await ChildProcess.run("/bin/sh", ["-c", command], timeout: max(0.1, timeout)).status
    }

    /// Runs `command` in the background (notify and quorum scripts): nobody
    /// waits for it, and it may outlast its caller (at most `timeout` seconds).
    public static func spawn(_ command: String, timeout: Double = 30) {
        Task.detached { _ = await run(command, timeout: timeout) }
    }
}
