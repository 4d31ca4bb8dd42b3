import Foundation
import LVSAdmin
import LVSConfiguration
import LVSControlProtocol
import LVSDaemon
import LVSSystem
import LVSTestSupport
import Testing

/// dist/systemd/lvsd.service: run by systemd where it is the init system,
/// otherwise checked by systemd-analyze (as on this machine kind).
@Suite(.serialized) struct SystemdUnitTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    func run(_ args: [String]) throws -> (status: Int32, output: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        try p.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// `lvsd --check-config`, as `keepalived -t`: 0 for a file lvsd does
    /// all of, 1 (with each keyword, file and line) when it asks for
    /// something lvsd does not do, 2 for a file that does not load.
    @Test func checkConfigSaysWhatLvsdDoesNotDo() throws {
        let lvsd = Executables.directory.appendingPathComponent("lvsd").path
        let dir = URL(fileURLWithPath: "/tmp/lvs-check-\(getpid())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        func check(_ text: String) throws -> (status: Int32, output: String) {
            let file = dir.appendingPathComponent("keepalived.conf")
            try text.write(to: file, atomically: true, encoding: .utf8)
            return try run([lvsd, "--keepalived", file.path, "--check-config"])
        }
        let service = "virtual_server 198.18.0.10 80 {\n lb_kind NAT\n real_server 198.19.0.2 80 {\n weight 1\n }\n}\n"
        let clean = try check("global_defs {\n router_id A\n}\n" + service)
        #expect(
            clean.status == 0 && clean.output.contains(":2: router_id: ignored:") && clean.output.hasSuffix("0 keywords not supported, 1 ignored\n"),
            "\(clean.output)")
        let asks = try check(service.replacingOccurrences(of: " weight 1", with: " weight 1\n BFD_CHECK {\n }"))
        #expect(asks.status == 1 && asks.output.contains("keepalived.conf:5: BFD_CHECK: not supported: this checker is not run"), "\(asks.output)")
        let broken = try check("virtual_server 198.18.0.10 80 {\n lb_kind XYZ\n}\n")
        #expect(broken.status == 2 && broken.output.contains(":2: lb_kind: unknown forwarding method 'XYZ'"), "\(broken.output)")
    }

    @Test func theUnitRunsUnderSystemdOrPassesSystemdAnalyze() throws {
        let lvsd = Executables.directory.appendingPathComponent("lvsd").path
        let unit = try String(contentsOf: Self.repository.appendingPathComponent("dist/systemd/lvsd.service"), encoding: .utf8)
        #expect(unit.contains("Type=notify") && unit.contains("ExecReload=/bin/kill -HUP $MAINPID") && unit.contains("WatchdogSec="))
        let dir = URL(fileURLWithPath: "/tmp/lvs-unit-\(getpid())")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }

        if FileManager.default.fileExists(atPath: "/run/systemd/system") && getuid() == 0 {
            // The unit's own settings, on a transient unit that starts this build's lvsd.
            let name = "lvsd-test-\(getpid())"
            let socket = dir.appendingPathComponent("lvsd.sock").path
            let start = try run([
                "systemd-run", "--unit=\(name)", "--collect", "-p", "Type=notify", "-p", "WatchdogSec=10",
                "-p", "ExecReload=/bin/kill -HUP $MAINPID", lvsd, "--socket", socket,
            ])
            defer { _ = try? run(["systemctl", "stop", name]) }
            #expect(start.status == 0, "\(start.output)")
            #expect(try run(["systemctl", "is-active", name]).output.hasPrefix("active"))
            #expect(try run(["systemctl", "reload", name]).status == 0)
            #expect(try run(["systemctl", "is-active", name]).output.hasPrefix("active"))
        } else {
            // This build's lvsd in place of the installed one; any complaint fails.
            let file = dir.appendingPathComponent("lvsd.service")
            try unit.replacingOccurrences(of: "/usr/local/sbin/lvsd", with: lvsd).write(to: file, atomically: true, encoding: .utf8)
            let verify = try run(["systemd-analyze", "verify", "--man=no", file.path])
            #expect(verify.status == 0 && verify.output.isEmpty, "\(verify.output)")
        }
    }
}
