import Dispatch
import LVSControlProtocol
import LVSConfiguration
import LVSLinux
import LVSCore
import LVSPacket
import LVSSystem

/// keepalived's scripts (MISC_CHECK, notify_*, quorum_*): run by /bin/sh, output discarded.
public enum ShellCommand {
    /// `command` under /bin/sh, its exit status, or nil when it ran over `timeout` seconds (it is killed).
    public static func run(_ command: String, timeout: Double) -> Int32? {
        ChildProcess.run("/bin/sh", ["-c", command], timeout: max(0.1, timeout)).status
    }

    /// Runs `command` in the background (notify and quorum scripts): nobody waits for it.
    public static func spawn(_ command: String, timeout: Double = 30) {
        DispatchQueue.global().async { _ = run(command, timeout: timeout) }
    }
}
