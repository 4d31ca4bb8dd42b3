import Foundation
import LVSSystem
import Testing

/// The programs lvsd runs (nft, keepalived's scripts): status, input, error output, time limit.
@Suite struct ChildProcessTests {
    @Test func reportsTheExitStatusAndWhatWentToStandardError() {
        let outcome = ChildProcess.run("/bin/sh", ["-c", "echo out; echo broken >&2; exit 3"], timeout: 5)
        #expect(outcome.status == 3)
        #expect(outcome.errorOutput == "broken\n")
    }

    @Test func feedsTheInputWhetherOrNotItIsRead() {
        #expect(ChildProcess.run("/bin/sh", ["-c", "read a; read b; [ \"$a $b\" = 'table netdev' ]"], input: "table\nnetdev\n", timeout: 5).status == 0)
        // 1 MiB the child never reads: no pipe to fill, no SIGPIPE for us.
        #expect(ChildProcess.run("/bin/true", [], input: String(repeating: "x", count: 1 << 20), timeout: 5).status == 0)
        #expect(ChildProcess.run("/bin/sh", ["-c", "read a || exit 7"], timeout: 5).status == 7)
    }

    @Test func killsWhatRunsOverItsTimeAndReportsSignalsAsAShellDoes() {
        let start = Date()
        #expect(ChildProcess.run("/bin/sleep", ["10"], timeout: 0.2).status == nil)
        #expect(Date().timeIntervalSince(start) < 5)
        #expect(ChildProcess.run("/bin/sh", ["-c", "kill -TERM $$"], timeout: 5).status == Int32(128 + SIGTERM))
        #expect(ChildProcess.run("/bin/sh", ["-c", "exit 0"], timeout: 5).status == 0)
    }

    @Test func aProgramThatCannotStartIsStatus127WithTheReason() {
        let outcome = ChildProcess.run("/nonexistent/nft", [], timeout: 5)
        #expect(outcome.status == 127)
        #expect(outcome.errorOutput.contains("/nonexistent/nft"), "\(outcome.errorOutput)")
    }
}
