import Foundation
import Testing

@testable import LVSAdmin
@testable import LVSConfiguration
@testable import LVSControlProtocol
@testable import LVSDaemon
@testable import LVSSystem

@Suite struct SystemdNotifierTests {
    @Test func readinessReachesTheNotifySocket() throws {
        let path = "/tmp/lvs-test-notify-\(getpid()).sock"
        unlink(path)
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
        defer {
            close(fd)
            unlink(path)
        }
        var addr = sockaddr_un()
        addr.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &addr.sun_path) { raw in for (i, b) in path.utf8.enumerated() { raw[i] = b } }
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        try #require(rc == 0)
        let notifier = SystemdNotifier(environment: ["NOTIFY_SOCKET": path, "WATCHDOG_USEC": "10000000"])
        #expect(notifier.watchdogInterval == 5000)
        notifier.notify("READY=1")
        var buffer = [UInt8](repeating: 0, count: 64)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
        #expect(n == 7 && String(decoding: buffer[0..<7], as: UTF8.self) == "READY=1")
        // Outside systemd nothing happens.
        SystemdNotifier(environment: [:]).notify("READY=1")
    }
}
